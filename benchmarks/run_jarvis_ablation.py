"""Which imKT stages help on JARVIS-DFT? From scratch (ft) vs MLM (mlm+ft) vs MLM -> alignment (mlm+align+ft), seed-paired.

    OMP_NUM_THREADS=1 python benchmarks/run_jarvis_ablation.py --deadline 19:20

For each seed, each property (priority order: bulk modulus, MBJ gap, OPT gap, formation energy) and each stage set, a
tiny token-sentence CLM (`clm-bert-tiny-*`) is trained with `mmlit.protocol.run_split` on a FIXED seeded subset of the
official train split (--n-train rows, the same rows for every seed and stage set), early-stopped on the whole official
val split and tested on the whole official test split. Clean protocol: the MLM and alignment corpora exclude every
composition of the property's dataset (all three splits), not only the subset. Budget of the matbench ablation
(`run_imkt_ablation.py`): MLM on a random subset of the matbench+Ricci composition corpus, alignment onto CHGNet
embeddings of a fixed pool of structures (seed 0; embeddings cached on disk), finetuning 30 epochs, patience 6.

Writes benchmarks/results/jarvis_ablation/<property>/<config>/seed<k>/{results.json, results.md, predictions.csv.gz,
ablation.json} and run_info.json. Finished runs are skipped (resumable). Reads the shared data folder (MMLIT_DATA).
"""
from __future__ import annotations
import argparse, datetime as dt, json, os, sys, time, warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import torch

torch.set_num_threads(1)

from mmlit.protocol import run_split, save_result
from mmlit.metrics import hardware_info
from mmlit.data.jarvis import load_jarvis, jarvis_property
from mmlit.comp.imkt import ImKTConfig, ImKTModel
from mmlit.comp.align import alignment_corpus, resolve_teachers
from mmlit.comp.pretrain import read_stage

PROPERTIES = ["bulk_modulus_kv", "mbj_bandgap", "optb88vdw_bandgap", "formation_energy_peratom"]
STAGE_SETS = ["ft", "mlm+ft", "mlm+align+ft"]


def structure_pool(n:int, seed:int, teachers):
    "A fixed random pool of structures, embedded once by the teachers (cached on disk), shared by every run."
    pool = alignment_corpus(None, None, n, seed, progress=False)
    pool.name = f"imkt_ablation_pool_n{n}_seed{seed}"   # the matbench ablation's pool: its embeddings are cached
    for t in teachers: t.embed_masked(pool, progress=False)
    return pool


def fixed_subset(ds, n_train:int, seed:int):
    "The dataset with only `n_train` seeded-random rows of its train split (val and test whole)."
    sp = ds.meta.split.astype(str).to_numpy()
    tr = np.flatnonzero(sp == "train")
    keep = np.sort(np.concatenate([np.random.default_rng(seed).choice(tr, min(n_train, len(tr)), replace=False),
                                   np.flatnonzero(sp != "train")]))
    return ds.subset(keep)


