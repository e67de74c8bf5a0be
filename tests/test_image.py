"Image modality: multi-view rendering (shapes, determinism, cache, colours, views, bad input), the CNN encoder, ImageModel."
import warnings

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from mmlit.core import ConfigError, DataError, MmlitInputError
from mmlit.data.structures import load_structure_set
import mmlit.image.render as render_mod
from mmlit.image.render import RenderConfig, RenderError, render_structure, render_structures
from mmlit.image.encoders import ImageCNN, ImageEncoder, ImageModel, ImageModelConfig

SMALL = RenderConfig(size=32)


def _nacl():
    return Structure(Lattice.cubic(5.64), ["Na"] * 4 + ["Cl"] * 4,
                     [[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5], [.5, 0, 0], [0, .5, 0], [0, 0, .5], [.5, .5, .5]])


def _tetragonal():
    return Structure(Lattice.tetragonal(4.0, 6.5), ["Ti", "O", "O"], [[0, 0, 0], [.3, .3, 0], [.5, .5, .5]])


@pytest.fixture(scope="module")
def protos():
    ds = load_structure_set("aflow_prototypes", progress=False)
    ds.targets = ds.targets.assign(density=[s.density for s in ds.structures])
    return ds


def test_render_shape_dtype_determinism():
    a, b = render_structure(_nacl(), SMALL), render_structure(_nacl(), SMALL)
    assert a.shape == (9, 32, 32) and a.dtype == np.uint8 and a.any()
    assert np.array_equal(a, b)
    assert render_structure(_nacl(), RenderConfig(size=16, views=("a", "abc"))).shape == (6, 16, 16)


def test_cache_hit_skips_drawing(tmp_path, monkeypatch):
    structs = [_nacl(), _tetragonal()]
    x = render_structures(structs, config=SMALL, cache=tmp_path, progress=False)
    assert x.shape == (2, 9, 32, 32) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert len(list(tmp_path.rglob("*.npz"))) == 2
    def boom(*a, **k): raise AssertionError("drew a cached structure")
    monkeypatch.setattr(render_mod, "render_structure", boom)
    assert np.array_equal(render_structures(structs, config=SMALL, cache=tmp_path, progress=False), x)
    other = RenderConfig(size=16)   # other settings: another cache folder, so a miss
    with pytest.raises(RenderError): render_structures(structs, config=other, cache=tmp_path, progress=False)


def test_colours_differ_per_element():
    "One-atom cubic cells of different elements: the mean colour of the drawn pixels differs."
    def colour(el):
        img = render_structure(Structure(Lattice.cubic(3.0), [el], [[0, 0, 0]]), SMALL)[:3].reshape(3, -1).astype(float)
        lit = img.sum(0) > 0
        c = img[:, lit].mean(1)
        return c / np.linalg.norm(c)
    cols = {el: colour(el) for el in ("O", "Na", "Cl", "Fe", "Au")}
    for i, a in enumerate(cols):
        for b in list(cols)[i + 1:]:
            assert np.abs(cols[a] - cols[b]).max() > 0.05, (a, b)


def test_views_follow_the_lattice():
    rot = np.array([[0.36, 0.48, -0.8], [-0.8, 0.6, 0.0], [0.48, 0.64, 0.6]])   # a proper rotation
    assert np.allclose(rot @ rot.T, np.eye(3)) and np.isclose(np.linalg.det(rot), 1)
    t = _tetragonal()
    t_rot = Structure(Lattice(t.lattice.matrix @ rot.T), t.species, t.frac_coords)
    a, b = render_structure(t, SMALL).astype(int), render_structure(t_rot, SMALL).astype(int)
    assert np.abs(a - b).max() <= 1                      # rigid rotation: same images
    assert np.abs(a[:3] - a[6:]).mean() > 5              # tetragonal: along c is not along a
    n = render_structure(_nacl(), SMALL)
    assert np.array_equal(n[:3], n[3:6]) and np.array_equal(n[:3], n[6:])   # cubic: a, b, c alike
    # a plain cartesian rotation of the atoms inside a fixed cell is a different picture
    s2 = Structure(t.lattice, t.species, [[0, 0, 0], [.3, .7, 0], [.5, .5, .5]])
    assert not np.array_equal(render_structure(s2, SMALL), a.astype(np.uint8))


