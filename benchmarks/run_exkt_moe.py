"""Mixture of experts over a composition model (imKT side) and exKT, gated by the structure predictor's confidence
(`mmlit.exkt.moe.MixtureOfExperts`, confidences from `mmlit.exkt.pipeline.csp_confidence`).

  OMP_NUM_THREADS=1 nice -n 10 python benchmarks/run_exkt_moe.py
  OMP_NUM_THREADS=1 nice -n 10 python benchmarks/run_exkt_moe.py --n-val 60 --tag tiny --epochs 2   # plumbing check

Rows: exactly those of the exKT bench run `--exkt-run` (its summary.json settings are re-used with
`run_csp_bench.exkt_rows`: mp_20 pilot, formation energy, 1000 train / 500 test, seed 0).
1. The gate's fitting rows: `--n-val` rows carved out of train (seed --seed). The experts (exKT: CGCNN on predicted
   structures, the exKT bench's settings; the tuned tree; the magpie RF, exKT's own fallback) are trained on the other
   train rows and predict the validation rows, which none of them saw; the structure predictor's confidence for them
   comes from the same fit. Stored in val_predictions.csv.gz and re-used when present (--refit-val redoes it).
2. Test rows: the experts trained on all train rows are the exKT bench's own (its predictions.csv.gz; the cache this
   script re-uses); the confidence is recomputed with the same structure predictor (train structures + the bench's
   extra templates) and checked against the bench's record of which rows got a structure.
3. Gates fitted on the validation rows only, scored on the test rows: constant blend, gated MoE over (tree, exKT),
   variants; best single expert chosen on validation. Paired bootstrap over test rows; MAE by confidence bins + plot.

Writes benchmarks/results/exkt_moe/<tag>/{summary.json, test_predictions.csv.gz, val_predictions.csv.gz,
mae_by_similarity.csv, mae_by_confidence.png}."""
from __future__ import annotations
import argparse, json, os, platform, sys, time, warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
RUN = HERE/"results"/"csp"/"exkt_mp_20"/"formation_energy_per_atom-cgcnn-train1000-test500"
GATE_FEATURES = ["structure_predicted", "similarity", "similarity_margin", "votes", "n_templates", "energy_per_atom", "energy_margin"]

def bench_args(run:Path, epochs:int|None):
    "The exKT bench run's settings as its argparse namespace (so `exkt_rows` selects the same rows)."
    s = json.loads((run/"summary.json").read_text())["settings"]
    if epochs is not None: s["epochs"] = epochs
    return argparse.Namespace(**s)

def val_stage(b, inner, val, seed:int):
    "Experts fitted on `inner`, predicting `val` (with the structure predictor's confidence)."
    from mmlit.exkt.pipeline import ExKTModel
    from mmlit.registry import make_model
    t0 = time.time()
    m = ExKTModel(b.structure_model, "baseline-magpie-rf", templates=b.exkt_templates, rank=b.rank, time_budget=b.time_budget,
                  epochs=b.epochs, num_threads=1, progress=False).fit(inner)
    p_exkt, conf = m.predict(val, return_confidence=True)
    p_rf = np.asarray(m.fallback_.predict(val), float)
    p_tree = np.asarray(make_model("tuned-tree").fit(inner).predict(val), float)
    print(f"validation experts: {time.time() - t0:.0f} s", flush=True)
    return pd.DataFrame(dict(id=val.ids, formula=val.compositions, y=val.y(b.exkt_target), exkt=p_exkt, tree=p_tree, rf=p_rf)).join(conf)

def test_stage(b, tr, te, run:Path):
    "The exKT bench's test predictions (experts trained on all train rows) with the recomputed confidence."
    from mmlit.exkt.pipeline import ExKTModel
    cached = pd.read_csv(run/"predictions.csv.gz")
    if list(cached.id.astype(str)) != [str(i) for i in te.ids] or not np.allclose(cached.y, te.y(b.exkt_target)):
        sys.exit(f"the rows of {run} are not those of exkt_rows: refusing to mix them")
    t0 = time.time()
    conf = ExKTModel(templates=b.exkt_templates, rank=b.rank, time_budget=b.time_budget, progress=False).fit_predictor(tr).confidence(te)
    agree = float((conf.structure_predicted.to_numpy() == cached.structure_predicted.to_numpy()).mean())
    print(f"test confidence: {time.time() - t0:.0f} s; structure_predicted agrees with the bench on {100*agree:.1f} % of rows", flush=True)
    return cached[["id", "formula", "y", "exkt", "tree", "rf", "true_structure", "matched_loose"]].join(conf), agree

