"Structure wing: graph checks and invariances on real structures, the cache, parallel building, training, and bench."
import json, subprocess, sys, shutil, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.core.operations import SymmOp
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

import mmlit.struct.graph as G
from mmlit.core import MmlitInputError, shared_data_dir
from mmlit.data.structures import load_structure_set
from mmlit.struct.graph import (GraphConfig, GraphCacheWarning, StructureError, atom_environments, build_graphs,
                                graph_arrays, structure_graph)
from mmlit.struct.data import GraphDataset
from mmlit.struct.models import GraphModel, build_structure_model

SHARED = shared_data_dir() is not None


@pytest.fixture(scope="module")
def real_structures():
    "Real crystals: the shared mp_20 pilot set when present, else the structures pymatgen ships."
    if SHARED: return load_structure_set("mp_20_pilot", split="val", max_rows=150, progress=False).structures
    return [s for s in load_structure_set("pymatgen_structures", progress=False).structures if s.is_ordered]


def _bad_structures():
    nan_c = Structure(Lattice.cubic(4), ["Na"], [[0, 0, 0]]); nan_c.replace(0, "Na", [np.nan, 0, 0])
    nan_l = Structure(Lattice.cubic(4), ["Na"], [[0, 0, 0]]); nan_l.lattice = Lattice(np.full((3, 3), np.nan))
    return {
        "empty": (Structure(Lattice.cubic(4), [], []), "empty"),
        "partial": (Structure(Lattice.cubic(4), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]]), "partial occupancy"),
        "close": (Structure(Lattice.cubic(5), ["O", "O"], [[0, 0, 0], [0.05, 0, 0]]), "apart"),
        "nan-coords": (nan_c, "NaN"),
        "nan-lattice": (nan_l, "NaN"),
        "flat": (Structure(Lattice([[2, 0, 0], [4, 0, 0], [0, 0, 3]]), ["Na"], [[0, 0, 0]]), "volume"),
        "same-site": (Structure(Lattice.cubic(4), ["Na", "Cl"], [[0, 0, 0], [0, 0, 0]]), "apart"),
    }


@pytest.mark.parametrize("sid", list(_bad_structures()))
def test_bad_structure_named_error(sid):
    s, reason = _bad_structures()[sid]
    with pytest.raises(StructureError) as e: structure_graph(s, sid=f"id-{sid}")
    assert isinstance(e.value, ValueError) and f"id-{sid}" in str(e.value) and reason in str(e.value)


