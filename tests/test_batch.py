"""mmlit.batch: a real parallel papermill batch over the fixture notebooks, spec validation, the CLI."""
import os, shutil, sys, time
from pathlib import Path

import nbformat, pandas as pd, pytest, yaml

from mmlit import batch
from mmlit.records import RECORD_ENV, read_records, record
from mmlit.batch import (load_spec, notebook_error, plan_runs, run_batch,
                         run_notebooks_cli)
from mmlit.core import ConfigError

FIX = Path(__file__).parent/"fixtures"

def cell_index(nb_name, text):
    "Index of the fixture's code cell whose source contains `text` (so the tests don't hard-code it)."
    nb = nbformat.read(FIX/nb_name, as_version=4)
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and text in c.source)

def make_spec(folder, **spec):
    "Copy the fixtures to `folder/nbs` and write `folder/sweep.yaml` (paths in it are relative to it)."
    shutil.copytree(FIX, folder/"nbs", dirs_exist_ok=True)
    p = folder/"sweep.yaml"
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    return p

SWEEP = dict(notebooks=["nbs/batch_ok.ipynb"], parameters={"power": 3, "label": "sweep"}, grid={"x": [2, 5]},
             runs=[{"x": 7, "label": "hi"}, {"notebook": "nbs/batch_fail.ipynb", "divisor": 0}],
             output_dir="out", workers=2, timeout=120)

@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    spec = make_spec(folder, **SWEEP)
    t0 = time.perf_counter()
    df = run_batch(spec, progress=False)
    print(f"\n4-run batch, 2 workers: {time.perf_counter() - t0:.1f} s; per run: {list(df.duration_s)}")
    return df, folder/"out"

def test_summary_rows_and_metrics(sweep):
    df, out = sweep
    assert list(df.run) == ["batch_ok__x=2", "batch_ok__x=5", "batch_ok__label=hi__x=7", "batch_fail__divisor=0"]
    assert list(df.status) == ["ok", "ok", "ok", "failed"]
    ok = df[df.status == "ok"]
    # metrics are computed in the kernel from the injected parameters (power comes from the shared defaults)
    assert list(ok.power) == [3, 3, 3]
    assert list(ok.y) == [x**3 for x in ok.x] == [8, 125, 343]
    assert ok.root.tolist() == pytest.approx([x**0.5 for x in (2, 5, 7)])
    assert list(ok.label_len) == [len("sweep"), len("sweep"), len("hi")]
    assert pd.isna(df.label.iloc[3]) and pd.isna(df.y.iloc[3])  # `label` is not a parameter of batch_fail
    assert df.duration_s.notna().all() and (df.duration_s > 0).all()

def test_failure_reported_with_cell_and_error(sweep):
    df, out = sweep
    f = df.iloc[3]
    assert f.error_cell == cell_index("batch_fail.ipynb", "ratio = 10 / divisor")
    assert (f.error_name, f.error_value, f.error_source) == ("ZeroDivisionError", "division by zero", "ratio = 10 / divisor")
    assert f.before == 0 and "ratio" not in df  # recorded before the failing cell; the cell after it never ran
    nb = nbformat.read(out/f.output, as_version=4)  # the partially executed notebook is kept
    assert notebook_error(nb)["error_cell"] == f.error_cell
    assert df.error_name.iloc[:3].isna().all()

def test_files_written(sweep):
    df, out = sweep
    assert sorted(p.name for p in out.glob("*.ipynb")) == sorted(df.output)
    csv = pd.read_csv(out/"summary.csv")
    assert len(csv) == 4 and list(csv.status) == list(df.status) and list(csv.y.dropna()) == [8, 125, 343]
    md = (out/"summary.md").read_text()
    assert "4 runs: 3 ok, 1 failed, 0 timed out" in md and "ZeroDivisionError" in md
    # the executed notebooks carry their own records, equal to what the runner collected
    for r in df[df.status == "ok"].itertuples():
        assert read_records(out/r.output) == {"y": r.y, "root": pytest.approx(r.root), "label_len": r.label_len}

def test_runs_overlap(sweep):
    "With 2 workers, at least two runs executed at the same time (papermill's timestamps in the notebooks)."
    df, out = sweep
    spans = []
    for o in df.output:
        pm = nbformat.read(out/o, as_version=4).metadata.papermill
        spans.append((pd.Timestamp(pm.start_time), pd.Timestamp(pm.end_time)))
    assert any(a0 < b1 and b0 < a1 for i, (a0, a1) in enumerate(spans) for (b0, b1) in spans[i+1:])

def test_bad_specs(tmp_path):
    def err(**kw):
        with pytest.raises(ConfigError) as e: load_spec(make_spec(tmp_path, **{**SWEEP, **kw}))
        return str(e.value)
    assert "unknown key 'wrokers' (did you mean 'workers'?)" in err(wrokers=2)
    assert "grid list of 'x' is empty" in err(grid={"x": []})
    assert "grid value of 'x' must be a list" in err(grid={"x": 3})
    assert "'nbs/missing.ipynb' matches no notebook" in err(notebooks=["nbs/missing.ipynb"])
    assert "`timeout` must be a positive number" in err(timeout=-1)
    (tmp_path/"bad.yaml").write_text("notebooks: [a\n")
    with pytest.raises(ConfigError, match="not valid YAML"): load_spec(tmp_path/"bad.yaml")

