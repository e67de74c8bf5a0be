"Tabular modality: Magpie + structure descriptors (finite, NaN-safe, cached), the MLP encoder, TabularModel."
import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from mmlit.core import ConfigError, DataError
from mmlit.data.structures import load_structure_set
import mmlit.struct.tabular as tab
from mmlit.struct.tabular import (STRUCTURE_LABELS, TabularEncoder, TabularFeaturizer, TabularModel, TabularNet,
                                  structure_features)


def _nacl():
    return Structure(Lattice.cubic(5.64), ["Na"] * 4 + ["Cl"] * 4,
                     [[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5], [.5, 0, 0], [0, .5, 0], [0, 0, .5], [.5, .5, .5]])


@pytest.fixture(scope="module")
def protos():
    ds = load_structure_set("aflow_prototypes", progress=False)
    ds.targets = ds.targets.assign(density=[s.density for s in ds.structures])
    return ds


def test_structure_features_values():
    f = dict(zip(STRUCTURE_LABELS, structure_features(_nacl())))
    assert (f["spacegroup_num"], f["system_cubic"], f["system_hexagonal"], f["n_sites"]) == (225, 1, 0, 8)
    assert np.isclose(f["density"], _nacl().density) and np.isclose(f["a"], 5.64) and np.isclose(f["c_over_a"], 1)
    assert 0 < f["packing_fraction"] < 1
    with pytest.raises(DataError, match="empty"): structure_features(Structure(Lattice.cubic(3), [], []))


def test_featurizer_finite_cached_and_nan_safe(protos, tmp_path, monkeypatch):
    ds = protos.subset(np.arange(30))
    tf = TabularFeaturizer(cache=tmp_path, progress=False)
    X = tf(ds)
    assert X.shape == (30, len(tf.feature_labels())) == (30, 132 + len(STRUCTURE_LABELS)) and X.dtype == np.float32
    assert np.isfinite(X[:, :132]).all()                                  # Magpie imputes
    assert np.isfinite(X).mean() > 0.95
    assert 0 < len(list(tmp_path.rglob("*.npy"))) <= 30                 # one file per distinct structure
    def boom(*a, **k): raise AssertionError("recomputed a cached structure")
    monkeypatch.setattr(tab, "structure_features", boom)
    np.testing.assert_array_equal(tf(ds), X)                               # cache hit: nothing recomputed
    # a featurizer failure is NaN, not a lost row; the encoder maps it to the training mean
    monkeypatch.setattr(tab, "structure_features", lambda s: np.full(len(STRUCTURE_LABELS), np.nan))
    Xn = TabularFeaturizer(cache=False, progress=False)([_nacl()])
    assert Xn.shape == (1, X.shape[1]) and np.isnan(Xn[0, 132:]).all() and np.isfinite(Xn[0, :132]).all()
    enc = TabularEncoder.from_features(X, dim=8, hidden=16).eval()
    with torch.no_grad():
        e = enc(torch.from_numpy(np.concatenate([X[:2], Xn])))
    assert torch.isfinite(e).all()
    with pytest.raises(DataError, match="'bad-one'"): tf([_nacl(), Structure(Lattice.cubic(3), [], [])], ids=["ok", "bad-one"])


def test_encoder_shapes_and_gradients():
    X = np.array([[1., 2., np.nan], [3., np.nan, np.nan], [5., 6., np.nan]], np.float32)
    enc = TabularEncoder.from_features(X, dim=8, hidden=16)
    assert enc.dim == 8 and torch.allclose(enc.x_mean, torch.tensor([3., 4., 0.]))   # NaN-aware, all-NaN column -> 0
    x = torch.tensor(X, requires_grad=True)
    net = TabularNet(enc, 2)
    out = net(x, torch.tensor([[1., np.nan]] * 3))
    assert out["logits"].shape == (3, 2) and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    with pytest.raises(ConfigError): TabularNet(enc, 1, loss="hinge")


def test_tabular_model_beats_mean_and_round_trips(protos, tmp_path):
    idx = np.random.default_rng(0).permutation(len(protos))
    tr, te = protos.subset(idx[:40]), protos.subset(idx[40:80])   # ~40 training structures
    tm = TabularModel(epochs=150, patience=None, progress=False, num_threads=1, cache=tmp_path/"tab").fit(tr)
    p = tm.predict(te)
    y = te.y("density")
    mae, mae0 = np.abs(p - y).mean(), np.abs(tr.y("density").mean() - y).mean()
    assert mae < 0.6 * mae0, (mae, mae0)
    assert tm.embed(te).shape == (40, 128)
    from mmlit.registry import load_model, make_model, model_entry, save_model
    assert model_entry("tabular-mlp").needs_structures
    assert isinstance(make_model("tabular-mlp", seed=1, progress=False), TabularModel)
    save_model(tm, tmp_path/"m")
    back = load_model(tmp_path/"m")
    np.testing.assert_allclose(back.predict(te), p, atol=1e-5)
    with pytest.raises(ConfigError): TabularModel.load(tmp_path)
