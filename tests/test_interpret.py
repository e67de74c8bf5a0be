"Tests of mmlit.interpret (SHAP-IQ token interactions): axioms, determinism, errors, masking modes, CLI."
import json, subprocess, sys

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from mmlit.core import ConfigError, MmlitInputError
from mmlit.comp.tokenizer import CompositionTokenizer
from mmlit.interpret.shapiq import (TokenGame, explain, explain_many, IncompatibleModelError, INDICES, check_index_order)


@pytest.fixture(scope="module")
def tok():
    return CompositionTokenizer()


def _bert(vocab, seed=0, layers=2):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=64, num_labels=1, pad_token_id=0)
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture(scope="module")
def bert(tok):
    return _bert(len(tok))


@pytest.fixture(scope="module")
def clm(tok):
    from mmlit.comp.model import build_model
    torch.manual_seed(1)
    return build_model(tok, arch="bert", preset="tiny", task="regression").eval()


COMPS = ["CaTiO3", "Cu2MnAl", "NaCl", "Fe0.5Ni0.5", "LiFePO4", "Ba2CaWO6"]


@pytest.mark.parametrize("comp", COMPS)
@pytest.mark.parametrize("players", ["token", "pair"])
@pytest.mark.parametrize("absent", ["mask", "remove"])
def test_efficiency_shapley_values(bert, tok, comp, players, absent):
    "Exact Shapley values (order 1) sum to prediction - baseline (empty coalition), to 1e-5."
    e = explain(bert, tok, comp, order=1, index="SV", players=players, absent=absent)
    assert e.method == "exact"
    assert len(e.players) == TokenGame(bert, tok, comp, players=players, absent=absent).n_players
    assert abs(sum(e.interactions().values()) - (e.prediction - e.baseline)) < 1e-5
    # the k-SII decomposition of order 1 is the Shapley value itself
    k1 = explain(bert, tok, comp, order=1, index="k-SII", players=players, absent=absent)
    np.testing.assert_allclose(sorted(k1.interactions().values()), sorted(e.interactions().values()), atol=1e-6)


@pytest.mark.parametrize("index", ["k-SII", "STII", "FSII"])
def test_efficiency_higher_order(clm, tok, index):
    "All interactions up to order 3 of the efficient indices also sum to prediction - baseline."
    e = explain(clm, tok, "SrTiO3", order=3, index=index)
    assert max(len(k) for k in e.interactions()) == 3
    assert abs(sum(e.interactions().values()) - (e.prediction - e.baseline)) < 1e-5


def test_not_normalised_game_keeps_baseline(bert, tok):
    e = explain(bert, tok, "CaTiO3", order=1, index="SV", normalize=False)
    assert abs(e.values.baseline_value - e.baseline) < 1e-6
    assert abs(sum(e.interactions().values()) - (e.prediction - e.baseline)) < 1e-5


@pytest.mark.parametrize("approx", ["KernelSHAPIQ", "SVARMIQ", "PermutationSamplingSII", "RegressionFSII"])
def test_approximators_deterministic_with_seed(clm, tok, approx):
    index = "FSII" if approx == "RegressionFSII" else "k-SII"
    kw = dict(order=2, index=index, approximator=approx, budget=60)
    a = explain(clm, tok, "Ba2CaWO6", seed=3, **kw)
    b = explain(clm, tok, "Ba2CaWO6", seed=3, **kw)
    c = explain(clm, tok, "Ba2CaWO6", seed=4, **kw)
    assert a.method == approx and a.budget == 60
    assert a.interactions() == b.interactions()
    ia, ic = a.interactions(), c.interactions()
    assert ia != ic  # the seed matters, so the equality above is a real check


def test_full_budget_approximation_matches_exact(bert, tok):
    "KernelSHAPIQ with every coalition in its budget reproduces the exact k-SII values."
    ex = explain(bert, tok, "CaTiO3", order=2)
    ap = explain(bert, tok, "CaTiO3", order=2, approximator="KernelSHAPIQ", budget=2**6)
    a, b = ex.interactions(), ap.interactions()
    np.testing.assert_allclose([a[k] for k in sorted(a)], [b.get(k, 0.0) for k in sorted(a)], atol=1e-4)


def test_bad_index_and_order(bert, tok):
    with pytest.raises(ConfigError, match="kSII"): explain(bert, tok, "NaCl", index="kSII")
    with pytest.raises(ConfigError, match="4"): explain(bert, tok, "NaCl", order=4)
    with pytest.raises(ConfigError, match="0"): explain(bert, tok, "NaCl", order=0)
    with pytest.raises(ConfigError, match="order"): check_index_order("SV", 2)
    with pytest.raises(ConfigError, match="bogus"): explain(bert, tok, "NaCl", approximator="bogus")
    with pytest.raises(ConfigError, match="absent"): explain(bert, tok, "NaCl", absent="zero")
    assert set(INDICES) >= {"k-SII", "STII", "FSII"}


