"""JARVIS-DFT dft_3d properties as composition tasks: official split sizes, reported ids, registration, clean protocol."""
from __future__ import annotations
import json, zipfile
from contextlib import nullcontext

import numpy as np
import pandas as pd
import pytest

from mmlit.core import ConfigError, DataError, shared_data_dir
from mmlit.data.core import BadRowsWarning
from mmlit.data.external import list_datasets, load_dataset
import mmlit.data.jarvis as jv
from mmlit.data.jarvis import JARVIS_PROPERTIES, JARVIS_UNITS, jarvis_local_dir, jarvis_table, load_jarvis

shared = pytest.mark.skipif(jarvis_local_dir() is None, reason="needs the shared data folder (MMLIT_DATA) with jarvis_dft3d/")
SPLITS = ["train", "val", "test"]

def split_sizes() -> pd.DataFrame:
    return pd.read_csv(shared_data_dir()/"jarvis_dft3d"/"split_sizes.csv").set_index("property")

def counts(splits) -> dict: return {s: int((np.asarray(splits) == s).sum()) for s in SPLITS}

# --- offline rules on a tiny folder (no shared data needed) ---------------------------------------------------------

@pytest.fixture
def tiny(tmp_path):
    ids = [f"JVASP-{i}" for i in range(1, 7)]
    pd.DataFrame({"jid": ids, "slme": [10.0, 20.0, None, 5.0, 7.5, np.nan],
                  "slme__split": ["train", "val", None, "test", "train", "test"]}).to_csv(tmp_path/jv.TARGETS_FILE, index=False)
    pd.DataFrame({"jid": ids, "formula": ["GaAs", "Si", "NaCl", "CdTe", None, "ZnO"]}).to_csv(tmp_path/jv.FORMULAS_FILE, index=False)
    return tmp_path

def test_tiny_folder_reports_missing_formula_and_target(tiny):
    with pytest.warns(BadRowsWarning, match=r"2 id\(s\).*1 without a formula, 1 without a target.*JVASP-5, JVASP-6"):
        ds = load_jarvis("slme", path=tiny)
    assert ds.ids == ["JVASP-1", "JVASP-2", "JVASP-4"]          # JVASP-3 has no slme split: not part of the task
    assert ds.meta.split.tolist() == ["train", "val", "test"] and ds.units == {"slme": "%"}
    assert "JVASP-5" in ds.source                                # the skipped ids stay on record
    with pytest.raises(DataError, match="JVASP-5"): load_jarvis("slme", path=tiny, on_missing="raise")

def test_bad_names(tiny):
    with pytest.raises(ConfigError) as e: load_jarvis("shear_modulus", path=tiny)
    assert all(p in str(e.value) for p in JARVIS_PROPERTIES)       # every valid name is listed
    with pytest.raises(ConfigError, match="on_missing"): load_jarvis("slme", path=tiny, on_missing="ignore")
    with pytest.raises(ConfigError, match="source"): load_jarvis("slme", path=tiny, source="web")
    with pytest.raises(DataError, match="lacks"): load_jarvis("slme", path=tiny/"nowhere")

def test_registration():
    names = list_datasets()
    assert {f"jarvis_{p}" for p in JARVIS_PROPERTIES} <= set(names) and len(JARVIS_UNITS) == 23
    with pytest.raises(ConfigError, match="did you mean"): load_dataset("jarvis_shear_modulus")

# --- the online path (jarvis-tools + the leaderboard's split file), with the downloads replaced ---------------------

def test_online_without_network_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("MMLIT_CACHE", str(tmp_path))
    def no_network(url, dest, timeout=60): raise OSError("network unreachable")
    monkeypatch.setattr(jv, "_download", no_network)
    with pytest.raises(DataError, match="MMLIT_DATA"): load_jarvis("slme", source="online")

