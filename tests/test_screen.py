"""mmlit.screen: SMACT enumeration of a chemical space, exclusion of known compositions, ranking, the plot (fast)."""
import itertools, re, warnings

import matplotlib
matplotlib.use("Agg")
import numpy as np, pandas as pd, pytest, smact
from matplotlib.figure import Figure
from pymatgen.core import Composition
from smact.screening import smact_filter

from mmlit.core import CompositionError, ConfigError, DataError
from mmlit.data.composition import fractional_composition, parse_composition, reduced_formula
from mmlit.data.core import Dataset
from mmlit.screen import enumerate_compositions, parse_elements, plot_screen, screen

ION = re.compile(r"([A-Z][a-z]?)([+-]\d+)")

def assignments(frame) -> dict:
    "{formula: {sorted (element, state) tuples}} read back from the oxidation_states column."
    return {c: {tuple(sorted((e, int(o)) for e, o in ION.findall(a))) for a in s.split("; ")}
            for c, s in zip(frame.composition, frame.oxidation_states)}

def smact_reference(elements, max_atoms, oxidation_states="icsd24") -> dict:
    "The same space from smact_filter itself (threshold max_atoms - k + 1, then at most max_atoms atoms)."
    ref = {}
    for k in range(2, len(elements) + 1):
        for sub in itertools.combinations(elements, k):
            for els, oxs, r in smact_filter([smact.Element(e) for e in sub], threshold=max_atoms - k + 1,
                                            oxidation_states_set=oxidation_states):
                if sum(r) <= max_atoms:
                    ref.setdefault(reduced_formula(dict(zip(els, r))), set()).add(tuple(sorted(zip(els, oxs))))
    return ref

@pytest.mark.parametrize("elements,max_atoms,oxi", [("Li,Fe,P,O", 10, "icsd24"), ("Cs-Pb-I-Br", 8, "icsd24"),
                                                     ("Na Mn O", 9, "smact14"), ("Ba,Ti,S", 7, "pymatgen_sp")])
def test_same_as_smact_filter(elements, max_atoms, oxi):
    df = enumerate_compositions(elements, max_atoms=max_atoms, oxidation_states=oxi, progress=False)
    assert len(df) > 0 and df.composition.is_unique
    assert assignments(df) == smact_reference(parse_elements(elements), max_atoms, oxi)

def test_charge_neutral_and_sizes():
    df = enumerate_compositions("Li,Fe,P,O", max_atoms=10, progress=False)
    for c, sets in assignments(df).items():   # every listed assignment is neutral for the formula as written
        amounts = parse_composition(c).get_el_amt_dict()
        assert all(sum(amounts[e] * o for e, o in s) == 0 for s in sets), c
    comps = [parse_composition(c) for c in df.composition]
    assert df.n_atoms.tolist() == [int(c.num_atoms) for c in comps] and df.n_atoms.max() <= 10
    assert df.n_elements.tolist() == [len(c) for c in comps] and set(df.n_elements) == {2, 3, 4}
    assert all(c == reduced_formula(c) for c in df.composition)
    small = enumerate_compositions("Li,Fe,P,O", max_atoms=6, progress=False)
    assert set(small.composition) == set(df.composition[df.n_atoms <= 6])   # max_atoms only cuts, never changes

def test_textbook_states_agree_with_pymatgen():
    "With the common oxidation states, pymatgen finds a neutral assignment for every composition."
    df = enumerate_compositions(["Li", "Fe", "P", "O"], oxidation_states={"Li": [1], "Fe": [2, 3], "P": [5], "O": [-2]},
                                progress=False)
    assert {"LiFePO4", "Li3PO4", "FePO4", "Fe2O3", "FeO", "Li2O", "P2O5"} <= set(df.composition)
    assert all(Composition(c).oxi_state_guesses() for c in df.composition)

def test_bad_elements_and_options():
    for bad in ("Li,Fe,Xy,O", "Li,fe,O", ["Li", "Q"]):
        with pytest.raises(CompositionError, match="Xy|'fe'|'Q'"): enumerate_compositions(bad)
    assert issubclass(CompositionError, ValueError)
    with pytest.raises(ConfigError, match="Ar"): enumerate_compositions("Na,Ar,Cl", progress=False)
    with pytest.raises(ConfigError, match="max_elements"): enumerate_compositions("Li,O", max_elements=3)
    with pytest.raises(ConfigError, match="icsd3"): enumerate_compositions("Li,O", oxidation_states="icsd3")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        empty = enumerate_compositions("Cu,Zn", progress=False)
    assert empty.empty and list(empty.columns) == ["composition", "n_elements", "n_atoms", "oxidation_states"]
    assert any("no charge-neutral" in str(x.message) for x in w)

class Fractions:
    "mean = atomic fraction of Li, std = atomic fraction of Fe (known answers for every formula)."
    def predict(self, formulas, return_std=False):
        f = [fractional_composition(c) for c in formulas]
        m, s = np.array([x.get("Li", 0.0) for x in f]), np.array([x.get("Fe", 0.0) for x in f])
        return (m, s) if return_std else m

