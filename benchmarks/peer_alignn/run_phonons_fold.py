#!/usr/bin/env python
"""Peer run: the official ALIGNN package on matbench_phonons, one fold, on CPU.

Run with the peer virtual environment made by `setup_venv.sh` (never mmlit's):

    OMP_NUM_THREADS=1 benchmarks/peer_alignn/.venv/bin/python \
        benchmarks/peer_alignn/run_phonons_fold.py --fold 0 --epochs 100 --threads 1

What it does
------------
1. Reads the structures (pymatgen dicts, matbench order) and the official matbench
   test-fold assignment, checks that the two files agree row by row (mbid and target).
2. Builds the same split as mmlit: test = rows with fold == k; the other rows (kept in
   their original order) are split into train/valid with
   `sklearn.model_selection.train_test_split(np.arange(n), test_size=0.1, random_state=0)`,
   both index lists sorted.  Optionally checks the ids against mmlit's own split
   (`Dataset.split(k)` + `train_valid_split(0.1, 0)`), run in mmlit's venv as a subprocess.
3. Writes one POSCAR per structure (jarvis' own POSCAR writer) and `id_prop.csv`
   ordered train, valid, test into a scratch work folder.
4. Trains with alignn's own `train_for_folder` (the code behind `train_alignn.py`)
   using alignn's kNN property-prediction recipe (alignn/examples/recipes/knn/
   config_example.json, copied below) with `keep_data_order=True` and exact
   n_train / n_val / n_test, so alignn's split is ours.
5. Times every epoch, records peak RSS, and computes the test MAE (cm^-1) from the
   predictions alignn writes (`prediction_results_test_set.csv`), plus an
   independent re-evaluation of the final and best-on-validation checkpoints.
6. Writes `results.json` (and a few small alignn outputs) to --out.
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
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "peer_alignn_phonons"),
                   help="results folder (results.json and small outputs)")
    p.add_argument("--work", default=None,
                   help="scratch folder for POSCARs, LMDB caches and checkpoints (default: <out>/work, git-ignored)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--batch-size", type=int, default=64, help="alignn batch size (alignn's TrainingConfig default: 64)")
    p.add_argument("--valid-frac", type=float, default=0.1)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--data", default="/work/shared/data/structures/matbench_phonons/matbench_phonons.json.gz")
    p.add_argument("--folds-csv", default="/work/shared/data/matbench/matbench_phonons.csv.gz")
    p.add_argument("--mmlit-python", default=os.path.join(REPO, ".venv", "bin", "python"),
                   help="python of mmlit's venv, used only to cross-check the split ('' to skip)")
    return p.parse_args(argv)


ARGS = parse_args()
# Thread caps must be in the environment before numpy / torch load their thread pools.
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_v] = str(ARGS.threads)

import csv  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
from importlib import metadata as md  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)
try:
    torch.set_num_interop_threads(1)
except RuntimeError:
    pass

# alignn's kNN recipe for a single scalar property, verbatim from the alignn repository
# (alignn/examples/recipes/knn/config_example.json, "wider k-nearest-neighbour graph").
# The installed wheel does not ship the examples folder, hence the copy.  Only the
# run-specific keys are overridden in `make_config` below.
ALIGNN_KNN_RECIPE = {
    "version": "112bbedebdaecf59fb18e11c929080fb2f358246",
    "dataset": "user_data",
    "target": "target",
    "atom_features": "cgcnn",
    "neighbor_strategy": "pure_torch",
    "id_tag": "jid",
    "dtype": "float32",
    "random_seed": 123,
    "classification_threshold": None,
    "n_val": None,
    "n_test": None,
    "n_train": None,
    "train_ratio": 0.8,
    "val_ratio": 0.1,
    "test_ratio": 0.1,
    "target_multiplication_factor": None,
    "epochs": 10,
    "batch_size": 4,
    "weight_decay": 1e-05,
    "learning_rate": 0.001,
    "filename": "A",
    "warmup_steps": 2000,
    "criterion": "l1",
    "optimizer": "adamw",
    "scheduler": "onecycle",
    "pin_memory": False,
    "save_dataloader": False,
    "write_checkpoint": True,
    "write_predictions": True,
    "store_outputs": True,
    "progress": True,
    "log_tensorboard": False,
    "standard_scalar_and_pca": False,
    "use_canonize": True,
    "num_workers": 0,
    "cutoff": 8.0,
    "cutoff_extra": 3.0,
    "max_neighbors": 12,
    "keep_data_order": True,
    "normalize_graph_level_loss": False,
    "distributed": False,
    "data_parallel": False,
    "n_early_stopping": None,
    "output_dir": "temp",
    "use_lmdb": True,
    "model": {
        "name": "alignn_atomwise_pure",
        "alignn_layers": 4,
        "gcn_layers": 4,
        "atom_input_features": 92,
        "edge_input_features": 80,
        "triplet_input_features": 40,
        "embedding_features": 64,
        "hidden_features": 256,
        "output_features": 1,
        "grad_multiplier": -1,
        "calculate_gradient": False,
        "atomwise_output_features": 0,
        "graphwise_weight": 1.0,
        "gradwise_weight": 0.0,
        "stresswise_weight": 0.0,
        "atomwise_weight": 0.0,
        "link": "identity",
        "zero_inflated": False,
        "classification": False,
        "force_mult_natoms": False,
        "energy_mult_natoms": False,
        "include_pos_deriv": False,
        "use_cutoff_function": False,
        "inner_cutoff": 3.0,
        "stress_multiplier": 1.0,
        "add_reverse_forces": True,
        "lg_on_fly": True,
        "batch_stress": True,
        "multiply_cutoff": False,
        "use_penalty": True,
        "extra_features": 0,
        "exponent": 5,
        "penalty_factor": 0.1,
        "penalty_threshold": 1.0,
    },
}


def vm_hwm_mb():
    "Peak resident set size of this process so far (MB), from /proc/self/status VmHWM."
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


sys.path.insert(0, os.path.dirname(HERE))   # benchmarks/: helpers shared by the peer runs
from peer_common import cpu_model  # noqa: E402


def pkg_version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------- data
def load_rows(data_path, folds_csv):
    with gzip.open(data_path, "rt") as f:
        d = json.load(f)
    cols = d["columns"]
    i_s, i_y = cols.index("structure"), cols.index("last phdos peak")
    structs = [r[i_s] for r in d["data"]]
    y = np.array([float(r[i_y]) for r in d["data"]])
    if list(d["index"]) != list(range(len(structs))):
        raise SystemExit("structures file index is not 0..n-1 in order")
    folds = pd.read_csv(folds_csv)
    if len(folds) != len(structs):
        raise SystemExit(f"row count mismatch: {len(structs)} structures vs {len(folds)} fold rows")
    expected = [f"mb-phonons-{i + 1:04d}" for i in range(len(structs))]
    if folds["mbid"].tolist() != expected:
        raise SystemExit("fold file mbids are not mb-phonons-0001.. in row order")
    dy = np.abs(folds["target"].to_numpy(float) - y)
    if not np.all(dy <= 1e-9 * np.maximum(1.0, np.abs(y))):
        bad = np.flatnonzero(dy > 1e-9 * np.maximum(1.0, np.abs(y)))
        raise SystemExit(f"targets disagree between the two files at rows {bad[:10].tolist()} (max |diff| {dy.max()})")
    return folds["mbid"].tolist(), structs, y, folds["fold"].to_numpy(int), float(dy.max())


def make_split(folds, fold, valid_frac, seed):
    test = np.flatnonzero(folds == fold)
    rest = np.flatnonzero(folds != fold)  # original order
    tr, va = train_test_split(np.arange(len(rest)), test_size=valid_frac, random_state=seed)
    return rest[np.sort(tr)], rest[np.sort(va)], test


def mmlit_split_ids(python, fold, valid_frac, seed):
    "Ids of mmlit's own (train, valid, test) for this fold, from mmlit's venv; None if unavailable."
    if not python or not os.path.exists(python):
        return None, f"mmlit python not found: {python!r}"
    code = (
        "import json,sys\n"
        "from mmlit.data.structures import load_structure_set\n"
        "ds = load_structure_set('matbench_phonons')\n"
        f"train, test = ds.split({fold})\n"
        f"tr, va = train.train_valid_split({valid_frac}, {seed})\n"
        "json.dump({'train': list(tr.ids), 'valid': list(va.ids), 'test': list(test.ids),"
        " 'y_test': [float(v) for v in test.targets.iloc[:, 0]]}, sys.stdout)\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    try:
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=1800, env=env, cwd=REPO)
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {e}"
    if r.returncode != 0:
        return None, "mmlit import/split failed: " + r.stderr.strip()[-500:]
    try:
        return json.loads(r.stdout.strip().splitlines()[-1]), None
    except Exception as e:  # noqa: BLE001
        return None, f"could not parse mmlit output: {e}"


def pymatgen_dict_to_jarvis(sd):
    from jarvis.core.atoms import Atoms

    lat = np.array(sd["lattice"]["matrix"], dtype=float)
    elements, coords = [], []
    for site in sd["sites"]:
        sp = site["species"]
        if len(sp) != 1 or abs(float(sp[0].get("occu", 1)) - 1) > 1e-8:
            raise ValueError("disordered site; POSCAR cannot represent it")
        elements.append(sp[0]["element"])
        coords.append([float(c) for c in site["abc"]])
    return Atoms(lattice_mat=lat, coords=np.array(coords), elements=elements, cartesian=False)


def write_folder(root, ids, structs, y, order):
    "POSCAR per structure + id_prop.csv (rows in `order`). Returns the worst round-trip error."
    from jarvis.core.atoms import Atoms
    from jarvis.io.vasp.inputs import Poscar

    os.makedirs(root, exist_ok=True)
    worst = 0.0
    with open(os.path.join(root, "id_prop.csv"), "w", newline="") as f:
        w = csv.writer(f)
        for i in order:
            a = pymatgen_dict_to_jarvis(structs[i])
            path = os.path.join(root, ids[i])
            Poscar(a, comment=ids[i]).write_file(path)
            b = Atoms.from_poscar(path)  # round trip exactly as alignn will read it
            if sorted(b.elements) != sorted(a.elements):
                raise SystemExit(f"{ids[i]}: species changed in POSCAR round trip")
            err = float(np.abs(np.asarray(b.lattice_mat) - np.asarray(a.lattice_mat)).max())
            fa = sorted(zip(a.elements, map(tuple, np.round(np.asarray(a.frac_coords), 10))))
            fb = sorted(zip(b.elements, map(tuple, np.round(np.asarray(b.frac_coords), 10))))
            err = max(err, float(np.abs(np.array([c for _, c in fa]) - np.array([c for _, c in fb])).max()))
            worst = max(worst, err)
            w.writerow([ids[i], repr(float(y[i]))])
    return worst


# ----------------------------------------------------------------------------- alignn
def make_config(out_dir, work, n_train, n_val, n_test, epochs, batch_size):
    cfg = json.loads(json.dumps(ALIGNN_KNN_RECIPE))
    overrides = {
        "epochs": epochs,
        "batch_size": batch_size,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "keep_data_order": True,
        "output_dir": out_dir,
        # prefix of the LMDB graph caches (alignn puts them at `filename + "train_data"` etc.)
        "filename": os.path.join(work, "lmdb_"),
    }
    cfg.update(overrides)
    return cfg, overrides


def evaluate_checkpoint(model_cfg, state_path, lmdb_path, ids_expected):
    "Independent test-set evaluation of one alignn checkpoint (returns id -> prediction)."
    from alignn.models.alignn_atomwise_pure import ALIGNNAtomWisePure, ALIGNNAtomWisePureConfig
    from alignn.pure_lmdb_dataset import PureTorchLMDBDataset

    net = ALIGNNAtomWisePure(ALIGNNAtomWisePureConfig(**model_cfg))
    net.load_state_dict(torch.load(state_path, map_location="cpu"))
    net.eval()
    ds = PureTorchLMDBDataset(lmdb_path=lmdb_path, line_graph=True, ids=list(ids_expected))
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=False, collate_fn=ds.collate_line_graph)
    preds, targs = [], []
    with torch.no_grad():
        for g, lg, lat, t in loader:
            out = net([g, lg, lat])["out"]
            preds += out.reshape(-1).double().tolist()
            targs += t.reshape(-1).double().tolist()
    ds.close()
    return dict(zip(ids_expected, preds)), dict(zip(ids_expected, targs))


def main():
    a = ARGS
    t_start = time.time()
    out = os.path.abspath(a.out)
    work = os.path.abspath(a.work or os.path.join(out, "work"))
    data_dir = os.path.join(work, "data")
    alignn_out = os.path.join(work, "alignn_out")
    for p in (data_dir, alignn_out):
        if os.path.exists(p):
            shutil.rmtree(p)
    for f in ("lmdb_train_data", "lmdb_val_data", "lmdb_test_data"):
        if os.path.exists(os.path.join(work, f)):
            shutil.rmtree(os.path.join(work, f))
    os.makedirs(out, exist_ok=True)
    os.makedirs(work, exist_ok=True)

    import alignn
    import alignn.train as alignn_train
    import alignn.train_alignn as alignn_train_alignn
    from alignn.config import TrainingConfig

    print(f"alignn {pkg_version('alignn')} from {os.path.dirname(alignn.__file__)}; torch {torch.__version__}; "
          f"threads {torch.get_num_threads()}", flush=True)

    # --- data and split
    ids, structs, y, folds, max_dy = load_rows(a.data, a.folds_csv)
    tr, va, te = make_split(folds, a.fold, a.valid_frac, a.split_seed)
    print(f"rows {len(ids)}; fold {a.fold}: train {len(tr)}, valid {len(va)}, test {len(te)}", flush=True)
    split_ids = {"train": [ids[i] for i in tr], "valid": [ids[i] for i in va], "test": [ids[i] for i in te]}

    mm, mm_err = mmlit_split_ids(a.mmlit_python, a.fold, a.valid_frac, a.split_seed)
    if mm is not None:
        mm_match = {k: mm[k] == split_ids[k] for k in ("train", "valid", "test")}
        y_test_match = bool(np.allclose(np.array(mm["y_test"]), y[te], rtol=0, atol=1e-9))
        print(f"mmlit split check: {mm_match}, test targets equal: {y_test_match}", flush=True)
        if not all(mm_match.values()):
            raise SystemExit("split differs from mmlit's; refusing to run")
        mmlit_check = {"checked": True, "ids_equal": mm_match, "test_targets_equal": y_test_match}
    else:
        print(f"mmlit split check skipped: {mm_err}", flush=True)
        mmlit_check = {"checked": False, "reason": mm_err}

    t0 = time.time()
    order = np.concatenate([tr, va, te])
    rt_err = write_folder(data_dir, ids, structs, y, order)
    t_write = time.time() - t0
    print(f"wrote {len(order)} POSCARs + id_prop.csv to {data_dir} in {t_write:.1f}s "
          f"(round-trip max |diff| {rt_err:.2e})", flush=True)

    cfg, overrides = make_config(alignn_out, work, len(tr), len(va), len(te), a.epochs, a.batch_size)
    TrainingConfig(**cfg)  # validate against the installed alignn's schema before starting
    cfg_path = os.path.join(work, "config.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)

    # --- instrumentation (wrapping, not changing, alignn's functions)
    marks = {}
    epochs_log = []
    orig_loaders = alignn_train_alignn.get_train_val_loaders
    orig_train = alignn_train_alignn.train_dgl
    orig_print = alignn_train.print_train_val_loss

    def loaders_wrapper(*args, **kw):
        marks["graphs_start"] = time.time()
        r = orig_loaders(*args, **kw)
        marks["graphs_end"] = time.time()
        marks["rss_after_graphs_mb"] = vm_hwm_mb()
        return r

    def train_wrapper(*args, **kw):
        marks["train_start"] = time.time()
        try:
            return orig_train(*args, **kw)
        finally:
            marks["train_end"] = time.time()

    def print_wrapper(e, rl, rl1, rl2, rl3, rl4, rl5, vl, vl1, vl2, vl3, vl4, vl5, tr_t, va_t, saving_msg=""):
        now = time.time()
        prev = epochs_log[-1]["t_end"] if epochs_log else marks["train_start"]
        epochs_log.append({"epoch": int(e), "t_end": now, "wall_s": now - prev, "alignn_train_s": float(tr_t),
                           "alignn_val_s": float(va_t), "train_l1": float(rl), "val_l1": float(vl),
                           "saved_best": bool(saving_msg), "peak_rss_mb": vm_hwm_mb()})
        return orig_print(e, rl, rl1, rl2, rl3, rl4, rl5, vl, vl1, vl2, vl3, vl4, vl5, tr_t, va_t,
                          saving_msg=saving_msg)

    alignn_train_alignn.get_train_val_loaders = loaders_wrapper
    alignn_train_alignn.train_dgl = train_wrapper
    alignn_train.print_train_val_loss = print_wrapper

    # --- train, exactly as `train_alignn.py --root_dir data --config_name config.json` on one process
    cwd = os.getcwd()
    os.chdir(work)
    try:
        alignn_train_alignn.train_for_folder(
            rank=0, world_size=0, root_dir=data_dir, config_name=cfg_path,
            id_key="jid", target_key="target", file_format="poscar", output_dir=alignn_out,
        )
    finally:
        os.chdir(cwd)
    t_end = time.time()

    # --- alignn's split must be ours
    with open(os.path.join(alignn_out, "ids_train_val_test.json")) as f:
        al_ids = json.load(f)
    split_check = {"train": al_ids["id_train"] == split_ids["train"], "valid": al_ids["id_val"] == split_ids["valid"],
                   "test": al_ids["id_test"] == split_ids["test"]}
    if not all(split_check.values()):
        raise SystemExit(f"alignn used a different split: {split_check}")

    # --- test MAE from alignn's own prediction file
    y_of = {ids[i]: float(y[i]) for i in range(len(ids))}
    pred_csv = pd.read_csv(os.path.join(alignn_out, "prediction_results_test_set.csv"), skipinitialspace=True)
    pred_csv["id"] = pred_csv["id"].astype(str).str.strip()
    if pred_csv["id"].tolist() != split_ids["test"]:
        raise SystemExit("prediction file ids are not our test ids in order")
    y_true = np.array([y_of[i] for i in pred_csv["id"]])
    tgt_dev = float(np.abs(pred_csv["target"].to_numpy(float) - y_true).max())
    if tgt_dev > 1e-3 * max(1.0, float(np.abs(y_true).max())):
        raise SystemExit(f"targets in alignn's prediction file do not match ours (max |diff| {tgt_dev})")
    mae_csv = float(np.mean(np.abs(pred_csv["prediction"].to_numpy(float) - y_true)))
    print(f"test MAE from prediction_results_test_set.csv: {mae_csv:.3f} cm^-1", flush=True)

    # --- independent re-evaluation of the two checkpoints alignn keeps
    with open(os.path.join(alignn_out, "config.json")) as f:
        used_cfg = json.load(f)
    model_cfg = used_cfg["model"]
    lmdb_test = os.path.join(work, "lmdb_test_data")
    reeval = {}
    for tag, fname in (("last_model", "last_model.pt"), ("best_model", "best_model.pt")):
        pth = os.path.join(alignn_out, fname)
        if not os.path.exists(pth):
            continue
        p, t = evaluate_checkpoint(model_cfg, pth, lmdb_test, split_ids["test"])
        pv = np.array([p[i] for i in split_ids["test"]])
        tv = np.array([t[i] for i in split_ids["test"]])
        if float(np.abs(tv - y[te]).max()) > 1e-3 * max(1.0, float(np.abs(y[te]).max())):
            raise SystemExit("LMDB test targets are not ours in order")
        reeval[tag] = {"file": fname, "test_mae": float(np.mean(np.abs(pv - y[te]))), "pred": pv}
        print(f"re-evaluated {fname}: test MAE {reeval[tag]['test_mae']:.3f} cm^-1", flush=True)
    csv_pred = pred_csv["prediction"].to_numpy(float)
    csv_is = {k: float(np.abs(v["pred"] - csv_pred).max()) for k, v in reeval.items()}
    which = min(csv_is, key=csv_is.get) if csv_is else None

    # --- timings
    walls = [e["wall_s"] for e in epochs_log]
    trains = [e["alignn_train_s"] for e in epochs_log]
    vals = [e["alignn_val_s"] for e in epochs_log]
    best_epoch = max((e["epoch"] for e in epochs_log if e["saved_best"]), default=None)

    def stats(v):
        return {"mean": float(np.mean(v)), "median": float(np.median(v)), "min": float(np.min(v)),
                "max": float(np.max(v))} if v else None

    n_params = None
    try:
        from alignn.models.alignn_atomwise_pure import ALIGNNAtomWisePure, ALIGNNAtomWisePureConfig
        n_params = int(sum(p.numel() for p in ALIGNNAtomWisePure(ALIGNNAtomWisePureConfig(**model_cfg)).parameters()))
    except Exception:  # noqa: BLE001
        pass

    results = {
        "task": "matbench_phonons", "target": "last phdos peak", "units": "cm^-1", "fold": a.fold,
        "package": "alignn", "package_version": pkg_version("alignn"), "torch_version": torch.__version__,
        "other_versions": {k: pkg_version(k) for k in ("jarvis-tools", "numpy", "scikit-learn", "lmdb", "dgl",
                                                        "matscipy")},
        "python": sys.version.split()[0],
        "recipe": "alignn/examples/recipes/knn/config_example.json (kNN property-prediction recipe)",
        "config_overrides": overrides, "config_used": used_cfg, "model_parameters": n_params,
        "split": {"rule": f"test = matbench fold == {a.fold}; train/valid = sklearn train_test_split("
                          f"np.arange(n_rest), test_size={a.valid_frac}, random_state={a.split_seed}) over the "
                          "fold != k rows in original order, sorted",
                  "n_train": len(tr), "n_val": len(va), "n_test": len(te),
                  "alignn_ids_equal_ours": split_check, "mmlit_check": mmlit_check,
                  "fold_file_target_max_abs_diff": max_dy},
        "n_train": len(tr), "n_val": len(va), "n_test": len(te),
        "epochs": a.epochs, "epochs_completed": len(epochs_log),
        "seconds_per_epoch": {"definition": "wall seconds between consecutive end-of-epoch reports (train + val "
                                            "+ alignn's per-epoch checkpoint/json writes); epoch 0 from train_dgl start",
                              **(stats(walls) or {}), "list": walls},
        "alignn_train_seconds_per_epoch": {**(stats(trains) or {}), "list": trains},
        "alignn_val_seconds_per_epoch": {**(stats(vals) or {}), "list": vals},
        "history": [{k: e[k] for k in ("epoch", "train_l1", "val_l1", "saved_best")} for e in epochs_log],
        "phase_seconds": {
            "write_poscars": t_write,
            "graph_build_and_lmdb": marks.get("graphs_end", np.nan) - marks.get("graphs_start", np.nan),
            "train_dgl_total_incl_final_predictions": marks.get("train_end", np.nan) - marks.get("train_start", np.nan),
            "after_last_epoch_test_and_prediction_files": (marks.get("train_end", np.nan) - epochs_log[-1]["t_end"])
            if epochs_log else None,
        },
        "total_wall_seconds": time.time() - t_start,
        "training_wall_seconds_until_predictions": t_end - t_start,
        "peak_rss_mb": vm_hwm_mb(), "peak_rss_after_graph_build_mb": marks.get("rss_after_graphs_mb"),
        "test_mae": {
            "value": mae_csv,
            "source": "prediction_results_test_set.csv written by alignn (ids checked against our test ids)",
            "model_used_by_alignn_for_that_file": which,
            "note": "alignn's train_dgl keeps `best_model = net` (a reference, not a copy), so its prediction "
                    "file comes from the weights after the last epoch; best_model.pt on disk is the "
                    "best-on-validation checkpoint (validation = alignn's val loader, drop_last=True)",
            "max_abs_diff_csv_vs_reevaluated": csv_is,
            "final_model_reevaluated": reeval.get("last_model", {}).get("test_mae"),
            "best_on_validation_checkpoint_reevaluated": reeval.get("best_model", {}).get("test_mae"),
            "best_on_validation_epoch": best_epoch,
        },
        "baseline_mae_train_mean": float(np.mean(np.abs(y[te] - y[tr].mean()))),
        "host": {"hostname": socket.gethostname(), "cpu_model": cpu_model(), "logical_cpus": os.cpu_count(),
                 "platform": platform.platform()},
        "threads": {"torch_num_threads": torch.get_num_threads(), "requested": a.threads,
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "command": " ".join([sys.executable] + sys.argv),
        "cwd": cwd,
        "work_dir": work,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    # small alignn outputs next to results.json (checkpoints and LMDBs stay in the ignored work dir)
    for fn in ("prediction_results_test_set.csv", "history_train.json", "history_val.json", "config.json",
               "ids_train_val_test.json", "mad"):
        src = os.path.join(alignn_out, fn)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(out, "alignn_" + fn))
    print(json.dumps({k: results[k] for k in ("package_version", "torch_version", "n_train", "n_val", "n_test",
                                              "epochs_completed", "peak_rss_mb", "total_wall_seconds")}), flush=True)
    print("seconds/epoch mean %.2f median %.2f" % (results["seconds_per_epoch"].get("mean", np.nan),
                                                   results["seconds_per_epoch"].get("median", np.nan)), flush=True)
    print(f"test MAE {mae_csv:.3f} cm^-1 (final model); best-on-val checkpoint "
          f"{results['test_mae']['best_on_validation_checkpoint_reevaluated']}", flush=True)
    print("wrote", os.path.join(out, "results.json"), flush=True)


if __name__ == "__main__":
    main()
