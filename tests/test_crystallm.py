"CrystaLLM adapter (mmlit.exkt.crystallm): vocabulary, checkpoint round trip, sampler, CIF parsing, recorded failures."
import re

import pytest
import torch
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from mmlit.core import DataError
from mmlit.exkt.crystallm import (CIFGPT, CIFVocab, CrystaLLMPredictor, GPTConfig, load_checkpoint, parse_cif, sample_cif,
                                  save_checkpoint)


def rocksalt(a, b, x): return Structure.from_spacegroup("Fm-3m", Lattice.cubic(x), [a, b], [[0, 0, 0], [.5, .5, .5]])


def crystallm_style(s):
    "pymatgen's symmetrized CIF with the symmetry loop cut to the identity: the form of CrystaLLM's training data."
    cif = str(CifWriter(s, symprec=0.1))
    return re.sub(r"(_symmetry_equiv_pos_as_xyz\n)(.*?)(?=\n(?:\S| \S))", r"\1  1  'x, y, z'", cif, flags=re.DOTALL)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return CIFGPT(GPTConfig(block_size=64, n_layer=2, n_head=2, n_embd=16, bias=False)).eval()


def test_vocabulary_matches_crystallm():
    v = CIFVocab()
    assert len(v) == 371 and v.ids["Si"] == 0 and v.ids["0"] == 89 and v.tokens[-1] == "<unk>"
    assert v.tokenize("data_Np1Co3\n_symmetry_space_group_name_H-M    Pm\n") == [
        "data_", "Np", "1", "Co", "3", "\n", "_symmetry_space_group_name_H-M", " ", "Pm_sg", "\n"]
    assert v.decode(v.encode("_cell_length_a   5.6400\n")) == "_cell_length_a 5.6400\n"


def test_checkpoint_round_trip(tiny, tmp_path):
    "Saved and reloaded: same logits, same greedy sample; torch.compile's prefix and old mask buffers are tolerated."
    back = load_checkpoint(save_checkpoint(tiny, tmp_path/"ckpt.pt"))
    x = torch.tensor([CIFVocab().encode("data_Na1Cl1\n_cell_length_a")])
    assert torch.allclose(back(x), tiny(x), atol=1e-6)
    v = CIFVocab()
    assert sample_cif(back, v, "data_Na1Cl1\n", 25, temperature=0) == sample_cif(tiny, v, "data_Na1Cl1\n", 25, temperature=0)
    sd = {"_orig_mod." + k: t for k, t in tiny.state_dict().items()}
    sd["_orig_mod.transformer.h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
    torch.save({"model_args": dict(block_size=64, vocab_size=371, n_layer=2, n_head=2, n_embd=16, dropout=0.1, bias=False),
                "model": sd, "iter_num": 3}, tmp_path/"compiled.pt")
    assert torch.allclose(load_checkpoint(tmp_path/"compiled.pt")(x), tiny(x), atol=1e-6)
    with pytest.raises(DataError, match="not shipped"): load_checkpoint(tmp_path/"none.pt")
    torch.save({"weights": 1}, tmp_path/"bad.pt")
    with pytest.raises(DataError, match="model_args"): load_checkpoint(tmp_path/"bad.pt")


def test_parse_crystallm_style_cif():
    s = rocksalt("Na", "Cl", 5.64)
    assert StructureMatcher().fit(parse_cif(crystallm_style(s)), s)
    with pytest.raises(DataError, match="space group"): parse_cif("data_NaCl\n_cell_length_a 3\n")
    with pytest.raises(DataError, match="atom sites"): parse_cif(crystallm_style(s).split("loop_\n _atom_site")[0])


def test_invalid_samples_are_a_recorded_failure(tiny, tmp_path):
    p = CrystaLLMPredictor(save_checkpoint(tiny, tmp_path/"ckpt.pt"), n_samples=3, max_new_tokens=30)
    r = p.predict(["NaCl", "Fe2O3"], top_k=1, progress=False)
    assert [x.ok for x in r] == [False, False]
    assert r[0].error == "no valid CIF in 3 CrystaLLM samples (unreadable CIF: 3)"
    assert p.config_key() == CrystaLLMPredictor(tmp_path/"ckpt.pt", n_samples=3, max_new_tokens=30).config_key()
    with pytest.raises(DataError, match="not shipped"): CrystaLLMPredictor(tmp_path/"missing")


def test_valid_samples_become_candidates(tiny):
    cif = crystallm_style(rocksalt("Na", "Cl", 5.64))
    class Stub(CrystaLLMPredictor):
        def _sample(self, prompt, gen): return cif if prompt.startswith("data_Na") else cif.replace("Na", "K")
    r = Stub(tiny, n_samples=3, rank="energy", n_relax=3).predict_one("NaCl", top_k=3)
    assert r.ok and len(r.candidates) == 3 and all(c.provenance["method"] == "crystallm" for c in r.candidates)
    assert all(c.structure.composition.reduced_formula == "NaCl" and c.energy_per_atom < 0 for c in r.candidates)
    assert "other composition: 2" in Stub(tiny, n_samples=2).predict_one("KBr").error
