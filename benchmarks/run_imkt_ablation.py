"""imKT ablation on matbench (5-fold, official folds): pretraining stages x backbone architecture.

Every number in `benchmarks/results/imkt_ablation/` comes from this script. It runs a priority-ordered plan of
(task, arch, stages) configurations with `mmlit.comp.imkt.run_imkt` (clean protocol: one pretraining per task on
corpora minus every composition of that task, finetuned per fold through `mmlit.bench.core.run_matbench`) and writes,
after each finished configuration:

- `<task>/<config>/` : `save_bench` output (results.json/.md, predictions.csv.gz, matbench file), no plot
- `<task>/<config>/ablation.json` : budget, corpus sizes, parameter count, pretraining stage records, wall time
- `summary.json` / `summary.md` : every finished configuration next to our Magpie+RF baseline and the leaderboard

Usage (one torch thread; the machine is shared):
    OMP_NUM_THREADS=1 python benchmarks/run_imkt_ablation.py --deadline 09:58
Finished configurations are skipped on re-runs (delete their folder to re-run one).
"""
from __future__ import annotations
import argparse, datetime as dt, functools, json, os, sys, time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import pandas as pd
import torch

torch.set_num_threads(1)

from mmlit.bench.core import save_bench, load_leaderboard
from mmlit.data.external import load_matbench
from mmlit.comp.imkt import ImKTConfig, run_imkt
from mmlit.comp.align import alignment_corpus, resolve_teachers
from mmlit.comp.pretrain import read_stage
from mmlit.comp.model import count_parameters
from mmlit.metrics import hardware_info, BenchResult

ROOT = Path(__file__).resolve().parent
OUT = ROOT/"results"/"imkt_ablation"
BASELINE = lambda task: ROOT/"results"/f"matbench_{task}"/"results.json"
ANCHORS = ["CrabNet", "Finder_v1.2 composition-only version", "MODNet (v0.1.12)", "Darwin", "RF-SCM/Magpie"]

# priority order of the issue: (1) expt_gap, the 4 stage variants with the default arch; (2) the 3 archs from
# scratch on expt_gap; (3) dielectric and log_gvrh, scratch vs MLM->align; (4) the remaining tasks
STAGE_SETS = ["ft", "mlm+ft", "align+ft", "mlm+align+ft"]
def default_plan(arch="bert"):
    plan = [("expt_gap", arch, s) for s in STAGE_SETS]
    plan += [("expt_gap", a, "ft") for a in ("roformer", "modernbert") if a != arch]
    for t in ("dielectric", "log_gvrh", "phonons", "log_kvrh", "perovskites"):
        plan += [(t, arch, "ft"), (t, arch, "mlm+align+ft")]
    return plan


@functools.lru_cache(maxsize=None)
def task_data(task:str):
    "A matbench task, loaded (and validated) once per process."
    return load_matbench(task)


def structure_pool(n:int, seed:int, teachers) -> "Dataset":
    """A fixed random pool of `n` structures from the default structure corpus, embedded once by the teachers.
    Every task aligns on this pool minus the task's compositions (clean protocol), so teacher embeddings (cached on
    disk) are computed once for all tasks instead of once per task-specific random subset."""
    pool = alignment_corpus(None, None, n, seed, progress=False)
    pool.name = f"imkt_ablation_pool_n{n}_seed{seed}"
    t0 = time.time()
    for t in teachers: t.embed_masked(pool, progress=True)   # fills the on-disk cache (no-op when cached)
    print(f"structure pool: {len(pool)} structures, teacher embeddings ready in {time.time() - t0:.0f} s", flush=True)
    return pool


