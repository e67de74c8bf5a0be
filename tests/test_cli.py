"Subprocess tests of the `mmlit` console script: dispatch, help, errors without tracebacks, demo and bench end to end."
import json, os, shutil, subprocess, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmlit.core import shared_data_dir

MMLIT = shutil.which("mmlit") or str(Path(sys.executable).parent/"mmlit")
CMD = [MMLIT] if Path(MMLIT).exists() else [sys.executable, "-c", "import sys; from mmlit.cli import main; sys.exit(main())"]


def run(*args, cwd=None, timeout=240):
    return subprocess.run(CMD + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_help_lists_commands_without_heavy_imports():
    r = run("--help")
    assert r.returncode == 0, r.stderr
    for c in ("demo", "bench", "run-notebooks"): assert c in r.stdout
    assert run().returncode == 0
    code = ("import sys, io, contextlib; from mmlit.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
            "print(sorted(m for m in ('matminer', 'pymatgen.core', 'sklearn', 'matplotlib.pyplot', 'mmlit.bench.core') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_subcommand_help():
    r = run("bench", "--help")
    assert r.returncode == 0 and "--task" in r.stdout and "--folds" in r.stdout
    r = run("demo", "--help")
    assert r.returncode == 0 and "--n_max" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["trian"], "trian"),
    (["bench", "--task", "expt_gapp", "--folds", "0"], "expt_gapp"),
    (["bench", "--task", "expt_gap", "--data", "/no/such/file.csv", "--folds", "0"], "/no/such/file.csv"),
    (["bench", "--task", "expt_gap", "--folds", "0,x"], "0,x"),
    (["bench", "--task", "expt_gap", "--folds", "7"], "fold 7"),
    (["bench", "--task", "expt_gap", "--model", "gpt5"], "gpt5"),
    (["bench"], "--task"),
    (["demo", "--models", "mean,nosuchmodel"], "nosuchmodel"),
])
def test_bad_input_gives_clear_error(args, needle, tmp_path):
    r = run(*args, cwd=tmp_path)
    assert r.returncode != 0
    assert needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr


def test_run_notebooks_is_dispatched():
    "Either the batch module is there (its help works) or the command says clearly that it is unavailable."
    r = run("run-notebooks", "--help")
    if r.returncode == 0: assert "usage" in r.stdout.lower()
    else: assert "not available" in r.stderr and "Traceback" not in r.stderr


def test_demo_small(tmp_path):
    r = run("demo", "--out", tmp_path/"d", "--n-max", 400, "--models", "mean,baseline-fractions-rf", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "MAD:MAE" in r.stdout and "baseline-fractions-rf" in r.stdout
    res = json.loads((tmp_path/"d"/"demo_results.json").read_text())
    assert res["n_train"] + res["n_test"] == 400 and res["n_test"] == 80
    m, b = res["models"]["mean-predictor"]["scores"], res["models"]["baseline-fractions-rf"]["scores"]
    assert b["mae"] < m["mae"] and b["mad_mae"] > m["mad_mae"]
    assert (tmp_path/"d"/"demo_parity.png").stat().st_size > 1000


def test_demo_imkt_model(tmp_path):
    "The demo's language model goes through MLM, alignment and finetuning under the clean protocol."
    r = run("demo", "--out", tmp_path/"d", "--n-max", 300, "--models", "mean,clm-bert-tiny-mlm+align+ft", "--quiet")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path/"d"/"demo_results.json").read_text())
    clm = res["models"]["clm-bert-tiny-mlm+align+ft"]
    assert "clean" in str(clm["params"]).lower(), clm["params"]
    assert np.isfinite(clm["scores"]["mae"]) and clm["scores"]["mae"] > 0


def _toy_task_csv(path, n=150, seed=0):
    "A small table in the matbench CSV layout (mbid, composition, target, fold)."
    rng = np.random.default_rng(seed)
    metals = ["Li", "Na", "K", "Mg", "Ca", "Sr", "Al", "Ga", "Ti", "Fe", "Co", "Ni", "Cu", "Zn"]
    rows = []
    for i in range(n):
        m, a, b = metals[i % len(metals)], 1 + (i // len(metals)) % 4, 1 + i % 5
        rows.append(dict(mbid=f"mb-expt-gap-{i+1:04d}", composition=f"{m}{a}O{b}", target=3*b/(a+b) + rng.normal(0, .01), fold=i % 5))
    pd.DataFrame(rows).drop_duplicates("composition").to_csv(path, index=False)
    return path


def test_bench_on_given_csv(tmp_path):
    csv = _toy_task_csv(tmp_path/"toy.csv")
    r = run("bench", "--task", "expt_gap", "--data", csv, "--model", "baseline-fractions-rf", "--folds", "0,1",
            "--n-estimators", 20, "--out", tmp_path/"out", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path/"out"
    for f in ("results.json", "results.md", "predictions.csv.gz", "matbench_results.json.gz", "bench.png"): assert (out/f).exists(), f
    res = json.loads((out/"results.json").read_text())
    assert [f["fold"] for f in res["folds"]] == [0, 1] and res["model"] == "baseline-fractions-rf"
    pred = pd.read_csv(out/"predictions.csv.gz")
    folds = pd.read_csv(csv).set_index("mbid").fold
    assert (folds.loc[pred.id].to_numpy() == pred.fold.to_numpy()).all()   # each id predicted in its own test fold


@pytest.mark.skipif(shared_data_dir() is None, reason="shared benchmark data not available")
def test_bench_shared_data_one_fold(tmp_path):
    r = run("bench", "--task", "matbench_expt_gap", "--model", "baseline-fractions-rf", "--folds", "0",
            "--n-estimators", 10, "--out", tmp_path/"o", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "RF-SCM/Magpie" in (tmp_path/"o"/"results.md").read_text()
