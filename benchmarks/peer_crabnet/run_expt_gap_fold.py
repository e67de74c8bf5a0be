#!/usr/bin/env python
"""Peer run: the CrabNet package (PyPI `crabnet==2.0.8`) on matbench_expt_gap, one fold, on CPU.

Run with the peer virtual environment made by `setup_venv.sh` (never mmlit's):

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 benchmarks/peer_crabnet/.venv/bin/python \
        benchmarks/peer_crabnet/run_expt_gap_fold.py            # fold 0, full run
    benchmarks/peer_crabnet/.venv/bin/python benchmarks/peer_crabnet/run_expt_gap_fold.py --smoke

What it does
------------
1. Reads the matbench table (mbid, composition, target, fold) and takes the official split:
   train = rows with fold != k, test = rows with fold == k.
2. Trains `crabnet.crabnet_.CrabNet` the way CrabNet's own matbench example does:
   `CrabNet(mat_prop=...)`, `fit(train_df)` with no `val_df`, so CrabNet carves its own
   validation set out of the training rows (`train_test_split(train_df, test_size=val_size)`,
   val_size 0.2), then `predict(test_df)`. All hyperparameters are CrabNet's defaults
   (epochs=None -> 300 with CrabNet's SWA-based early stopping). Only display options are
   off (`losscurve=False, learningcurve=False`, as in CrabNet's matbench example) and
   `random_state` is set so the run (and the validation split) is reproducible.
3. Records test MAE, wall and CPU seconds, epochs, versions, hardware and CrabNet's own
   train/val MAE curve. CrabNet prints its validation MAE at its check-in epochs
   (0, 19, 39, ...) but keeps no times; this script timestamps those printed lines as
   they come out (a stdout wrapper; CrabNet itself is not modified) and pairs each with
   the exact value from `CrabNet.loss_curve["val"]`.
4. Writes results.json and predictions.csv.gz (id, y_true, y_pred) to --out. CrabNet's
   side files (models/trained_models/*.pth, figures/lc_data/*) go to --work (git-ignored),
   because CrabNet writes them relative to the current directory.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fold", type=int, default=0, help="matbench test fold (0..4)")
    p.add_argument("--data", default="/work/shared/data/matbench/matbench_expt_gap.csv.gz")
    p.add_argument("--out", default=None,
                   help="results folder (default benchmarks/results/peer_crabnet_expt_gap; "
                        "with --smoke /tmp/peer_crabnet_smoke)")
    p.add_argument("--work", default=None, help="CrabNet's scratch files (default <out>/work, git-ignored)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0, help="CrabNet(random_state=...) (seeds numpy and torch)")
    p.add_argument("--smoke", action="store_true",
                   help="pipeline check: 300 training rows, 100 test rows, 2 epochs (epochs_step=1)")
    return p.parse_args(argv)


ARGS = parse_args()
# Thread caps and a non-interactive matplotlib backend must be set before numpy / torch /
# matplotlib load (crabnet imports pyplot at import time).
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_v] = str(ARGS.threads)
os.environ.setdefault("MPLBACKEND", "Agg")

import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import warnings  # noqa: E402
from importlib import metadata as md  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)
try:
    torch.set_num_interop_threads(1)
except RuntimeError:
    pass

# ----------------------------------------------------------------------------- helpers
T_PROCESS_START = time.time()
CPU_PROCESS_START = time.process_time()

_WARNINGS = []
_orig_showwarning = warnings.showwarning


def _record_warning(message, category, filename, lineno, file=None, line=None):
    _WARNINGS.append(f"{category.__name__}: {message} ({os.path.basename(filename)}:{lineno})")
    _orig_showwarning(message, category, filename, lineno, file, line)


warnings.showwarning = _record_warning

_EPOCH_RE = re.compile(r"Epoch: (\d+)/(\d+) --- train mae: (\S+) val mae: (\S+)")


class TimedStdout:
    """Pass-through for sys.stdout that timestamps CrabNet's 'Epoch: i/n --- ...' lines."""

    def __init__(self, stream):
        self.stream = stream
        self.buf = ""
        self.t0 = None  # set right before fit
        self.c0 = None
        self.events = []

    def write(self, s):
        n = self.stream.write(s)
        if self.t0 is not None:
            now, cpu = time.time(), time.process_time()
            self.buf += s
            while "\n" in self.buf:
                line, self.buf = self.buf.split("\n", 1)
                m = _EPOCH_RE.search(line)
                if m:
                    self.events.append({
                        "epoch": int(m.group(1)),
                        "elapsed_seconds": now - self.t0,
                        "cpu_seconds": cpu - self.c0,
                        "printed_train_mae": float(m.group(3)),
                        "printed_val_mae": float(m.group(4)),
                    })
                elif "failed to improve" in line or "early-stopping" in line or "Discarded" in line:
                    self.events.append({"note": line.strip(), "elapsed_seconds": now - self.t0})
        return n

    def flush(self):
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


