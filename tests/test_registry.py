"""The model registry, the import direction between the layers, and `mmlit bench` on a user's own CSV (any data)."""
import ast, json, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmlit.core import ConfigError
from mmlit.registry import MODELS, register_model, make_model, model_names, describe_models, model_entry

ROOT = Path(__file__).resolve().parent.parent
MMLIT = shutil.which("mmlit") or str(Path(sys.executable).parent/"mmlit")
CMD = [MMLIT] if Path(MMLIT).exists() else [sys.executable, "-c", "import sys; from mmlit.cli import main; sys.exit(main())"]


def run(*args, cwd=None, env=None, timeout=300):
    return subprocess.run(CMD + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, **(env or {})})


def cli(capsys, *args) -> tuple:
    "`mmlit ARGS` in this process (the imports are paid once): (exit status, stdout, stderr)."
    from mmlit.cli import main
    rc = main([str(a) for a in args]); o = capsys.readouterr()
    return rc, o.out, o.err


def py(code, timeout=120):
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip()


# --- registry ---------------------------------------------------------------------------------------------------------
def test_unknown_model_lists_the_names():
    with pytest.raises(ConfigError, match="gpt5") as e: make_model("gpt5")
    for n in ("baseline-magpie-rf", "mean", "clm-bert-tiny-mlm+align+ft", "alignn-tiny"): assert n in str(e.value)
    with pytest.raises(ConfigError, match="no_colon"): register_model("x", "no_colon")
    with pytest.raises(ConfigError, match="42"): register_model("x", 42)


def test_describe_models_and_flags():
    d = describe_models()
    assert set(d.index) == set(MODELS) and d.loc["alignn-small", "input"] == "structure"
    assert d.loc["clm-bert-tiny-ft", "factory"] == "mmlit.comp.imkt:make_clm_model"
    assert "cgcnn" in model_names(needs_structures=True) and "cgcnn" not in model_names(needs_structures=False)
    assert model_entry("baseline-magpie-hgb").kwargs == {"features": "magpie", "estimator": "hgb"}


def test_string_factory_resolves_lazily(tmp_path, monkeypatch):
    "A 'module:attr' factory is imported when the model is built, not when it is registered."
    (tmp_path/"mmlit_toy_wing.py").write_text(
        "class Model:\n    name = 'toy'\n    def __init__(self, k=1, seed=0): self.k, self.seed = k, seed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        register_model("toy-wing", "mmlit_toy_wing:Model", "a model in another package", k=2)
        assert "mmlit_toy_wing" not in sys.modules
        m = make_model("toy-wing", seed=4, n_estimators=10, progress=False)   # bench's keywords it lacks are dropped
        assert "mmlit_toy_wing" in sys.modules and (m.k, m.seed) == (2, 4)
        assert make_model("toy-wing", k=5).k == 5
        with pytest.raises(TypeError, match="kk"): make_model("toy-wing", kk=5)   # a misspelt setting is not dropped
        register_model("toy-missing", "mmlit_toy_wing:Nope")
        with pytest.raises(ConfigError, match="Nope"): make_model("toy-missing")
    finally:
        MODELS.pop("toy-wing", None); MODELS.pop("toy-missing", None); sys.modules.pop("mmlit_toy_wing", None)


def test_registering_needs_no_bench_and_no_wing():
    """A test module registers and builds a model with the registry alone: bench and the wings stay unimported; and
    `mmlit bench --help` loads bench (the registry's strings) without any model wing."""
    out = py("import sys\n"
             "from mmlit.registry import register_model, make_model, MODELS\n"
             "class Const:\n    def __init__(self, v=0): self.v = v\n"
             "register_model('const', Const, 'a constant', v=3)\n"
             "assert make_model('const', seed=1).v == 3 and 'clm-bert-tiny-ft' in MODELS\n"
             "import mmlit.protocol\n"
             "print(sorted(m for m in sys.modules if m.startswith(('mmlit.bench', 'mmlit.comp', 'mmlit.struct', 'mmlit.baseline'))))\n"
             "import io, contextlib\nfrom mmlit.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()) as o: main(['bench', '--help'])\n"
             "assert '--label' in o.getvalue() and '--composition' in o.getvalue()\n"
             "print(sorted(m for m in sys.modules if m.startswith(('mmlit.comp', 'mmlit.struct', 'mmlit.baseline', "
             "'transformers', 'torch_geometric'))))")
    assert out == "[]\n[]", out


# --- import direction -------------------------------------------------------------------------------------------------
def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set:
    "Every module `path` imports (top level and inside functions), relative imports resolved."
    mod = _module(path)
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import): out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(pkg[:len(pkg) - node.level + 1] if node.level else [])
            name = ".".join(p for p in (base, node.module or "") if p) if node.level else node.module
            out.add(name); out |= {f"{name}.{a.name}" for a in node.names}
    return out


