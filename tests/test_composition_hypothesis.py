"Property-based tests of mmlit.data.composition (round trips, idempotence, hostile inputs)."
import math, re, string

import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from pymatgen.core import Composition

from mmlit.core import CompositionError
from mmlit.data.composition import (ELEMENT_SYMBOLS, MAX_AMOUNT, MIN_AMOUNT, fractional_composition, normalize_formula,
                                    parse_composition, reduced_formula)

SETTINGS = dict(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

elements = st.sampled_from(ELEMENT_SYMBOLS)
int_amounts = st.integers(min_value=1, max_value=1000)
float_amounts = st.floats(min_value=1e-3, max_value=MAX_AMOUNT, allow_nan=False, allow_infinity=False)
int_comps = st.dictionaries(elements, int_amounts, min_size=1, max_size=8)
float_comps = st.dictionaries(elements, st.one_of(int_amounts, float_amounts), min_size=1, max_size=10)


def same(a, b):
    "Compositions equal within pymatgen's tolerance and with identical element sets."
    return set(a) == set(b) and a == b


@settings(**SETTINGS)
@given(float_comps)
def test_normalize_parse_round_trip(d):
    comp = parse_composition(d)
    s = normalize_formula(d)
    assert same(parse_composition(s), comp), (d, s)
    assert normalize_formula(s) == s  # normal form is a fixed point
    assert not re.search(r"\d[eE][-+]?\d", s)  # never exponent notation


@settings(**SETTINGS)
@given(float_comps)
def test_reduced_formula_idempotent(d):
    r = reduced_formula(d)
    assert reduced_formula(r) == r
    # reduction keeps the atomic fractions
    f1, f2 = fractional_composition(d), fractional_composition(r)
    assert f1.keys() == f2.keys() and all(math.isclose(f1[k], f2[k], rel_tol=1e-6, abs_tol=1e-9) for k in f1)


@settings(**SETTINGS)
@given(int_comps, st.integers(min_value=1, max_value=50))
def test_reduced_formula_removes_common_factor(d, k):
    scaled = {el: a * k for el, a in d.items()}
    assert reduced_formula(scaled) == reduced_formula(d)
    g = math.gcd(*d.values())
    assert parse_composition(reduced_formula(d)) == Composition({el: a // g for el, a in d.items()})


@settings(**SETTINGS)
@given(float_comps)
def test_element_order_irrelevant(d):
    rev = dict(reversed(list(d.items())))
    assert normalize_formula(rev) == normalize_formula(d)
    assert normalize_formula(Composition(rev)) == normalize_formula(d)


def _check_strict(x):
    "Either a valid composition over real elements within the limits, or a CompositionError - nothing else."
    try:
        c = parse_composition(x)
    except CompositionError as e:
        assert str(e)  # message present
        return None
    assert len(c) > 0 and all(el.symbol in ELEMENT_SYMBOLS for el in c)
    assert all(MIN_AMOUNT <= a <= MAX_AMOUNT and math.isfinite(a) for a in c.values())
    return c


@settings(**SETTINGS)
@given(st.text(max_size=60))
def test_arbitrary_text_never_other_exception(s):
    _check_strict(s)


@settings(**SETTINGS)
@given(st.text(alphabet=string.ascii_letters + string.digits + "()[]{}.-+ e", max_size=40))
def test_formula_like_text_never_other_exception(s):
    _check_strict(s)


hostile_char = st.sampled_from(list("!@#$%^&*=|\\/?<>,;:'\"~`·²³⁺⁻→αβ\t\x00") + ["\u200b", "\ufeff", "Ｆ"])


@settings(**SETTINGS)
@given(int_comps, hostile_char, st.integers(min_value=0, max_value=100))
def test_inserted_garbage_raises(d, ch, pos):
    s = normalize_formula(d)
    if ch.isspace(): return  # whitespace is allowed between tokens
    pos = pos % (len(s) + 1)
    bad = s[:pos] + ch + s[pos:]
    with pytest.raises(CompositionError) as e: parse_composition(bad)
    assert repr(bad)[:40] in str(e.value) or bad[:40] in str(e.value)


@settings(**SETTINGS)
@given(int_comps, st.sampled_from(["(", ")", ")(", "(()"]))
def test_unbalanced_brackets_raise(d, br):
    s = normalize_formula(d)
    with pytest.raises(CompositionError): parse_composition(s + br)
    with pytest.raises(CompositionError): parse_composition(br + s)


unknown_symbols = st.from_regex(r"\A[A-Z][a-z]?\Z", fullmatch=True).filter(lambda t: t not in ELEMENT_SYMBOLS)


@settings(**SETTINGS)
@given(int_comps, unknown_symbols, int_amounts)
def test_unknown_element_raises(d, sym, n):
    with pytest.raises(CompositionError, match=sym): parse_composition(normalize_formula(d) + f"{sym}{n}")
    with pytest.raises(CompositionError): parse_composition({**d, sym: n})


bad_amounts = st.one_of(st.just(float("nan")), st.just(float("inf")), st.just(-float("inf")),
                        st.floats(max_value=0.0), st.floats(min_value=MAX_AMOUNT * 1.0001, max_value=1e300),
                        st.floats(min_value=0, max_value=MIN_AMOUNT * 0.99),
                        st.text(max_size=3), st.none(), st.booleans(), st.lists(st.integers(), max_size=2))


@settings(**SETTINGS)
@given(int_comps, elements, bad_amounts)
def test_bad_amount_in_dict_raises(d, el, amt):
    with pytest.raises(CompositionError): parse_composition({**d, el: amt})


@settings(**SETTINGS)
@given(int_comps, st.sampled_from(["1e9", "1e400", "1e-400", "0", "0.0", "-1", "-2.5"]))
def test_bad_amount_in_string_raises(d, amt):
    el = next(iter(d))
    s = normalize_formula({k: v for k, v in d.items() if k != el}) if len(d) > 1 else ""
    with pytest.raises(CompositionError): parse_composition(f"{el}{amt}{s}")


@settings(**SETTINGS)
@given(st.one_of(st.none(), st.integers(), st.floats(), st.binary(), st.lists(st.text()), st.tuples(st.text()),
                 st.sets(st.integers())))
def test_non_string_types_raise(x):
    with pytest.raises(CompositionError): parse_composition(x)


@settings(**SETTINGS)
@given(int_comps)
def test_subscript_digits_translated(d):
    s = normalize_formula(d)
    sub = s.translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))
    assert parse_composition(sub) == parse_composition(s)


def test_long_and_many_element_formulas():
    with pytest.raises(CompositionError, match="too long"): parse_composition("H1" * 600)
    all_els = "".join(f"{e}1" for e in ELEMENT_SYMBOLS)
    assert len(parse_composition(all_els)) == 118
    # 200 element tokens (repeats are summed, as in CH3CH3)
    toks = (list(ELEMENT_SYMBOLS) * 2)[:200]
    assert parse_composition("".join(toks)).num_atoms == 200


@settings(**SETTINGS)
@given(st.lists(st.tuples(elements, st.one_of(st.just(""), st.integers(1, 10**5).map(str),
                                              st.decimals(min_value="0.001", max_value="99999", places=4).map(str)),
                          st.sampled_from(["", " "])), min_size=1, max_size=12))
def test_flat_fast_path_matches_pymatgen(parts):
    "The regex fast path for bracket-free formulas gives exactly pymatgen's composition."
    s = "".join(f"{el}{amt}{sp}" for el, amt, sp in parts)
    from mmlit.data.composition import _parse_str
    try:
        ref = Composition(s)
    except Exception:
        with pytest.raises(CompositionError): _parse_str.__wrapped__(s)
        return
    if all(a >= MIN_AMOUNT for a in ref.values()) and len(ref) == len({p[0] for p in parts}):
        assert _parse_str.__wrapped__(s) == ref and set(_parse_str.__wrapped__(s)) == set(ref)
    else:
        with pytest.raises(CompositionError): _parse_str.__wrapped__(s)
