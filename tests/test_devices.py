"Devices of the multimodal models (issue #14): `device=` on FusionModel, ContrastiveModel, the exKT mixture gate and the one rule they share with GraphModel and ImKTConfig; fits, inference and save/load on the CPU, and clear errors for devices this machine lacks."
import numpy as np, pandas as pd, pytest, torch

from mmlit.core import ConfigError
from mmlit.data.core import Dataset
from mmlit.data.structures import load_structure_set
from mmlit.exkt.moe import MixtureOfExperts
from mmlit.fusion.contrastive import ContrastiveModel
from mmlit.fusion.models import FusionModel
from mmlit.struct.models import GraphModel

HAS_CUDA = torch.cuda.is_available()
MODALITIES = ("graph", "composition")   # no text: these tests need neither robocrys nor the MiniLM wheel
KW = dict(modality_kw={"graph": {"cache": False}}, progress=False, num_threads=1)

def _fusion(**kw): return FusionModel(MODALITIES, "concat", epochs=3, batch_size=16, patience=None, **KW, **kw)
def _clip(**kw): return ContrastiveModel(MODALITIES, epochs=2, batch_size=16, patience=None, **KW, **kw)
def _gate(**kw): return MixtureOfExperts(epochs=20, lr=0.3, batch_size=40, **kw)
MAKERS = {"fusion": _fusion, "contrastive": _clip, "gate": _gate,
          "graph": lambda **kw: GraphModel("cgcnn", progress=False, **kw)}

@pytest.fixture(scope="module")
def toy():
    "60 small shipped AFLOW prototypes with their volume per atom as the target (train 45, test 15)."
    protos = load_structure_set("aflow_prototypes", progress=False)
    keep = [i for i, s in enumerate(protos.structures) if len(s) <= 6][:60]
    ds = Dataset("toy_volume", [protos.ids[i] for i in keep], [protos.compositions[i] for i in keep],
                 pd.DataFrame({"v": [protos.structures[i].volume / len(protos.structures[i]) for i in keep]}),
                 structures=[protos.structures[i] for i in keep])
    return ds.subset(list(range(45))), ds.subset(list(range(45, 60)))

def _devices(model) -> set: return {p.device.type for p in model.parameters()}
def _train_config(name, model): return model.config if name == "gate" else model.train_config   # the gate keeps its TrainConfig as `config`

@pytest.mark.parametrize("name", sorted(MAKERS))
def test_unknown_device_fails_at_construction_by_name(name):
    with pytest.raises(ConfigError, match="'tpu9'"): MAKERS[name](device="tpu9")

@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_absent_cuda_fails_at_construction_by_name(name):
    with pytest.raises(ConfigError, match=r"'cuda:?\d*'.*CUDA is not available"): MAKERS[name](device="cuda")
    with pytest.raises(ConfigError, match="'cuda:1'"): MAKERS[name](device="cuda:1")

@pytest.mark.parametrize("name", sorted(MAKERS))
def test_none_is_the_gpu_when_there_is_one(name):
    "device=None: train on the CPU exactly when torch sees no GPU (the CPU here, unless this machine has one)."
    cfg = lambda m: _train_config(name, m)
    assert cfg(MAKERS[name]()).torch_device.type == ("cuda" if HAS_CUDA else "cpu")
    assert cfg(MAKERS[name](device="cpu")).torch_device == torch.device("cpu")

@pytest.mark.parametrize("name", sorted(MAKERS))
def test_a_chosen_gpu_reaches_the_training_config(name, monkeypatch):
    "device='cuda:1' on a (pretended) 2-GPU machine: the run trains on GPU 1, not on accelerate's default GPU 0."
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cfg = lambda m: _train_config(name, m)
    assert cfg(MAKERS[name](device="cuda:1")).torch_device == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="'cuda:2'.*2 CUDA device"): MAKERS[name](device="cuda:2")

def test_imkt_config_uses_the_same_rule(monkeypatch):
    from mmlit.comp.imkt import ImKTConfig
    assert ImKTConfig(device="cpu").train_config("mlm").torch_device == torch.device("cpu")
    assert ImKTConfig().train_config("finetune").torch_device.type == ("cuda" if HAS_CUDA else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert ImKTConfig(device="cuda:1").train_config("align").torch_device == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="'tpu9'"): ImKTConfig(device="tpu9").train_config("align")

def test_fusion_cpu_fit_predict_save_load(toy, tmp_path):
    tr, te = toy
    fm = _fusion(device="cpu").fit(tr)
    assert _devices(fm.model) == {"cpu"} and fm.trainer.accelerator.device.type == "cpu"
    p = fm.predict(te)
    assert isinstance(p, np.ndarray) and p.shape == (len(te),) and np.isfinite(p).all()
    e = fm.embed(te)
    assert isinstance(e, np.ndarray) and e.shape[0] == len(te)
    back = FusionModel.load(fm.save(tmp_path/"fm"), device="cpu")
    assert _devices(back.model) == {"cpu"}
    np.testing.assert_allclose(back.predict(te), p, atol=1e-5)
    np.testing.assert_allclose(back.embed(te), e, atol=1e-5)
    with pytest.raises(ConfigError, match="'tpu9'"): FusionModel.load(tmp_path/"fm", device="tpu9")

def test_contrastive_cpu_fit_latents_teacher_save_load(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("MMLIT_CACHE", str(tmp_path/"cache"))   # the teacher's embedding cache
    tr, te = toy
    cm = _clip(device="cpu").fit(tr)
    assert _devices(cm.model) == {"cpu"}
    z = cm.latents(te)
    assert set(z) == set(MODALITIES) and all(isinstance(v, np.ndarray) and v.shape == (len(te), 128) for v in z.values())
    ret = cm.retrieval(te)
    assert list(ret.pair) == ["graph <-> composition"] and (ret.chance_top1 == 1 / len(te)).all()
    cm.model.train()
    t = cm.teacher()
    assert t.device.type == "cpu" and cm.model.encoders["graph"].training   # the teacher works on a copy: the model stays in training mode
    assert t.module.encoder is not cm.model.encoders["graph"]
    np.testing.assert_allclose(t.embed(te.structures, progress=False), z["graph"], atol=1e-5)
    back = ContrastiveModel.load(cm.save(tmp_path/"clip"), device="cpu")
    assert _devices(back.model) == {"cpu"} and back.teacher().version == t.version
    np.testing.assert_allclose(back.latents(te)["graph"], z["graph"], atol=1e-5)
    with pytest.raises(ConfigError, match="'tpu9'"): cm.teacher(device="tpu9")

def test_gate_cpu_fit_predict():
    rng = np.random.default_rng(0)
    c, y = rng.normal(size=120), rng.normal(size=120)
    preds = np.stack([np.where(c > 0, y, y + 1), np.where(c > 0, y + 1, y)], 1)
    conf = pd.DataFrame({"c": c})
    moe = _gate(device="cpu").fit(conf, preds, y, ["A", "B"])
    assert _devices(moe.gate_) == {"cpu"}
    w, p = moe.weights(conf), moe.predict(conf, preds)
    assert isinstance(w, np.ndarray) and w.shape == (120, 2) and np.allclose(w.sum(1), 1) and p.shape == (120,)
    assert np.abs(p - y).mean() < 0.5 * min(np.abs(preds - y[:, None]).mean(0))   # it learned to pick