sys.path.insert(0, os.path.dirname(HERE))   # benchmarks/: helpers shared by the peer runs
from peer_common import cpu_model  # noqa: E402


def mem_total_gb():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return None


def vm_hwm_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def pkg_version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------- main
def main():
    a = ARGS
    out = os.path.abspath(a.out or ("/tmp/peer_crabnet_smoke" if a.smoke else
                                    os.path.join(REPO, "benchmarks", "results", "peer_crabnet_expt_gap")))
    work = os.path.abspath(a.work or os.path.join(out, "work"))
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(out, exist_ok=True)
    os.makedirs(work, exist_ok=True)

    import crabnet
    from crabnet.crabnet_ import CrabNet
    from crabnet.utils.utils import count_parameters
    from sklearn.metrics import mean_absolute_error, mean_squared_error
    from sklearn.model_selection import train_test_split

    print(f"crabnet {pkg_version('crabnet')} from {os.path.dirname(crabnet.__file__)}; torch {torch.__version__}; "
          f"threads {torch.get_num_threads()}; smoke={a.smoke}", flush=True)

    # --- data and the official split
    df = pd.read_csv(a.data)
    expected_cols = {"mbid", "composition", "target", "fold"}
    if not expected_cols <= set(df.columns):
        raise SystemExit(f"unexpected columns {list(df.columns)}")
    task = os.path.basename(a.data).split(".")[0]
    tr = df[df["fold"] != a.fold].reset_index(drop=True)
    te = df[df["fold"] == a.fold].reset_index(drop=True)
    if a.smoke:
        tr = tr.sample(n=300, random_state=a.seed).reset_index(drop=True)
        te = te.sample(n=100, random_state=a.seed).reset_index(drop=True)
    print(f"{task}: rows {len(df)}; fold {a.fold}: train+val {len(tr)}, test {len(te)}", flush=True)

    train_df = pd.DataFrame({"formula": tr["composition"].astype(str), "target": tr["target"].astype(float)})
    # the true test targets are passed only so that CrabNet's `act` can be checked against ours
    test_df = pd.DataFrame({"formula": te["composition"].astype(str), "target": te["target"].astype(float)})

    # --- CrabNet, default hyperparameters (as CrabNet's matbench example; display off)
    kwargs = dict(
        mat_prop=task.replace("matbench_", ""),
        model_name=f"{task}_fold{a.fold}" + ("_smoke" if a.smoke else ""),
        force_cpu=True,
        losscurve=False,
        learningcurve=False,
        random_state=a.seed,
        verbose=True,
    )
    if a.smoke:
        kwargs.update(epochs=2, epochs_step=1)  # CrabNet rounds epochs up to a multiple of 2*epochs_step

    # Reproduce CrabNet's internal validation split for the record: CrabNet(random_state=s) calls
    # np.random.seed(s); fit() then calls train_test_split(train_df, test_size=val_size) with no
    # random_state, i.e. numpy's global RNG, and nothing in between draws from it. Checked below
    # against the formulas in CrabNet's own validation loader.
    np.random.seed(a.seed)
    _tr_rep, _va_rep = train_test_split(train_df.copy(), test_size=0.2)
    val_ids_reproduced = tr.loc[_va_rep.index, "mbid"].tolist()

    cwd0 = os.getcwd()
    os.chdir(work)  # CrabNet writes models/ and figures/ relative to the current directory
    timed = TimedStdout(sys.stdout)
    sys.stdout = timed
    try:
        crab = CrabNet(**kwargs)
        val_size = crab.val_size
        t0, c0 = time.time(), time.process_time()
        timed.t0, timed.c0 = t0, c0
        crab.fit(train_df.copy())
        t_fit, c_fit = time.time() - t0, time.process_time() - c0

        # CrabNet's validation loader is still `data_loader` right after fit
        val_formulas = list(crab.data_loader.dataset.data[2])
        n_val_crabnet = len(val_formulas)
        n_train_crabnet = int(crab.train_len)
        val_split_matches = (sorted(val_formulas) == sorted(_va_rep["formula"].tolist())
                             and list(val_formulas) == _va_rep["formula"].tolist())

        t1, c1 = time.time(), time.process_time()
        y_pred, y_std, y_act = crab.predict(test_df.copy(), return_uncertainty=True, return_true=True)
        t_pred, c_pred = time.time() - t1, time.process_time() - c1
    finally:
        sys.stdout = timed.stream
        os.chdir(cwd0)

    y_true = te["target"].to_numpy(float)
    if len(y_pred) != len(te):
        raise SystemExit(f"CrabNet returned {len(y_pred)} predictions for {len(te)} test rows")
    act_max_diff = float(np.max(np.abs(y_act - y_true)))
    mae = float(mean_absolute_error(y_true, y_pred))
    rmse = float(np.sqrt(mean_squared_error(y_true, y_pred)))

    # CrabNet infers n_elements from the training rows and truncates longer formulas elsewhere
    from crabnet.utils.utils import _element_composition

    n_el_test = np.array([len(_element_composition(f)) for f in test_df["formula"]])
    n_el_train = np.array([len(_element_composition(f)) for f in train_df["formula"]])
    epochs_completed = int(crab.epoch) + 1
    early_stopped = bool(crab.optimizer.discard_count >= crab.discard_n)

    # CrabNet's own loss curve: values at epoch 0, at every `checkin` epochs and at the last epoch.
    lc_csv = os.path.join(work, "figures", "lc_data", f"{kwargs['model_name']}_lc.csv")
    lc_rows = pd.read_csv(lc_csv).to_dict("records") if os.path.exists(lc_csv) else None
    if os.path.exists(lc_csv):
        shutil.copy(lc_csv, os.path.join(out, "crabnet_lc.csv"))
    val_curve = [float(v) for v in crab.loss_curve["val"]]
    train_curve = [float(v) for v in crab.loss_curve["train"]]
    epoch_lines = [e for e in timed.events if "epoch" in e]
    if len(epoch_lines) == len(val_curve):
        valid_mae_vs_time = [[round(e["elapsed_seconds"], 3), v] for e, v in zip(epoch_lines, val_curve)]
        curve_points = [dict(e, train_mae=t, val_mae=v) for e, t, v in zip(epoch_lines, train_curve, val_curve)]
    else:
        valid_mae_vs_time, curve_points = None, None
        print(f"WARNING: {len(epoch_lines)} timed epoch lines vs {len(val_curve)} loss-curve values; "
              "time-to-accuracy curve skipped", flush=True)

    n_cores_affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    results = {
        "task": task,
        "fold": a.fold,
        "smoke": a.smoke,
        "target": "band gap (eV), experimental",
        "package": "crabnet",
        "package_version": pkg_version("crabnet"),
        "torch_version": torch.__version__,
        "python": sys.version.split()[0],
        "other_versions": {p: pkg_version(p) for p in ("numpy", "pandas", "scikit-learn", "scipy")},
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "test_mae": mae,
        "test_rmse": rmse,
        "wall_seconds": t_fit + t_pred,
        "cpu_seconds": c_fit + c_pred,
        "wall_seconds_fit": t_fit,
        "wall_seconds_predict": t_pred,
        "cpu_seconds_fit": c_fit,
        "cpu_seconds_predict": c_pred,
        "wall_seconds_process_total": time.time() - T_PROCESS_START,
        "cpu_seconds_process_total": time.process_time() - CPU_PROCESS_START,
        "seconds_per_epoch_mean": t_fit / epochs_completed,
        "epochs_completed": epochs_completed,
        "epochs_planned": int(crab.epochs),
        "early_stopped": early_stopped,
        "early_stopping": {"discard_count": int(crab.optimizer.discard_count), "discard_n": int(crab.discard_n)},
        "n_train": n_train_crabnet,
        "n_val": n_val_crabnet,
        "n_test": int(len(te)),
        "split": {
            "test": f"rows with fold == {a.fold} in {a.data}",
            "train_val": f"rows with fold != {a.fold} ({len(tr)}), given to CrabNet.fit(train_df) without val_df",
            "validation": (f"CrabNet's own: train_test_split(train_df, test_size={val_size}) on numpy's global RNG, "
                           f"seeded by CrabNet(random_state={a.seed})"),
            "validation_split_reproduced_and_matches": bool(val_split_matches),
            "validation_ids": val_ids_reproduced if val_split_matches else None,
        },
        "crabnet_kwargs": kwargs,
        "crabnet_effective": {
            "batch_size": int(crab.batch_size),
            "epochs_step": int(crab.epochs_step),
            "checkin": int(crab.checkin),
            "lr_stepsize_batches": int(crab.stepsize),
            "n_elements": int(crab.n_elements),
            "d_model": crab.d_model, "N": crab.N, "heads": crab.heads, "out_hidden": crab.out_hidden,
            "elem_prop": crab.elem_prop, "fudge": crab.fudge, "val_size": val_size,
            "criterion": getattr(crab.criterion, "__name__", str(crab.criterion)),
            "optimizer": "Lamb + Lookahead(alpha=%s, k=%s) + SWA" % (crab.alpha, crab.k),
            "lr": crab.lr, "base_lr": crab.base_lr, "max_lr": crab.max_lr,
            "model_parameters": int(count_parameters(crab.model)),
            "final_weights": "SWA average (swap_swa_sgd at the end of fit)",
        },
        "crabnet_loss_curve": lc_rows,
        "crabnet_loss_curve_note": (
            "CrabNet's own train/val MAE (eV, original units) at epoch 0, every `checkin` epochs and the last epoch, "
            "computed on the current (not SWA-averaged) weights; the 'epoch' column is CrabNet's own labelling "
            "(arange(n)*checkin - 1, first set to 0)."),
        "valid_mae_vs_time": valid_mae_vs_time,
        "valid_mae_vs_time_note": (
            "[elapsed_seconds since fit() started, CrabNet validation MAE]. CrabNet keeps no timestamps: the times "
            "are when CrabNet printed each 'Epoch: i/n --- ... val mae' line (stdout timestamped by this script, "
            "CrabNet unmodified); the values are the exact floats from CrabNet.loss_curve['val']. Only check-in "
            "epochs have a point; each time includes CrabNet's own train- and val-set evaluation at that epoch."),
        "valid_curve_points": curve_points,
        "swa_points": {"epochs": [int(x) for x in crab.xswa], "val_mae": [float(y) for y in crab.yswa]},
        "progress_notes": [e for e in timed.events if "note" in e],
        "check_crabnet_targets_equal_ours_max_abs_diff": act_max_diff,
        "max_elements_per_formula": {"train_val": int(n_el_train.max()), "test": int(n_el_test.max())},
        "test_rows_truncated_to_n_elements": int((n_el_test > int(crab.n_elements)).sum()),
        "test_pred_std_mean": float(np.mean(y_std)),
        "peak_rss_mb": vm_hwm_mb(),
        "hardware": {
            "cpu_model": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "cpus_available": n_cores_affinity,
            "mem_total_gb": mem_total_gb(),
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "device": "cpu",
        },
        "threads": {"torch_num_threads": torch.get_num_threads(), "requested": a.threads,
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS")},
        "warnings": sorted(set(_WARNINGS)),
        "command": " ".join([sys.executable] + sys.argv),
        "cwd": cwd0,
        "work_dir": work,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    pd.DataFrame({"id": te["mbid"], "y_true": y_true, "y_pred": y_pred}).to_csv(
        os.path.join(out, "predictions.csv.gz"), index=False)

    print(json.dumps({k: results[k] for k in ("package_version", "torch_version", "n_train", "n_val", "n_test",
                                              "epochs_completed", "early_stopped", "wall_seconds", "cpu_seconds",
                                              "peak_rss_mb")}), flush=True)
    print(f"test MAE {mae:.4f} eV (RMSE {rmse:.4f}); fit {t_fit:.1f} s wall / {c_fit:.1f} s CPU; "
          f"validation split reproduced: {val_split_matches}", flush=True)
    print("wrote", os.path.join(out, "results.json"), flush=True)


if __name__ == "__main__":
    main()
