"""Property tests of the composition tokenizer: encode -> decode gives back the composition (amounts rounded to 4 decimals)."""
import tempfile

import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from pymatgen.core import Composition

from mmlit.core import CompositionError
from mmlit.comp.tokenizer import (CompositionTokenizer, ELEMENTS, composition_to_tokens, tokens_to_composition,
                                  amount_to_tokens, tokens_to_amount, ORDERS)

DECIMALS = 4
TOK = CompositionTokenizer()

integer_amounts = st.integers(min_value=1, max_value=500).map(float)
fractional_amounts = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False)
amounts = st.one_of(integer_amounts, fractional_amounts)
compositions = st.dictionaries(st.sampled_from(ELEMENTS), amounts, min_size=1, max_size=8)


def rounded(d):
    return Composition({el: round(a, DECIMALS) for el, a in d.items()})


@given(compositions, st.sampled_from(ORDERS))
@settings(max_examples=300, deadline=None)
def test_tokens_roundtrip(d, order):
    toks = composition_to_tokens(d, order=order)
    assert tokens_to_composition(toks) == rounded(d)
    assert len(toks) >= 2 * len(d)


@given(st.lists(compositions, min_size=1, max_size=6))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fast_tokenizer_roundtrip(ds):
    enc = TOK.encode_compositions(ds, return_tensors="pt")
    assert enc["input_ids"].shape == enc["attention_mask"].shape
    assert (enc["input_ids"][:, 0] == TOK.cls_token_id).all()
    assert TOK.decode_compositions(enc["input_ids"]) == [rounded(d) for d in ds]
    # padding only at the end, and exactly where the attention mask is 0
    assert ((enc["input_ids"] == TOK.pad_token_id) == (enc["attention_mask"] == 0)).all()


@given(compositions.flatmap(lambda d: st.permutations(list(d.items()))))
@settings(max_examples=200, deadline=None)
def test_order_invariance(items):
    "The default (electronegativity) order is canonical: the input order does not matter (noble gases included)."
    assert composition_to_tokens(dict(items)) == composition_to_tokens(dict(sorted(items)))


def test_order_invariance_without_electronegativity():
    for a, b in [("HeNe", "NeHe"), ("XeArKr", "KrXeAr"), ("OgRnF", "FRnOg")]:
        assert composition_to_tokens(a) == composition_to_tokens(b)


@given(amounts)
@settings(max_examples=300, deadline=None)
def test_amount_roundtrip(a):
    toks = amount_to_tokens(a)
    assert tokens_to_amount(toks) == round(a, DECIMALS)
    # single plain token for small integers, otherwise only marked digit tokens
    assert (len(toks) == 1 and not toks[0].startswith("#")) or all(t.startswith("#") for t in toks)


@given(st.text(max_size=12))
@settings(max_examples=300, deadline=None)
def test_hostile_strings_raise_composition_error_or_roundtrip(s):
    "Any string either tokenizes into something that decodes back to its composition, or raises CompositionError."
    try:
        toks = composition_to_tokens(s)
    except CompositionError:
        return
    assert tokens_to_composition(toks) == Composition({el: round(a, DECIMALS) for el, a in Composition(s).get_el_amt_dict().items()})


@given(st.lists(st.sampled_from(TOK.convert_ids_to_tokens(list(range(len(TOK))))), max_size=10))
@settings(max_examples=300, deadline=None)
def test_random_token_sequences_decode_or_raise(toks):
    "Decoding arbitrary token soup never returns garbage silently: it is a valid composition or a CompositionError."
    try:
        c = tokens_to_composition(toks)
    except CompositionError:
        return
    elements = [t for t in toks if t in ELEMENTS]
    assert sorted(str(e) for e in c.elements) == sorted(elements)
    assert all(a > 0 for a in c.values())


def test_batch_error_names_row():
    with pytest.raises(CompositionError, match="row 2"):
        TOK.encode_compositions(["NaCl", "Fe2O3", "Fe-2O3"])


@pytest.mark.parametrize("order,reduce,max_int", [("as_given", True, 8), ("hill", False, 100)])
def test_save_load(order, reduce, max_int):
    tok = CompositionTokenizer(order=order, reduce=reduce, max_int=max_int)
    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        tok2 = CompositionTokenizer.from_pretrained(d)
    assert (tok2.order, tok2.reduce, tok2.max_int) == (order, reduce, max_int)
    assert tok2.get_vocab() == tok.get_vocab()
    comps = ["Fe4O6", "O3TiCa", "Al0.5CoCrFeNi1.25", "Li15Si4"]
    assert tok2.encode_compositions(comps)["input_ids"] == tok.encode_compositions(comps)["input_ids"]
