"""Robocrys descriptions of fixed, seeded subsets of perov_5 and aflow_elastic_thermal, committed for the modality sweep.

Why: robocrys costs ~2.5 s per structure on one core, so describing whole benchmark sets (perov_5: ~19k rows) is
core-hours. Every modality in the sweep uses the same rows, so the subsets are drawn once, here, with a fixed seed,
and their descriptions are committed under benchmarks/data/descriptions/ so nobody regenerates them.

Subset rule (per set, per split): the first `size` rows of `numpy.random.default_rng(SEED).permutation(n_rows)`,
sorted, with SEED = 12 + split index (train 0, val 1, test 2). A larger size extends a smaller one (a prefix of the
same permutation), so the subsets can grow later without re-describing what is committed. aflow bulk_modulus and shear_modulus list the same structures in
the same rows (checked below), so one draw serves both and the two files hold the same descriptions.

Ids are the ones `mmlit.data.structures.load_structure_set` gives ("perov_5:<material_id>", "aflow:<row>").

Usage (one process, one thread, in the background):
    OMP_NUM_THREADS=1 python benchmarks/make_description_subsets.py --sets perov_5 --sizes 160 40 40
    OMP_NUM_THREADS=1 python benchmarks/make_description_subsets.py --sets aflow --sizes 80 20 20
    OMP_NUM_THREADS=1 python benchmarks/make_description_subsets.py --sets perov_5_gap --sizes 80 20 20
perov_5_gap draws from the rows with a band gap (ind_gap > 0) only: see POOLS.
"""
import argparse, json, platform, sys, time
from pathlib import Path

import numpy as np
import pandas as pd

from mmlit.core import shared_data_dir
from mmlit.data.structures import parse_structures
from mmlit.text.describe import describe_structures, robocrys_version

OUT = Path(__file__).parent/"data"/"descriptions"
SPLITS = ["train", "val", "test"]
SETS = {  # name -> (folder, id column (None: the csv row label), id prefix, output files)
    "perov_5": ("perov_5", "material_id", "perov_5:", ["perov_5"]),
    "aflow": ("aflow_elastic_thermal/bulk_modulus", None, "aflow:", ["aflow_bulk_modulus", "aflow_shear_modulus"]),
    "perov_5_gap": ("perov_5", "material_id", "perov_5:", ["perov_5_gap"]),
}
# Rows a set draws from (default: all). perov_5's band gap is exactly 0 for 96 % of its rows (9 of the 240 random
# rows are gapped), so a band-gap sweep on the random subset would measure almost nothing: this set draws from the
# gapped rows only, and the sweep trains and tests on it together with the random perov_5 subset.
POOLS = {"perov_5_gap": lambda df: df[df.ind_gap > 0]}

def pick(name:str, sizes:list, root:Path) -> pd.DataFrame:
    "The fixed subset of `name`: id, split, cif."
    folder, id_col, prefix, _ = SETS[name]
    rows = []
    for k, (sp, n) in enumerate(zip(SPLITS, sizes)):
        df = pd.read_csv(root/folder/f"{sp}.csv.gz")
        if name == "aflow":   # one draw for both moduli: only valid while the two files list the same structures
            other = pd.read_csv(root/"aflow_elastic_thermal/shear_modulus"/f"{sp}.csv.gz")
            assert (other.cif == df.cif).all() and (other["Unnamed: 0"] == df["Unnamed: 0"]).all(), sp
        if name in POOLS: df = POOLS[name](df)
        idx = np.sort(np.random.default_rng(12 + k).permutation(len(df))[:n])
        sub = df.iloc[idx]
        ids = (sub[id_col] if id_col else sub["Unnamed: 0"]).astype(str).radd(prefix)
        rows.append(pd.DataFrame({"id": ids.values, "split": sp, "cif": sub.cif.values}))
    return pd.concat(rows, ignore_index=True)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs=3, default=[80, 20, 20])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--chunk", type=int, default=20)
    a = ap.parse_args()
    root = shared_data_dir(required=True)/"structures"
    OUT.mkdir(parents=True, exist_ok=True)
    log = json.loads((OUT/"timings.json").read_text()) if (OUT/"timings.json").exists() else {}
    for name in a.sets:
        sub = pick(name, a.sizes, root)
        structs = parse_structures(sub.cif.tolist(), "cif", sub.id.tolist(), "raise", name, False)
        t0, parts = time.time(), []
        for i in range(0, len(sub), a.chunk):   # chunks: progress in the log; the description cache makes reruns resume
            parts.append(describe_structures(structs[i:i+a.chunk], ids=sub.id.tolist()[i:i+a.chunk], n_jobs=1,
                                             timeout=120, progress=False))
            print(f"{name}: {i + len(parts[-1])}/{len(sub)} in {time.time() - t0:.0f} s", flush=True)
        d = pd.concat(parts, ignore_index=True)
        d.insert(1, "split", sub.split.values)
        d["fallback"] = d.source.eq("fallback")
        for f in SETS[name][3]: d.to_csv(OUT/f"{f}.csv.gz", index=False)
        log[name] = dict(files=[f"{f}.csv.gz" for f in SETS[name][3]], rows=len(d),
                         sizes=dict(zip(SPLITS, [int((d.split == s).sum()) for s in SPLITS])),
                         fallbacks=int(d.fallback.sum()), wall_s=round(time.time() - t0, 1),
                         median_s_per_structure=round(float(d.seconds.median()), 2),
                         mean_s_per_structure=round(float(d.seconds.mean()), 2),
                         robocrys=robocrys_version(), python=platform.python_version(), cpu=platform.processor() or platform.machine(),
                         date=time.strftime("%Y-%m-%d"))
        (OUT/"timings.json").write_text(json.dumps(log, indent=1))
        write_readme(log)
        print(name, log[name], flush=True)

