#!/usr/bin/env python
"""The small recipe sweep behind GraphModel's defaults: loss and peak learning rate of CGCNN on matbench_phonons fold 0
(train on folds 1-4 with 10 % held out for early stopping, test on fold 0), 60 epochs each, one thread.

    OMP_NUM_THREADS=1 python benchmarks/sweep_graph_recipe.py
Writes benchmarks/results/structures/recipe_sweep.json. Single runs: the fold-to-fold spread is several cm^-1.
"""
import json, sys, time, warnings
from pathlib import Path

import numpy as np

warnings.simplefilter("ignore")
from mmlit.data.structures import load_structure_task
from mmlit.metrics import hardware_info
from mmlit.struct.models import GraphModel

GRID = [dict(regression_loss="mse", lr=1e-3), dict(regression_loss="l1", lr=1e-3), dict(regression_loss="l1", lr=3e-3),
        dict(regression_loss="l1", lr=1e-2)]

def main(out="benchmarks/results/structures/recipe_sweep.json", epochs=60):
    train, test = load_structure_task("phonons", progress=False).split(0)
    rows = []
    for kw in GRID:
        t = time.time()
        gm = GraphModel("cgcnn", epochs=epochs, progress=False, num_threads=1, **kw).fit(train)
        rows.append(dict(**kw, epochs=epochs, test_mae=float(np.abs(gm.predict(test) - test.y()).mean()),
                         best_epoch=gm.info["best_epoch"], seconds=time.time() - t))
        print(rows[-1], flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(dict(model="cgcnn", task="matbench_phonons fold 0", rows=rows, hardware=hardware_info(),
                                         command=" ".join(sys.argv)), indent=1))

if __name__ == "__main__": main()