def test_bad_structure_named_rest_kept(tmp_path):
    good = [_nacl(), _tetragonal()]
    bad = Structure(Lattice.cubic(3), [], [])
    with pytest.raises(RenderError, match="'broken'") as e:
        render_structures([good[0], bad, good[1]], ids=["ok1", "broken", "ok2"], config=SMALL, cache=tmp_path, progress=False)
    assert isinstance(e.value, DataError) and isinstance(e.value, ValueError)
    assert len(list(tmp_path.rglob("*.npz"))) == 2       # the good ones were drawn and cached
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        x = render_structures([good[0], bad], config=SMALL, cache=tmp_path, on_bad="blank", progress=False)
    assert x[1].max() == 0 and x[0].max() > 0 and any("cannot be rendered" in str(m.message) for m in w)
    with pytest.raises(RenderError, match="Structure"): render_structures(["CsCl"], config=SMALL, cache=False, progress=False)
    with pytest.raises(ConfigError, match="views"): RenderConfig(views=("z",))
    with pytest.raises(ConfigError, match="on_bad"): render_structures(good, on_bad="skip")


def test_encoder_shapes_and_gradients():
    enc = ImageEncoder(widths=(8, 16), dim=24)
    x = torch.rand(3, 9, 32, 32, requires_grad=True)
    e = enc(x)
    assert e.shape == (3, 24) and enc.dim == 24
    e.pow(2).sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters())
    with pytest.raises(MmlitInputError, match="got \\(3, 6, 32, 32\\)"): enc(torch.rand(3, 6, 32, 32))
    assert ImageEncoder(widths=(8,), dim=5, view_pool="concat")(torch.rand(2, 9, 16, 16)).shape == (2, 5)
    with pytest.raises(ConfigError): ImageEncoder(view_pool="max")


def test_image_cnn_save_load(tmp_path):
    m = ImageCNN(ImageModelConfig(render=dict(size=32), widths=[8, 16], dim=16, num_targets=2)).eval()
    imgs = torch.randint(0, 256, (4, 9, 32, 32), dtype=torch.uint8)
    out = m(imgs, labels=torch.tensor([[1.0, float("nan")]] * 4))
    assert out.logits.shape == (4, 2) and torch.isfinite(out.loss)
    m.save_pretrained(tmp_path)
    m2 = ImageCNN.from_pretrained(tmp_path).eval()
    assert m2.config.render_config == RenderConfig(size=32)
    with torch.no_grad(): assert torch.allclose(m2(imgs).logits, m(imgs).logits, atol=1e-6)


def test_image_model_beats_mean_and_round_trips(protos, tmp_path):
    idx = np.random.default_rng(0).permutation(len(protos))
    tr, te = protos.subset(idx[:120]), protos.subset(idx[120:170])
    # seeds 0, 1, 2 gave MAE/MAE(mean) = 0.73, 0.79, 0.66 here: the bound leaves room for platform noise
    im = ImageModel(size=32, widths=(8, 16, 32), dim=32, epochs=25, patience=None, lr=3e-3, batch_size=16, progress=False,
                    num_threads=1, cache=tmp_path/"img").fit(tr)
    p = im.predict(te)
    y = te.y("density")
    mae, mae0 = np.abs(p - y).mean(), np.abs(tr.y("density").mean() - y).mean()
    assert mae < 0.9 * mae0, (mae, mae0)
    assert im.embed(te.subset(np.arange(5))).shape == (5, 32)
    from mmlit.registry import load_model, make_model, model_entry, save_model
    assert model_entry("image-cnn").needs_structures
    assert isinstance(make_model("image-cnn", seed=1, progress=False), ImageModel)
    save_model(im, tmp_path/"m")
    back = load_model(tmp_path/"m")
    assert isinstance(back, ImageModel)
    np.testing.assert_allclose(back.predict(te), p, atol=1e-5)
    with pytest.raises(ConfigError): ImageModel.load(tmp_path)
