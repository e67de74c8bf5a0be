"Tests of mmlit.data.core / mmlit.data.external loaders: official folds, bad rows, the online matbench path (offline)."
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from mmlit.core import ConfigError, DataError, shared_data_dir
from mmlit.data.core import BadRowsError, BadRowsWarning, Dataset, matbench_folds
from mmlit.data import external as ext
from mmlit.data.external import (MATBENCH_TASKS, list_datasets, load_dataset, load_dcdft, load_exp_formation_enthalpy,
                                 load_jarvis_prototypes, load_matbench, load_ricci_transport)

SD = shared_data_dir()
MB = SD / "matbench" if SD is not None else None
needs_matbench = pytest.mark.skipif(MB is None or not (MB / "matbench_expt_gap.csv.gz").exists(),
                                    reason="shared matbench tables not available")


# ---------------------------------------------------------------- official folds
@needs_matbench
@pytest.mark.parametrize("task,classification", [("expt_gap", False), ("expt_is_metal", True)])
def test_matbench_folds_equal_official(task, classification):
    df = pd.read_csv(MB / f"matbench_{task}.csv.gz")
    # the CSV rows are in matbench's (mbid) order
    assert df.mbid.is_monotonic_increasing
    mine = matbench_folds(df.target.astype(float) if classification else len(df), classification=classification)
    np.testing.assert_array_equal(mine, df.fold.to_numpy())
    # and the loader's folds are those
    ds = load_matbench(task)
    np.testing.assert_array_equal(ds.folds, df.fold.to_numpy())
    for k in range(5):
        tr, te = ds.split(k)
        assert set(te.ids) == set(df.mbid[df.fold == k]) and not set(tr.ids) & set(te.ids)


@needs_matbench
def test_all_local_matbench_tables_load():
    sizes = {"dielectric": 4764, "expt_gap": 4604, "expt_is_metal": 4921, "log_gvrh": 10987, "log_kvrh": 10987,
             "perovskites": 18928, "phonons": 1265}  # mp_e_form (132,752) is loaded in the notebook
    for task, n in sizes.items():
        ds = load_dataset(f"matbench_{task}")
        assert len(ds) == n and ds.task_type == MATBENCH_TASKS[task][2]
        if ds.task_type == "regression":  # KFold folds depend only on the row count
            np.testing.assert_array_equal(ds.folds, matbench_folds(n))
        else:
            np.testing.assert_array_equal(ds.folds, matbench_folds(ds.y(), classification=True))
        assert ds.structures is None and (ds.meta is None) == (MATBENCH_TASKS[task][0] == "composition")


# ---------------------------------------------------------------- bad rows in a CSV
def _toy_csv(tmp_path, rows):
    p = tmp_path / "toy.csv"
    pd.DataFrame(rows, columns=["mbid", "composition", "target", "fold"]).to_csv(p, index=False)
    return p


def test_bad_rows_raise_and_drop(tmp_path):
    rows = [("mb-a-1", "NaCl", 1.0, 0), ("mb-a-2", "NaCl(", 2.0, 1), ("mb-a-3", "MgO", float("nan"), 2),
            ("mb-a-4", "Fe2O3", float("inf"), 3), ("mb-a-1", "SiO2", 4.0, 4), ("mb-a-6", "Xx2", 5.0, 0),
            ("mb-a-7", "GaAs", 6.0, 1)]
    p = _toy_csv(tmp_path, rows)
    with pytest.raises(BadRowsError) as e: load_matbench("expt_gap", path=p)
    msg = str(e.value)
    for frag in ["row 1 (id 'mb-a-2'): composition='NaCl('", "row 2 (id 'mb-a-3'): gap expt=nan",
                 "row 3 (id 'mb-a-4'): gap expt=inf", "row 4 (id 'mb-a-1'): id='mb-a-1'", "Xx2"]:
        assert frag in msg, (frag, msg)
    assert sorted(set(e.value.rows.row)) == [1, 2, 3, 4, 5]
    with pytest.warns(BadRowsWarning, match="NaCl\\("):
        ds = load_matbench("expt_gap", path=p, on_bad="drop")
    assert ds.ids == ["mb-a-1", "mb-a-7"] and ds.folds.tolist() == [0, 1]
    with pytest.raises(ConfigError): load_matbench("expt_gap", path=p, on_bad="ignore")


