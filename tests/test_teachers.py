"Tests of mmlit.data.structures (structure sets, corpus) and mmlit.comp.teachers (teachers, cache, targets)."
import json, os, warnings, zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from mmlit.core import ConfigError, DataError, shared_data_dir
from mmlit.data.core import BadRowsError, BadRowsWarning
from mmlit.data.structures import (load_structure_set, list_structure_sets, parse_structures, structure_corpus,
                                   structure_key, spacegroup_numbers)
from mmlit.comp.teachers import (ALIGNNVectorTeacher, CHGNetTeacher, EmbeddingCache, Teacher, TeacherTargets,
                                 TorchModuleTeacher, UnknownStructureError)

HAS_SHARED = shared_data_dir() is not None and (shared_data_dir()/"structures").is_dir()


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMLIT_CACHE", str(tmp_path/"cache"))


def rocksalt(a=5.64, species=("Na", "Cl")):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), list(species), [[0, 0, 0], [0.5, 0.5, 0.5]])


class CountingEncoder(torch.nn.Module):
    "Linear map of (fractional composition over Z<=94, volume per atom); counts forward calls and structures seen."
    def __init__(self, dim=5):
        super().__init__(); torch.manual_seed(1); self.lin = torch.nn.Linear(95, dim); self.calls = 0; self.seen = 0
    def forward(self, x):
        self.calls += 1; self.seen += len(x); return self.lin(x)


def featurize(structures):
    x = torch.zeros(len(structures), 95)
    for i, s in enumerate(structures):
        for el, f in s.composition.fractional_composition.items(): x[i, el.Z - 1] = f
        x[i, 94] = s.volume / len(s) / 20
    return x


# ---------------------------------------------------------------- structures
def test_structure_key_invariances():
    s = rocksalt()
    t = s.copy(); t.translate_sites([0], [1, 0, 0], frac_coords=True, to_unit_cell=False)
    assert structure_key(s) == structure_key(t)
    assert structure_key(s) != structure_key(rocksalt(5.65))
    assert structure_key(s) != structure_key(rocksalt(species=("K", "Cl")))


def test_parse_structures_bad_rows():
    good = rocksalt().to(fmt="cif")
    with pytest.raises(BadRowsError, match="id 'x2'"):
        parse_structures([good, "garbage"], ids=["x1", "x2"], progress=False)
    with pytest.warns(BadRowsWarning):
        out = parse_structures([good, "garbage"], on_bad="drop", progress=False)
    assert out[1] is None and len(out[0]) == 8
    with pytest.raises(ConfigError):
        parse_structures([good], fmt="xyz", progress=False)


def test_shipped_sets_and_corpus():
    sizes = {n: len(load_structure_set(n, progress=False)) for n in ["robocrys_minerals", "aflow_prototypes", "pymatgen_structures"]}
    assert sizes == {"robocrys_minerals": 180, "aflow_prototypes": 288, "pymatgen_structures": 21}
    c = structure_corpus(["aflow_prototypes", "robocrys_minerals", "pymatgen_structures"], progress=False)
    assert len(set(c.ids)) == len(c) < sum(sizes.values())
    keys = list(zip(c.compositions, c.meta.spg_num))
    assert len(set(k for k in keys if k[1] > 0)) == sum(1 for k in keys if k[1] > 0)   # no (formula, spg) twice
    clean = structure_corpus(["aflow_prototypes", "pymatgen_structures"], exclude_compositions=["Na4Cl4", "Si"], progress=False)
    assert "NaCl" not in clean.compositions and "Si" not in clean.compositions
    assert "NaCl" in c.compositions
    with pytest.raises(ConfigError, match="bogus"):
        load_structure_set("bogus")


def test_spacegroups():
    assert spacegroup_numbers([rocksalt(), Structure(Lattice.cubic(4.1), ["Cs", "Cl"], [[0, 0, 0], [.5, .5, .5]])],
                              progress=False).tolist() == [225, 221]


