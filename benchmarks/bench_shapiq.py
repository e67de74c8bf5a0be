"""Benchmark of mmlit.interpret.shapiq: model evaluations per second, time to explain N compositions, and
agreement of shapiq approximators with exact interaction values on short sequences.

    python benchmarks/bench_shapiq.py --n 1000 --order 3 --index k-SII --out bench_shapiq.json

Compositions: the matbench log_gvrh test fold (shared data), else matminer's Ricci table. The model is a tiny
mmlit CLM, trained for `--train-epochs` on log_gvrh (0: random initialisation; timings do not depend on training,
approximation quality does a little, through how "interactive" the model is), or loaded from `--model`.
"""
from __future__ import annotations
import argparse, json, platform, time

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from mmlit.core import seed_everything, shared_data_dir
from mmlit.comp.tokenizer import CompositionTokenizer
from mmlit.comp.model import build_model
from mmlit.interpret.shapiq import TokenGame, explain, explain_many, predict_ids, _all_coalitions


def load_compositions(seed):
    from mmlit.data.external import load_dataset
    sd = shared_data_dir()
    if sd is not None and (sd/"matbench"/"matbench_log_gvrh.csv.gz").exists(): data = load_dataset("matbench_log_gvrh")
    else: data = load_dataset("ricci_transport", target="S_n")
    train, test = data.split(0)
    return data, train, test


def train_model(tok, train, epochs, arch, preset, seed):
    from mmlit.train.core import Trainer, TrainConfig
    class CS(torch.utils.data.Dataset):
        def __init__(self, ds):
            self.ids = tok.encode_compositions(ds.compositions, padding=False)["input_ids"]; self.y = ds.y().astype(np.float32)
        def __len__(self): return len(self.ids)
        def __getitem__(self, i): return {"input_ids": torch.tensor(self.ids[i]), "labels": torch.tensor([self.y[i]])}
    seed_everything(seed)
    model = build_model(tok, arch=arch, preset=preset, task="regression")
    if epochs > 0:
        tr = Trainer(model, CS(train), config=TrainConfig(epochs=epochs, batch_size=64, lr=2e-3, seed=seed, progress=False, cpu=True))
        tr.fit(); model = tr.unwrapped
    return model.eval()


def throughput(model, tok, comps, batch_size, n_seq=20000):
    "Pure model evaluations/s on masked sequences of the given compositions."
    seqs, m = [], 0
    for c in comps:
        g = TokenGame(model, tok, c, check=False)
        C = _all_coalitions(g.n_players); seqs.append(g.sequences(C)); m += len(C)
        if m >= n_seq: break
    from mmlit.interpret.shapiq import _pad_stack
    ids, am = _pad_stack(seqs, tok.pad_token_id)
    t0 = time.perf_counter(); predict_ids(model, ids, am, 0, batch_size); dt = time.perf_counter() - t0
    return len(ids) / dt, len(ids), ids.shape[1]


