"""Tests of the composition language models: sizes, heads, losses, save/load, backbone transfer, errors."""
import math

import pytest
import torch
from transformers import DataCollatorForLanguageModeling

from mmlit.core import ConfigError, MmlitInputError, seed_everything
from mmlit.comp.tokenizer import CompositionTokenizer
from mmlit.comp.model import (ARCHS, PRESETS, CompositionModelConfig, CompositionForMaskedLM, CompositionForPrediction,
                              build_model, check_tokenizer, count_parameters, from_backbone, load_composition_model,
                              save_composition_model)
from mmlit.train.losses import weighted_target_loss

TOK = CompositionTokenizer()
COMPS = ["CaTiO3", "Li7La3Zr2O12", "Al0.5CoCrFeNi1.25", "NaCl", "Fe2O3", "SiO2", "GaAs", "MgB2"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    "Tiny models run fastest on one thread; several threads on a busy shared CI machine spin for seconds per step."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def enc(comps=COMPS):
    return TOK.encode_compositions(comps, return_tensors="pt")


@pytest.mark.parametrize("arch", list(ARCHS))
def test_preset_sizes(arch):
    counts = {}
    for preset in PRESETS:
        with torch.device("meta"):
            counts[preset] = count_parameters(build_model(TOK, arch, preset, task="mlm"))
    assert counts["tiny"] < 1_000_000
    assert 5_000_000 <= counts["small"] <= 15_000_000
    assert counts["base"] > 80_000_000
    assert counts["tiny"] < counts["small"] < counts["base"]


def test_base_is_modernbert_base_shape():
    cfg = CompositionModelConfig.from_tokenizer(TOK, arch="modernbert", preset="base").backbone_config()
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (768, 22, 12, 1152)


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("task,num_targets", [("regression", 3), ("classification", 1), ("mlm", 1)])
def test_forward_backward(arch, task, num_targets):
    seed_everything(0)
    m = build_model(TOK, arch, "tiny", task=task, num_targets=num_targets)
    e = enc()
    if task == "mlm":
        rows = [dict(input_ids=i) for i in TOK.encode_compositions(COMPS, padding=False)["input_ids"]]
        batch = DataCollatorForLanguageModeling(TOK, mlm_probability=0.3)(rows)
        out = m(**batch)
        assert out.logits.shape == (*batch["input_ids"].shape, len(TOK))
    else:
        y = torch.randint(0, 2, (len(COMPS), num_targets)).float() if task == "classification" else torch.randn(len(COMPS), num_targets)
        out = m(**e, labels=y)
        assert out.logits.shape == (len(COMPS), num_targets)
        assert out.embeddings.shape == (len(COMPS), m.config.backbone_config().hidden_size)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    emb = m.backbone.get_input_embeddings().weight
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def test_no_labels_no_loss():
    m = build_model(TOK, "bert", "tiny").eval()
    out = m(**enc())
    assert out.loss is None and out.logits.shape == (len(COMPS), 1)


@pytest.mark.parametrize("arch,pooling", [(a, "mean") for a in ARCHS] + [("modernbert", "cls")])
def test_padding_invariance(arch, pooling):
    m = build_model(TOK, arch, "tiny", pooling=pooling).eval()
    with torch.no_grad():
        batch = m(**enc()).logits
        single = torch.cat([m(**enc([c])).logits for c in COMPS])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_embed_matches_forward(arch):
    m = build_model(TOK, arch, "tiny").eval()
    e = enc()
    with torch.no_grad():
        torch.testing.assert_close(m.embed(**e), m(**e).embeddings)
        assert not torch.allclose(m.embed(**e, pooling="cls"), m.embed(**e, pooling="mean"))


def test_sample_weights_and_missing_targets():
    seed_everything(0)
    m = build_model(TOK, "modernbert", "tiny", num_targets=2).eval()
    e, y = enc(), torch.randn(len(COMPS), 2)
    with torch.no_grad():
        base = m(**e, labels=y).loss
        # uniform weights == no weights
        torch.testing.assert_close(m(**e, labels=y, sample_weight=torch.full((len(COMPS),), 3.0)).loss, base)
        # weight 0 on rows == dropping them
        w = torch.tensor([1.0] * 4 + [0.0] * 4)
        sub = TOK.encode_compositions(COMPS[:4], return_tensors="pt")
        torch.testing.assert_close(m(**e, labels=y, sample_weight=w).loss, m(**sub, labels=y[:4]).loss, atol=1e-5, rtol=1e-5)
        # NaN target == not observed
        y2 = y.clone(); y2[0, 1] = float("nan")
        pred = m(**e).logits
        seen = ~torch.isnan(y2)
        torch.testing.assert_close(m(**e, labels=y2).loss, ((pred - y2.nan_to_num())[seen] ** 2).mean())
    with pytest.raises(MmlitInputError, match="sample_weight"):
        m(**e, labels=y, sample_weight=torch.ones(3))


def test_classification_loss_is_bce():
    p, y = torch.randn(6, 1), torch.tensor([0., 1, 1, 0, 1, 0])
    torch.testing.assert_close(weighted_target_loss(p, y, "bce"),
                               torch.nn.functional.binary_cross_entropy_with_logits(p, y[:, None]))


def test_mlm_weighted_loss_matches_hf_when_unweighted():
    seed_everything(1)
    m = build_model(TOK, "bert", "tiny", task="mlm").eval()
    rows = [dict(input_ids=i) for i in TOK.encode_compositions(COMPS, padding=False)["input_ids"]]
    batch = DataCollatorForLanguageModeling(TOK, mlm_probability=0.4)(rows)
    with torch.no_grad():
        out = m(**batch)
        ref = torch.nn.functional.cross_entropy(out.logits.view(-1, len(TOK)), batch["labels"].view(-1))
        torch.testing.assert_close(out.loss, ref)
        w = torch.zeros(len(COMPS)); w[2] = 1.0
        if (batch["labels"][2] != -100).any():
            lab = batch["labels"][2]
            torch.testing.assert_close(m(**batch, sample_weight=w).loss,
                                       torch.nn.functional.cross_entropy(out.logits[2], lab))


@pytest.mark.parametrize("arch,task", [(a, t) for a in ARCHS for t in ("mlm", "regression")] + [("bert", "classification")])
def test_save_load_roundtrip(arch, task, tmp_path):
    seed_everything(0)
    m = build_model(TOK, arch, "tiny", task=task, num_targets=2 if task != "mlm" else 1, pooling="cls").eval()
    save_composition_model(m, TOK, tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in tmp_path.iterdir()}
    m2, tok2 = load_composition_model(tmp_path)
    assert type(m2) is type(m) and m2.config.pooling == "cls" and m2.config.arch == arch
    e = tok2.encode_compositions(COMPS, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(m2.eval()(**e).logits, m(**e).logits, atol=0, rtol=0)
    if task == "mlm":  # tied decoder stays tied after reload
        assert m2.get_output_embeddings().weight is m2.backbone.get_input_embeddings().weight


@pytest.mark.parametrize("arch", list(ARCHS))
def test_from_backbone(arch, tmp_path):
    seed_everything(0)
    mlm = build_model(TOK, arch, "tiny", task="mlm")
    save_composition_model(mlm, TOK, tmp_path)
    reg = from_backbone(tmp_path, task="regression", num_targets=4, log=False)
    assert isinstance(reg, CompositionForPrediction) and reg.config.num_targets == 4
    sd_a, sd_b = mlm.backbone.state_dict(), reg.backbone.state_dict()
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a: assert torch.equal(sd_a[k], sd_b[k]), k
    assert reg.loading_info["missing_keys"] and all(k.startswith("head.") for k in reg.loading_info["missing_keys"])
    assert all(k.startswith("lm_head.") for k in reg.loading_info["unexpected_keys"])
    # and onwards: a finetuned model's backbone into a classifier
    save_composition_model(reg, TOK, tmp_path / "reg")
    clf = from_backbone(tmp_path / "reg", task="classification", num_targets=1, log=False)
    for k, v in reg.backbone.state_dict().items(): assert torch.equal(v, clf.backbone.state_dict()[k])


def test_from_backbone_wrong_size(tmp_path):
    save_composition_model(build_model(TOK, "bert", "tiny", task="mlm"), TOK, tmp_path)
    with pytest.raises(ConfigError):
        from_backbone(tmp_path, task="regression", backbone_overrides=dict(num_hidden_layers=3), log=False)
    with pytest.raises(ConfigError, match="pooling"):
        from_backbone(tmp_path, task="regression", pooling="max", log=False)


def test_errors():
    with pytest.raises(ConfigError, match="xlnet"): build_model(TOK, "xlnet")
    with pytest.raises(ConfigError, match="giant"): build_model(TOK, "bert", "giant")
    with pytest.raises(ConfigError, match="pooling"): build_model(TOK, "bert", pooling="max")
    with pytest.raises(ConfigError, match="mlm"): CompositionForPrediction(CompositionModelConfig(task="mlm"))
    m = build_model(TOK, "roformer", "tiny")
    with pytest.raises(ConfigError, match="vocab_size"): check_tokenizer(m, CompositionTokenizer(max_int=10))
    with pytest.raises(ConfigError, match="vocab_size"): save_composition_model(m, CompositionTokenizer(max_int=10), "/tmp/never")
    with pytest.raises(MmlitInputError, match="vocabulary"): m(input_ids=torch.tensor([[2, len(TOK), 3]]))
    with pytest.raises(ConfigError): load_composition_model("/nonexistent/dir")


def test_tiny_model_learns():
    "A tiny regression model fits 8 compositions (the loss falls by > 80% in 150 steps): the heads are trainable."
    seed_everything(0)
    m = build_model(TOK, "modernbert", "tiny", head_dropout=0.0)
    e = enc()
    y = torch.tensor([[c.count("O") * 1.0] for c in COMPS])
    y = (y - y.mean()) / y.std()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = m(**e, labels=y).loss
        first = first if first is not None else loss.item()
        opt.zero_grad(); loss.backward(); opt.step()
    assert math.isfinite(loss.item()) and loss.item() < 0.2 * first


@pytest.mark.parametrize("arch,name", [("modernbert", "magpie"), ("bert", "chgnet"), ("roformer", "mat2vec")])
def test_element_vectors(arch, name, tmp_path):
    seed_everything(0)
    m = build_model(TOK, arch, "tiny", task="mlm", element_vectors=name)
    emb = m.backbone.get_input_embeddings()
    ids = torch.tensor(TOK.convert_tokens_to_ids(["Fe", "O", "Og", "3", "[CLS]"]))
    has = emb.has_vector[ids].tolist()
    assert has[:2] == [True, True] and has[3:] == [False, False]
    with torch.no_grad():
        out = emb(ids)
        hv = emb.has_vector[ids]
        torch.testing.assert_close(out[hv], emb.proj(emb.vectors[ids[hv]]))
        torch.testing.assert_close(out[~hv], emb.base(ids[~hv]))  # specials, coefficients, uncovered elements
        # projected element embeddings have the scale of ordinary token embeddings (within a factor ~3)
        ratio = out[:2].std() / emb.base.weight.std()
        assert 0.2 < ratio < 5, ratio
    rows = [dict(input_ids=i) for i in TOK.encode_compositions(COMPS, padding=False)["input_ids"]]
    batch = DataCollatorForLanguageModeling(TOK, mlm_probability=0.3)(rows)
    m(**batch).loss.backward()
    assert emb.proj.weight.grad is not None and emb.proj.weight.grad.abs().sum() > 0
    save_composition_model(m, TOK, tmp_path)
    m2, _ = load_composition_model(tmp_path)
    e = enc()
    with torch.no_grad():
        torch.testing.assert_close(m2.eval()(**e).logits, m.eval()(**e).logits, atol=0, rtol=0)
    reg = from_backbone(tmp_path, task="regression", log=False)
    torch.testing.assert_close(reg.backbone.get_input_embeddings().vectors, emb.vectors)


def test_element_vectors_unknown():
    with pytest.raises(ConfigError, match="word2vec"):
        build_model(TOK, "bert", "tiny", element_vectors="word2vec")


def test_auto_classes(tmp_path):
    from transformers import AutoConfig, AutoTokenizer, AutoModelForMaskedLM, AutoModelForSequenceClassification
    save_composition_model(build_model(TOK, "modernbert", "tiny", task="mlm"), TOK, tmp_path / "mlm")
    save_composition_model(build_model(TOK, "bert", "tiny", task="regression", num_targets=2), TOK, tmp_path / "reg")
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "mlm"), CompositionModelConfig)
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path / "mlm"), CompositionTokenizer)
    assert isinstance(AutoModelForMaskedLM.from_pretrained(tmp_path / "mlm"), CompositionForMaskedLM)
    m = AutoModelForSequenceClassification.from_pretrained(tmp_path / "reg")
    assert isinstance(m, CompositionForPrediction) and m.config.num_targets == 2


def test_load_with_another_head(tmp_path):
    seed_everything(0)
    mlm = build_model(TOK, "modernbert", "tiny", task="mlm")
    save_composition_model(mlm, TOK, tmp_path / "mlm")
    reg, tok = load_composition_model(tmp_path / "mlm", task="regression", num_targets=2)
    assert isinstance(reg, CompositionForPrediction) and reg.config.num_targets == 2
    assert all(k.startswith("head.") for k in reg.loading_info["missing_keys"])
    save_composition_model(reg, tok, tmp_path / "reg")
    clf, _ = load_composition_model(tmp_path / "reg", task="classification", num_targets=1)
    assert clf.config.task == "classification" and clf.head.net[-1].out_features == 1
    for k, v in mlm.backbone.state_dict().items(): assert torch.equal(v, clf.backbone.state_dict()[k])
