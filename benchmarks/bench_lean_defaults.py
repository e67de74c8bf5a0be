"""Time and peak memory of every composition model's DEFAULT configuration on a 300-row task (issue #9: <= 3 min,
<= 2 GB on 2 cores). Each model runs `mmlit bench --data <csv> --folds 0` in its own process; the peak resident
memory of that process tree (getrusage of the children) and the wall time are recorded.

Two 300-row tables, written next to the results:
- `expt_gap_300.csv`: 300 rows drawn (seed 0) from matbench_expt_gap (real targets: the MAE is meaningful);
- `alloys_300.csv`: 300 steel-like compositions (8-13 elements, amounts down to 1e-4) drawn at random, with a target
  computed from the composition (the fraction-weighted Magpie melting temperature / 1000). It probes cost and
  robustness on such formulas only; its MAE says nothing about materials.

    python benchmarks/bench_lean_defaults.py [--models tuned-tree,elm-fast,...] [--out benchmarks/results/lean_defaults]
"""
import argparse, json, os, platform, resource, shutil, subprocess, sys, time
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_MODELS = ["mean", "baseline-magpie-rf", "tuned-tree", "elm-fast", "elm-imkt", "clm-bert-tiny-ft",
                  "clm-bert-tiny-mlm+align+ft", "clm-modernbert-tiny-mlm+align+ft"]
STEEL = {"Fe": (0.5, 0.9), "Cr": (0.0, 0.25), "Ni": (0.0, 0.2), "Mn": (0.0, 0.03), "Mo": (0.0, 0.05), "Si": (0.0, 0.02),
         "C": (1e-4, 0.01), "V": (0.0, 0.02), "W": (0.0, 0.02), "Co": (0.0, 0.1), "Ti": (0.0, 0.01), "Al": (0.0, 0.01),
         "Cu": (0.0, 0.02), "N": (1e-4, 0.002)}

def alloys(n=300, seed=0) -> pd.DataFrame:
    from pymatgen.core import Composition
    from mmlit.baseline import MagpieFeaturizer
    rng = np.random.default_rng(seed); rows = []
    for _ in range(n):
        k = rng.integers(8, len(STEEL) + 1)
        els = ["Fe", "C"] + list(rng.choice([e for e in STEEL if e not in ("Fe", "C")], k - 2, replace=False))
        amt = {e: rng.uniform(*STEEL[e]) for e in els}
        amt = {e: max(round(a, 4), 1e-4) for e, a in amt.items()}
        rows.append("".join(f"{e}{a:g}" for e, a in amt.items()))
    mf = MagpieFeaturizer(); labels = mf.feature_labels()
    tm = mf(rows, progress=False)[:, labels.index("MagpieData mean MeltingT")] / 1000
    return pd.DataFrame({"composition": rows, "y": tm})

def expt_gap_300(seed=0) -> pd.DataFrame:
    from mmlit.data.external import load_matbench
    ds = load_matbench("expt_gap", progress=False)
    idx = np.random.default_rng(seed).choice(len(ds), 300, replace=False)
    return pd.DataFrame({"composition": [ds.compositions[i] for i in idx], "y": ds.y()[idx]})

def run_one(model, csv, out, env) -> dict:
    mmlit = Path(sys.executable).parent/"mmlit"
    cmd = [str(mmlit), "bench", "--data", str(csv), "--label", "y", "--model", model, "--folds", "0", "--quiet",
           "--out", str(out), "--n-jobs", "2"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rec = dict(model=model, data=Path(csv).name, returncode=r.returncode, wall_s=round(wall, 1),
               cpu_s=round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
               peak_rss_mb=round(after.ru_maxrss / 1024, 1))   # max over children so far: models run from light to heavy
    if r.returncode == 0:
        res = json.loads((Path(out)/"results.json").read_text())
        rec["mae"] = res["folds"][0]["scores"]["mae"] if "scores" in res["folds"][0] else None
    else: rec["error"] = r.stderr[-2000:]
    return rec

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS))
    p.add_argument("--tables", default="expt_gap_300,alloys_300")
    p.add_argument("--out", default="benchmarks/results/lean_defaults")
    a = p.parse_args(argv)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    tables = {"expt_gap_300": expt_gap_300, "alloys_300": alloys}
    recs = []
    for t in a.tables.split(","):
        csv = out/f"{t}.csv"; tables[t]().to_csv(csv, index=False)
        for m in a.models.split(","):
            # one process per model: getrusage(CHILDREN).ru_maxrss is the max over all children so far, so each model
            # is measured in a fresh parent (this script re-invoked) to get its own peak
            # a cold cache of its own for each model: first-run cost (teacher embeddings, pretraining), as a new user sees it
            cache = out/"cache"/t/m; shutil.rmtree(cache, ignore_errors=True)
            env = {**os.environ, "MMLIT_CACHE": str(cache)}
            r = subprocess.run([sys.executable, __file__, "--one", m, str(csv), str(out/"runs"/t/m)], capture_output=True,
                               text=True, env=env)
            load = os.getloadavg()[0]   # other jobs on the machine inflate wall time, not CPU time
            rec = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else dict(model=m, data=csv.name, error=r.stderr[-2000:])
            rec.update(date=time.strftime("%Y-%m-%d"), load_avg_1m=round(load, 1))
            recs.append(rec); print(json.dumps(rec), flush=True)
    # models run now replace their earlier records; the others are kept (a re-run of a few models after a change)
    old = json.loads((out/"results.json").read_text())["records"] if (out/"results.json").exists() else []
    new = {(r["model"], r["data"]) for r in recs}
    recs = [r for r in old if (r["model"], r["data"]) not in new] + recs
    info = dict(hardware=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", date=time.strftime("%Y-%m-%d"),
                budget="<= 180 s and <= 2048 MB peak RSS per model (one torch thread: CPU time = wall time on an idle machine)",
                records=recs)
    (out/"results.json").write_text(json.dumps(info, indent=1))

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(json.dumps(run_one(sys.argv[2], sys.argv[3], sys.argv[4], os.environ)))
    else: main()
