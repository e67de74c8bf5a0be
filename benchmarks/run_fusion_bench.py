"""Fusion benchmarks: graph-only vs text-only vs graph+text fusion on matbench_phonons (official folds), and a modality
sweep on mp_20 pilot formation energy (and perov_5 where a description subset is committed).

Run from the repository root, one process, one torch thread (the 2-core machine is shared):
    OMP_NUM_THREADS=1 python benchmarks/run_fusion_bench.py phonons:0:graph,text,concat mp20 phonons:0:gated,xattn ...
Each finished run appends one row to benchmarks/results/fusion/runs.csv (a rerun of the same key is skipped), so
partial results survive an interrupted job. Sizes and epochs are set below and reported on nbs/66_bench.fusion.ipynb.
"""
import itertools, json, os, sys, time
from pathlib import Path
import numpy as np, pandas as pd, torch

from mmlit.data.structures import load_structure_task
from mmlit.fusion.core import MODALITIES
from mmlit.fusion.models import FusionModel
from mmlit.metrics import hardware_info, regression_scores
from mmlit.text.describe import cache_descriptions, shared_descriptions

OUT = Path(__file__).parent/"results"/"fusion"
RUNS = OUT/"runs.csv"
# the structure wing's CPU recipe (benchmarks/run_structure_bench.sh): L1, one-cycle AdamW 3e-3, batch 32, CGCNN
# on a CPU shared with other jobs the session allowed 60 epochs (patience 20) per phonons run
TRAIN = dict(epochs=60, lr=3e-3, batch_size=32, patience=20, num_threads=1, progress=False)
MP20 = dict(n_train=400, n_test=200, epochs=40, patience=15)   # sized to the CPU budget (see the page)

def seed_text_cache(ds, shared):
    "Put the shared robocrys descriptions of these rows into the description cache (no robocrys run)."
    sd = shared.set_index("id").description
    ok = [i for i, x in enumerate(ds.ids) if x in sd.index and isinstance(sd[x], str) and sd[x]]
    return cache_descriptions([ds.structures[i] for i in ok], [sd[ds.ids[i]] for i in ok])

def done_keys():
    return set() if not RUNS.exists() else set(pd.read_csv(RUNS).key)

def run(key, task, split, model_kw, train, test, target, **extra):
    if key in done_keys(): print("skip", key, flush=True); return
    t0, c0 = time.time(), time.process_time()
    m = FusionModel(target=target, **{**TRAIN, **model_kw}).fit(train)
    p = m.predict(test)
    y = test.targets[target].to_numpy(float)
    row = dict(key=key, task=task, split=split, model=m.name, modalities="+".join(m.modality_names), fusion=m.fusion,
               **{k: float(v) for k, v in regression_scores(y, p).items()}, n_train=m.info["n_train"], n_valid=m.info["n_valid"],
               n_test=len(test), epochs=m.train_config.epochs, epochs_run=m.info["epochs_run"], best_epoch=m.info["best_epoch"],
               seed=m.train_config.seed, n_parameters=m.info["n_parameters"], featurize_s=round(m.info["featurize_seconds"], 1),
               train_s=round(m.info["train_seconds"], 1), wall_s=round(time.time() - t0, 1), cpu_s=round(time.process_time() - c0, 1),
               hardware=hardware_info(), created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra)
    pd.DataFrame([row]).to_csv(RUNS, mode="a", header=not RUNS.exists(), index=False)
    print(key, f"mae={row['mae']:.4g}", f"{row['wall_s']}s", flush=True)

PHONON_MODELS = {   # name -> FusionModel keywords
    "graph": dict(modalities=("graph",)), "text": dict(modalities=("text",)),
    "concat": dict(modalities=("graph", "text"), fusion="concat"),
    "gated": dict(modalities=("graph", "text"), fusion="gated"),
    "xattn": dict(modalities=("graph", "text"), fusion="xattn"),
}
PHONON_MODELS.update({"moe": dict(modalities=("graph", "text"), fusion="moe"), "late": dict(modalities=("graph", "text"), fusion="late"),
                "vxattn": dict(modalities=("graph", "text"), fusion="vxattn"), "mean": dict(modalities=("graph", "text"), fusion="mean")})