def write_readme(log:dict):
    "README.md of the descriptions folder, its numbers taken from timings.json (so they cannot drift)."
    rows = "\n".join(f"| {', '.join(v['files'])} | {v['sizes']['train']} / {v['sizes']['val']} / {v['sizes']['test']} | "
                     f"{v['fallbacks']} | {v['median_s_per_structure']} | {v['wall_s'] / 60:.1f} | {v['robocrys']} | {v['date']} |"
                     for v in log.values())
    (OUT/"README.md").write_text(f'''# Robocrys descriptions of fixed benchmark subsets

Made by `benchmarks/make_description_subsets.py` (read its docstring for the exact rule) for the modality sweep of
issue 12: every modality uses these rows, so the text modality never needs robocrys at benchmark time.

- **Rows:** per split (train/val/test of the shared folders), the first `size` rows of
  `numpy.random.default_rng(12 + split index).permutation(n_rows)`, sorted. A larger size extends a smaller one.
- **perov_5_gap:** the same rule over the perov_5 rows with `ind_gap > 0` only (96 % of perov_5 has a gap of exactly
  0 eV, so the random subset holds 9 gapped rows); the band-gap sweep uses it together with the random perov_5 subset.
- **aflow:** bulk_modulus and shear_modulus list the same structures in the same rows (checked by the script), so one
  draw serves both; `aflow_bulk_modulus.csv.gz` and `aflow_shear_modulus.csv.gz` hold the same descriptions.
- **Ids** are those of `mmlit.data.structures.load_structure_set` (`perov_5:<material_id>`, `aflow:<row>`), so
  `ds.subset(np.isin(ds.ids, df.id))` picks the described rows.
- **Columns:** `id, split, description, source` (robocrys / fallback), `error` (robocrys' error when it fell back),
  `seconds` (wall time of that description; NaN when it came from the description cache), `fallback` (bool).
- **How:** `mmlit.text.describe.describe_structures` with robocrys' defaults (canonical form), one worker process,
  one thread, timeout 120 s per structure; a failure is replaced by `fallback_description` and flagged.
- **Cost:** the machine (2-core x86 CPU) was shared with several other jobs, so the wall seconds below are several times robocrys'
  single-core cost (2.2-3.3 s per structure measured alone in issue 12): they are what it took here, not what robocrys needs. A subset grown by a later run reuses the description
  cache for the rows it already had, so "wall minutes" is that last run's time and the median is over the rows it described.

| files | train / val / test | fallbacks | median s/structure | wall minutes | robocrys | date |
|---|---|---|---|---|---|---|
{{rows}}

The mp_20 pilot sets and matbench_phonons are described in full in the shared data folder
(`structures/mp_20_pilot/descriptions.csv.gz`, `structures/matbench_phonons/descriptions.csv.gz`; see their SOURCES.md).
'''.replace("{rows}", rows))

if __name__ == "__main__": sys.exit(main())
