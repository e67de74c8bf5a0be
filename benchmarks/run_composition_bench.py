"""Composition models on the matbench 5-fold protocol: one results folder per task and model.

    python benchmarks/run_composition_bench.py --models tuned-tree --tasks expt_gap,phonons --folds 0-4

Models are registry names (`mmlit.bench.core.MODELS`). `--model-kw` is a JSON object passed to each model's factory;
`--tag` names the results folder when the same model runs with other settings (a recipe screen).
Outputs: benchmarks/results/composition/matbench_<task>/<tag or model>/{results.json, predictions.csv.gz, ...}.
Reads the task tables from the shared data folder (MMLIT_DATA or ../shared/data). Run from the repo root.
"""
import argparse, importlib, json, os, resource, sys, time
from pathlib import Path

from mmlit.bench.core import make_model, run_matbench, parse_folds, resume_bench, save_resumed
from mmlit.data.external import load_matbench

TASKS = ["expt_gap", "dielectric", "log_gvrh", "log_kvrh", "phonons", "perovskites"]

def factory(name:str, **kw):
    "A registry name, or 'module:Class' for a model not registered (yet)."
    if ":" not in name: return make_model(name, **kw)
    mod, attr = name.split(":")
    return getattr(importlib.import_module(mod), attr)(**kw)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, help="comma-separated registry names")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--folds", default="0-4")
    p.add_argument("--model-kw", default="{}", help="JSON object of model settings")
    p.add_argument("--tag", default=None, help="results folder name (default: the model name)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/composition")
    a = p.parse_args(argv)
    kw = json.loads(a.model_kw)
    for task in a.tasks.split(","):
        ds = load_matbench(task, progress=False)
        for name in a.models.split(","):
            t0 = time.time()
            out = Path(a.out) / ds.name / (a.tag or name.split(':')[-1])
            # resume: folds already in the results folder (same model settings) are kept, only the others run
            old, todo = resume_bench(out, parse_folds(a.folds), dict(model_kw=kw))
            if not todo: print(f"{out}: all folds done", flush=True); continue
            res = run_matbench(ds, lambda: factory(name, seed=a.seed, progress=False, **kw), folds=todo, progress=False)
            res.extra.update(model_kw=kw, registry_name=name, tag=a.tag,
                             max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                             torch_threads=os.environ.get("OMP_NUM_THREADS"))
            res = save_resumed(res, out, dict(model_kw=kw), plot=False)   # keeps folds other runs saved meanwhile
            print(f"{ds.name} {a.tag or name}: MAE {res.mean():.4g} ± {res.std():.3g} over folds {[f.fold for f in res.folds]} "
                  f"({res.cpu_time / 60:.1f} CPU-min, {time.time() - t0:.0f} s wall)", flush=True)

if __name__ == "__main__":
    sys.exit(main())