def test_bad_rows_reported_after_good_ones_built(tmp_path):
    good = Structure(Lattice.cubic(4.2), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    bad = _bad_structures()["close"][0]
    with pytest.raises(StructureError, match="mp-17"): build_graphs([good, bad], ids=["ok", "mp-17"], cache=tmp_path, progress=False)
    assert len(list(tmp_path.rglob("*.npz"))) == 1      # the good graph was kept
    with pytest.warns(UserWarning, match="mp-17"):
        out = build_graphs([good, bad], ids=["ok", "mp-17"], cache=tmp_path, on_bad="drop", progress=False)
    assert out[1] is None and out[0] is not None


def _envs(s):
    "Per-atom environments (z, neighbour z's, distances) with full precision (compared with a tolerance below)."
    return [(z, tuple(n for n, _ in e), np.array([d for _, d in e])) for z, e in atom_environments(structure_graph(s), 12)]

def _same_environments(a, b, atol=1e-4):
    "A one-to-one matching of the environments of `a` and `b` exists (same elements, distances within `atol`)."
    if len(a) != len(b): return False
    left = list(b)
    for z, n, d in a:
        j = next((j for j, (z2, n2, d2) in enumerate(left)
                  if z == z2 and n == n2 and len(d) == len(d2) and np.allclose(d, d2, atol=atol)), None)
        if j is None: return False
        left.pop(j)
    return True

def test_invariances_on_real_structures(real_structures):
    rot = SymmOp.from_axis_angle_and_translation([0.3, -1, 2], 71.0, translation_vec=[1.1, 0.4, -2.5])
    for s in real_structures[:25]:
        env = _envs(s)
        moved = s.copy(); moved.apply_operation(rot)
        assert _same_environments(_envs(moved), env)
        assert _same_environments(_envs(s * (1, 2, 1)), env * 2)          # every atom keeps its environment, twice
        sga = SpacegroupAnalyzer(s, symprec=0.01)
        conv, prim = sga.get_conventional_standard_structure(), sga.get_primitive_standard_structure()
        m, r = divmod(len(conv), len(prim)); assert r == 0
        assert _same_environments(_envs(conv), _envs(prim) * m, 1e-3)


def test_adaptive_radius_gives_identical_graphs(real_structures):
    for s in real_structures:
        a, b = graph_arrays(s, GraphConfig(adaptive=True)), graph_arrays(s, GraphConfig(adaptive=False))
        for k in a: np.testing.assert_array_equal(a[k], b[k])
        assert np.bincount(a["edge_index"][1]).min() >= 12 and np.isfinite(a["edge_vec"]).all()


def test_cache_hit_miss_corrupt_and_settings(tmp_path, real_structures, monkeypatch):
    sts = real_structures[:6]
    calls = []
    orig = G.graph_arrays
    monkeypatch.setattr(G, "graph_arrays", lambda *a, **k: calls.append(1) or orig(*a, **k))
    first = build_graphs(sts, cache=tmp_path, progress=False)
    assert len(calls) == 6                                      # miss: built
    second = build_graphs(sts, cache=tmp_path, progress=False)
    assert len(calls) == 6                                      # hit: read, not rebuilt
    for x, y in zip(first, second): np.testing.assert_array_equal(x["edge_vec"], y["edge_vec"])
    victim = sorted(tmp_path.rglob("*.npz"))[2]; victim.write_bytes(victim.read_bytes()[:40])
    with pytest.warns(GraphCacheWarning, match="corrupt"): third = build_graphs(sts, cache=tmp_path, progress=False)
    assert len(calls) == 7                                      # only the corrupt one rebuilt
    for x, y in zip(first, third): np.testing.assert_array_equal(x["edge_index"], y["edge_index"])
    build_graphs(sts, config=GraphConfig(max_neighbors=8), cache=tmp_path, progress=False)
    assert len(calls) == 13                                     # other settings: other cache folder
    assert not list(tmp_path.rglob("*.tmp"))                    # atomic writes leave no temporaries


def test_parallel_build_equals_serial(tmp_path, real_structures):
    ser = build_graphs(real_structures[:40], cache=False, progress=False)
    par = build_graphs(real_structures[:40], cache=tmp_path, n_jobs=2, chunk_size=8, progress=False)
    for x, y in zip(ser, par):
        for k in x: np.testing.assert_array_equal(x[k], y[k])


def test_model_rejects_out_of_range_atoms():
    gds = GraphDataset([Structure(Lattice.cubic(4), ["Na"], [[0, 0, 0]])], cache=False, progress=False)
    b = build_structure_model("cgcnn").config.collator()([gds[0]])
    b.z[:] = 118
    with pytest.raises(MmlitInputError, match="1..100"): build_structure_model("cgcnn")(b)


@pytest.mark.skipif(not SHARED, reason="needs the shared structure data")
@pytest.mark.parametrize("arch, preset", [("cgcnn", "paper"), ("alignn", "tiny")])
def test_graph_model_learns_and_round_trips(tmp_path, arch, preset):
    ds = load_structure_set("mp_20_pilot", split="train", max_rows=200, progress=False)
    ds.targets = ds.targets[["formation_energy_per_atom"]]
    tr, te = ds.subset(np.arange(160)), ds.subset(np.arange(160, 200))
    gm = GraphModel(arch, preset, epochs=6, batch_size=16, lr=3e-3, progress=False, cache=tmp_path/"g").fit(tr)
    p = gm.predict(te)
    mae, mean_mae = np.abs(p - te.y()).mean(), np.abs(tr.y().mean() - te.y()).mean()
    assert mae < 0.8 * mean_mae, (mae, mean_mae)               # better than predicting the mean
    gm.save(tmp_path/"m")
    np.testing.assert_allclose(GraphModel.load(tmp_path/"m").predict(te), p, rtol=1e-4, atol=1e-5)
    assert gm.get_params()["history"]["valid_mae"]


@pytest.mark.skipif(not SHARED, reason="needs the shared structure data")
def test_bench_cli_structure_model(tmp_path):
    exe = shutil.which("mmlit") or str(Path(sys.executable).parent/"mmlit")
    r = subprocess.run([exe, "bench", "--task", "jarvis_supercon", "--target", "Tc", "--model", "alignn-tiny", "--quiet",
                        "--model_kw", json.dumps({"epochs": 2, "num_threads": 1, "cache": str(tmp_path/"g")}),
                        "--out", str(tmp_path/"out")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path/"out"/"results.json").read_text())
    assert res["model"] == "alignn-tiny" and "official split" in res["protocol"]
    assert np.isfinite(res["folds"][0]["scores"]["mae"])
    r = subprocess.run([exe, "bench", "--task", "perov_5", "--model", "cgcnn", "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "--target" in r.stderr and "Traceback" not in r.stderr


def test_online_matbench_structure_task_trains(monkeypatch, tmp_path):
    "Without the shared structures, a matbench structure task is downloaded (served locally here) and a model trains on it."
    import pandas as pd
    import test_data_loaders as tdl
    from mmlit.data.structures import load_structure_task
    from mmlit.bench.core import run_matbench
    df = pd.DataFrame({"structure": tdl._structures(20), "e_form": np.linspace(-1, 0, 20)})
    calls = tdl._serve(monkeypatch, tmp_path, "perovskites", df)
    ds = load_structure_task("perovskites", progress=False, check_hash=False)
    assert calls and ds.structures is not None and sorted(set(ds.folds)) == [0, 1, 2, 3, 4]
    res = run_matbench(ds, lambda: GraphModel("cgcnn", epochs=2, batch_size=4, progress=False, cache=tmp_path/"g"),
                       folds=[0], progress=False)
    assert np.isfinite(res.mean())


def test_classification_head(tmp_path, real_structures):
    "A binary target trains with the BCE head; predictions are probabilities."
    import pandas as pd
    from mmlit.data.core import Dataset
    sts = real_structures[:60]
    dens = np.array([s.density for s in sts])
    ds = Dataset("dense", [f"s{i}" for i in range(len(sts))], [s.composition.reduced_formula for s in sts],
                 pd.DataFrame({"dense": (dens > np.median(dens)).astype(float)}), structures=sts, task_type="classification")
    gm = GraphModel("cgcnn", epochs=2, batch_size=8, progress=False, cache=tmp_path).fit(ds.subset(np.arange(48)))
    p = gm.predict(ds.subset(np.arange(48, 60)))
    assert p.shape == (12,) and ((p >= 0) & (p <= 1)).all()
    assert gm.model.config.task == "classification"


def test_chgnet_encoder_interface(real_structures):
    "Frozen CHGNet features behind the structure-encoder interface: (n, 64), finite, deterministic."
    from mmlit.struct.models import CHGNetEncoder
    enc = CHGNetEncoder()
    e = enc.embed(real_structures[:3])
    assert e.shape == (3, enc.hidden_size) == (3, 64) and np.isfinite(e).all()
    np.testing.assert_allclose(enc.embed(real_structures[:1])[0], e[0], rtol=1e-5, atol=1e-6)


def test_single_atom_last_batch_trains(tmp_path):
    "n % batch_size == 1 with a one-atom cell last: BatchNorm would fail on that batch; it is dropped each epoch."
    import pandas as pd
    from mmlit.data.core import Dataset
    cells = [Structure(Lattice.cubic(3 + 0.05 * i), ["Cu"], [[0, 0, 0]]) for i in range(9)]
    ds = Dataset("cu", [f"c{i}" for i in range(9)], ["Cu"] * 9, pd.DataFrame({"a": [3 + 0.05 * i for i in range(9)]}),
                 structures=cells)
    gm = GraphModel("alignn", "tiny", epochs=3, batch_size=4, progress=False, cache=tmp_path)
    gm.fit(ds.subset(np.arange(9)), ds.subset(np.arange(4)))   # 9 training rows in batches of 4: a last batch of 1
    assert np.isfinite(gm.predict(ds)).all()


def test_graph_model_trains_on_blank_targets(tmp_path):
    "A multi-property table leaves blanks: rows with no value are left out (with a warning), the blanks are masked."
    import pandas as pd
    from mmlit.data.core import Dataset
    ds = load_structure_set("pymatgen_structures", progress=False)
    ds = ds.subset([i for i, s in enumerate(ds.structures) if s.is_ordered])
    dens, vpa = np.array([s.density for s in ds.structures]), np.array([s.volume / len(s) for s in ds.structures])
    vpa[::3] = np.nan; dens[:2] = vpa[:2] = np.nan   # gaps, and two rows with neither property
    gappy = Dataset("gappy", ds.ids, ds.compositions, pd.DataFrame({"density": dens, "vpa": vpa}), structures=ds.structures,
                    missing_targets=True)
    gm = GraphModel("cgcnn", epochs=3, batch_size=8, progress=False, cache=tmp_path)
    with pytest.warns(UserWarning, match=f"2 of {len(ds)} training rows"): gm.fit(gappy)
    assert gm.info["n_train"] + gm.info["n_valid"] == len(ds) - 2
    assert np.isfinite(gm.history.train_loss).all() and np.isfinite(gm.predict(gappy)).all()


def test_bad_options_are_named(tmp_path):
    from mmlit.core import ConfigError, DataError
    from mmlit.data.structures import load_structure_task
    s = Structure(Lattice.cubic(4), ["Na"], [[0, 0, 0]])
    with pytest.raises(ConfigError, match="chunk_size"): build_graphs([s], chunk_size=0, progress=False, cache=False)
    with pytest.raises(DataError, match="2 ids for 1"): build_graphs([s], ids=["a", "b"], progress=False, cache=False)
    with pytest.raises(ConfigError, match="cutoff"): GraphConfig(cutoff="8")
    with pytest.raises(ConfigError, match="max_rowz"): load_structure_task("phonons", max_rowz=3)
    ds = load_structure_set("pymatgen_structures", progress=False)
    ds.targets = __import__("pandas").DataFrame({"density": [x.density for x in ds.structures]})
    with pytest.raises(ConfigError, match="'yy'"): GraphModel("cgcnn", target="yy", progress=False, cache=tmp_path).fit(ds)
    with pytest.raises(ConfigError, match="cuda"):
        if torch.cuda.is_available(): raise ConfigError("cuda present: nothing to check")
        GraphModel("cgcnn", device="cuda")