def test_missing_columns_and_files(tmp_path):
    p = tmp_path / "x.csv"; pd.DataFrame({"mbid": ["a"], "formula": ["NaCl"], "target": [1.0]}).to_csv(p, index=False)
    with pytest.raises(DataError, match="composition"): load_matbench("expt_gap", path=p)
    with pytest.raises(DataError, match="does not exist"): load_matbench("expt_gap", path=tmp_path / "nope.csv")
    with pytest.raises(ConfigError, match="expt_gapp"): load_matbench("expt_gapp")


# ---------------------------------------------------------------- online matbench path, served locally
def _structures(n):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        a = 3.5 + 0.1 * i
        out.append(Structure(Lattice.cubic(a), ["Na", "Cl"] if i % 2 else ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]))
    return out


def _serve(monkeypatch, tmp_path, task, df):
    "Write `df` as matminer writes its dataset files and make `_download` copy it instead of using the network."
    from matminer.utils.io import store_dataframe_as_json
    src = tmp_path / f"served_{task}.json.gz"
    store_dataframe_as_json(df, str(src), compression="gz", orient="split", pbar=False)
    calls = []
    def fake_download(url, dest, timeout=60):
        calls.append(url); Path(dest).write_bytes(src.read_bytes())
    monkeypatch.setattr(ext, "_download", fake_download)
    monkeypatch.setenv("MMLIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MMLIT_DATA", str(tmp_path))  # a data folder without matbench tables
    return calls


def test_online_structure_task(monkeypatch, tmp_path):
    n = 12
    df = pd.DataFrame({"structure": _structures(n), "last phdos peak": np.linspace(100, 700, n)})
    calls = _serve(monkeypatch, tmp_path, "phonons", df)
    ds = load_matbench("phonons", check_hash=False, progress=False)
    assert calls == ["https://ml.materialsproject.org/projects/matbench_phonons.json.gz"]
    assert len(ds) == n and ds.ids[0] == "mb-phonons-01" and ds.ids[-1] == "mb-phonons-12"
    assert all(isinstance(s, Structure) for s in ds.structures)
    assert ds.compositions[0] == "Mg1 O1" and ds.structures[1].composition.reduced_formula == "NaCl"
    np.testing.assert_allclose(ds.y(), df["last phdos peak"])
    np.testing.assert_array_equal(ds.folds, matbench_folds(n))
    assert "online" in ds.source and ds.units == {"last phdos peak": "cm^-1"}
    # second call uses the cache, no download
    load_matbench("phonons", check_hash=False, progress=False)
    assert len(calls) == 1


def test_online_composition_classification_task(monkeypatch, tmp_path):
    comps = ["Fe0.7Cr0.2Ni0.1", "Fe0.8C0.01Mn0.19", "Cu0.5Zr0.5", "Al2O3", "Pd0.8Si0.2"] * 3
    df = pd.DataFrame({"composition": comps, "gfa": [True, False, True, False, True] * 3})
    _serve(monkeypatch, tmp_path, "glass", df)
    ds = load_matbench("matbench_glass", check_hash=False, progress=False)
    assert ds.task_type == "classification" and set(ds.y()) == {0.0, 1.0}
    np.testing.assert_array_equal(ds.folds, matbench_folds(ds.y(), classification=True))
    assert ds.compositions == comps and ds.ids[0] == "mb-glass-01"


def test_online_hash_is_checked(monkeypatch, tmp_path):
    df = pd.DataFrame({"composition": ["Fe", "Ni", "Cu", "Zn", "Al"], "yield strength": [1.0, 2, 3, 4, 5]})
    _serve(monkeypatch, tmp_path, "steels", df)
    with pytest.raises(DataError, match="sha256"): load_matbench("steels", progress=False)
    assert not list((tmp_path / "cache" / "matbench").glob("*.json.gz"))  # nothing bad left in the cache


