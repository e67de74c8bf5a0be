"""Composition recipes (issue #9): element tokens through the imKT stages on a user's CSV, the heads on toy data,
seed ensembles, dopant visibility after training, the tuned tree, and the lean-defaults benchmark script."""
import json, subprocess, sys
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmlit.data.core import Dataset
from mmlit.registry import make_model
from mmlit.comp.recipes import make_recipe, recipe_config
from test_registry import small_csv, cli, ALLOYS

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(backbone_overrides={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}, ft_steps=60,
            ft_epochs=12, patience=None, device="cpu", num_threads=1)


def toy(zero_frac=0.4, n_metals=14) -> Dataset:
    "Binary oxides; y = 3 * oxygen fraction, set to exactly 0 for the most oxygen-rich (a point mass at 0)."
    metals = ["Li", "Na", "K", "Mg", "Ca", "Sr", "Ba", "Al", "Ga", "In", "Ti", "Zr", "Fe", "Co", "Ni", "Cu"][:n_metals]
    rows = list(product(metals, range(1, 5), range(1, 6)))
    forms = [f"{m}{a}O{b}" for m, a, b in rows]
    y = np.array([3 * b / (a + b) for _, a, b in rows])
    y[y >= np.quantile(y, 1 - zero_frac)] = 0.0
    return Dataset(name="toy_gap", ids=forms, compositions=forms, targets=pd.DataFrame({"gap": y}))


def test_elm_recipe_clean_protocol_on_user_csv(tmp_path, capsys, monkeypatch):
    "Element tokens through MLM + finetuning on a user's CSV: the corpus excludes the CSV's rows; stages keep the encoding."
    from mmlit.comp.data import exclusion_set
    from mmlit.comp.tokenizer import load_tokenizer, ElementTokenizer
    csv = small_csv(tmp_path/"small.csv")
    kw = dict(TINY, stages="mlm+ft", mlm_sources=["shipped_structures"], mlm_max_size=150, mlm_epochs=1,
              out_dir=str(tmp_path/"stages"))
    monkeypatch.setenv("MMLIT_CACHE", str(tmp_path/"cache"))
    rc, _, err = cli(capsys, "bench", "--data", csv, "--label", "y", "--model", "elm-fast", "--folds", "0",
                     "--model-kw", json.dumps(kw), "--out", tmp_path/"out", "--quiet")
    assert rc == 0, err[-3000:]
    res = json.loads((tmp_path/"out"/"results.json").read_text())
    assert res["model"] == "elm-fast" and "clean" in res["protocol"] and "all 40 compositions" in res["protocol"]
    mlm = Path(res["params"]["stage_paths"]["mlm"])
    assert exclusion_set(pd.read_csv(csv).formula.tolist()) <= set((mlm/"excluded_formulas.txt").read_text().split())
    assert isinstance(load_tokenizer(mlm), ElementTokenizer)
    assert np.isfinite(pd.read_csv(tmp_path/"out"/"predictions.csv.gz").y_pred).all()


def test_zero_gate_magpie_head_and_robust_loss():
    "On a target with 40 % exact zeros, 'auto' switches the gate on and the model predicts exact zeros."
    ds = toy()
    te = np.random.default_rng(0).random(len(ds)) < 0.2
    tr, ts = ds.subset(np.flatnonzero(~te)), ds.subset(np.flatnonzero(te))
    m = make_model("elm-fast", progress=False, **{**TINY, "ft_steps": 300, "ft_epochs": 30}).fit(tr)
    model = m.result.model
    assert model.config.zero_gate and model.config.n_features == 132 and model.config.regression_loss == "l1"
    assert model.head.feature_std.min() > 0 and model.head.zero_point.item() < 0      # standardised raw 0 is below the mean
    p = m.predict(ts)
    assert (p == 0).sum() > 0 and np.isfinite(p).all()
    assert np.abs(p - ts.y()).mean() < np.abs(ts.y() - tr.y().mean()).mean()       # learns something
    h = m.result.history
    assert h.valid_mae.min() < h.valid_mae.iloc[0]
    r = make_model("elm-fast", progress=False, loss="robust_l1", zero_gate=False, head_features=None, **TINY).fit(tr)
    assert r.result.model.config.regression_loss == "robust_l1" and not r.result.model.config.zero_gate
    assert np.isfinite(r.predict(ts)).all()