def test_online_frame(monkeypatch, tmp_path):
    monkeypatch.setenv("MMLIT_CACHE", str(tmp_path))
    split = {"train": {"JVASP-1": 1.0, "JVASP-2": 2.0, "JVASP-9": 3.0}, "val": {"JVASP-3": 4.0}, "test": {"JVASP-4": 5.0}}
    def fake_download(url, dest, timeout=60):
        assert url.endswith("dft_3d_slme.json.zip")
        with zipfile.ZipFile(dest, "w") as z: z.writestr("dft_3d_slme.json", json.dumps(split))
    monkeypatch.setattr(jv, "_download", fake_download)
    import jarvis.db.figshare as fs
    rows = [{"jid": f"JVASP-{i}", "formula": f, "slme": "na"} for i, f in [(1, "GaAs"), (2, "Si"), (3, "CdTe"), (4, "ZnO")]]
    monkeypatch.setattr(fs, "data", lambda dataset, store_dir=None: rows)
    with pytest.warns(BadRowsWarning, match="JVASP-9"):          # in the split, not in the release: no formula
        ds = load_jarvis("slme", source="online")
    assert ds.ids == ["JVASP-1", "JVASP-2", "JVASP-3", "JVASP-4"] and ds.meta.split.tolist() == ["train", "train", "val", "test"]
    assert ds.y().tolist() == [1.0, 2.0, 4.0, 5.0]                # targets from the leaderboard file
    assert "online" in ds.source

# --- the shared files: official split sizes --------------------------------------------------------------------------

@shared
@pytest.mark.parametrize("prop", ["spillage", "shear_modulus_gv", "bulk_modulus_kv", "n_Seebeck", "slme", "formation_energy_peratom"])
def test_official_split_sizes(prop):
    """Loader = the shared table's split less the reported ids; the table = JARVIS-Leaderboard's split_sizes.csv.

    The loader drops only the ids it names (the two ids without a formula, where the property has them). The shared
    table equals split_sizes.csv on every test and val split checked here; on train it lacks the few ids (1 for slme,
    2 for the three 44k-row properties) of the leaderboard's split file that are not in the 55,712-id release table.
    """
    raw = jarvis_table(prop)
    no_formula = raw.formula.isna()
    with pytest.warns(BadRowsWarning, match="without a formula") if no_formula.any() else nullcontext():
        ds = load_jarvis(prop)
    got, table, dropped = counts(ds.meta.split), counts(raw.split), counts(raw.split[no_formula])
    assert {s: got[s] + dropped[s] for s in SPLITS} == table
    sz = split_sizes().loc[prop]
    assert table["test"] == sz.n_test and table["val"] == sz.n_val
    absent = {"slme": 1, "formation_energy_peratom": 2}.get(prop, 0)   # see the docstring and SOURCES.md
    assert table["train"] == sz.n_train - absent
    assert set(ds.meta.split) == set(SPLITS) and np.isfinite(ds.y()).all()

@shared
def test_missing_formulas_are_named():
    with pytest.warns(BadRowsWarning) as w: ds = load_jarvis("shear_modulus_gv")
    msg = " ".join(str(x.message) for x in w)
    assert "2 without a formula" in msg and "JVASP-36327" in msg and "JVASP-90825" in msg
    assert not {"JVASP-36327", "JVASP-90825"} & set(ds.ids)

# --- protocol: official split in `mmlit bench`, clean exclusion of the test compositions -----------------------------

@shared
def test_bench_cli_uses_official_split(tmp_path):
    from mmlit.bench.core import bench_cli
    res = bench_cli(task="jarvis_slme", model="mean", out=str(tmp_path/"slme"), quiet=True)
    n = counts(load_jarvis("slme").meta.split)
    assert res.folds[0].n_train == n["train"] and len(res.folds[0].ids) == n["test"]
    assert "official split" in res.protocol and f"test on 'test' ({n['test']} rows)" in res.protocol
    assert (tmp_path/"slme"/"results.json").exists()

@shared
def test_clean_protocol_excludes_test_compositions():
    "run_split hands the model the whole task (set_task): the imKT exclusion set covers every test composition."
    from mmlit.comp.data import exclusion_set
    from mmlit.comp.imkt import ImKTModel
    from mmlit.comp.recipes import recipe_config
    from mmlit.protocol import run_split
    ds = load_jarvis("slme")
    seen = {}
    class Spy(ImKTModel):     # records the exclusion set the pretraining stages would get; trains nothing
        def fit(self, train, valid=None):
            seen["excluded"], seen["train"] = self._exclusion(train, valid), train
            return self
        def predict(self, data): return np.zeros(len(data))
    run_split(ds, lambda: Spy(recipe_config("elm-imkt")), progress=False)
    test = ds.subset(ds.meta.split.to_numpy() == "test")
    assert exclusion_set(test) <= seen["excluded"] and len(seen["train"]) == counts(ds.meta.split)["train"]
    assert exclusion_set(ds) == seen["excluded"]