def test_model_tokenizer_mismatch_names_both(tok):
    small = _bert(len(tok) - 20, layers=1)
    with pytest.raises(IncompatibleModelError) as ei: explain(small, tok, "NaCl")
    msg = str(ei.value)
    assert "BertForSequenceClassification" in msg and "CompositionTokenizer" in msg
    assert str(len(tok)) in msg and str(len(tok) - 20) in msg
    assert isinstance(ei.value, MmlitInputError) and isinstance(ei.value, ValueError)
    big = _bert(len(tok) + 8, layers=1)   # padded embedding matrix: allowed only when not strict
    with pytest.raises(IncompatibleModelError): explain(big, tok, "NaCl")
    explain(big, tok, "NaCl", order=1, strict_vocab=False)


def test_tokenizer_without_mask_token(bert):
    t = CompositionTokenizer(); t.mask_token = None
    with pytest.raises(IncompatibleModelError, match="no mask token") as ei: explain(bert, t, "NaCl")
    assert "BertForSequenceClassification" in str(ei.value) and "CompositionTokenizer" in str(ei.value)
    e = explain(bert, t, "NaCl", order=1, absent="remove")   # removal does not need [MASK]
    assert abs(sum(e.interactions().values()) - (e.prediction - e.baseline)) < 1e-5


def test_masked_and_removed_games_are_valid(bert, tok):
    for absent in ("mask", "remove"):
        g = TokenGame(bert, tok, "CaTiO3", players="pair", absent=absent, normalize=False)
        n = g.n_players
        full, empty = g(np.ones((1, n), bool))[0], g(np.zeros((1, n), bool))[0]
        assert abs(full - g.prediction) < 1e-5 and abs(empty - g.baseline) < 1e-5
        C = np.random.default_rng(0).integers(0, 2, (20, n)).astype(bool)
        v = g(C)
        assert v.shape == (20,) and np.isfinite(v).all()
        ids, am = g.sequences(C)
        assert ids.shape == am.shape == (20, len(g.input_ids))
        # [CLS]/[SEP] always present
        for row, mask in zip(ids, am):
            kept = [t for t, m in zip(tok.convert_ids_to_tokens(row.tolist()), mask) if m]
            assert kept[0] == "[CLS]" and kept[-1] == "[SEP]"
    # removing 'Ti 1' equals the model on 'CaO3'; masking it does not remove it
    gr = TokenGame(bert, tok, "CaTiO3", players="pair", absent="remove", normalize=False)
    gm = TokenGame(bert, tok, "CaTiO3", players="pair", absent="mask", normalize=False)
    direct = bert(**tok.encode_compositions(["CaO3"], return_tensors="pt")).logits[0, 0].item()
    assert abs(gr(np.array([[1, 0, 1]], bool))[0] - direct) < 1e-5
    assert abs(gm(np.array([[1, 0, 1]], bool))[0] - direct) > 1e-6


def test_explain_many_matches_explain(clm, tok):
    many = explain_many(clm, tok, COMPS, order=3, progress=False, chunk_evals=300)
    for c, e in zip(COMPS, many):
        one = explain(clm, tok, c, order=3)
        np.testing.assert_allclose(e.values.values, one.values.values, atol=1e-5)
        assert e.players == one.players


def test_bad_composition_names_row(bert, tok):
    with pytest.raises(MmlitInputError, match="row 1"):
        explain_many(bert, tok, ["NaCl", "Xx2O"], order=1, progress=False)


def test_cli_writes_values_and_figures(tmp_path, clm, tok):
    from mmlit.comp.model import save_composition_model
    save_composition_model(clm, tok, tmp_path/"model")
    csv = tmp_path/"data.csv"
    csv.write_text("composition,target\nCaTiO3,1.0\nSrTiO3,2.0\nCu2MnAl,0.5\nNaCl,0.1\n")
    script = tmp_path/"explain.py"   # the way a console script calls a fastcore `call_parse` function
    script.write_text("from mmlit.interpret.analysis import explain_cli\nexplain_cli()\n")
    r = subprocess.run([sys.executable, str(script), "--model", str(tmp_path/"model"), "--data", str(csv), "--order", "3",
                        "--index", "k-SII", "--out", str(tmp_path/"out"), "--quiet"],
                       capture_output=True, text=True, timeout=300, env={"MPLBACKEND": "Agg", **__import__("os").environ})
    assert r.returncode == 0, r.stderr[-2000:]
    vals = json.loads((tmp_path/"out"/"values.json").read_text())
    assert [v["composition"] for v in vals] == ["CaTiO3", "SrTiO3", "Cu2MnAl", "NaCl"]
    for v in vals: assert abs(sum(i["value"] for i in v["interactions"]) - (v["prediction"] - v["baseline"])) < 1e-5
    for f in ("interactions.csv", "element_importance.csv", "element_importance.png", "top_2token.png", "top_3token.csv"):
        assert (tmp_path/"out"/f).stat().st_size > 0
