"The Predictor on a user's table: time limit, bad input, save/load, and the train/predict/screen commands end to end."
import json, re, subprocess, sys, time, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmlit.core import ConfigError, DataError, MmlitInputError
from mmlit.data.core import BadRowsError
from mmlit.predictor import Predictor, parse_time

QUICK = {"tuned-tree": {"max_iter": 100}, "baseline-magpie-rf": {"n_estimators": 30}}


@pytest.fixture(scope="module")
def table():
    from mmlit.data.external import load_ricci_transport
    ricci = load_ricci_transport("S_n")
    rows = np.random.default_rng(3).choice(len(ricci), 260, replace=False)
    return pd.DataFrame({"id": [f"m{i}" for i in range(260)], "formula": [ricci.compositions[i] for i in rows],
                         "S": ricci.y()[rows]})


def test_time_limit_is_respected_by_a_language_model(table):
    # a budget of 1e6 optimiser steps would take hours; the limit must stop it (a tree first, then the language model)
    t0 = time.time()
    p = Predictor("S", verbosity=0).fit(table, time_limit=25, bag_folds=0,
                                        hyperparameters={"tuned-tree": {"max_iter": 100},
                                                         "elm-fast": {"ft_steps": 1_000_000, "ft_epochs": 10_000, "patience": None}})
    took = time.time() - t0
    # the unlimited run takes hours; the tolerance covers featurisation, validation and prediction after the limit on
    # a loaded 2-core CI machine (the limit itself is checked by `timed_out` below, not by this wall-clock bound)
    assert took < 25 + 90, took
    s = p.fit_summary()
    assert "elm-fast" in s["models"] and np.isfinite(s["models"]["elm-fast"]["score_val"])   # stopped, kept its best epoch
    assert p.models_["elm-fast"].result.trainer.timed_out


def test_models_after_the_limit_are_skipped(table):
    p = Predictor("S", verbosity=0).fit(table, time_limit=0.01, bag_folds=0, hyperparameters=QUICK)
    st = {r["model"]: r["status"] for r in p.records_}
    assert st["tuned-tree"] == "ok" and st["baseline-magpie-rf"].startswith("skipped")


@pytest.mark.parametrize("mutate, needle", [
    (lambda t: t.assign(S=t.S.astype(object).where(t.index != 4, "high")), "high"),     # non-numeric label, named
    (lambda t: t.assign(S=t.S.where(t.index != 9)), "row 9"),                            # NaN label
    (lambda t: t.assign(formula=t.formula.where(t.index != 2, "Fe2Zz3")), "Zz"),          # unparsable formula
    (lambda t: t.assign(id=["dup"] * 2 + list(t.id[2:])), "dup"),                        # duplicated ids
])
def test_bad_training_rows_are_named(table, mutate, needle):
    with pytest.raises(MmlitInputError) as e: Predictor("S", verbosity=0).fit(mutate(table), hyperparameters=QUICK)
    assert needle in str(e.value) and isinstance(e.value, ValueError)


def test_bad_rows_dropped_on_request(table):
    bad = table.assign(S=table.S.where(table.index != 9))
    with pytest.warns(Warning, match="9"):
        p = Predictor("S", verbosity=0).fit(bad, hyperparameters={"baseline-magpie-rf": {"n_estimators": 20}}, bag_folds=2, on_bad="drop")
    assert p.fit_summary()["n_train"] == len(table) - 1


def test_empty_and_missing_files(tmp_path, table):
    (tmp_path/"empty.csv").write_text("")
    (tmp_path/"header.csv").write_text("formula,S\n")
    for f, needle in (("empty.csv", "not a readable CSV"), ("header.csv", "no rows"), ("nope.csv", "does not exist")):
        with pytest.raises(DataError, match=needle): Predictor("S").fit(tmp_path/f)
    with pytest.raises(ConfigError, match="did you mean 'S'"): Predictor("s_n").fit(table)