def stage_records(paths:dict) -> dict:
    out = {}
    for stage, p in paths.items():
        info = read_stage(p) or {}
        keep = {k: info.get(k) for k in ("n_train", "n_valid", "n_structures", "n_without_teacher", "seconds", "corpus",
                                         "teachers", "valid_scores", "mean_weight", "weighting")
                if info.get(k) is not None}
        if Path(p, "history.csv").exists():
            h = pd.read_csv(Path(p, "history.csv"))
            if len(h): keep["last_epoch"] = h.iloc[-1].to_dict()
        n_ex = len(Path(p, "excluded_formulas.txt").read_text().split()) if Path(p, "excluded_formulas.txt").exists() else None
        keep.update(path=str(p), n_excluded_formulas=n_ex)
        out[stage] = keep
    return out


def run_one(task:str, arch:str, stages:str, args, pool, log) -> dict:
    ds = task_data(task)
    cfg = ImKTConfig(stages=stages, arch=arch, preset=args.preset, batch_size=args.batch_size,
                     mlm_max_size=args.mlm_max, mlm_epochs=args.mlm_epochs,
                     teachers=tuple(args.teachers), align_sources=(pool,) if pool is not None else None,
                     align_epochs=args.align_epochs, ft_epochs=args.ft_epochs, patience=args.patience,
                     protocol="clean", seed=args.seed, device="cpu", progress=False)
    t0, c0 = time.time(), time.process_time()
    res = run_imkt(ds, stages=stages, arch=arch, preset=args.preset, teachers=tuple(args.teachers),
                   folds=list(args.folds), config=cfg)
    wall, cpu = time.time() - t0, time.process_time() - c0
    bench = res.bench
    name = cfg.name + args.tag
    d = OUT/task/name
    save_bench(bench, d, plot=False, matbench=False)      # keep the committed folder small
    m = res.models[0].result
    rec = dict(task=f"matbench_{task}", config=name, tag=args.tag, arch=arch, preset=args.preset, stages=stages,
               n_params=int(count_parameters(m.model)), n_rows=len(ds), folds=list(args.folds),
               mae_mean=bench.mean("mae"), mae_std=bench.std("mae"),
               mad_mae_mean=bench.mean("mad_mae"), mad_mae_std=bench.std("mad_mae"),
               best_epochs=[mm.result.info.get("best_epoch") for mm in res.models],
               budget=dict(batch_size=args.batch_size, ft_epochs=args.ft_epochs, patience=args.patience, ft_lr=cfg.ft_lr,
                           valid_frac=cfg.valid_frac, mlm_epochs=args.mlm_epochs, mlm_max_size=args.mlm_max,
                           align_epochs=args.align_epochs, n_structures_pool=None if pool is None else len(pool),
                           teachers=list(args.teachers)),
               stages_detail=stage_records(res.stage_paths), protocol=bench.protocol,
               wall_time_s=wall, cpu_time_s=cpu, hardware=f"{hardware_info()}; torch threads {torch.get_num_threads()}",
               finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    (d/"ablation.json").write_text(json.dumps(rec, indent=1, default=str))
    log(f"{task} {name}: MAE {rec['mae_mean']:.4g} ± {rec['mae_std']:.3g}, MAD:MAE {rec['mad_mae_mean']:.3g}, "
        f"{rec['n_params']} params, {wall:.0f} s wall")
    return rec


def summarize(out:Path|None=None) -> pd.DataFrame:
    "Collect every finished configuration + baseline + leaderboard anchors into summary.json / summary.md."
    out = Path(out or OUT)
    rows = []
    for f in sorted(out.glob("*/*/ablation.json")):
        r = json.loads(f.read_text())
        rows.append(dict(task=r["task"], model=r["config"], source="this run (mmlit imKT ablation)",
                         mae_mean=r["mae_mean"], mae_std=r["mae_std"], mad_mae_mean=r["mad_mae_mean"],
                         mad_mae_std=r["mad_mae_std"], n_folds=len(r["folds"]), n_params=r["n_params"],
                         wall_time_s=r["wall_time_s"]))
    tasks = sorted({r["task"] for r in rows})
    lb = load_leaderboard()
    for t in tasks:
        short = t.removeprefix("matbench_")
        if BASELINE(short).exists():
            b = BenchResult.from_json(BASELINE(short))   # same mean/std convention as our rows
            rows.append(dict(task=t, model=f"{b.model} (mmlit baseline)", source=str(BASELINE(short).relative_to(ROOT.parent)),
                             mae_mean=b.mean("mae"), mae_std=b.std("mae"), mad_mae_mean=b.mean("mad_mae"),
                             mad_mae_std=b.std("mad_mae"), n_folds=len(b.folds), n_params=None, wall_time_s=b.wall_time))
        if lb is not None:
            for _, l in lb[(lb.task == t) & lb.algorithm.isin(ANCHORS)].iterrows():
                rows.append(dict(task=t, model=l.algorithm, source="matbench v0.1 leaderboard", mae_mean=l["mean"],
                                 mae_std=l["std"], mad_mae_mean=None, mad_mae_std=None, n_folds=5, n_params=None,
                                 wall_time_s=None))
    df = pd.DataFrame(rows)
    if not len(df): return df
    df = df.sort_values(["task", "mae_mean"]).reset_index(drop=True)
    meta = json.loads((out/"run_info.json").read_text()) if (out/"run_info.json").exists() else {}
    (out/"summary.json").write_text(json.dumps(dict(run_info=meta, rows=df.to_dict("records")), indent=1, default=str))
    fmt = lambda m, s: "" if pd.isna(m) else (f"{m:.4g} ± {s:.3g}" if not pd.isna(s) else f"{m:.4g}")
    lines = ["# imKT ablation on matbench (5-fold CV)", "",
             "Generated by `benchmarks/run_imkt_ablation.py`; the numbers are read from the per-configuration results.", ""]
    if meta:
        lines += [f"- hardware: {meta.get('hardware')}", f"- budget: {json.dumps(meta.get('budget'))}",
                  *[f"- budget of the `{t}` variant: {json.dumps(v['budget'])}" for t, v in meta.get("variants", {}).items()],
                  f"- corpora: {meta.get('corpora')}", f"- protocol: {meta.get('protocol')}", ""]
    for t, g in df.groupby("task", sort=True):
        lines += [f"## {t}", "", "| model | MAE (mean ± std over folds) | MAD:MAE | folds | params | wall s | source |",
                  "|---|---|---|---|---|---|---|"]
        for _, r in g.iterrows():
            lines.append(f"| {r.model} | {fmt(r.mae_mean, r.mae_std)} | {fmt(r.mad_mae_mean, r.mad_mae_std)} | {r.n_folds} | "
                         f"{'' if pd.isna(r.n_params) else int(r.n_params)} | "
                         f"{'' if pd.isna(r.wall_time_s) else f'{r.wall_time_s:.0f}'} | {r.source} |")
        lines.append("")
    (out/"summary.md").write_text("\n".join(lines))
    return df


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default=ImKTConfig().arch, help="arch of the stage ablation (default: the pipeline's)")
    p.add_argument("--only", nargs="*", default=None, help="task:arch:stages entries instead of the default plan")
    p.add_argument("--preset", default="tiny"); p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--folds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    p.add_argument("--ft-epochs", type=int, default=30); p.add_argument("--patience", type=int, default=6)
    p.add_argument("--mlm-max", type=int, default=3000); p.add_argument("--mlm-epochs", type=int, default=5)
    p.add_argument("--n-structures", type=int, default=1200); p.add_argument("--align-epochs", type=int, default=10)
    p.add_argument("--teachers", nargs="*", default=["chgnet"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deadline", default=None, help="HH:MM (UTC): start no new configuration whose estimate runs past it")
    p.add_argument("--summary-only", action="store_true")
    p.add_argument("--tag", default="", help="suffix of the configuration name (a second budget, e.g. -bigpt)")
    p.add_argument("--out", default=None, help="results folder (default: benchmarks/results/imkt_ablation)")
    args = p.parse_args(argv)
    global OUT
    if args.out: OUT = Path(args.out)
    OUT.mkdir(parents=True, exist_ok=True)
    logf = open(OUT/"run_log.txt", "a")
    def log(msg):
        s = f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}"; print(s, flush=True); logf.write(s + "\n"); logf.flush()
    if args.summary_only: summarize(); return
    plan = [tuple(x.split(":")) for x in args.only] if args.only else default_plan(args.arch)
    info = dict(hardware=f"{hardware_info()}; 1 torch thread per process "
                         f"(machine shared with other jobs)",
                budget=dict(preset=args.preset, batch_size=args.batch_size, folds=args.folds, ft_epochs=args.ft_epochs,
                            patience=args.patience, mlm_max_size=args.mlm_max, mlm_epochs=args.mlm_epochs,
                            n_structures_pool=args.n_structures, align_epochs=args.align_epochs, teachers=args.teachers,
                            seed=args.seed),
                protocol=("matbench v0.1 5-fold CV on the official folds; validation (early stopping) carved from each "
                          "training set; clean pretraining protocol: one MLM / alignment pretraining per task on corpora "
                          "from which every composition of the task (reduced formula) was removed, reused by all 5 folds"),
                corpora=(f"MLM: random {args.mlm_max} formulas of the deduplicated matbench+ricci composition corpus minus "
                         f"the task; alignment: a fixed random pool of {args.n_structures} structures of the default "
                         f"structure corpus (seed {args.seed}) minus the task's compositions, {'+'.join(args.teachers)} "
                         f"embeddings"),
                plan=[":".join(x) + args.tag for x in plan])
    prev = json.loads((OUT/"run_info.json").read_text()) if (OUT/"run_info.json").exists() else {}
    if prev:   # a later invocation adds to the record of the first one instead of replacing it
        info["plan"] = prev.get("plan", []) + [x for x in info["plan"] if x not in prev.get("plan", [])]
        info["variants"] = prev.get("variants", {})
        if args.tag: info["variants"][args.tag] = dict(budget=info["budget"], corpora=info["corpora"])
        if args.tag or args.only: info["budget"], info["corpora"] = prev["budget"], prev["corpora"]
    info["started"] = prev.get("started", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    (OUT/"run_info.json").write_text(json.dumps(info, indent=1))
    deadline = None
    if args.deadline:
        h, m = map(int, args.deadline.split(":"))
        now = dt.datetime.now(dt.timezone.utc); deadline = now.replace(hour=h, minute=m, second=0, microsecond=0)
    pool = None
    # time estimate of a configuration: the slowest seconds-per-row of the finished ones (x1.3 with pretraining)
    done = [json.loads(f.read_text()) for f in OUT.glob("*/*/ablation.json")]
    rate = max([r["wall_time_s"] / r["n_rows"] for r in done], default=0.0)
    for task, arch, stages in plan:
        name = ImKTConfig(stages=stages, arch=arch, preset=args.preset).name + args.tag
        if (OUT/task/name/"ablation.json").exists(): log(f"skip {task} {name} (done)"); continue
        est = rate * len(task_data(task)) * (1 if stages == "ft" else 1.3) if deadline is not None else 0.0
        if deadline is not None and dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=est) > deadline:
            log(f"not started {task} {name}: estimated {est:.0f} s would pass the deadline {args.deadline}"); continue
        if "align" in stages and pool is None:
            pool = structure_pool(args.n_structures, args.seed, resolve_teachers(args.teachers, "cpu"))
        log(f"start {task} {name}")
        try: rec = run_one(task, arch, stages, args, pool, log)
        except Exception as e:   # report and go on with the next configuration
            import traceback; log(f"FAILED {task} {name}: {type(e).__name__}: {e}\n{traceback.format_exc()}"); continue
        rate = max(rate, rec["wall_time_s"] / rec["n_rows"])
        summarize()
    summarize()
    log("done")


if __name__ == "__main__":
    main()