def test_misspelled_parameter(tmp_path):
    spec = make_spec(tmp_path, **{**SWEEP, "grid": {"x": [2], "pwoer": [2]}})
    with pytest.raises(ConfigError, match=r"'pwoer' is not defined in the parameters cell of batch_ok.ipynb \(did you mean 'power'\?\)"):
        plan_runs(spec)
    spec = make_spec(tmp_path, **{**SWEEP, "parameters": {"lable": "x"}})
    with pytest.raises(ConfigError, match="'lable' is not defined in the parameters cell of any notebook"): plan_runs(spec)

def test_notebook_without_parameters_cell(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(nb, tmp_path/"plain.ipynb")
    with pytest.raises(ConfigError, match="no cell tagged 'parameters'"):
        plan_runs(load_spec({"notebooks": "plain.ipynb", "grid": {"x": [1, 2]}}, base_dir=tmp_path))
    runs = plan_runs(load_spec({"notebooks": "plain.ipynb"}, base_dir=tmp_path))  # no parameters: fine
    assert [(r.name, r.params) for r in runs] == [("plain", {})]

def test_timeout_via_cli(tmp_path, monkeypatch):
    "A run over its timeout is stopped and reported with the cell it was in, its kernel is gone; the CLI exits 1."
    spec = make_spec(tmp_path, runs=[{"notebook": "nbs/batch_fail.ipynb", "sleep_s": 300}], timeout=20, output_dir="out")
    monkeypatch.setattr(sys, "argv", ["mmlit-run-notebooks", str(spec), "--workers", "1"])
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e: run_notebooks_cli()
    took = time.perf_counter() - t0
    assert e.value.code == 1 and took < 50
    r = pd.read_csv(tmp_path/"out"/"summary.csv").iloc[0]
    assert r.status == "timeout" and r.error_name == "Timeout" and "timeout of 20 s" in r.error_value
    if pd.isna(r.get("before")):  # machine so loaded that the kernel never got past its imports in 20 s
        nb = nbformat.read(tmp_path/"out"/r.output, as_version=4)
        started = [i for i, c in enumerate(nb.cells) if c.get("metadata", {}).get("papermill", {}).get("start_time")]
        assert pd.isna(r.error_cell) or started, "error_cell must be the cell that was running"
        pytest.skip("the kernel did not reach the sleeping cell within the timeout (overloaded machine)")
    assert r.error_cell == cell_index("batch_fail.ipynb", "time.sleep(sleep_s)")
    assert r.before == 10  # recorded before the sleep, survives the stop
    pid = int(r.kernel_pid)
    for _ in range(30):
        try: os.kill(pid, 0)
        except ProcessLookupError: break
        time.sleep(0.5)
    else: pytest.fail(f"kernel {pid} of the timed-out run is still alive")

def test_cli_dry_run_and_exit_codes(tmp_path, monkeypatch, capsys):
    spec = make_spec(tmp_path, **SWEEP)
    monkeypatch.setattr(sys, "argv", ["mmlit-run-notebooks", str(spec), "--dry_run", "--workers", "3"])
    run_notebooks_cli()
    out = capsys.readouterr().out
    assert "4 runs, 3 at a time" in out and "batch_fail__divisor=0" in out and not (tmp_path/"out").exists()
    # a bad spec exits with 2 and names the key
    (tmp_path/"bad").mkdir()
    bad = make_spec(tmp_path/"bad", **{**SWEEP, "grid": {"x": 2}})
    monkeypatch.setattr(sys, "argv", ["mmlit-run-notebooks", str(bad)])
    with pytest.raises(SystemExit) as e: run_notebooks_cli()
    assert e.value.code == 2 and "grid value of 'x'" in capsys.readouterr().err
    # failures -> 1, unless --allow_failures (run_batch itself is exercised for real above)
    monkeypatch.setattr(batch, "run_batch", lambda s: pd.DataFrame({"status": ["ok", "failed"]}))
    monkeypatch.setattr(sys, "argv", ["mmlit-run-notebooks", str(spec)])
    with pytest.raises(SystemExit) as e: run_notebooks_cli()
    assert e.value.code == 1
    monkeypatch.setattr(sys, "argv", ["mmlit-run-notebooks", str(spec), "--allow_failures"])
    assert run_notebooks_cli() is None

def test_mmlit_console_dispatch(tmp_path, capsys):
    "`mmlit run-notebooks` reaches `run_notebooks_cli`, dashed options included."
    cli = pytest.importorskip("mmlit.cli")
    spec = make_spec(tmp_path, **SWEEP)
    assert cli.main(["run-notebooks", str(spec), "--dry-run", "--output-dir", str(tmp_path/"elsewhere")]) == 0
    assert f"4 runs, 2 at a time, into {tmp_path/'elsewhere'}" in capsys.readouterr().out
    (tmp_path/"bad").mkdir()
    bad = make_spec(tmp_path/"bad", **{**SWEEP, "grid": {"x": [1], "pwoer": [2]}})
    assert cli.main(["run-notebooks", str(bad)]) == 2 and "'pwoer'" in capsys.readouterr().err

def test_record_outside_and_inside_a_batch(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(RECORD_ENV, raising=False)
    record("mae", 0.5)
    assert capsys.readouterr().out.strip() == "mae = 0.5"
    f = tmp_path/"rec.jsonl"
    monkeypatch.setenv(RECORD_ENV, str(f))
    record("mae", 0.5); record("mae", 0.25); record("n", 3)
    assert batch._read_record_file(f) == {"mae": 0.25, "n": 3}
    with pytest.raises(ValueError, match="'obj'"): record("obj", object())


def test_record_stays_importable_from_batch():
    "Notebooks written before `mmlit.records` existed import `record` from `mmlit.batch`; it is the same function."
    assert batch.record is record and batch.read_records is read_records and batch.RECORD_ENV == RECORD_ENV