@pytest.mark.skipif(not HAS_SHARED, reason="needs the shared structure data")
def test_shared_sets_small():
    for n in list_structure_sets():
        ds = load_structure_set(n, max_rows=5, progress=False)
        assert 0 < len(ds) <= 5 and all(isinstance(s, Structure) for s in ds.structures), n
    ds = load_structure_set("aflow_elastic_thermal/bulk_modulus", split="test", max_rows=10, progress=False)
    assert set(ds.meta.split) == {"test"} and ds.target_names == ["bulk_modulus"]
    with pytest.raises(ConfigError, match="train"):
        load_structure_set("mpts_52", split="train")


# ---------------------------------------------------------------- teachers
def test_cache_round_trip_counts_calls():
    structs = [rocksalt(a) for a in (5.0, 5.2, 5.4)] + [rocksalt(species=("K", "Br"))]
    enc = CountingEncoder()
    t = TorchModuleTeacher(enc, featurize=featurize, name="counting", batch_size=2)
    probe_calls = enc.calls                       # the dim probe
    e1 = t.embed(structs, progress=False)
    assert enc.calls - probe_calls == 2 and t.dim == 5 and e1.shape == (4, 5)
    e2 = t.embed(structs[::-1], progress=False)   # all cached, in any order
    assert enc.calls - probe_calls == 2
    np.testing.assert_array_equal(e2, e1[::-1])
    seen = enc.seen
    t.embed(structs + [rocksalt(6.0)], progress=False)   # only the new one is computed
    assert enc.seen == seen + 1
    t.embed(structs, progress=False, cache=False)
    assert enc.seen == seen + 1 + 4
    assert len(t.cache) == 5
    # new weights -> new version -> no stale hits
    with torch.no_grad(): enc.lin.bias += 1
    t2 = TorchModuleTeacher(enc, featurize=featurize, name="counting")
    assert t2.version != t.version
    np.testing.assert_allclose(t2.embed(structs, progress=False), e1 + 1, atol=1e-5)


def test_embedding_cache_dim_check(tmp_path):
    c = EmbeddingCache("x", dim=3, root=tmp_path)
    c.put({"a": np.ones(3), "bad": np.ones(4)})
    assert set(c.get(["a", "bad"])) == {"a"}


def test_torch_teacher_errors_and_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="shape"):
        TorchModuleTeacher(lambda xs: torch.zeros(len(xs) + 1, 3))
    with pytest.raises(ConfigError, match="callable"):
        TorchModuleTeacher(42)
    enc = CountingEncoder(dim=7)
    torch.save(enc.state_dict(), tmp_path/"enc.pt")
    def loader(p):
        m = CountingEncoder(dim=7); m.load_state_dict(torch.load(p)); return m
    t = TorchModuleTeacher.from_checkpoint(tmp_path/"enc.pt", loader, featurize=featurize)
    assert t.name == "enc" and t.dim == 7
    ref = enc(featurize([rocksalt()])).detach().numpy()
    np.testing.assert_allclose(t.embed([rocksalt()], progress=False), ref, atol=1e-6)
    with pytest.raises(ConfigError, match="does not exist"):
        TorchModuleTeacher.from_checkpoint(tmp_path/"missing.pt")
    # a plain callable: cached only with an explicit version
    f = lambda xs: np.ones((len(xs), 2))
    assert not TorchModuleTeacher(f).cacheable and TorchModuleTeacher(f, version="v1").cacheable
    with pytest.raises(DataError, match="row 1"):
        t.embed([rocksalt(), "NaCl"], progress=False)


@pytest.fixture(scope="module")
def alignn():
    return ALIGNNVectorTeacher()


def _raw_prototype_vectors():
    import jarvis
    z = zipfile.ZipFile(Path(jarvis.__file__).parent/"core"/"mineral_name_prototype.json.zip")
    d = json.loads(z.read("mineral_name_prototype.json"))
    out = {}
    for entries in d.values():
        for _, vec, jid, _ in entries: out.setdefault(jid, np.asarray(vec, dtype=np.float32))   # first occurrence
    return out


def test_alignn_lookup_by_id_is_exact(alignn):
    raw = _raw_prototype_vectors()
    assert alignn.dim == 256 and len(alignn.ids) == len(raw)
    for jid in ["JVASP-113", alignn.ids[0], alignn.ids[-1], next(i for i in alignn.ids if i.startswith("mp-"))]:
        s = alignn.structures[alignn.ids.index(jid)]
        e = alignn.embed([s], ids=[jid], progress=False)
        np.testing.assert_array_equal(e[0], raw[jid])
        np.testing.assert_array_equal(alignn.vector(jid), raw[jid])