WINGS = ("mmlit.comp", "mmlit.struct", "mmlit.baseline", "mmlit.interpret", "mmlit.fusion", "mmlit.text", "mmlit.image",
         "mmlit.exkt", "mmlit.predictor")
under = lambda name, prefixes: any(name == p or name.startswith(p + ".") for p in prefixes)


def test_import_parser_sees_function_level_and_relative_imports(tmp_path):
    f = ROOT/"mmlit"/"comp"/"commands.py"   # both kinds of import: a relative one at the top, an absolute one in a function
    imps = _imports(f)
    assert "mmlit.protocol" in imps and "mmlit.data.external" in imps   # relative (top) and absolute (in a function)


def test_import_direction():
    """`bench` sits on top: only bench, the CLI and batch import it. The registry and the protocols sit below the wings:
    they import no wing (models are named by strings) and not bench."""
    files = sorted((ROOT/"mmlit").rglob("*.py"))
    assert len(files) > 20
    bad = []
    for f in files:
        mod, imps = _module(f), _imports(f)
        if not under(mod, ("mmlit.bench", "mmlit.cli", "mmlit.batch")):
            bad += [f"{mod} imports {i}" for i in imps if under(i, ("mmlit.bench",))]
        if under(mod, ("mmlit.registry", "mmlit.protocol", "mmlit.data", "mmlit.metrics", "mmlit.core")):
            bad += [f"{mod} imports {i}" for i in imps if under(i, WINGS + ("mmlit.bench", "mmlit.cli"))]
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(set(bad)))


# --- any data: a user's CSV --------------------------------------------------------------------------------------------
ALLOYS = ["Fe0.7Cr0.18Ni0.1C0.0004Mn0.0196", "Fe0.68Cr0.17Ni0.12Mo0.025Mn0.005",
          "Fe0.6Cr0.1Ni0.1Co0.05Mo0.05Mn0.04Si0.03C0.01V0.01W0.01",                      # 10 elements
          "Fe0.5Co0.1Ni0.1Cr0.05Mo0.05Mn0.05Si0.03C0.02V0.02W0.02Ti0.02Al0.02Cu0.02"]    # 13 elements
COMPOUNDS = ["NaCl", "KCl", "LiF", "MgO", "CaO", "SrO", "BaO", "Al2O3", "Ga2O3", "TiO2", "ZrO2", "SiO2", "GaAs", "InP",
             "ZnS", "ZnO", "CdTe", "CuO", "Cu2O", "FeO", "Fe2O3", "Fe3O4", "NiO", "CoO", "MnO2", "Cr2O3", "V2O5", "SnO2",
             "PbTe", "Bi2Te3", "LiCoO2", "BaTiO3", "SrTiO3", "CaTiO3", "MgAl2O4", "LiFePO4"]


def small_csv(path, fold=False):
    "40 real formulas; y = mean atomic number / 10 (computed from the composition), plus a second numeric column."
    from pymatgen.core import Element
    from mmlit.data.composition import fractional_composition
    comps = ALLOYS + COMPOUNDS
    y = [sum(Element(e).Z * x for e, x in fractional_composition(c).items()) / 10 for c in comps]
    df = pd.DataFrame({"formula": comps, "y": y, "x_noise": np.random.default_rng(0).normal(size=len(comps))})
    if fold: df["fold"] = np.arange(len(df)) % 4
    df.to_csv(path, index=False)
    return path