def test_dopant_changes_the_fitted_prediction():
    "A 0.04 % carbon addition reaches the prediction of a trained element-token model (no Magpie head to carry it)."
    ds = toy(zero_frac=0.0)
    m = make_model("elm-fast", progress=False, head_features=None, **TINY).fit(ds)
    with_c, without_c = m.predict(["Fe0.7Cr0.18Ni0.1C0.0004Mn0.0196", "Fe0.7Cr0.18Ni0.1Mn0.0196"])
    assert with_c != without_c
    assert np.isfinite(m.predict(ALLOYS)).all()                                         # 10 and 13 elements


def test_seed_ensemble_spread_and_tree_member():
    ds = toy(zero_frac=0.0)
    e = make_recipe("elm-fast", n_seeds=2, with_tree=True, progress=False, head_features=None, **TINY)
    e.factories[-1] = lambda: make_model("tuned-tree", max_iter=50, progress=False)      # a quick tree member
    e.fit(ds)
    mu, sd = e.predict(ds.compositions[:20], return_std=True)
    assert mu.shape == sd.shape == (20,) and (sd > 0).all()
    assert len(e.members) == 3 and e.name == "elm-fast-ens2+tree"
    assert not np.allclose(*e.predict_members(ds.compositions[:20])[:2])                # seeds differ


def test_recipe_settings_are_checked():
    with pytest.raises(ValueError, match="ft_epoch"): recipe_config("elm-fast", ft_epoch=3)
    with pytest.raises(ValueError, match="encoding"): make_model("elm-fast", encoding="bytes")


def test_lean_benchmark_script_measures_one_model(tmp_path):
    csv = small_csv(tmp_path/"small.csv")
    df = pd.read_csv(csv).rename(columns={"formula": "composition"})[["composition", "y"]]; df.to_csv(csv, index=False)
    r = subprocess.run([sys.executable, str(ROOT/"benchmarks"/"bench_lean_defaults.py"), "--one", "mean", str(csv), str(tmp_path/"o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["returncode"] == 0 and rec["wall_s"] > 0 and rec["peak_rss_mb"] > 50 and np.isfinite(rec["mae"])


def test_pretraining_stage_reused_when_its_corpus_is_clean_for_the_new_task(tmp_path):
    from mmlit.comp.imkt import ImKTConfig, pretrain_imkt, check_clean
    cfg = ImKTConfig(stages="mlm+ft", mlm_sources=("shipped_structures",), mlm_max_size=60, mlm_epochs=1, batch_size=16,
                     out_dir=str(tmp_path), progress=False, device="cpu", num_threads=1,
                     backbone_overrides=TINY["backbone_overrides"])
    a = pretrain_imkt(cfg, ["NaCl", "KCl"])["mlm"]
    corpus = (a/"corpus_formulas.txt").read_text().split()
    b = pretrain_imkt(cfg, ALLOYS)["mlm"]                          # none of the alloys is in a's corpus: reused
    assert b == a and check_clean(b, ALLOYS) and not check_clean(a, corpus[:1])
    c = pretrain_imkt(cfg, corpus[:1])["mlm"]                      # a formula a has seen: a new, clean stage
    assert c != a and corpus[0] not in (c/"corpus_formulas.txt").read_text().split()
    assert pretrain_imkt(cfg.__class__(**{**cfg.__dict__, "reuse_stages": False}), ALLOYS)["mlm"] not in (a, c)


def test_alignment_as_auxiliary_finetuning_loss():
    "Rows whose formula has a known structure get teacher targets; the heads go away after training."
    from mmlit.data.structures import load_structure_set
    protos = load_structure_set("jarvis_prototypes", progress=False)
    forms = list(dict.fromkeys(protos.compositions))[:60]
    ds = Dataset("protos", forms, forms, pd.DataFrame({"y": np.random.default_rng(0).normal(size=len(forms))}))
    m = make_model("elm-fast", progress=False, head_features=None, aux_align=0.5, aux_teachers=("alignn",),
                   aux_sources=("jarvis_prototypes",), **TINY).fit(ds)
    aux = m.result.info["aux_align"]
    assert aux["teachers"] == ["alignn_prototypes"] and 0 < aux["rows_with_structure"] <= aux["rows"] < len(forms)   # train rows only
    assert not hasattr(m.result.model, "aux_heads") and np.isfinite(m.predict(forms[:5])).all()