def test_save_load_identical_and_version_checks(tmp_path, table):
    p = Predictor("S", path=tmp_path/"m", verbosity=0).fit(table, hyperparameters=QUICK, bag_folds=3)
    assert (tmp_path/"m"/"predictor.json").exists()            # saved by fit (after each model)
    q = Predictor.load(tmp_path/"m")
    new = ["Bi2Te3", "PbTe", "Mg2Si", "Fe0.7Cr0.18Ni0.1C0.0004Mn0.0196"]
    a, sa = p.predict(new, return_std=True); b, sb = q.predict(new, return_std=True)
    np.testing.assert_array_equal(a, b); np.testing.assert_array_equal(sa, sb)
    assert not any(f.suffix in (".pkl", ".pickle", ".joblib") for f in (tmp_path/"m").rglob("*"))
    meta = json.loads((tmp_path/"m"/"predictor.json").read_text())
    (tmp_path/"m"/"predictor.json").write_text(json.dumps({**meta, "format": 0, "mmlit_version": "0.0.0"}))
    with pytest.raises(ConfigError, match="0.0.0"): Predictor.load(tmp_path/"m")


def test_extract_embedding_needs_a_language_model(table):
    p = Predictor("S", verbosity=0).fit(table, hyperparameters={"baseline-magpie-rf": {"n_estimators": 20}}, bag_folds=2)
    with pytest.raises(ConfigError, match="embedding"): p.extract_embedding(["NaCl"])
    q = Predictor("S", verbosity=0).fit(table, bag_folds=0, hyperparameters={"elm-fast": {"ft_steps": 20, "ft_epochs": 2}})
    e = q.extract_embedding(["NaCl", "Fe2O3"])
    assert e.shape[0] == 2 and e.shape[1] >= 16 and np.isfinite(e).all()


def test_parse_time():
    assert parse_time("2m") == 120 and parse_time(None) is None
    with pytest.raises(ConfigError): parse_time("-3s")


