"Template crystal-structure prediction (mmlit.exkt.csp): tiny pools, substitution ranking, failures, cache, CLI."
import json, shutil, subprocess, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Lattice, Structure

from mmlit.core import ConfigError, DataError
from mmlit.exkt.csp import (CSPResult, SubstitutionScorer, TemplatePredictor, evaluate_csp, failure_reason,
                            load_templates, match_rank, write_candidates)

MMLIT = shutil.which("mmlit") or str(Path(sys.executable).parent/"mmlit")
CMD = [MMLIT] if Path(MMLIT).exists() else [sys.executable, "-c", "import sys; from mmlit.cli import main; sys.exit(main())"]


def rocksalt(a, b, x): return Structure.from_spacegroup("Fm-3m", Lattice.cubic(x), [a, b], [[0, 0, 0], [.5, .5, .5]])
def zincblende(a, b, x): return Structure.from_spacegroup("F-43m", Lattice.cubic(x), [a, b], [[0, 0, 0], [.25, .25, .25]])
def cscl(a, b, x): return Structure(Lattice.cubic(x), [a, b], [[0, 0, 0], [.5, .5, .5]])
def perovskite(a, b, x, c):
    return Structure(Lattice.cubic(c), [a, b, x, x, x], [[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])

POOL = [rocksalt("Na", "Cl", 5.64), zincblende("Zn", "S", 5.41), perovskite("Sr", "Ti", "O", 3.905)]
IDS = ["NaCl-rs", "ZnS-zb", "SrTiO3-pv"]


@pytest.fixture(scope="module")
def tp(): return TemplatePredictor(POOL, IDS)


def test_rocksalt_template_predicts_kcl(tp):
    r = tp.predict_one("KCl", top_k=2)
    assert r.ok and r.candidates[0].provenance["template_id"] == "NaCl-rs"
    assert r.candidates[0].provenance["substitution"] == {"Na": "K", "Cl": "Cl"}
    strict = StructureMatcher(stol=0.2, ltol=0.3, angle_tol=5)
    assert strict.fit(r.candidates[0].structure, rocksalt("K", "Cl", 6.29))
    assert not strict.fit(r.candidates[1].structure, rocksalt("K", "Cl", 6.29))   # the zinc-blende alternative
    v = r.candidates[0].structure.volume / len(r.candidates[0].structure)
    assert abs(v - 6.29**3 / 8) / (6.29**3 / 8) < 0.1   # rescaled to KCl's (31.1 Å3/atom), not NaCl's (22.4)
    for c in r.candidates:
        assert c.structure.composition.reduced_composition == Composition("KCl")
        d = c.structure.distance_matrix[np.triu_indices(len(c.structure), 1)]
        assert d.min() > 1.5


def test_perovskite_sites_follow_the_ions(tp):
    "BaZrO3 on the SrTiO3 template: Ba (2+, large) on the A site, Zr (4+) on the B site."
    r = tp.predict_one("BaZrO3", top_k=1)
    assert r.candidates[0].provenance["substitution"] == {"Sr": "Ba", "Ti": "Zr", "O": "O"}
    assert StructureMatcher().fit(r.candidates[0].structure, perovskite("Ba", "Zr", "O", 4.19))


@pytest.mark.parametrize("method", ["prob", "embedding", "hybrid"])
def test_substitution_ranking(method):
    sc = SubstitutionScorer(method)
    a = sc.assignments(Composition("NaBr"), Composition("KCl"))
    assert a[0][1] == {"K": "Na", "Cl": "Br"} and a[0][0] >= a[1][0] and len(a) == 2
    assert sc.pair("Na", 1, "K", 1) > sc.pair("Na", 1, "Cl", -1)
    # four elements with equal amounts: all 4! amount-preserving bijections are enumerated
    assert len(sc.assignments(Composition("LiFeMnO4"), Composition("NaCoNiO4"))) == 6


def test_failures_are_recorded_and_the_batch_goes_on(tp):
    rs = tp.predict(["KBr", "Fe2O3", "Na0.5Cl0.5", "Xx2", "CaO"], top_k=1, progress=False)
    assert [r.ok for r in rs] == [True, False, False, False, True]
    assert failure_reason(rs[1].error) == "no template with anonymized formula"
    assert "fractional" in rs[2].error and "Xx" in rs[3].error


def test_time_budget_failure_is_not_cached(tp, tmp_path):
    r = tp.predict(["KBr"], top_k=1, time_budget=0, cache=tmp_path, progress=False)[0]
    assert not r.ok and "time budget" in r.error
    assert not list(tmp_path.rglob("*.json"))
    r = tp.predict(["KBr"], top_k=1, cache=tmp_path, progress=False)[0]
    assert r.ok and not r.cached and len(list(tmp_path.rglob("*.json"))) == 1


def test_cache_reuse(tp, tmp_path, monkeypatch):
    first = tp.predict(["KBr", "Fe2O3"], top_k=2, cache=tmp_path, progress=False)
    def boom(*a, **k): raise AssertionError("predicted again instead of reading the cache")
    monkeypatch.setattr(TemplatePredictor, "_predict", boom)
    again = tp.predict(["KBr", "Fe2O3"], top_k=2, cache=tmp_path, progress=False)
    assert [r.cached for r in again] == [True, True] and again[1].error == first[1].error
    assert again[0].candidates[0].structure == first[0].candidates[0].structure
    assert again[0].candidates[0].provenance == first[0].candidates[0].provenance
    assert tp.predict(["KBr"], top_k=3, cache=tmp_path, progress=False)[0].error   # another top_k: not that entry


def test_cache_key_follows_configuration():
    a, b = TemplatePredictor(POOL, IDS), TemplatePredictor(POOL[:2], IDS[:2])
    assert a.config_key() == TemplatePredictor(POOL, IDS).config_key()
    assert a.config_key() != b.config_key() != TemplatePredictor(POOL, IDS, rank="energy").config_key()


def test_parallel_equals_serial(tp):
    fs = ["KBr", "LiF", "GaAs", "Fe2O3"]
    ser = tp.predict(fs, top_k=2, progress=False)
    par = tp.predict(fs, top_k=2, n_jobs=2, progress=False)
    assert [r.error for r in ser] == [r.error for r in par]
    for s, p in zip(ser, par):
        assert [c.provenance["template_id"] for c in s.candidates] == [c.provenance["template_id"] for c in p.candidates]


def test_chgnet_energy_and_relaxation_ranking():
    r = TemplatePredictor(POOL, IDS, rank="energy", n_relax=2).predict_one("KCl", top_k=2)
    es = [c.energy_per_atom for c in r.candidates]
    assert all(e is not None and -6 < e < -1 for e in es) and es == sorted(es)
    assert r.candidates[0].provenance["template_id"] == "NaCl-rs"   # CHGNet also prefers rock salt for KCl
    r = TemplatePredictor(POOL[:1], IDS[:1], rank="relax", n_relax=1, steps=5).predict_one("KCl", top_k=1)
    assert 1 <= r.candidates[0].provenance["relax_steps"] <= 6 and r.candidates[0].energy_per_atom < 0


def test_evaluate_and_match_rank(tp):
    truth = [rocksalt("K", "Cl", 6.29), cscl("Cs", "Cl", 4.12), rocksalt("Mg", "O", 4.21)]
    df, s = evaluate_csp(tp, ["KCl", "CsCl", "Fe2O3"], truth, top_k=2, progress=False)
    assert df.rank_strict[0] == 0 and df.rank_loose[1] == -1 and df.rank_loose[2] == -1
    assert s["match@1_loose"] == pytest.approx(100 / 3) and s["failures"] == {"no template with anonymized formula": 1}
    assert s["rmse@1_loose"] is not None and 0 <= s["rmse@1_loose"] < 0.5
    assert match_rank(CSPResult("KCl"), truth[0]) == (-1, pytest.approx(np.nan, nan_ok=True))
    with pytest.raises(DataError): evaluate_csp(tp, ["KCl"], truth, progress=False)


def test_bad_configuration():
    with pytest.raises(ConfigError, match="wiggle"): TemplatePredictor(POOL, rank="wiggle")
    with pytest.raises(DataError): TemplatePredictor([])
    with pytest.raises(ConfigError, match="nonsense_set"): load_templates("nonsense_set")


def test_load_templates_from_cifs(tmp_path):
    for s, i in zip(POOL, IDS): s.to(filename=str(tmp_path/f"{i}.cif"))
    pool, ids = load_templates(str(tmp_path))
    assert sorted(ids) == sorted(IDS) and len(pool) == 3
    pool, ids = load_templates(str(tmp_path), exclude_ids={"ZnS-zb"})
    assert "ZnS-zb" not in ids and len(pool) == 2


def run(*args, timeout=240):
    return subprocess.run(CMD + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


def test_cli_end_to_end(tmp_path):
    (tmp_path/"pool").mkdir()
    for s, i in zip(POOL, IDS): s.to(filename=str(tmp_path/"pool"/f"{i}.cif"))
    pd.DataFrame({"formula": ["KBr", "BaZrO3", "Fe2O3"], "other": [1, 2, 3]}).to_csv(tmp_path/"f.csv", index=False)
    r = run("csp", "--data", tmp_path/"f.csv", "--column", "formula", "--top", "2", "--templates", tmp_path/"pool",
            "--rank", "similarity", "--out", tmp_path/"out", "--quiet")
    assert r.returncode == 0, r.stderr
    t = pd.read_csv(tmp_path/"out"/"candidates.csv")
    assert t.formula.tolist() == ["KBr", "KBr", "BaZrO3", "BaZrO3", "Fe2O3"]
    assert (tmp_path/"out"/"BaZrO3_1.cif").exists() and "no template" in t.error.iloc[-1]
    s = Structure.from_file(tmp_path/"out"/"BaZrO3_1.cif")
    assert s.composition.reduced_formula == "BaZrO3"
    assert "2/3 compositions got structures" in r.stdout


def test_cli_errors(tmp_path, capsys):
    "Bad input ends with exit status 2 and the bad value named, no traceback (in-process: the dispatch is `mmlit.cli.main`)."
    from mmlit.cli import main
    assert main(["csp", "--formula", "KCl", "--data", "x.csv"]) == 2
    assert "exactly one" in capsys.readouterr().err
    assert main(["csp", "--formula", "KCl", "--templates", "nonsense_set", "--out", str(tmp_path)]) == 2
    assert "nonsense_set" in capsys.readouterr().err
    assert main(["csp", "--data", str(tmp_path/"missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err


# ---- random symmetric structures (pyxtal) where no template fits ----
import importlib.util
from mmlit.exkt.csp import ChainPredictor, RandomPredictor, make_predictor
from mmlit.exkt.relax import min_distance_ratio

needs_pyxtal = pytest.mark.skipif(importlib.util.find_spec("pyxtal") is None, reason="pyxtal is not installed")


@needs_pyxtal
def test_random_fallback_when_no_template_fits():
    "Fe2O3 has no A2B3 template in the pool: the chain answers with pyxtal cells of exactly Fe2O3, atoms not too close."
    pred = make_predictor((POOL, IDS), rank="energy", n_relax=3, fallback=True)
    kcl, fe2o3 = pred.predict(["KCl", "Fe2O3"], top_k=3, progress=False)
    assert kcl.candidates[0].provenance["method"] == "template"
    assert fe2o3.ok and {c.provenance["method"] for c in fe2o3.candidates} == {"pyxtal"}
    for c in fe2o3.candidates:
        s = c.structure
        assert s.composition.reduced_composition == Composition("Fe2O3") and len(s) <= 20
        assert min_distance_ratio(s) >= 0.6
        d = s.distance_matrix[np.triu_indices(len(s), 1)]
        assert d.min() > 1.2 and s.volume / len(s) < 60   # neither overlapping atoms nor a gas
    es = [c.energy_per_atom for c in fe2o3.candidates]
    assert all(e is not None for e in es) and es == sorted(es)


@needs_pyxtal
def test_random_predictor_is_deterministic_and_records_failure():
    a = RandomPredictor(n_samples=3, max_atoms=10, rank="none").predict_one("MgAl2O4", top_k=3)
    b = RandomPredictor(n_samples=3, max_atoms=10, rank="none").predict_one("MgAl2O4", top_k=3)
    assert a.error is None or "pyxtal found no valid structure" in a.error
    assert [c.structure for c in a.candidates] == [c.structure for c in b.candidates]
    r = ChainPredictor(TemplatePredictor(POOL, IDS), RandomPredictor(max_atoms=4)).predict_one("Fe2O3")
    assert not r.ok and "no template with anonymized formula A2B3" in r.error and "exceed max_atoms=4" in r.error
    with pytest.raises(ConfigError, match="similarity"): RandomPredictor(rank="similarity")


def test_predictor_with_exkt_predicts_formulas_without_structures(tmp_path):
    "Predictor(exkt=...) trains exkt-cgcnn on a structure column; formulas alone then go through predicted structures."
    from mmlit.predictor import Predictor
    pairs = [("Li", "F", 4.03), ("Na", "Cl", 5.64), ("K", "Cl", 6.29), ("Rb", "Cl", 6.59), ("Na", "F", 4.63),
             ("K", "F", 5.35), ("Li", "Cl", 5.13), ("Na", "Br", 5.97), ("Mg", "O", 4.21), ("Ca", "O", 4.81),
             ("Sr", "O", 5.16), ("Ba", "O", 5.52), ("Ca", "S", 5.69), ("Sr", "S", 6.02), ("Li", "Br", 5.50), ("Rb", "F", 5.65)]
    ss = [rocksalt(a, b, x).get_primitive_structure() for a, b, x in pairs]
    df = pd.DataFrame({"formula": [s.composition.reduced_formula for s in ss], "cif": [s.to(fmt="cif") for s in ss],
                       "a": [x for *_, x in pairs]})
    p = Predictor("a", path=tmp_path/"pred", verbosity=0).fit(
        df, hyperparameters=["baseline-magpie-rf"], exkt=dict(epochs=2, batch_size=8), bag_folds=0)
    assert set(p.models_) == {"baseline-magpie-rf", "exkt-cgcnn"}
    ex = p.predict(["KBr", "MgS"], model="exkt-cgcnn")   # no structure column: allowed for exKT
    assert np.isfinite(np.asarray(ex)).all() and p.models_["exkt-cgcnn"].fallback_share_ == 0
    back = Predictor.load(tmp_path/"pred")
    assert np.allclose(np.asarray(back.predict(["KBr", "MgS"], model="exkt-cgcnn")), np.asarray(ex), atol=1e-4)
    with pytest.raises(ConfigError, match="exkt=True"):
        Predictor("a", verbosity=0).fit(df[["formula", "a"]], hyperparameters=["baseline-magpie-rf"], exkt=True)


# ---- the structure predictor's confidence and the mixture of experts over imKT / exKT ----
from mmlit.exkt.moe import MixtureOfExperts, mae_by_bins, paired_bootstrap_mae
from mmlit.exkt.pipeline import CONFIDENCE_COLUMNS, csp_confidence


def test_csp_confidence_from_template_candidates(tp):
    "Two candidates give a similarity margin; a composition without template is a row of NaNs with 0 templates."
    res = tp.predict(["KCl", "Fe2O3"], top_k=2, progress=False)
    conf = csp_confidence(res, tp)
    assert list(conf.columns) == list(CONFIDENCE_COLUMNS) and len(conf) == 2
    assert conf.structure_predicted.tolist() == [True, False]
    assert conf.similarity[0] == res[0].candidates[0].provenance["similarity"]
    if len(res[0].candidates) > 1: assert conf.similarity_margin[0] >= 0
    assert conf.n_templates[0] > 0 and conf.n_templates[1] == 0
    assert conf.iloc[1][["similarity", "votes", "energy_per_atom"]].isna().all()


def _toy_experts(rng, n):
    "Expert A is exact when the confidence c > 0 and off by 1 otherwise; expert B the reverse."
    c, y = rng.normal(size=n), rng.normal(size=n)
    off = rng.choice([-1.0, 1.0], n)
    preds = np.stack([np.where(c > 0, y, y + off), np.where(c > 0, y + off, y)], 1)
    return pd.DataFrame({"c": c, "noise": rng.normal(size=n)}), preds, y


def test_moe_learns_to_pick_the_confident_expert():
    rng = np.random.default_rng(1)
    (cf, pf, yf), (ct, pt, yt) = _toy_experts(rng, 200), _toy_experts(rng, 200)
    moe = MixtureOfExperts(epochs=30, lr=0.3, batch_size=80).fit(cf, pf, yf, ["A", "B"])
    p, w = moe.predict(ct, pt), moe.weights(ct)
    assert p.shape == (200,) and w.shape == (200, 2) and np.allclose(w.sum(1), 1)
    mae = lambda q: float(np.abs(q - yt).mean())
    assert mae(p) < 0.15 and min(mae(pt[:, 0]), mae(pt[:, 1])) > 0.4
    assert w[ct.c > 0.5, 0].mean() > 0.9 and w[ct.c < -0.5, 1].mean() > 0.9
    r = paired_bootstrap_mae(yt, p, pt[:, 0], n_boot=500)
    assert r["lo"] <= r["diff"] <= r["hi"] < 0
    t = mae_by_bins(yt, {"A": pt[:, 0], "moe": p}, ct.c, n_bins=2)
    assert int(t.n.sum()) == 200 and t.A.iloc[1] < t.A.iloc[0]


def test_moe_bad_inputs_name_the_value():
    rng = np.random.default_rng(2)
    cf, pf, yf = _toy_experts(rng, 40)
    with pytest.raises(DataError, match=r"\(40, 1\)"): MixtureOfExperts().fit(cf, pf[:, :1], yf)
    with pytest.raises(DataError, match="12 rows"): MixtureOfExperts().fit(cf, pf[:12], yf)
    with pytest.raises(DataError, match="'missing'"): MixtureOfExperts(features=["c", "missing"]).fit(cf, pf, yf)
    with pytest.raises(DataError, match=r"row\(s\) \[3\]"):
        MixtureOfExperts().fit(cf, np.where(np.arange(40)[:, None] == 3, np.inf, pf), yf)
    with pytest.raises(ConfigError, match="fit"): MixtureOfExperts().predict(cf, pf)
    with pytest.raises(ConfigError, match="level"): paired_bootstrap_mae(yf, pf[:, 0], pf[:, 1], level=95)


def test_exkt_moe_is_a_registry_model():
    from mmlit.registry import make_model, model_names
    m = make_model("exkt-moe", seed=1, progress=False, epochs=2)
    assert "exkt-moe" in model_names(needs_structures=True)
    assert m.expert_names == ["tuned-tree", "exkt"] and m.get_params()["epochs"] == 2 and m.seed == 1
    with pytest.raises(ConfigError, match="fit"): m.predict(["KBr"])
