"""Template CSP benchmark: match rates of `mmlit.exkt.csp.TemplatePredictor` on mp_20 pilot test, perov_5 test and
mpts_52 val (time split), each against a template pool that excludes the evaluated structures.

  OMP_NUM_THREADS=1 python benchmarks/run_csp_bench.py --bench mp_20 --rank similarity --n 1000
  OMP_NUM_THREADS=1 python benchmarks/run_csp_bench.py --bench perov_5 --rank relax --n 100 --steps 50
  OMP_NUM_THREADS=1 python benchmarks/run_csp_bench.py --bench perov_5 --exkt-target heat_ref --n-train 2000 --n 500

The last form is the exKT comparison: a crystal-graph model trained on the true structures of a training subset,
scored on the true test structures (the ceiling) and on predicted ones (exKT: templates = the training subset), next
to composition models trained on the same rows; in benchmarks/results/csp/exkt_<bench>/<tag>/. Adding
`--exkt-extra elm-fast` to the same command trains only that model on the same rows (the imKT row of the table).

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
    ap.add_argument("--exkt-target", default=None, help="run the exKT comparison on this target instead")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--structure-model", default="cgcnn")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--exkt-templates", default=None, help="extra template pool of the exKT predictor (load_templates spec)")
    ap.add_argument("--exkt-extra", default=None, help="only train this registry model (e.g. elm-fast: the imKT row) on the "
                    "exKT rows of --exkt-target and write extra_<model>.json next to that run's summary")
    ap.add_argument("--out", default=str(Path(__file__).parent/"results"/"csp"))
    a = ap.parse_args(argv)
    import torch; torch.set_num_threads(1)
    from mmlit.data.structures import load_structure_set
    from mmlit.exkt.csp import TemplatePredictor, SubstitutionScorer, evaluate_csp, load_templates
    warnings.simplefilter("ignore")
    (name, split), pool_spec = BENCHES[a.bench]
    if a.exkt_target: return exkt_main(a, name, split)
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

def exkt_rows(a, name, split):
    "The training and test rows of an exKT run (seeded subsets with a finite target)."
    from mmlit.data.structures import load_structure_set
    rng = np.random.default_rng(a.seed)
    tr = load_structure_set(name, split="train", progress=False)
    te = load_structure_set(name, split=split, progress=False)
    tr = tr.subset(np.sort(rng.choice(len(tr), min(a.n_train, len(tr)), replace=False)))
    if a.n and a.n < len(te): te = te.subset(np.sort(rng.choice(len(te), a.n, replace=False)))
    keep = lambda d: d.subset(np.flatnonzero(np.isfinite(d.y(a.exkt_target))))
    tr, te = keep(tr), keep(te)
    tr.targets, te.targets = tr.targets[[a.exkt_target]], te.targets[[a.exkt_target]]
    return tr, te

def exkt_tag(a, tr, te): return a.tag or f"{a.exkt_target}-{a.structure_model}-train{len(tr)}-test{len(te)}"

def exkt_extra(a, tr, te):
    "One more model (the imKT row) on exactly the rows of an exKT run; its MAE next to that run's summary."
    import pandas as pd
    from mmlit.registry import make_model
    out = Path(a.out)/f"exkt_{a.bench}"/exkt_tag(a, tr, te)
    t0 = time.time()
    m = make_model(a.exkt_extra, seed=a.seed, progress=False).fit(tr)
    t_fit = time.time() - t0
    p = np.asarray(m.predict(te), float).reshape(len(te), -1)[:, 0]
    y = te.y(a.exkt_target)
    summ = dict(model=a.exkt_extra, bench=a.bench, target=a.exkt_target, n_train=len(tr), n_test=len(te),
                mae=float(np.mean(np.abs(p - y))), fit_seconds=round(t_fit, 1), seed=a.seed,
                hardware=f"{os.cpu_count()} CPUs visible, one thread", settings=vars(a) | {"out": None})
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(dict(id=te.ids, y=y, pred=p)).to_csv(out/f"extra_{a.exkt_extra}.csv.gz", index=False)
    (out/f"extra_{a.exkt_extra}.json").write_text(json.dumps(summ, indent=1, default=str))
    print(json.dumps(summ, indent=1, default=str))

def exkt_main(a, name, split):
    "Structure model on true vs predicted structures vs composition models, same training rows."
    import pandas as pd
    from mmlit.exkt.pipeline import ExKTModel
    from mmlit.registry import make_model
    from mmlit.exkt.csp import TOLERANCES, match_rank
    tr, te = exkt_rows(a, name, split)
    if a.exkt_extra: return exkt_extra(a, tr, te)
    t0 = time.time()
    m = ExKTModel(a.structure_model, "baseline-magpie-rf", templates=a.exkt_templates, rank=a.rank, time_budget=a.time_budget, epochs=a.epochs,
                  num_threads=1).fit(tr)
    t_fit = time.time() - t0
    y = te.y(a.exkt_target)
    p_exkt = m.predict(te); t_pred = time.time() - t0 - t_fit
    p_true = np.asarray(m.model_.predict(list(te.structures)), float).reshape(len(te), -1)[:, 0]
    p_rf = np.asarray(m.fallback_.predict(te), float)
    tree = make_model("tuned-tree").fit(tr); p_tree = np.asarray(tree.predict(te), float)
    ok = np.array([r.ok for r in m.structures_])
    match = np.array([r.ok and match_rank(r, s, "loose")[0] == 0 for r, s in zip(m.structures_, te.structures)])
    mae = lambda p, w=None: float(np.mean(np.abs((p - y)[w if w is not None else slice(None)])))
    summ = dict(bench=a.bench, target=a.exkt_target, n_train=len(tr), n_test=len(te), pool_usable=len(m.predictor_.templates), structure_model=a.structure_model,
                epochs=a.epochs, rank=a.rank, fallback_share=float(1 - ok.mean()), match1_loose=100*float(match.mean()),
                mae={"structure model, true structures (ceiling)": mae(p_true), "exKT (predicted structures, RF fallback)": mae(p_exkt),
                     "magpie RF (composition)": mae(p_rf), "tuned tree (composition)": mae(p_tree)},
                mae_on_matched={k: mae(p, match) for k, p in [("true", p_true), ("exkt", p_exkt), ("rf", p_rf)]} if match.any() else None,
                mae_on_unmatched={k: mae(p, ~match) for k, p in [("true", p_true), ("exkt", p_exkt), ("rf", p_rf)]} if (~match).any() else None,
                fit_seconds=round(t_fit, 1), predict_seconds=round(t_pred, 1), seed=a.seed,
                hardware=f"{os.cpu_count()} CPUs visible, one thread", settings=vars(a) | {"out": None})
    tag = exkt_tag(a, tr, te)
    out = Path(a.out)/f"exkt_{a.bench}"/tag; out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(dict(id=te.ids, formula=te.compositions, y=y, true_structure=p_true, exkt=p_exkt, rf=p_rf, tree=p_tree,
                      structure_predicted=ok, matched_loose=match)).to_csv(out/"predictions.csv.gz", index=False)
    (out/"summary.json").write_text(json.dumps(summ, indent=1, default=str))
    print(json.dumps(summ, indent=1, default=str))

if __name__ == "__main__": main()
