"""SHAP-IQ explanation of a chemical language model on JARVIS shear modulus (the seed paper's Figure 2 task).

    OMP_NUM_THREADS=1 python benchmarks/run_jarvis_shapiq.py

1. Trains a token-sentence CLM (`[CLS] Ca 1 Ti 1 O 3 [SEP]`, BERT `tiny` preset, from scratch) on the official train split of
   jarvis_shear_modulus_gv (val: early stopping, test: MAE) with `mmlit.protocol.run_split`, capped at --ft-steps
   optimiser steps so it fits a CPU budget.
2. Explains --n-explain test compositions with `mmlit.interpret.shapiq.explain_many` (k-SII up to order 3, exact up
   to 12 players) in GPa (the trainer's target scaler is undone), and writes the dataset-level tables of
   `mmlit.interpret.analysis`: element importance, the strongest 2- and 3-token combinations, element-pair values.
3. Prototype analysis: the jarvis-tools mineral prototype structures that have a JARVIS shear modulus (any split; the
   dft_3d table here has formulas only), explained the same way, their strongest coefficient triple vs the AFLOW
   prototype their structure matches.

Writes benchmarks/results/jarvis_shapiq/<property>/: summary.json, model/ (results.json/.md, predictions),
element_importance.csv, top_2token.csv, top_3token.csv, element_pairs.csv, interactions.csv.gz,
prototype_patterns.csv, prototype_table.csv. Reads the shared data folder (MMLIT_DATA). Run from the repo root.
"""
import argparse, json, os, platform, resource, sys, time, warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import pandas as pd
import torch

from mmlit.core import seed_everything
from mmlit.protocol import run_split, save_result
from mmlit.metrics import mae, hardware_info
from mmlit.data.jarvis import load_jarvis, jarvis_property
from mmlit.data.external import load_jarvis_prototypes
from mmlit.comp.imkt import ImKTConfig, ImKTModel
from mmlit.interpret.shapiq import explain_many
from mmlit.interpret.analysis import (interactions_frame, element_importance, top_interactions, player_kind,
                                      coefficient_patterns, prototype_labels, prototype_table)


def clock(): return time.time(), time.process_time()
def since(t): return dict(wall_s=round(time.time() - t[0], 1), cpu_s=round(time.process_time() - t[1], 1))