def phonons(fold:int, models:dict, seed:int=0):
    ds = load_structure_task("phonons", progress=False)
    seed_text_cache(ds, shared_descriptions("matbench_phonons"))
    tr, te = ds.subset(np.flatnonzero(ds.folds != fold).tolist()), ds.subset(np.flatnonzero(ds.folds == fold).tolist())
    for name, kw in models.items():
        key = f"phonons/fold{fold}/{name}" + (f"/seed{seed}" if seed else "")
        run(key, "matbench_phonons", f"fold{fold}", {**kw, "seed": seed}, tr, te, "last_phdos_peak")

def sweep_sets():
    "(task, train, test, target) of the sweep: mp_20 pilot, and perov_5 when its description subset is committed."
    ds = load_structure_task("mp_20_pilot", progress=False)
    seed_text_cache(ds, shared_descriptions("mp_20_pilot"))
    split = ds.meta["split"].to_numpy()
    tr = ds.subset(np.flatnonzero(split == "train")[:MP20["n_train"]].tolist())
    te = ds.subset(np.flatnonzero(split == "test")[:MP20["n_test"]].tolist())
    yield "mp_20_pilot", tr, te, "formation_energy_per_atom"

def perov5_set():
    "perov_5 heat_all on the committed robocrys subset (benchmarks/data/descriptions/perov_5.csv.gz): its train / test rows."
    sub = pd.read_csv(Path(__file__).parent/"data"/"descriptions"/"perov_5.csv.gz")
    ds = load_structure_task("perov_5", progress=False)
    pos = {x: i for i, x in enumerate(ds.ids)}
    seed_text_cache(ds.subset([pos[x] for x in sub.id]), sub[["id", "description"]])
    rows = lambda split: [pos[x] for x in sub.id[sub.split == split]]
    yield "perov_5", ds.subset(rows("train") + rows("val")), ds.subset(rows("test")), "heat_all"

def sweep(seeds=(0,), mods=("composition", "graph", "text"), sets=sweep_sets):
    if bad := [m for m in mods if m not in MODALITIES]: raise SystemExit(f"unknown modalities {bad}")
    combos = [c for r in range(1, len(mods) + 1) for c in itertools.combinations(mods, r)]
    for task, tr, te, target in sets():
        for seed in seeds:
            for c in combos:
                run(f"{task}/seed{seed}/{'+'.join(c)}", task, f"seed{seed}", dict(modalities=c, fusion="concat", seed=seed,
                    epochs=MP20["epochs"], patience=MP20["patience"]), tr, te, target)

if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for job in sys.argv[1:]:
        name, _, arg = job.partition(":")
        if name == "phonons":   # phonons:FOLD[:model,model,...[:SEED]]
            fold, _, rest = arg.partition(":")
            which, _, seed = rest.partition(":")
            which = which.split(",") if which else ["graph", "text", "concat", "gated", "xattn"]
            phonons(int(fold or 0), {k: PHONON_MODELS[k] for k in which}, int(seed or 0))
        elif name == "mp20":   # mp20[:SEED,SEED,...[:modality,modality,...]]
            seeds, _, mods = arg.partition(":")
            sweep(tuple(int(s) for s in (seeds or "0").split(",")), tuple(mods.split(",")) if mods else ("composition", "graph", "text"))
        elif name == "perov5":   # perov5[:SEED,SEED,...[:modality,modality,...]]
            seeds, _, mods = arg.partition(":")
            sweep(tuple(int(s) for s in (seeds or "0").split(",")), tuple(mods.split(",")) if mods else ("composition", "graph", "text"),
                  sets=perov5_set)
        else: raise SystemExit(f"unknown job {job!r}")
