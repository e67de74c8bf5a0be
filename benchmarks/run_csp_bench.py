"""Template CSP benchmark: match rates of `mmlit.exkt.csp.TemplatePredictor` on mp_20 pilot test, perov_5 test and
mpts_52 val (time split), each against a template pool that excludes the evaluated structures.

  OMP_NUM_THREADS=1 python benchmarks/run_csp_bench.py --bench mp_20 --rank similarity --n 1000
  OMP_NUM_THREADS=1 python benchmarks/run_csp_bench.py --bench perov_5 --rank relax --n 100 --steps 50

Writes benchmarks/results/csp/<bench>/<tag>/{summary.json, rows.csv.gz}; the summary records every setting (pool,
subset, ranking, relaxation budget, top-k, hardware)."""
from __future__ import annotations
import argparse, json, os, platform, time, warnings
from pathlib import Path

import numpy as np

BENCHES = {  # evaluated set/split -> template pool (material ids of the evaluated set are always left out of the pool)
    "mp_20": (("mp_20_pilot", "test"), "mp_20_pilot:train,mp_20_pilot:val,mp_20_biternary:val"),   # mp_20 train/val only
    "mp_20_val": (("mp_20_pilot", "val"), "mp_20_pilot:train,mp_20_biternary:test"),   # development set (tuning)
    "perov_5": (("perov_5", "test"), "perov_5:train,perov_5:val"),
    "mpts_52": (("mpts_52", "val"), "mp_20_pilot,mp_20_biternary,perov_5"),
}

def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True, choices=list(BENCHES))
    ap.add_argument("--n", type=int, default=None, help="random subset of this many compositions (seed --seed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rank", default="similarity", choices=["similarity", "energy", "relax"])
    ap.add_argument("--n-relax", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--fmax", type=float, default=0.1)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--method", default="hybrid", choices=["prob", "embedding", "hybrid"])
    ap.add_argument("--embedding", default="skipatom")
    ap.add_argument("--weight", type=float, default=1.0)
    ap.add_argument("--n-templates", type=int, default=60)
    ap.add_argument("--time-budget", type=float, default=120)
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--tag", default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent/"results"/"csp"))
    a = ap.parse_args(argv)
    import torch; torch.set_num_threads(1)
    from mmlit.data.structures import load_structure_set
    from mmlit.exkt.csp import TemplatePredictor, SubstitutionScorer, evaluate_csp, load_templates
    warnings.simplefilter("ignore")
    (name, split), pool_spec = BENCHES[a.bench]
    ds = load_structure_set(name, split=split, progress=False)
    idx = np.arange(len(ds))
    if a.n is not None and a.n < len(ds): idx = np.sort(np.random.default_rng(a.seed).choice(len(ds), a.n, replace=False))
    ids = [ds.ids[i] for i in idx]
    pool, pids = load_templates(pool_spec, exclude_ids=set(ds.ids))   # same material id in the pool: left out
    t0 = time.time()
    tp = TemplatePredictor(pool, pids, rank=a.rank, n_relax=a.n_relax, fmax=a.fmax, steps=a.steps,
                           n_templates=a.n_templates, scorer=SubstitutionScorer(a.method, a.embedding, a.weight))
    rows, summ = evaluate_csp(tp, [ds.compositions[i] for i in idx], [ds.structures[i] for i in idx], ids=ids,
                              top_k=a.top_k, time_budget=a.time_budget, n_jobs=a.n_jobs)
    pool_formulas = {s.composition.reduced_formula for s in pool}
    tag = a.tag or f"{a.rank}" + (f"-n{a.n_relax}-s{a.steps}" if a.rank != "similarity" else "") + \
          (f"-{a.method}" if a.method != "hybrid" else "") + (f"-sub{a.n}" if a.n else "")
    out = Path(a.out)/a.bench/tag; out.mkdir(parents=True, exist_ok=True)
    summ.update(bench=a.bench, evaluated=f"{name}:{split}", n_available=len(ds), subset_seed=a.seed if a.n else None,
                pool=pool_spec, pool_size=len(pool), pool_usable=len(tp.templates), settings=vars(a) | {"out": None},
                wall_seconds=round(time.time() - t0, 1), hardware=f"{platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} CPUs visible, torch/OMP threads 1, n_jobs {a.n_jobs}",
                template_formula_in_pool=100*float(np.mean([ds.compositions[i] in pool_formulas for i in idx])))
    rows.to_csv(out/"rows.csv.gz", index=False)
    (out/"summary.json").write_text(json.dumps(summ, indent=1, default=str))
    print(json.dumps({k: v for k, v in summ.items() if k != "settings"}, indent=1, default=str))

if __name__ == "__main__": main()