def gates(val, test, seed:int):
    "name -> (experts, confidence columns or [] (blend) or 'disagreement', hidden)."
    from mmlit.exkt.moe import MixtureOfExperts
    specs = {"constant blend (tree, exKT)": (["tree", "exkt"], [], 0),
             "gated MoE (tree, exKT)": (["tree", "exkt"], GATE_FEATURES, 0),
             "gated MoE, MLP gate (tree, exKT)": (["tree", "exkt"], GATE_FEATURES, 16),
             "gated MoE + disagreement (tree, exKT)": (["tree", "exkt"], GATE_FEATURES + ["disagreement"], 0),
             "constant blend (tree, exKT, RF)": (["tree", "exkt", "rf"], [], 0),
             "gated MoE (tree, exKT, RF)": (["tree", "exkt", "rf"], GATE_FEATURES, 0)}
    out, weights, training = {}, {}, {}
    for d in (val, test): d["disagreement"] = (d.exkt - d.tree).abs()
    for name, (experts, feats, hidden) in specs.items():
        moe = MixtureOfExperts(features=feats, hidden=hidden, seed=seed).fit(val, val[experts].to_numpy(), val.y, experts)
        out[name] = moe.predict(test, test[experts].to_numpy())
        h = moe.history_   # the gate's own held-out fifth of the validation rows: does it learn anything that transfers?
        training[name] = dict(epochs_run=len(h), best_epoch=int(h.epoch.loc[h.valid_loss.idxmin()]),
                              valid_loss_first_epoch=round(float(h.valid_loss.iloc[0]), 5), valid_loss_best=round(float(h.valid_loss.min()), 5),
                              train_loss_last_epoch=round(float(h.train_loss.iloc[-1]), 5))
        weights[name] = dict(zip(experts, moe.weights(test).mean(0).round(4).tolist()))
        weights[name + " (exKT weight)"] = moe.weights(test)[:, experts.index("exkt")]
    return out, weights, training

def plot(bins:pd.DataFrame, path:Path, title:str):
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    x = np.arange(len(bins))
    for k, (col, lab) in enumerate([("tree", "tuned tree"), ("exkt", "exKT"), ("moe", "gated MoE")]):
        ax.bar(x + (k - 1)*0.27, bins[col], 0.27, label=lab)
    ax.set_xticks(x, [f"{b}\nn={n}" for b, n in zip(bins.index, bins.n)], fontsize=7)
    ax.set_xlabel("similarity of the chosen template (quartiles of test rows; missing = no structure)")
    ax.set_ylabel("test MAE (eV/atom)"); ax.set_title(title, fontsize=9); ax.legend(fontsize=8)
    fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)