def test_online_failure_message(monkeypatch, tmp_path):
    def no_net(url, dest, timeout=60): raise OSError("network unreachable")
    monkeypatch.setattr(ext, "_download", no_net)
    monkeypatch.setenv("MMLIT_CACHE", str(tmp_path)); monkeypatch.setenv("MMLIT_DATA", str(tmp_path))
    with pytest.raises(DataError, match="pass path="): load_matbench("jdft2d")
    with pytest.raises(DataError, match="no local table"): load_matbench("jdft2d", source="local")


# ---------------------------------------------------------------- embedded datasets
def test_ricci_transport():
    ds = load_ricci_transport()
    assert len(ds) == 34631 and ds.target_names == ["S_n"] and ds.units == {"S_n": "µV/K"}
    assert len(set(ds.compositions)) == len(ds)  # one row per formula
    keep = load_ricci_transport(["S_n", "PF_p"], duplicates="keep")
    assert len(keep) == 47737 and keep.ids[:2] == ["mp-1", "mp-10"] and keep.target_names == ["S_n", "PF_p"]
    first = load_ricci_transport("S_p", duplicates="first")
    poly = ds.meta.n_polymorphs.to_numpy() > 1
    assert poly.sum() > 1000 and ds.meta.n_polymorphs.sum() == 47737
    k = int(np.flatnonzero(poly)[0])
    mp_ids = ds.meta.mp_ids[k].split(";")
    vals = keep.y("S_n")[[keep.ids.index(i) for i in mp_ids]]
    assert np.isclose(ds.y()[k], np.median(vals)) and first.ids[k] == mp_ids[0]
    with pytest.raises(ConfigError, match="duplicates"): load_ricci_transport(duplicates="mean")


def test_exp_formation_enthalpy():
    with pytest.warns(UserWarning, match="Tb1503Fe8947"): ds = load_exp_formation_enthalpy()
    allp = load_exp_formation_enthalpy(per_atom=True, max_atoms=None)
    assert len(allp) == 2135 and len(ds) < 2135 and allp.units == {"formation_enthalpy_per_atom": "eV/atom"}
    assert np.all(np.abs(allp.y()) < 10)  # per atom, all entries are physically sized
    assert len(set(ds.ids)) == len(ds)


def test_jarvis_prototypes_with_targets_file(tmp_path):
    protos = load_jarvis_prototypes()
    jv = [i for i in protos.ids if i.startswith("JVASP-")][:5]
    p = tmp_path / "t.csv"
    pd.DataFrame({"jid": jv + ["JVASP-0"], "my_gap": [0.1, 0.2, None, 0.4, 0.5, 9.0],
                  "my_gap__split": ["train", "train", "test", "val", "test", "train"]}).to_csv(p, index=False)
    ds = load_jarvis_prototypes(p, "my_gap")
    assert ds.ids == [jv[i] for i in (0, 1, 3, 4)] and ds.meta.split.tolist() == ["train", "train", "val", "test"]
    assert np.stack(ds.meta.alignn).shape == (4, 256)
    assert [s.composition.formula for s in ds.structures] == ds.compositions
    with pytest.raises(ConfigError, match="my_gap"): load_jarvis_prototypes(p, "gap")


def test_dcdft_and_registry():
    ds = load_dcdft("wien2k_B")
    assert len(ds) == 71 and ds.units == {"wien2k_B": "GPa"} and (ds.y() > 0).all()
    names = list_datasets()
    assert {f"matbench_{t}" for t in MATBENCH_TASKS} <= set(names)
    assert {"ricci_transport", "exp_formation_enthalpy", "jarvis_prototypes", "dcdft"} <= set(names)
    with pytest.raises(ConfigError, match="did you mean"): load_dataset("ricci_transprt")


def test_structure_reading_stays_importable_from_data_structures():
    "parse_structures & co moved to mmlit.data.crystals; code importing them from mmlit.data.structures keeps working."
    from mmlit.data import crystals, structures
    for name in ("parse_structures", "structure_key", "BadStructureError", "map_structures"):
        assert getattr(structures, name) is getattr(crystals, name) and name in structures.__all__