def test_alignn_structure_match_and_unknown(alignn):
    jid = "JVASP-113"; s = alignn.structures[alignn.ids.index(jid)].copy()
    s.make_supercell([1, 2, 1]); s.perturb(0.01)
    np.testing.assert_array_equal(alignn.embed([s], progress=False)[0], alignn.vector(jid))
    unknown = Structure(Lattice.cubic(3.0), ["Xe", "Kr"], [[0, 0, 0], [.5, .5, .5]])
    e, m = alignn.embed_masked([s, unknown], ids=[None, "not-an-id"], progress=False)
    assert m.tolist() == [True, False] and not e[1].any()
    with pytest.raises(UnknownStructureError, match="row 0") as ei:
        alignn.embed([unknown], progress=False)
    assert isinstance(ei.value, DataError) and ei.value.rows == [0]
    with pytest.raises(UnknownStructureError):
        alignn.vector("JVASP-0")


@pytest.fixture(scope="module")
def chgnet():
    return CHGNetTeacher(batch_size=4)


def test_chgnet_deterministic(chgnet, tmp_path):
    structs = [rocksalt(), rocksalt(species=("Mg", "O"), a=4.2), Structure(Lattice.cubic(4.1), ["Cs", "Cl"], [[0, 0, 0], [.5, .5, .5]])]
    e1 = chgnet.embed(structs, progress=False, cache=False)
    e2 = chgnet.embed(structs[1], progress=False, cache=False)
    e3 = chgnet.embed(structs, progress=False, cache=False)
    assert e1.shape == (3, 64) and e1.dtype == np.float32 and np.isfinite(e1).all()
    np.testing.assert_array_equal(e1, e3)
    np.testing.assert_allclose(e2[0], e1[1], atol=1e-5)
    assert not np.allclose(e1[0], e1[1])
    lonely = Structure(Lattice.cubic(30), ["Cu"], [[0, 0, 0]])
    _, m = chgnet.embed_masked([lonely, structs[0]], progress=False)
    assert m.tolist() == [False, True]


def test_teacher_targets(chgnet, alignn, tmp_path):
    ds = load_structure_set("aflow_prototypes", max_rows=12, progress=False)
    ds = ds.subset([i for i, s in enumerate(ds.structures) if len(s) <= 12])
    jid = "JVASP-113"; extra = alignn.structures[alignn.ids.index(jid)]
    structs, ids = ds.structures + [extra], ds.ids + [jid]
    toy = TorchModuleTeacher(CountingEncoder(), featurize=featurize, name="toy")
    tt = TeacherTargets([chgnet, alignn, toy])
    assert tt.dims == {"chgnet": 64, "alignn_prototypes": 256, "toy": 5}
    out = tt.fit_transform(structs, ids, progress=False)
    for name, (y, m) in out.items():
        assert y.shape == (len(structs), tt.dims[name]) and m.dtype == bool and y.dtype == np.float32
        np.testing.assert_allclose(y[m].mean(0), 0, atol=1e-4)
        assert not y[~m].any()
    assert out["chgnet"][1].all() and out["alignn_prototypes"][1][-1]
    y, m = out["chgnet"]
    raw = chgnet.embed(structs, progress=False)
    np.testing.assert_allclose(tt.inverse_transform("chgnet", y), raw, atol=1e-4)
    tt.save(tmp_path/"s.npz")
    tt2 = TeacherTargets([chgnet, alignn, toy]).load(tmp_path/"s.npz")
    np.testing.assert_allclose(tt2.transform(structs, ids, progress=False)["toy"][0], out["toy"][0])
    other = TorchModuleTeacher(CountingEncoder(dim=3), featurize=featurize, name="toy")
    with pytest.raises(ConfigError, match="toy"):
        TeacherTargets([other]).load(tmp_path/"s.npz")
    with pytest.raises(ConfigError, match="distinct"):
        TeacherTargets([toy, toy])
    with pytest.raises(DataError, match="knows none"):
        TeacherTargets([alignn]).fit([Structure(Lattice.cubic(3.0), ["Xe"], [[0, 0, 0]])], progress=False)
