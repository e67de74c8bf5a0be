#!/usr/bin/env python
"""Seconds per training epoch of mmlit's crystal-graph models on matbench_phonons fold 0 (the peer run's rows), for a
fair side-by-side with the official alignn package: run it at the same time as a short peer run, one thread each.

    OMP_NUM_THREADS=1 python benchmarks/bench_epoch_time.py --epochs 3 alignn:full alignn:small cgcnn:paper
Writes benchmarks/results/peer_alignn_phonons/mmlit_epoch_times.json (median seconds per epoch, parameters).
"""
from __future__ import annotations
import argparse, json, sys, time, warnings
from pathlib import Path

import numpy as np
import torch

warnings.simplefilter("ignore")
from mmlit.data.structures import load_structure_task
from mmlit.metrics import hardware_info
from mmlit.struct.models import GraphModel

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="arch:preset, e.g. alignn:full")
    ap.add_argument("--epochs", type=int, default=3); ap.add_argument("--angle-cutoff", type=float, default=3.5)
    ap.add_argument("--out", default="benchmarks/results/peer_alignn_phonons/mmlit_epoch_times.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    train, _ = load_structure_task("phonons", progress=False).split(0)
    rows = []
    for spec in a.models:
        arch, preset = spec.split(":")
        kw = {"angle_cutoff": a.angle_cutoff} if arch == "alignn" else {}
        bs = 64 if preset == "full" else 32   # full: the peer recipe's batch size
        gm = GraphModel(arch, preset, epochs=a.epochs, batch_size=bs, patience=None, progress=False, num_threads=1,
                        **kw).fit(train)
        t = gm.history.time.to_numpy()
        rows.append(dict(model=f"{arch}-{preset}", batch_size=bs, angle_cutoff=kw.get("angle_cutoff"),
                         n_parameters=gm.info["n_parameters"], seconds_per_epoch=t.tolist(),
                         median_seconds_per_epoch=float(np.median(t))))
        print(rows[-1], flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(dict(rows=rows, n_train=gm.info["n_train"], threads=1, hardware=hardware_info(),
                                           command=" ".join(sys.argv)), indent=1))

if __name__ == "__main__": main()
