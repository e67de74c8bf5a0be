"""Composition models on JARVIS-DFT dft_3d properties, JARVIS-Leaderboard's official train/val/test split.

    OMP_NUM_THREADS=1 python benchmarks/run_jarvis_bench.py --models tuned-tree --properties slme,spillage

One results folder per property, model (or --tag) and seed:
benchmarks/results/jarvis/<property>/<tag or model>/seed<k>/{results.json, results.md, predictions.csv.gz}.
A folder that already holds a run with the same settings is skipped (resumable); other settings there stop the run.
Each results.json records test MAE, wall and CPU seconds, hardware, n_train/n_val/n_test, the settings and the budget.
Magpie features of every dft_3d formula are computed once per process (mmlit's featurizer caches them per formula)
before the runs, so the runs' CPU seconds are the models' own; the featurization's cost is written to
<out>/featurize_magpie.json. Reads the shared data folder (MMLIT_DATA or ../shared/data). Run from the repo root.
"""
import argparse, json, os, resource, sys, time, warnings
from pathlib import Path

from mmlit.protocol import run_split, save_result
from mmlit.registry import make_model
from mmlit.data.jarvis import FORMULAS_FILE, jarvis_local_dir, jarvis_property, load_jarvis

# the fourteen properties of the issue (mmlit issue 10), largest last
PROPERTIES = ["slme", "spillage", "mbj_bandgap", "bulk_modulus_kv", "shear_modulus_gv", "mepsx", "avg_elec_mass",
              "n_Seebeck", "n_powerfact", "epsx", "ehull", "formation_energy_peratom", "optb88vdw_bandgap",
              "optb88vdw_total_energy"]

def featurize_all(out:Path):
    "Magpie features of every formula of the dft_3d files, once; records the cost."
    import pandas as pd
    from mmlit.baseline import MagpieFeaturizer
    folder = jarvis_local_dir()
    if folder is None: return
    formulas = pd.read_csv(folder/FORMULAS_FILE).formula.dropna().unique().tolist()
    t, c = time.time(), time.process_time()
    MagpieFeaturizer()(formulas, progress=False)
    rec = dict(n_formulas=len(formulas), wall_s=time.time() - t, cpu_s=time.process_time() - c)
    out.mkdir(parents=True, exist_ok=True); (out/"featurize_magpie.json").write_text(json.dumps(rec, indent=1))
    print(f"magpie features of {len(formulas)} formulas: {rec['cpu_s']:.1f} CPU-s", flush=True)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, help="comma-separated registry names")
    p.add_argument("--properties", default=",".join(PROPERTIES))
    p.add_argument("--seeds", default="0", help="comma-separated model seeds")
    p.add_argument("--model-kw", default="{}", help="JSON object of model settings")
    p.add_argument("--tag", default=None, help="results folder name (default: the model name)")
    p.add_argument("--budget", default="", help="the CPU budget of these runs, recorded with them")
    p.add_argument("--out", default="benchmarks/results/jarvis")
    a = p.parse_args(argv)
    kw, out_root = json.loads(a.model_kw), Path(a.out)
    props = [jarvis_property(x) for x in a.properties.split(",")]
    featurize_all(out_root)
    for prop in props:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            ds = load_jarvis(prop)
        skipped = [str(x.message) for x in w]
        n = ds.meta.split.value_counts().to_dict()
        for name in a.models.split(","):
            for seed in [int(s) for s in a.seeds.split(",")]:
                out = out_root/prop/(a.tag or name)/f"seed{seed}"
                if (out/"results.json").exists():
                    old = json.loads((out/"results.json").read_text()).get("extra", {})
                    if old.get("model_kw") != kw: raise SystemExit(f"{out} holds a run with other settings")
                    print(f"{out}: done", flush=True); continue
                t0 = time.time()
                res = run_split(ds, lambda: make_model(name, seed=seed, progress=False, **kw), progress=False)
                res.extra.update(model_kw=kw, registry_name=name, tag=a.tag, seed=seed, budget=a.budget,
                                 n_train=n.get("train", 0), n_val=n.get("val", 0), n_test=n.get("test", 0),
                                 skipped_ids=skipped, max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                 omp_threads=os.environ.get("OMP_NUM_THREADS"))
                save_result(res, out, matbench=False)
                print(f"{prop} {a.tag or name} seed {seed}: MAE {res.mean():.4g} ({res.cpu_time / 60:.1f} CPU-min, "
                      f"{time.time() - t0:.0f} s wall)", flush=True)

if __name__ == "__main__":
    sys.exit(main())