def run(*args, timeout=400):
    cmd = [sys.executable, "-c", "import sys; from mmlit.cli import main; sys.exit(main())", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_cli_train_predict_screen_end_to_end(tmp_path, table):
    table.to_csv(tmp_path/"mine.csv", index=False)
    r = run("train", "--data", tmp_path/"mine.csv", "--label", "S", "--models", "tuned-tree,baseline-magpie-rf",
            "--bag-folds", "3", "--out", tmp_path/"model", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "tuned-tree" in r.stdout and (tmp_path/"model"/"leaderboard.csv").exists()
    pd.DataFrame({"formula": ["Bi2Te3", "??", "PbTe"]}).to_csv(tmp_path/"new.csv", index=False)
    r = run("predict", "--model", tmp_path/"model", "--data", tmp_path/"new.csv", "--out", tmp_path/"p.csv", "--quiet")
    assert r.returncode == 0, r.stderr
    out = pd.read_csv(tmp_path/"p.csv")
    assert list(out.columns) == ["formula", "prediction", "std", "error"]
    assert out.prediction.isna().tolist() == [False, True, False] and (out["std"].dropna() > 0).all()
    r = run("predict", "--model", tmp_path/"model", "--data", tmp_path/"new.csv", "--out", tmp_path/"p2.csv", "--strict")
    assert r.returncode == 2 and "??" in r.stderr and "Traceback" not in r.stderr
    r = run("screen", "--model", tmp_path/"model", "--elements", "Li,Fe,P,O", "--max-atoms", "8", "--top", "10",
            "--rank-by", "ucb", "--out", tmp_path/"scr", "--quiet")
    assert r.returncode == 0, r.stderr
    scr = pd.read_csv(next((tmp_path/"scr").glob("*.csv")))
    assert 0 < len(scr) <= 10 and any((tmp_path/"scr").glob("*.png"))
    from pymatgen.core import Composition
    trained = {Composition(f).reduced_formula for f in table.formula}
    assert not set(scr.composition) & trained
    for f, ox in zip(scr.composition, scr.oxidation_states):    # charge-neutral under the first listed assignment
        charge = {el: int(q) for el, q in re.findall(r"([A-Z][a-z]?)([+-]\d+)", ox.split(";")[0])}
        assert sum(n * charge[str(el)] for el, n in Composition(f).items()) == 0, (f, ox)
    r = run("train", "--data", tmp_path/"mine.csv", "--label", "SS", "--out", tmp_path/"x")
    assert r.returncode == 2 and "did you mean 'S'" in r.stderr and "Traceback" not in r.stderr
    for cmd in ("train", "predict", "screen"):
        h = run(cmd, "--help"); assert h.returncode == 0 and "--out" in h.stdout


def test_structure_column_adds_crystal_graph_models(tmp_path):
    # rock-salt cells of five formulas, each strained: the target (volume per atom) varies within a formula, which only
    # a model reading the structure can see
    from pymatgen.core import Structure, Lattice
    rng = np.random.default_rng(0)
    cells = [Structure.from_spacegroup("Fm-3m", Lattice.cubic(a0 * s), [m, x], [[0, 0, 0], [0.5, 0.5, 0.5]])
             for (a0, m, x) in [(5.64, "Na", "Cl"), (4.21, "Mg", "O"), (6.29, "K", "Cl"), (4.81, "Ca", "O"), (5.16, "Sr", "O")]
             for s in rng.uniform(0.95, 1.05, 16)]
    df = pd.DataFrame({"cif": [c.to(fmt="cif") for c in cells], "v": [c.volume / len(c) for c in cells]})
    p = Predictor("v", verbosity=0).fit(df, hyperparameters={"baseline-magpie-rf": {"n_estimators": 20}, "cgcnn": {"epochs": 4}},
                                        bag_folds=2)
    assert p.uses_structures and p.composition is None and set(p.models_) == {"baseline-magpie-rf", "cgcnn"}
    mu = p.predict(df.head(5))
    assert np.isfinite(mu).all()
    p.save(tmp_path/"s")
    with pytest.raises(ConfigError, match="structure column"): p.predict(["NaCl"], model="cgcnn")
    p.weights_, p.best_ = {"cgcnn": 1.0}, "cgcnn"      # as if the graph model had won the blend
    with pytest.warns(UserWarning, match="composition-only"):
        assert np.isfinite(p.predict(["NaCl", "MgO"])).all()        # no structures: the best composition model answers
    np.testing.assert_allclose(Predictor.load(tmp_path/"s").predict(df.head(5)), mu, rtol=1e-6)
    with pytest.raises(ConfigError, match="structure column"):
        Predictor("v", verbosity=0).fit(df.assign(formula=[c.composition.reduced_formula for c in cells]).drop(columns="cif"),
                                        hyperparameters=["cgcnn"])


@pytest.fixture(scope="module")
def own_media(tmp_path_factory):
    "A user's CSV: formulas, a description and a picture file (relative path) per row; row 2 lacks a text, row 4 a picture."
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mmlit.data.structures import load_structure_set
    d = tmp_path_factory.mktemp("media")
    structs = [s for s in load_structure_set("pymatgen_structures", progress=False).structures if s.is_ordered]
    rows = []
    for i, s in enumerate(structs):
        plt.imsave(d/f"{i}.png", np.outer(np.arange(8), s.lattice.abc).astype(float))   # a tiny picture per material
        rows.append(dict(formula=s.composition.reduced_formula, pic=f"{i}.png", y=s.density,
                         notes=f"{s.composition.reduced_formula} has {len(s)} atoms in its cell, density {s.density:.2f} g/cm3."))
    df = pd.DataFrame(rows)
    df.loc[2, "notes"], df.loc[4, "pic"] = "", np.nan
    df.to_csv(d/"mine.csv", index=False)
    return d, df

TINY_FUSION = {"fusion-gated": {"epochs": 2, "batch_size": 8, "modality_kw": {"image": {"size": 16, "widths": [8]}}}}

def test_text_and_image_columns_train_a_fusion_family(own_media):
    d, df = own_media
    p = Predictor("y", verbosity=0).fit(d/"mine.csv", hyperparameters=TINY_FUSION, bag_folds=2)   # bagged: an Ensemble of fusion models
    assert (p.text, p.image, p.uses_structures) == ("notes", "pic", False)
    assert p.info_["modalities"] == ["composition", "text", "image"] and set(p.models_) == {"fusion-gated"}
    mu = p.predict(d/"mine.csv")
    assert np.isfinite(mu).all()                                           # rows 2 and 4 lack a modality: masked
    p.save(d/"saved")
    q = Predictor.load(d/"saved")
    assert (q.text, q.image) == ("notes", "pic")
    np.testing.assert_allclose(q.predict(d/"mine.csv"), mu, rtol=1e-5)
    assert np.isfinite(q.predict(df[["formula"]])).all()                   # no text or image column at all: formulas suffice
    other = df.assign(pic=[str(d/f) if isinstance(f, str) else f for f in df.pic])   # a DataFrame: absolute paths
    np.testing.assert_allclose(q.predict(other), mu, rtol=1e-5)

def test_bad_text_and_image_cells_are_named(own_media):
    d, df = own_media
    df.assign(pic=df.pic.where(df.index != 6, "nowhere/x.png")).to_csv(d/"bad.csv", index=False)
    with pytest.raises(BadRowsError, match=r"row 8: image '.*nowhere/x.png': no such file"):   # CSV line 8
        Predictor("y", verbosity=0).fit(d/"bad.csv", hyperparameters=["baseline-magpie-rf"])
    with pytest.warns(UserWarning, match="row 8"):
        p = Predictor("y", verbosity=0).fit(d/"bad.csv", hyperparameters={"baseline-magpie-rf": {"n_estimators": 10}},
                                            bag_folds=0, on_bad="drop")
    assert p.info_["n_train"] + p.info_["n_valid"] == len(df) - 1
    with pytest.raises(BadRowsError, match="row 1: not a text: float 3.5"):
        Predictor("y", text="notes", verbosity=0).fit(df[["formula", "notes", "y"]].assign(notes=df.notes.where(df.index != 1, 3.5)),
                                                       hyperparameters=["baseline-magpie-rf"])
    with pytest.raises(ConfigError, match="need crystal structures"):   # no text column: texts would be robocrys descriptions
        Predictor("y", verbosity=0).fit(df[["formula", "y"]], hyperparameters={"fusion-concat": {"modalities": ["text"]}})

def test_presets_add_fusion_families_for_extra_columns(own_media):
    d, _ = own_media
    tried = lambda presets: set(Predictor("y", verbosity=0).fit(d/"mine.csv", presets=presets, time_limit=1).leaderboard().model)
    assert "fusion-concat" in tried("medium") and not any(m.startswith("fusion-") for m in tried("fast"))   # (skipped: time limit)

def test_each_image_is_decoded_once(own_media, monkeypatch):
    "A bagged fusion fit featurizes the pictures in every fold, and prediction reads the table again: each file is decoded once per table."
    import PIL.Image
    d, df = own_media
    opened, real_open = [], PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda f, *a, **k: opened.append(Path(f).name) or real_open(f, *a, **k))
    p = Predictor("y", verbosity=0).fit(d/"mine.csv", hyperparameters=TINY_FUSION, bag_folds=2)
    pics = sorted(df.pic.dropna())
    assert len(pics) == len(df) - 1 and sorted(opened) == pics    # while the table was checked; not again in the 2 folds
    assert p.info_["image_size"] == 16 and p.info_["notes"] == []   # decoded at the size the fusion family reads; both columns used
    opened.clear()
    assert np.isfinite(p.predict(d/"mine.csv")).all()
    assert sorted(opened) == pics


def test_classification_with_text_and_image_columns_says_fusion_is_skipped(own_media):
    "Fusion families fit regression only: on a binary problem a preset skips them and says so; the other families predict classes."
    d, df = own_media
    cls = pd.read_csv(d/"mine.csv").assign(dense=lambda t: (t.y > t.y.median()).astype(int)).drop(columns="y")
    cls.to_csv(d/"cls.csv", index=False)
    with pytest.warns(UserWarning, match=r"fusion families \['fusion-concat'\] skipped: they fit regression only, and this is binary"):
        p = Predictor("dense", verbosity=0).fit(d/"cls.csv", presets="medium", time_limit=1)   # the first family, then the limit
    s = p.fit_summary()
    assert s["problem_type"] == "binary" and (p.text, p.image) == ("notes", "pic")
    assert any("skipped" in n for n in s["notes"]) and any("['notes', 'pic'] not used" in n for n in s["notes"])
    assert not any(m.startswith("fusion-") for m in p.leaderboard().model)
    assert set(np.unique(p.predict(d/"cls.csv"))) <= {0.0, 1.0}
    proba = p.predict_proba(d/"cls.csv")
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert ((proba >= 0) & (proba <= 1)).all().all()


def test_describe_true_writes_robocrys_texts_for_a_fusion_family(tmp_path, monkeypatch):
    """`describe=True`: robocrys describes the structures (cached under `MMLIT_CACHE`, here empty at the start) and a fusion
    family reads the descriptions next to the crystal graphs and compositions. Four small structures shipped with
    pymatgen, each on two rows (robocrys describes each distinct structure once)."""
    monkeypatch.setenv("MMLIT_CACHE", str(tmp_path/"cache"))
    from mmlit.data.structures import load_structure_set
    structs = sorted((s for s in load_structure_set("pymatgen_structures", progress=False).structures if s.is_ordered), key=len)[:4]
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # pymatgen's CIF writer notes repeated site labels
        df = pd.DataFrame({"cif": [s.to(fmt="cif") for s in structs] * 2, "y": [s.density for s in structs] * 2 + rng.normal(0, 0.1, 8)})
    p = Predictor("y", verbosity=0).fit(df, hyperparameters={"fusion-concat": {"epochs": 2, "batch_size": 4}}, bag_folds=0, describe=True)
    assert p.info_["modalities"] == ["composition", "graph", "text"]
    files = list((tmp_path/"cache"/"descriptions").rglob("*.json"))
    assert files and all("fastminerals" in f.parent.parent.name for f in files)   # the reduce-once matcher (same texts)
    made = [json.loads(f.read_text()) for f in files]
    assert len(made) == 4 and all(r["source"] == "robocrys" and len(r["description"].split()) > 10 for r in made), made
    rec = {r["model"]: r for r in p.records_}["fusion-concat"]
    assert rec["status"] == "ok" and np.isfinite(rec["score_val"])
    assert np.isfinite(p.predict(df)).all()


def test_blend_not_kept_is_recorded_as_such():
    "A blend no better than the best family is recorded (status, weights) but the best family is what predicts."
    rng = np.random.default_rng(0)
    y = np.arange(30.0)
    good, noisy = y + 0.01 * rng.normal(size=30), y + 5 * rng.normal(size=30)
    p = Predictor("y", verbosity=0)
    p.eval_metric, p.models_ = "mae", {"good": object(), "noisy": object()}
    p.records_ = [dict(model="good", score_val=float(np.abs(good - y).mean())), dict(model="noisy", score_val=float(np.abs(noisy - y).mean()))]
    p._blend({"good": (good, None), "noisy": (noisy, None)}, y)
    rec = p.records_[-1]
    assert rec["model"] == "weighted-ensemble" and rec["status"].startswith("not kept") and "'good'" in rec["status"]
    assert p.best_ == "good" and p.weights_ == {"good": 1.0}
    assert p._blend_weights() == rec["weights"] and set(rec["weights"]) <= {"good", "noisy"}