def stage_info(paths:dict) -> dict:
    out = {}
    for stage, p in paths.items():
        info = read_stage(p) or {}
        out[stage] = {k: info.get(k) for k in ("n_train", "n_valid", "n_structures", "seconds", "corpus", "valid_scores")
                      if info.get(k) is not None}
        ex = Path(p, "excluded_formulas.txt")
        out[stage]["n_excluded_formulas"] = len(ex.read_text().split()) if ex.exists() else None
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--properties", default=",".join(PROPERTIES))
    p.add_argument("--stages", default=",".join(STAGE_SETS))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--n-train", type=int, default=2000); p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--ft-epochs", type=int, default=30); p.add_argument("--patience", type=int, default=6)
    p.add_argument("--mlm-max", type=int, default=20000); p.add_argument("--mlm-epochs", type=int, default=3)
    p.add_argument("--n-structures", type=int, default=1200); p.add_argument("--align-epochs", type=int, default=10)
    p.add_argument("--deadline", default=None, help="HH:MM UTC: start no new run after it")
    p.add_argument("--out", default="benchmarks/results/jarvis_ablation")
    a = p.parse_args(argv)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    budget = dict(preset="tiny", arch="bert", encoding="tokens", batch_size=64, n_train=a.n_train, subset_seed=a.subset_seed,
                  ft_epochs=a.ft_epochs, patience=a.patience, ft_lr=ImKTConfig().ft_lr, mlm_max_size=a.mlm_max,
                  mlm_epochs=a.mlm_epochs, n_structures_pool=a.n_structures, align_epochs=a.align_epochs,
                  teachers=["chgnet"])
    (out/"run_info.json").write_text(json.dumps(dict(
        budget=budget, hardware=f"{hardware_info()}; 1 torch thread; machine shared with other jobs",
        protocol=(f"official JARVIS-Leaderboard split; train on a fixed random {a.n_train} rows of the train split "
                  f"(subset seed {a.subset_seed}, the same for every seed and stage set), early stopping on the whole val "
                  "split, test on the whole test split; clean protocol: pretraining corpora exclude every composition "
                  "of the property (all splits)"),
        corpora=(f"MLM: random {a.mlm_max} formulas of the deduplicated matbench+Ricci composition corpus minus the "
                 f"property; alignment: a fixed pool of {a.n_structures} structures of the default structure corpus "
                 "(seed 0) minus the property's compositions, CHGNet embeddings")), indent=1))
    deadline = None
    if a.deadline:
        h, m = map(int, a.deadline.split(":"))
        deadline = dt.datetime.now(dt.timezone.utc).replace(hour=h, minute=m, second=0, microsecond=0)
    pool = None
    data = {}
    # seed-major: every property once before the next seed, so a short budget still covers all properties
    for seed in [int(s) for s in a.seeds.split(",")]:
        for prop in [jarvis_property(x) for x in a.properties.split(",")]:
            if prop not in data:
                with warnings.catch_warnings(): warnings.simplefilter("ignore"); full = load_jarvis(prop)
                data[prop] = full, fixed_subset(full, a.n_train, a.subset_seed)
            full, sub = data[prop]
            n = sub.meta.split.value_counts().to_dict()
            for stages in a.stages.split(","):
                cfg = ImKTConfig(stages=stages, arch="bert", preset="tiny", batch_size=64, mlm_max_size=a.mlm_max,
                                 mlm_epochs=a.mlm_epochs, teachers=("chgnet",), align_epochs=a.align_epochs,
                                 ft_epochs=a.ft_epochs, patience=a.patience, protocol="clean", seed=seed,
                                 device="cpu", progress=False, num_threads=1)
                d = out/prop/cfg.name/f"seed{seed}"
                if (d/"ablation.json").exists(): print(f"{d}: done", flush=True); continue
                if deadline and dt.datetime.now(dt.timezone.utc) > deadline:
                    print(f"deadline {a.deadline} passed: {d} not started", flush=True); continue
                if "align" in stages and pool is None:
                    pool = structure_pool(a.n_structures, 0, resolve_teachers(["chgnet"], "cpu"))
                if "align" in stages: cfg.align_sources = (pool,)
                models = []
                def factory():
                    models.append(ImKTModel(cfg, exclude=full)); return models[-1]
                t0, c0 = time.time(), time.process_time()
                res = run_split(sub, factory, progress=False)
                wall, cpu = time.time() - t0, time.process_time() - c0
                res.extra.update(seed=seed, n_train=n.get("train"), n_val=n.get("val"), n_test=n.get("test"),
                                 n_train_split=int((full.meta.split == "train").sum()), budget=budget)
                save_result(res, d, matbench=False)
                r = models[-1].result
                rec = dict(property=prop, config=cfg.name, stages=stages, seed=seed, mae=float(res.mean("mae")),
                           mad_mae=float(res.mean("mad_mae")), n_train=n.get("train"), n_val=n.get("val"),
                           n_test=n.get("test"), best_epoch=r.info.get("best_epoch"),
                           n_params=int(sum(q.numel() for q in r.model.parameters())), budget=budget,
                           stages_detail=stage_info(models[-1].stage_paths), protocol=res.protocol,
                           wall_time_s=wall, cpu_time_s=cpu,
                           finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
                (d/"ablation.json").write_text(json.dumps(rec, indent=1, default=str))
                print(f"{prop} {cfg.name} seed {seed}: MAE {rec['mae']:.4g} ({cpu:.0f} CPU-s, {wall:.0f} s wall)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