def test_bench_user_csv_random_folds(tmp_path, capsys):
    csv = small_csv(tmp_path/"small.csv")
    r = run("bench", "--data", csv, "--label", "y", "--model", "baseline-magpie-rf", "--folds", "0", "--n-estimators", 20,
            "--out", tmp_path/"out", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path/"out"/"results.json").read_text())
    assert res["task"] == "small" and [f["fold"] for f in res["folds"]] == [0]
    assert "seeded random 5-fold" in res["protocol"] and "random_state=0" in res["protocol"], res["protocol"]
    pred = pd.read_csv(tmp_path/"out"/"predictions.csv.gz")
    assert len(pred) == 8 and np.isfinite(pred.y_pred).all()        # 40 rows, 5 folds
    # the seed picks the folds: another seed, another test fold 0
    rc, _, err = cli(capsys, "bench", "--data", csv, "--label", "y", "--model", "mean", "--folds", "0", "--seed", 1,
                     "--out", tmp_path/"o2", "--quiet")
    assert rc == 0, err
    assert set(pd.read_csv(tmp_path/"o2"/"predictions.csv.gz").id) != set(pred.id)


def test_bench_user_csv_own_folds(tmp_path, capsys):
    csv = small_csv(tmp_path/"mine.csv", fold=True)
    rc, _, err = cli(capsys, "bench", "--data", csv, "--label", "y", "--task", "my_alloys", "--model", "mean",
                     "--out", tmp_path/"out", "--quiet")
    assert rc == 0, err
    res = json.loads((tmp_path/"out"/"results.json").read_text())
    assert res["task"] == "my_alloys" and [f["fold"] for f in res["folds"]] == [0, 1, 2, 3]
    assert "folds from column 'fold'" in res["protocol"], res["protocol"]
    pred = pd.read_csv(tmp_path/"out"/"predictions.csv.gz")
    assert (pred.id.astype(int) % 4 == pred.fold).all()              # each row tested in its own fold


@pytest.mark.parametrize("edit, args, needle", [
    (None, [], "['y', 'x_noise']"),                                   # which numeric column is the label?
    (None, ["--label", "yy"], "'yy'"),
    ("Xx0.5Fe0.5", ["--label", "y"], "Xx0.5Fe0.5"),                   # bad composition: named with its CSV line
    (None, ["--label", "y", "--folds", "7"], "fold 7"),
])
def test_bench_user_csv_errors(tmp_path, capsys, edit, args, needle):
    csv = small_csv(tmp_path/"small.csv")
    if edit:
        df = pd.read_csv(csv); df.loc[6, "formula"] = edit; df.to_csv(csv, index=False)
    rc, _, err = cli(capsys, "bench", "--data", csv, "--model", "mean", "--quiet", "--out", tmp_path/"o", *args)
    assert rc == 2 and needle in err and "Traceback" not in err, err
    if edit: assert "row 8" in err, err                        # line 8 of the CSV (header = line 1)


def test_bench_user_csv_clean_language_model(tmp_path, capsys, monkeypatch):
    """A language model on the user's CSV under the clean protocol: the pretraining corpus excludes the CSV's own
    compositions (all folds), taken from the rows given, not from a dataset registry."""
    from mmlit.comp.data import exclusion_set
    csv = small_csv(tmp_path/"small.csv")
    kw = dict(mlm_sources=["shipped_structures"], mlm_max_size=150, mlm_epochs=1, ft_epochs=2, patience=1, batch_size=16,
              device="cpu", num_threads=1, out_dir=str(tmp_path/"stages"))
    monkeypatch.setenv("MMLIT_CACHE", str(tmp_path/"cache"))
    rc, _, err = cli(capsys, "bench", "--data", csv, "--label", "y", "--model", "clm-bert-tiny-mlm+ft", "--folds", "0",
                     "--model-kw", json.dumps(kw), "--out", tmp_path/"out", "--quiet")
    assert rc == 0, err[-3000:]
    res = json.loads((tmp_path/"out"/"results.json").read_text())
    mlm = Path(res["params"]["stage_paths"]["mlm"])
    excluded = set((mlm/"excluded_formulas.txt").read_text().split())
    mine = exclusion_set(pd.read_csv(csv).formula.tolist())
    assert len(mine) == 40 and mine <= excluded, sorted(mine - excluded)   # every row, test folds included
    assert not set((mlm/"corpus_formulas.txt").read_text().split()) & mine
    assert "clean" in res["protocol"] and "all 40 compositions" in res["protocol"], res["protocol"]
    assert "seeded random 5-fold" in res["protocol"]
    assert np.isfinite(pd.read_csv(tmp_path/"out"/"predictions.csv.gz").y_pred).all()