def agreement(model, tok, comps, order, index, approximators, budgets, seed):
    "Exact vs approximated interaction values (all orders, and order 1 alone): MAE, MAE / mean |exact|, Spearman rho."
    rows = []
    exact = {c: explain(model, tok, c, order=order, index=index, check=False) for c in comps}
    for name in approximators:
        idx = "FSII" if name == "RegressionFSII" else ("STII" if name == "PermutationSamplingSTII" else index)
        ex_idx = exact if idx == index else {c: explain(model, tok, c, order=order, index=idx, check=False) for c in comps}
        for b in budgets:
            maes, rels, rhos, secs, fracs, rho1, mae1 = [], [], [], [], [], [], []
            for c in comps:
                ex = ex_idx[c].interactions()
                n = len(ex_idx[c].players)
                ap = explain(model, tok, c, order=order, index=idx, approximator=name, budget=b, seed=seed, check=False)
                a = ap.interactions()
                keys = sorted(ex)
                x, y = np.array([ex[k] for k in keys]), np.array([a.get(k, 0.0) for k in keys])
                maes.append(np.abs(x - y).mean()); rels.append(np.abs(x - y).mean() / max(np.abs(x).mean(), 1e-12))
                rhos.append(spearmanr(x, y).statistic if np.std(y) > 0 else np.nan)
                first = np.array([len(k) == 1 for k in keys])
                mae1.append(np.abs(x - y)[first].mean())
                rho1.append(spearmanr(x[first], y[first]).statistic if np.std(y[first]) > 0 else np.nan)
                secs.append(ap.seconds); fracs.append(min(b, 2**n) / 2**n)
            rows.append(dict(approximator=name, index=idx, budget=b, n_compositions=len(comps),
                             mean_budget_fraction=float(np.mean(fracs)), mae=float(np.mean(maes)),
                             relative_mae=float(np.mean(rels)), spearman=float(np.nanmean(rhos)),
                             mae_order1=float(np.mean(mae1)), spearman_order1=float(np.nanmean(rho1)),
                             seconds_per_composition=float(np.mean(secs))))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="compositions to explain")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--index", default="k-SII")
    p.add_argument("--arch", default="bert"); p.add_argument("--preset", default="tiny")
    p.add_argument("--model", default=None, help="saved mmlit composition model folder (else a tiny CLM is built)")
    p.add_argument("--train-epochs", type=int, default=0)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--n-agree", type=int, default=20, help="short compositions for the agreement study")
    p.add_argument("--agree-players", default="10,12", help="min,max players of the agreement compositions")
    p.add_argument("--budgets", default="128,256,512")
    p.add_argument("--approximators", default="KernelSHAPIQ,SVARMIQ,PermutationSamplingSII,RegressionFSII")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    seed_everything(a.seed)
    data, train, test = load_compositions(a.seed)
    tok = CompositionTokenizer()
    if a.model:
        from mmlit.comp.model import load_composition_model
        model, tok = load_composition_model(a.model); model.eval()
    else:
        sub = train.subset(np.random.default_rng(a.seed).permutation(len(train))[:a.n_train])
        model = train_model(tok, sub, a.train_epochs, a.arch, a.preset, a.seed)
    rng = np.random.default_rng(a.seed)
    comps = [test.compositions[i] for i in rng.permutation(len(test))[:a.n]]
    res = dict(dataset=data.name, n=len(comps), order=a.order, index=a.index, arch=a.arch, preset=a.preset,
               train_epochs=a.train_epochs, torch_threads=torch.get_num_threads(), cpu=platform.processor() or platform.machine(),
               torch=torch.__version__)

    eps, m, L = throughput(model, tok, comps, a.batch_size)
    res.update(model_evals_per_s=eps, throughput_sequences=m, throughput_seq_len=L)
    print(f"model throughput: {eps:,.0f} evaluations/s ({m} masked sequences, length {L})")

    t0 = time.perf_counter()
    exps = explain_many(model, tok, comps, order=a.order, index=a.index, batch_size=a.batch_size, progress=False)
    dt = time.perf_counter() - t0
    n_eval = sum(e.budget for e in exps); n_players = np.array([len(e.players) for e in exps])
    res.update(total_seconds=dt, seconds_per_composition=dt/len(exps), evaluations=int(n_eval), evals_per_s=n_eval/dt,
               methods=pd.Series([e.method for e in exps]).value_counts().to_dict(),
               players_mean=float(n_players.mean()), players_max=int(n_players.max()))
    print(f"explained {len(exps)} compositions (order {a.order}, {a.index}) in {dt:.1f} s = {dt/len(exps)*1000:.0f} ms each; "
          f"{n_eval} model evaluations ({n_eval/dt:,.0f}/s end to end); players mean {n_players.mean():.1f}, max {n_players.max()}; "
          f"methods {res['methods']}")

    lens = {c: TokenGame(model, tok, c, check=False, evaluate_ends=False).n_players for c in data.compositions}
    lo, hi = map(int, a.agree_players.split(","))
    short = [c for c, n in lens.items() if lo <= n <= hi][:a.n_agree]
    res["agreement_players_mean"] = float(np.mean([lens[c] for c in short]))
    rows = agreement(model, tok, short, a.order, a.index, a.approximators.split(","), [int(b) for b in a.budgets.split(",")], a.seed)
    res["agreement"] = rows
    print(f"\nexact vs approximate on {len(short)} compositions with {lo}-{hi} tokens (order {a.order}):")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g"))
    if a.out:
        with open(a.out, "w") as f: json.dump(res, f, indent=1, default=float)
    return res


if __name__ == "__main__":
    main()
