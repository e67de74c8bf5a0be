"The committed robocrys descriptions of benchmark subsets (benchmarks/data/descriptions): format, and the documented row rule."
import json, sys
from pathlib import Path

import pandas as pd
import pytest

from mmlit.core import shared_data_dir

ROOT = Path(__file__).parents[1]/"benchmarks"
DESC = ROOT/"data"/"descriptions"
LOG = json.loads((DESC/"timings.json").read_text()) if (DESC/"timings.json").exists() else {}
FILES = [(name, f) for name, v in LOG.items() for f in v["files"]]


def test_some_subsets_are_committed():
    assert FILES, f"no description subsets listed in {DESC/'timings.json'}"


@pytest.mark.parametrize("name,fname", FILES)
def test_subset_file(name, fname):
    d = pd.read_csv(DESC/fname, keep_default_na=False)
    assert list(d.columns) == ["id", "split", "description", "source", "error", "seconds", "fallback"]
    assert d.id.is_unique and len(d) == LOG[name]["rows"]
    assert d.split.value_counts().to_dict() == {k: v for k, v in LOG[name]["sizes"].items() if v}
    assert (d.description.str.len() > 40).all()                      # robocrys text or the documented fallback
    assert (d.fallback.astype(str).str.lower() == "true").sum() == LOG[name]["fallbacks"]
    assert set(d.source) <= {"robocrys", "fallback"}


def test_aflow_moduli_share_rows():
    if "aflow" not in LOG: pytest.skip("aflow subsets not committed")
    b, s = (pd.read_csv(DESC/f"aflow_{p}_modulus.csv.gz", keep_default_na=False) for p in ("bulk", "shear"))
    pd.testing.assert_frame_equal(b, s)


@pytest.mark.skipif(shared_data_dir() is None, reason="needs the shared data folder (MMLIT_DATA)")
@pytest.mark.parametrize("name", list(LOG))
def test_rows_follow_the_documented_rule(name):
    "Recomputing the seeded draw from the shared folders gives exactly the committed ids (and ids the loaders use)."
    sys.path.insert(0, str(ROOT))
    try: from make_description_subsets import pick
    finally: sys.path.remove(str(ROOT))
    sizes = [LOG[name]["sizes"][s] for s in ("train", "val", "test")]
    sub = pick(name, sizes, shared_data_dir()/"structures")
    d = pd.read_csv(DESC/LOG[name]["files"][0], keep_default_na=False)
    assert sub.id.tolist() == d.id.tolist() and sub.split.tolist() == d.split.tolist()
