"""Tree models as arrays (mmlit.treeio) and the baseline models' save/load: round trips through a temporary directory,
and damaged or missing files giving errors that name the path. Small models only (seconds)."""
from __future__ import annotations
import json, warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import (HistGradientBoostingClassifier, HistGradientBoostingRegressor,
                              RandomForestClassifier, RandomForestRegressor)

import mmlit
from mmlit.core import ConfigError, DataError
from mmlit.treeio import TreeEnsemble, export_model, load_arrays, save_arrays


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 5)); X[rng.random(X.shape) < 0.15] = np.nan
    y = np.nan_to_num(X[:, 0]) - np.nan_to_num(X[:, 2]) ** 2 + 0.1 * rng.normal(size=300)
    Xt = rng.normal(size=(200, 5)); Xt[rng.random(Xt.shape) < 0.3] = np.nan
    return X, y, (y > np.median(y)).astype(int), Xt


@pytest.mark.parametrize("est", [HistGradientBoostingRegressor(max_iter=30), RandomForestRegressor(10, random_state=0),
                                 DummyRegressor(), HistGradientBoostingClassifier(max_iter=30),
                                 RandomForestClassifier(10, random_state=0), DummyClassifier()], ids=lambda e: type(e).__name__)
def test_round_trip_from_file(est, xy, tmp_path):
    X, y, yc, Xt = xy
    clf = hasattr(est, "predict_proba")
    est.fit(X, yc if clf else y)
    te = TreeEnsemble.load(save_arrays(tmp_path/"m.safetensors", *export_model(est)))
    np.testing.assert_allclose(te.predict(Xt) if not clf else te.predict_proba(Xt),
                               est.predict(Xt) if not clf else est.predict_proba(Xt), rtol=0, atol=1e-6)
    if clf: assert np.array_equal(te.predict(Xt), est.predict(Xt))
    if isinstance(est, HistGradientBoostingRegressor):     # boosting: bit-identical sums, NaN rows included
        assert np.array_equal(te.predict(Xt), est.predict(Xt))


def test_missing_and_damaged_files(xy, tmp_path):
    X, y, _, _ = xy
    with pytest.raises(ConfigError, match="nothing_here.safetensors"): load_arrays(tmp_path/"nothing_here.safetensors")
    f = save_arrays(tmp_path/"ok.safetensors", *export_model(HistGradientBoostingRegressor(max_iter=5).fit(X, y)))
    (tmp_path/"cut.safetensors").write_bytes(f.read_bytes()[:300])
    with pytest.raises(DataError, match="cut.safetensors"): load_arrays(tmp_path/"cut.safetensors")
    (tmp_path/"text.safetensors").write_text("not a model")
    with pytest.raises(DataError, match="text.safetensors"): TreeEnsemble.load(tmp_path/"text.safetensors")
    arrays, meta = load_arrays(f)
    save_arrays(tmp_path/"v2.safetensors", arrays, {**meta, "format_version": 99})   # save_arrays writes its own version...
    assert load_arrays(tmp_path/"v2.safetensors")[1]["format_version"] == 1             # ...which wins over the meta's
    from safetensors.numpy import save_file
    save_file(arrays, str(tmp_path/"future.safetensors"), metadata={"mmlit.treeio": json.dumps({**meta, "format_version": 99})})
    with pytest.raises(ConfigError, match="version 99"): load_arrays(tmp_path/"future.safetensors")
    bad = dict(arrays, left=np.full_like(arrays["left"], 10_000))                      # children out of range
    save_arrays(tmp_path/"badtree.safetensors", bad, meta)
    with pytest.raises(DataError, match="badtree.safetensors"): TreeEnsemble.load(tmp_path/"badtree.safetensors")
    cyc = dict(arrays, left=np.zeros_like(arrays["left"]), right=np.zeros_like(arrays["right"]) + 1)   # 0 -> 1 -> 0 ...
    cyc["left"][:, 1] = 0; cyc["right"][:, 1] = 0
    with pytest.raises(DataError, match="cycle"): TreeEnsemble(cyc, meta)


