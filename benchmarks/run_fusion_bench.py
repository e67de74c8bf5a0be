"""Fusion benchmarks: graph-only vs text-only vs graph+text fusion on matbench_phonons (official folds); a modality
sweep (every non-empty combination of the chosen modalities, concatenation fusion) on mp_20 pilot formation energy
and on the committed robocrys subsets of perov_5 (heat of formation, band gap) and aflow (bulk, shear modulus); and
zero-shot transfer between mp_20 and perov_5.

Run from the repository root, one process, one torch thread (the 2-core machine is shared):
    OMP_NUM_THREADS=1 python benchmarks/run_fusion_bench.py phonons:0:graph,text,concat mp20 phonons:0:gated,xattn ...
    OMP_NUM_THREADS=1 python benchmarks/run_fusion_bench.py perov5:0,1,2:composition,graph,text,image,tabular
    OMP_NUM_THREADS=1 python benchmarks/run_fusion_bench.py aflow_bulk:0,1,2:composition,graph,text,image,tabular transfer
Jobs: phonons:FOLD[:models[:SEED]], mp20|perov5|perov_5_gap|aflow_bulk|aflow_shear[:SEEDS[:modalities]], transfer[:models].
Each finished run appends one row to benchmarks/results/fusion/runs.csv (transfer: transfer.csv; a rerun of the same
key is skipped), so partial results survive an interrupted job. Sizes and epochs are set below and reported on nbs/66_bench.fusion.ipynb.
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

def append_row(path:Path, row:dict):
    "Append one result row; a file written with other columns is rewritten with the union (appends stay cheap)."
    new = pd.DataFrame([row])
    if path.exists() and list(pd.read_csv(path, nrows=0).columns) != list(new.columns):
        pd.concat([pd.read_csv(path), new], ignore_index=True).to_csv(path, index=False)
    else: new.to_csv(path, mode="a", header=not path.exists(), index=False)

def fit_and_score(key, model_kw, train, test, target, test_target=None, **extra) -> tuple[dict, tuple]:
    "Fit a FusionModel on `train`, score it on `test` (its `test_target` column, default `target`): (result row, (y, prediction))."
    t0, c0 = time.time(), time.process_time()
    m = FusionModel(target=target, **{**TRAIN, **model_kw}).fit(train)
    p, y = m.predict(test), test.targets[test_target or target].to_numpy(float)
    return dict(key=key, **extra, model=m.name, modalities="+".join(m.modality_names), fusion=m.fusion,
                **{k: float(v) for k, v in regression_scores(y, p).items()}, n_train=m.info["n_train"], n_valid=m.info["n_valid"],
                n_test=len(test), epochs=m.train_config.epochs, epochs_run=m.info["epochs_run"], best_epoch=m.info["best_epoch"],
                seed=m.train_config.seed, n_parameters=m.info["n_parameters"], featurize_s=round(m.info["featurize_seconds"], 1),
                train_s=round(m.info["train_seconds"], 1), wall_s=round(time.time() - t0, 1), cpu_s=round(time.process_time() - c0, 1),
                hardware=hardware_info(), created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())), (y, p)

def run(key, task, split, model_kw, train, test, target):
    if key in done_keys(): print("skip", key, flush=True); return
    row, _ = fit_and_score(key, model_kw, train, test, target, task=task, split=split)
    append_row(RUNS, row)
    print(key, f"mae={row['mae']:.4g}", f"{row['wall_s']}s", flush=True)

PHONON_MODELS = {   # name -> FusionModel keywords
    "graph": dict(modalities=("graph",)), "text": dict(modalities=("text",)),
    "concat": dict(modalities=("graph", "text"), fusion="concat"),
    "gated": dict(modalities=("graph", "text"), fusion="gated"),
    "xattn": dict(modalities=("graph", "text"), fusion="xattn"),
}
PHONON_MODELS.update({"moe": dict(modalities=("graph", "text"), fusion="moe"), "late": dict(modalities=("graph", "text"), fusion="late"),
                "vxattn": dict(modalities=("graph", "text"), fusion="vxattn"), "mean": dict(modalities=("graph", "text"), fusion="mean"),
                "sum": dict(modalities=("graph", "text"), fusion="sum")})

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

DESCRIBED = Path(__file__).parent/"data"/"descriptions"   # committed robocrys subsets (make_description_subsets.py)

def described_rows(ds, files:list) -> tuple[list, list]:
    "(train+val rows, test rows) of `ds` listed in the committed description `files`; their texts go to the cache."
    sub = pd.concat([pd.read_csv(DESCRIBED/f) for f in files], ignore_index=True).drop_duplicates("id")
    pos = {x: i for i, x in enumerate(ds.ids)}
    seed_text_cache(ds.subset([pos[x] for x in sub.id]), sub[["id", "description"]])
    rows = lambda splits: [pos[x] for x in sub.id[sub.split.isin(splits)]]
    return rows(["train", "val"]), rows(["test"])

# sweep sets on committed description subsets: name -> (structure set, target, description files)
DESCRIBED_SETS = {
    "perov_5": ("perov_5", "heat_all", ["perov_5.csv.gz"]),
    # 96 % of perov_5 has a gap of exactly 0 eV: the gapped subset is added to the random one (see the descriptions README)
    "perov_5_gap": ("perov_5", "ind_gap", ["perov_5.csv.gz", "perov_5_gap.csv.gz"]),
    "aflow_bulk": ("aflow_bulk_modulus", "bulk_modulus", ["aflow_bulk_modulus.csv.gz"]),
    "aflow_shear": ("aflow_shear_modulus", "shear_modulus", ["aflow_shear_modulus.csv.gz"]),
}

def described_set(name:str):
    "A sweep set (name, train, test, target) on its committed description subset."
    def sets():
        source, target, files = DESCRIBED_SETS[name]
        ds = load_structure_task(source, progress=False)
        tr, te = described_rows(ds, files)
        yield name, ds.subset(tr), ds.subset(te), target
    return sets

def sweep(seeds=(0,), mods=("composition", "graph", "text"), sets=sweep_sets):
    if bad := [m for m in mods if m not in MODALITIES]: raise SystemExit(f"unknown modalities {bad}")
    combos = [c for r in range(1, len(mods) + 1) for c in itertools.combinations(mods, r)]
    for task, tr, te, target in sets():
        for seed in seeds:
            for c in combos:
                run(f"{task}/seed{seed}/{'+'.join(c)}", task, f"seed{seed}", dict(modalities=c, fusion="concat", seed=seed,
                    epochs=MP20["epochs"], patience=MP20["patience"]), tr, te, target)

TRANSFER = OUT/"transfer.csv"

def transfer(models:list):
    """MatMMFuse-style zero-shot transfer: train on one set's formation energies, predict the other's.
    mp_20 (Materials Project formation energy per atom) and perov_5 (Castelli's heat of formation) use different
    reference energies, so besides MAE the rank (Spearman) and linear (Pearson) correlations are recorded: they do
    not charge a model for the offset between the two conventions."""
    from scipy.stats import pearsonr, spearmanr
    (mp, mp_tr, mp_te, mp_y), = sweep_sets()
    (pv, pv_tr, pv_te, pv_y), = described_set("perov_5")()
    pv_ds = load_structure_task("perov_5", progress=False)
    pv_eval = pv_ds.subset(sum(described_rows(pv_ds, DESCRIBED_SETS["perov_5"][2]), []))   # all 240 described rows
    pairs = [("mp_20_pilot", mp_tr, mp_y, "perov_5", pv_eval, pv_y), ("perov_5", pv_tr, pv_y, "mp_20_pilot", mp_te, mp_y)]
    done = set() if not TRANSFER.exists() else set(pd.read_csv(TRANSFER).key)
    for src, tr, ty, dst, te, ey in pairs:
        for name in models:
            key = f"{src}->{dst}/{name}"
            if key in done: print("skip", key, flush=True); continue
            kw = {**PHONON_MODELS[name], "epochs": MP20["epochs"], "patience": MP20["patience"]}
            row, (y, p) = fit_and_score(key, kw, tr, te, ty, test_target=ey, source=src, target_set=dst)
            row.update(spearman=float(spearmanr(y, p).statistic), pearson=float(pearsonr(y, p).statistic))
            append_row(TRANSFER, row)
            print(key, f"mae={row['mae']:.4g} spearman={row['spearman']:.3f}", flush=True)

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
        elif name in ("perov5", *DESCRIBED_SETS):   # perov_5|perov_5_gap|aflow_bulk|aflow_shear[:SEED,...[:modality,...]]
            seeds, _, mods = arg.partition(":")
            sweep(tuple(int(s) for s in (seeds or "0").split(",")), tuple(mods.split(",")) if mods else ("composition", "graph", "text"),
                  sets=described_set({"perov5": "perov_5"}.get(name, name)))
        elif name == "transfer":   # transfer[:model,model,...]  (mp_20 pilot <-> perov_5, both directions)
            transfer(arg.split(",") if arg else ["graph", "text", "concat", "xattn"])
        else: raise SystemExit(f"unknown job {job!r}")