def element_pairs(exps) -> pd.DataFrame:
    "Mean order-2 value of every element-element token pair (sorted symbols), over the compositions holding both."
    df = interactions_frame(exps)
    df = df[df.order == 2]
    df = df[[all(player_kind(n) == "element" for n in ns) for ns in df.names]]
    df = df.assign(a=[min(ns) for ns in df.names], b=[max(ns) for ns in df.names])
    g = df.groupby(["a", "b"]).value
    return pd.DataFrame(dict(mean=g.mean(), mean_abs=g.apply(lambda v: v.abs().mean()), count=g.size())).reset_index()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--property", default="shear_modulus_gv")
    p.add_argument("--n-train", type=int, default=None, help="seeded random subset of the train split (default: all)")
    p.add_argument("--ft-steps", type=int, default=6000, help="optimiser-step budget of finetuning")
    p.add_argument("--n-explain", type=int, default=1000, help="seeded random test compositions (0: all)")
    p.add_argument("--order", type=int, default=3); p.add_argument("--index", default="k-SII")
    p.add_argument("--top-k", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/jarvis_shapiq")
    a = p.parse_args(argv)
    torch.set_num_threads(1); seed_everything(a.seed)
    prop = jarvis_property(a.property)
    out = Path(a.out)/prop; out.mkdir(parents=True, exist_ok=True)
    summary = dict(property=prop, seed=a.seed, hardware=hardware_info(), torch_threads=torch.get_num_threads(),
                   cpu=platform.processor() or platform.machine(), started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    # 1. the model
    with warnings.catch_warnings(): warnings.simplefilter("ignore"); ds = load_jarvis(prop)
    sp = ds.meta.split.astype(str).to_numpy()
    keep = np.ones(len(ds), bool)
    if a.n_train is not None:   # a seeded subset of the train rows; val and test stay whole
        tr = np.flatnonzero(sp == "train"); rng = np.random.default_rng(a.seed)
        keep[np.setdiff1d(tr, rng.choice(tr, min(a.n_train, len(tr)), replace=False))] = False
    sub = ds.subset(np.flatnonzero(keep))
    cfg = ImKTConfig(stages="ft", encoding="tokens", arch="bert", preset="tiny", 
                     ft_batch_size=32, ft_lr=1e-3, ft_steps=a.ft_steps, ft_epochs=150, patience=25, ft_schedule="onecycle",
                     ft_monitor="valid_mae", average_top_k=5, loss="l1", num_threads=1, device="cpu", progress=False,
                     seed=a.seed)
    model = ImKTModel(cfg)
    t = clock()
    res = run_split(sub, lambda: model, progress=False)
    summary["train"] = since(t)
    res.extra.update(n_train_used=int((sub.meta.split == "train").sum()), n_train_split=int((sp == "train").sum()),
                     ft_steps=a.ft_steps, max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    save_result(res, out/"model", matbench=False)
    f = res.folds[0]
    summary.update(model=cfg.name, test_mae=float(res.mean()), n_train=res.extra["n_train_used"],
                   n_train_split=res.extra["n_train_split"], n_val=int((sp == "val").sum()), n_test=int((sp == "test").sum()),
                   best_epoch=model.result.info.get("best_epoch"), epochs=model.result.info["train_config"]["epochs"],
                   settings=dict(preset="tiny", encoding="tokens", ft_steps=a.ft_steps, batch_size=32, lr=1e-3,
                                 loss="l1", schedule="onecycle", average_top_k=5),
                   n_params=int(sum(q.numel() for q in model.result.model.parameters())))
    print(f"{summary['model']}: test MAE {summary['test_mae']:.3f} GPa ({summary['train']})", flush=True)

    # 2. explanations of test compositions, in GPa
    m, tok = model.result.model.eval(), model.result.tokenizer
    sc = model.result.info["target_scaler"]
    scale, shift = float(np.ravel(sc["std"])[0]), float(np.ravel(sc["mean"])[0])
    test = sub.subset(np.flatnonzero(sub.meta.split.astype(str).to_numpy() == "test"))
    idx = np.arange(len(test)) if not a.n_explain else \
        np.sort(np.random.default_rng(a.seed).choice(len(test), min(a.n_explain, len(test)), replace=False))
    comps = [test.compositions[i] for i in idx]
    t = clock()
    exps = explain_many(m, tok, comps, order=a.order, index=a.index, output_scale=scale, output_shift=shift,
                        seed=a.seed, progress=False)
    summary["explain"] = since(t)
    pred = model.predict(test.subset(idx[:50]))   # the game's full coalition is the model's prediction
    summary["max_abs_prediction_gap"] = float(np.max(np.abs(pred - np.array([e.prediction for e in exps[:50]]))))
    summary.update(n_explained=len(exps), order=a.order, index=a.index,
                   methods=pd.Series([e.method for e in exps]).value_counts().to_dict(),
                   evaluations=int(sum(e.budget for e in exps)),
                   players_mean=float(np.mean([len(e.players) for e in exps])),
                   players_max=int(max(len(e.players) for e in exps)),
                   explained_test_mae=float(mae(test.y()[idx], np.array([e.prediction for e in exps]))),
                   mean_baseline=float(np.mean([e.baseline for e in exps])))
    element_importance(exps).to_csv(out/"element_importance.csv")
    element_importance(exps, kinds=("coefficient",)).to_csv(out/"coefficient_importance.csv")
    for k in (2, 3):
        top_interactions(exps, k, a.top_k, min_count=3).to_csv(out/f"top_{k}token.csv")
    element_pairs(exps).to_csv(out/"element_pairs.csv", index=False)
    long = interactions_frame(exps)
    long["players"] = [" ".join(n) for n in long.names]
    long.assign(composition=[comps[r] for r in long.row]).drop(columns=["names"]).to_csv(
        out/"interactions.csv.gz", index=False, float_format="%.5g")
    print(f"explained {len(exps)} test compositions ({summary['explain']}); methods {summary['methods']}", flush=True)

    # 3. prototype analysis on structures with a known shear modulus
    t = clock()
    ps = load_jarvis_prototypes(target=prop)
    pcomps = [s.composition.reduced_formula for s in ps.structures]   # as the dft_3d formulas
    pexps = explain_many(m, tok, pcomps, order=3, index=a.index, output_scale=scale, output_shift=shift,
                         seed=a.seed, progress=False)
    pats = coefficient_patterns(pexps)
    labels = prototype_labels(ps.structures, progress=False)
    pats = pats.assign(id=ps.ids, cell_formula=ps.compositions, split=ps.meta.split.to_numpy(), prototype=labels, mineral=ps.meta.mineral.to_numpy(),
                       target=ps.y(), prediction=[e.prediction for e in pexps])
    pats.to_csv(out/"prototype_patterns.csv", index=False)
    prototype_table(pats, labels, min_count=3, top_prototypes=6).to_csv(out/"prototype_table.csv")
    summary["prototypes"] = dict(**since(t), n_structures=len(ps), splits=ps.meta.split.value_counts().to_dict(),
                                 with_pattern=int(pats.pattern.notna().sum()), matched=int(sum(l is not None for l in labels)),
                                 source=ps.source)
    summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out/"summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps(summary, indent=1, default=str), flush=True)


if __name__ == "__main__":
    sys.exit(main())