@pytest.fixture(scope="module")
def toy():
    from mmlit.data.core import Dataset
    metals = ["Li", "Na", "K", "Mg", "Ca", "Al", "Ti", "Fe", "Cu", "Zn"]
    forms = [f"{m}{a}O{b}" for m in metals for a in range(1, 4) for b in range(1, 5)]
    x = np.array([b / (a + b) for m in metals for a in range(1, 4) for b in range(1, 5)])
    ids = [f"t{i}" for i in range(len(forms))]
    reg = Dataset(name="toy", ids=ids, compositions=forms, targets=pd.DataFrame({"y": np.where(x > 0.6, 0.0, 3 * x)}))
    clf = Dataset(name="toy_c", ids=ids, compositions=forms, targets=pd.DataFrame({"c": (x > 0.6).astype(float)}),
                  task_type="classification")
    return reg, clf


def test_model_directories_round_trip(toy, tmp_path):
    from mmlit.baseline import BaselineModel, TunedTreeModel
    reg, clf = toy
    models = [TunedTreeModel("fractions", max_iter=30, progress=False).fit(reg),          # >= 20 % zeros: gated
              TunedTreeModel("fractions", max_iter=30, progress=False).fit(clf),
              BaselineModel("fractions", "rf", n_estimators=5, n_jobs=1, progress=False).fit(reg),
              BaselineModel("fractions", "hgb", n_estimators=10, progress=False).fit(clf),
              BaselineModel(None, "mean", progress=False).fit(clf)]
    assert models[0].gate_ is not None and models[1].task_type_ == "classification"
    for i, m in enumerate(models):
        data = clf if m.task_type_ == "classification" else reg
        m2 = type(m).load(m.save(tmp_path/f"m{i}"))
        assert np.array_equal(m2.predict(data), m.predict(data)), type(m).__name__
        assert m2.get_params() == m.get_params()
    cfg = json.loads((tmp_path/"m0"/"config.json").read_text())
    assert (cfg["class"], cfg["gated"], cfg["task_type"], cfg["mmlit_version"]) == ("TunedTreeModel", True, "regression", mmlit.__version__)


def test_model_directory_errors(toy, tmp_path):
    from mmlit.baseline import BaselineModel, TunedTreeModel
    reg, _ = toy
    p = BaselineModel("fractions", "hgb", n_estimators=5, progress=False).fit(reg).save(tmp_path/"bm")
    cfg = json.loads((p/"config.json").read_text())
    with pytest.raises(ConfigError, match="BaselineModel"): TunedTreeModel.load(p)
    with pytest.raises(ConfigError, match="no config.json"): BaselineModel.load(tmp_path/"nothing")
    (p/"config.json").write_text(json.dumps({**cfg, "mmlit_version": "0.0.7"}))
    with pytest.warns(UserWarning, match="0.0.7"): BaselineModel.load(p)
    (p/"config.json").write_text(json.dumps({**cfg, "mmlit_version": "0.0.7", "format_version": 0}))
    with pytest.raises(ConfigError, match=r"0\.0\.7.*" + mmlit.__version__.replace(".", r"\.")): BaselineModel.load(p)
    (p/"config.json").write_text("{not json")
    with pytest.raises(DataError, match="config.json"): BaselineModel.load(p)
    (p/"config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "init"}))
    with pytest.raises(DataError, match="init"): BaselineModel.load(p)
    (p/"config.json").write_text(json.dumps(cfg)); (p/"model.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(DataError, match="model.safetensors"): BaselineModel.load(p)
    (p/"model.safetensors").unlink()
    with pytest.raises(ConfigError, match="model.safetensors"): BaselineModel.load(p)
    (p/"config.json").write_text(json.dumps({**cfg, "parts": ["../model"]}))
    with pytest.raises(DataError, match="expected"): BaselineModel.load(p)
    q = TunedTreeModel("fractions", max_iter=5, progress=False).fit(reg).save(tmp_path/"tt")
    tcfg = json.loads((q/"config.json").read_text())
    (q/"config.json").write_text(json.dumps({**tcfg, "init": {**tcfg["init"], "featurs": "magpie"}}))
    with pytest.raises(DataError, match="featurs"): TunedTreeModel.load(q)
    (q/"config.json").write_text(json.dumps({**tcfg, "gated": not tcfg["gated"]}))       # parts disagree with the gate flag
    with pytest.raises(DataError, match="expected"): TunedTreeModel.load(q)