def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--exkt-run", default=str(RUN), help="the exKT bench run whose rows, settings and test predictions are used")
    ap.add_argument("--n-val", type=int, default=200, help="train rows held out for the gate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override the structure model's epochs (plumbing checks)")
    ap.add_argument("--refit-val", action="store_true", help="recompute the validation experts even if stored")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--out", default=str(HERE/"results"/"exkt_moe"))
    a = ap.parse_args(argv)
    import torch; torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(HERE))
    from run_csp_bench import BENCHES, exkt_rows
    from mmlit.exkt.moe import mae_by_bins, paired_bootstrap_mae
    run, t0 = Path(a.exkt_run), time.time()
    b = bench_args(run, a.epochs)
    (name, split), _ = BENCHES[b.bench]
    tr, te = exkt_rows(b, name, split)
    perm = np.random.default_rng(a.seed).permutation(len(tr))
    val, inner = tr.subset(np.sort(perm[:a.n_val])), tr.subset(np.sort(perm[a.n_val:]))
    out = Path(a.out)/(a.tag or f"{b.exkt_target}-{b.structure_model}-train{len(tr)}-val{a.n_val}-test{len(te)}")
    out.mkdir(parents=True, exist_ok=True)
    vf = out/"val_predictions.csv.gz"
    if vf.exists() and not a.refit_val: vdf = pd.read_csv(vf); print(f"validation experts read from {vf}")
    else:
        t1 = time.time(); vdf = val_stage(b, inner, val, a.seed); vdf.to_csv(vf, index=False)
        (out/"val_stage.json").write_text(json.dumps(dict(wall_seconds=round(time.time() - t1, 1))))
    if list(vdf.id.astype(str)) != [str(i) for i in val.ids]: sys.exit(f"{vf} holds other rows: rerun with --refit-val")
    tdf, agree = test_stage(b, tr, te, run)
    preds, weights, training = gates(vdf, tdf, a.seed)
    y = tdf.y.to_numpy()
    mae = lambda p, d=tdf: float(np.mean(np.abs(np.asarray(p) - d.y.to_numpy())))
    experts = {"tuned tree (composition)": "tree", "exKT (predicted structures, RF fallback)": "exkt", "magpie RF (composition)": "rf"}
    best_val = min(["tree", "exkt"], key=lambda c: mae(vdf[c], vdf))
    res = {k: mae(tdf[c]) for k, c in experts.items()}
    res["best single expert on validation (" + best_val + ")"] = mae(tdf[best_val])
    res.update({k: mae(p) for k, p in preds.items()})
    moe = preds["gated MoE (tree, exKT)"]
    best_test = min(["tree", "exkt"], key=lambda c: mae(tdf[c]))
    boot = {f"gated MoE - {c}": paired_bootstrap_mae(y, moe, tdf[c], seed=a.seed) for c in ("exkt", "tree")}
    boot["constant blend - exkt"] = paired_bootstrap_mae(y, preds["constant blend (tree, exKT)"], tdf.exkt, seed=a.seed)
    boot["gated MoE - constant blend"] = paired_bootstrap_mae(y, moe, preds["constant blend (tree, exKT)"], seed=a.seed)
    tdf = tdf.assign(moe=moe, blend=preds["constant blend (tree, exKT)"], moe_exkt_weight=weights["gated MoE (tree, exKT) (exKT weight)"])
    bins = mae_by_bins(y, {"tree": tdf.tree, "exkt": tdf.exkt, "moe": tdf.moe, "blend": tdf.blend}, tdf.similarity, n_bins=4)
    by_bin = pd.Series("missing", index=tdf.index, dtype=object)
    ok = tdf.similarity.notna()
    by_bin[ok] = pd.qcut(tdf.similarity[ok], 4, duplicates="drop", precision=2).astype(str)
    bins["mean exKT weight"] = tdf.moe_exkt_weight.groupby(by_bin).mean().reindex(bins.index).to_numpy()
    bins.to_csv(out/"mae_by_similarity.csv")
    matched = {k: {"matched": mae(tdf.loc[tdf.matched_loose, c], tdf[tdf.matched_loose]),
                   "not matched": mae(tdf.loc[~tdf.matched_loose, c], tdf[~tdf.matched_loose])} for k, c in
               [("tree", "tree"), ("exkt", "exkt"), ("moe", "moe")]}
    plot(bins, out/"mae_by_confidence.png", f"mp_20 formation energy, {len(te)} test rows: MAE by template similarity")
    summ = dict(bench=b.bench, target=b.exkt_target, n_train=len(tr), n_inner=len(inner), n_val=len(val), n_test=len(te),
                exkt_run=str(run.relative_to(HERE.parent)) if run.is_relative_to(HERE.parent) else str(run),
                structure_model=b.structure_model, epochs=b.epochs, rank=b.rank, gate_features=GATE_FEATURES,
                composition_expert="tuned-tree", not_used="elm-fast: one fit took 1150 s on these rows (exKT bench extra), "
                "more than this script's budget allows for the validation refit",
                test_confidence_agreement=agree, mae=res, best_expert_on_test=best_test, bootstrap=boot,
                moe_beats_both=bool(boot["gated MoE - exkt"]["hi"] < 0 and boot["gated MoE - tree"]["hi"] < 0),
                gate_training=training, val_stage=json.loads((out/"val_stage.json").read_text()) if (out/"val_stage.json").exists() else None,
                mean_weights=weights and {k: v for k, v in weights.items() if not k.endswith("(exKT weight)")},
                mae_by_match=matched, mae_by_similarity=json.loads(bins.to_json(orient="index")),
                val_mae={c: mae(vdf[c], vdf) for c in ("tree", "exkt", "rf")}, seed=a.seed,
                wall_seconds=round(time.time() - t0, 1),
                hardware=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, torch {torch.__version__}, one thread",
                settings=vars(a) | {"out": None})
    tdf.to_csv(out/"test_predictions.csv.gz", index=False)
    (out/"summary.json").write_text(json.dumps(summ, indent=1, default=str))
    print(json.dumps({k: summ[k] for k in ("mae", "bootstrap", "moe_beats_both", "mean_weights", "val_mae")}, indent=1, default=str))

if __name__ == "__main__": main()