class MeanOnly:
    def predict(self, formulas): return np.array([fractional_composition(c).get("O", 0.0) for c in formulas])

@pytest.mark.parametrize("rank_by", ["prediction", "ucb", "lcb"])
@pytest.mark.parametrize("maximize", [True, False])
def test_ranking(rank_by, maximize):
    kappa = 2.0
    r = screen(Fractions(), "Li,Fe,P,O", top=None, rank_by=rank_by, kappa=kappa, maximize=maximize, progress=False)
    li = np.array([fractional_composition(c).get("Li", 0.0) for c in r.composition])
    fe = np.array([fractional_composition(c).get("Fe", 0.0) for c in r.composition])
    np.testing.assert_allclose(r.prediction, li); np.testing.assert_allclose(r["std"], fe)
    optimistic = li + kappa * fe if maximize else li - kappa * fe
    pessimistic = li - kappa * fe if maximize else li + kappa * fe
    expected = {"prediction": li, "ucb": optimistic, "lcb": pessimistic}[rank_by]
    np.testing.assert_allclose(r.score, expected)
    s = r.score.to_numpy()
    assert (np.diff(s) <= 1e-12).all() if maximize else (np.diff(s) >= -1e-12).all()
    assert r["rank"].tolist() == list(range(1, len(r) + 1))
    assert r.attrs["rank_by"] == rank_by and r.attrs["maximize"] == maximize

def test_ucb_changes_the_winner():
    "An uncertain candidate overtakes a confident one under the optimistic bound, not under the mean."
    by_mean = screen(Fractions(), "Li,Fe,P,O", top=3, progress=False)
    by_ucb = screen(Fractions(), "Li,Fe,P,O", top=3, rank_by="ucb", kappa=5.0, progress=False)
    assert by_mean.composition[0] != by_ucb.composition[0]
    assert by_ucb["std"].iloc[0] > by_mean["std"].iloc[0]

def test_training_compositions_are_excluded():
    full = screen(MeanOnly(), "Li,Fe,P,O", top=None, progress=False)
    assert {"LiFePO4", "Li2O"} <= set(full.composition)
    for spelling in (["LiFePO4", "Li2O"], ["O4PFeLi", "OLi2"], ["Li2Fe2P2O8", "Li4O2"]):
        r = screen(MeanOnly(), "Li,Fe,P,O", exclude=spelling, top=None, progress=False)
        assert not {"LiFePO4", "Li2O"} & set(r.composition) and len(r) == len(full) - 2
        assert r.attrs["n_excluded"] == 2 and not r.in_training.any()
    train = Dataset(name="train", ids=["1", "2", "3"], compositions=["OLi2", "FePO4", "NaCl"],
                    targets=pd.DataFrame({"y": [1.0, 2.0, 3.0]}))
    r = screen(MeanOnly(), "Li,Fe,P,O", exclude=train, top=None, keep_excluded=True, progress=False)
    assert sorted(r.composition[r.in_training]) == ["FePO4", "Li2O"] and len(r) == len(full)
    table = screen(MeanOnly(), "Li,Fe,P,O", exclude=pd.DataFrame({"composition": ["Fe2O3"]}), top=None, progress=False)
    assert "Fe2O3" not in set(table.composition)

def test_screen_errors():
    with pytest.raises(ConfigError, match="gives none"): screen(MeanOnly(), "Li,Fe,P,O", rank_by="ucb", progress=False)
    with pytest.raises(CompositionError, match="'Zz'"): screen(MeanOnly(), "Li,Zz,O", progress=False)
    with pytest.raises(CompositionError, match="Qq"): screen(MeanOnly(), "Li,O", exclude=["Li2O", "Qq2O"], progress=False)
    with pytest.raises(DataError, match="excluded"):
        screen(MeanOnly(), "Li,O", oxidation_states={"Li": [1], "O": [-2]}, exclude=["Li2O"], progress=False)
    with pytest.raises(ConfigError, match="no charge-neutral"): screen(MeanOnly(), "Cu,Zn", progress=False)
    r = screen(MeanOnly(), "Li,Fe,P,O", top=5, progress=False)
    assert len(r) == 5 and r["std"].isna().all()

def test_plot_screen():
    r = screen(Fractions(), "Li,Fe,P,O", rank_by="ucb", progress=False)
    fig = plot_screen(r, top=7, unit="eV")
    ax = fig.axes[0]
    assert isinstance(fig, Figure) and len(ax.get_yticks()) == 7 and "eV" in ax.get_xlabel()
    top_down = [t.get_text() for t in sorted(ax.get_yticklabels(), key=lambda t: -t.get_position()[1])]
    assert top_down == r.composition[:7].tolist()
    with pytest.raises(DataError, match="empty"): plot_screen(r.iloc[:0])
    matplotlib.pyplot.close("all")
