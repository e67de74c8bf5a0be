"""Seconds per structure of the image and tabular modalities: render (cold, cached), tabular features (cold, cached),
and a forward pass of each encoder. Writes benchmarks/results/modalities/cost_image_tabular.json.

Data: the first N structures of perov_5 val (shared data), else the AFLOW prototypes shipped with pymatgen.
Run on one thread: OMP_NUM_THREADS=1 python benchmarks/bench_modality_cost.py [--n 200]
"""
import argparse, json, os, platform, tempfile, time
from pathlib import Path

import numpy as np
import torch

from mmlit.core import shared_data_dir
from mmlit.data.structures import load_structure_set
from mmlit.image.encoders import ImageEncoder
from mmlit.image.render import RenderConfig, render_structures
from mmlit.struct.tabular import TabularEncoder, TabularFeaturizer

OUT = Path(__file__).parent/"results"/"modalities"/"cost_image_tabular.json"

def per(n, f):
    t0 = time.perf_counter(); r = f(); return r, (time.perf_counter() - t0) / n

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--n", type=int, default=200); a = ap.parse_args()
    torch.set_num_threads(1)
    name = "perov_5" if shared_data_dir() is not None else "aflow_prototypes"
    ds = load_structure_set(name, **({"split": "val"} if name == "perov_5" else {}), max_rows=a.n, progress=False)
    n, res = len(ds), {}
    with tempfile.TemporaryDirectory() as d:
        cfg = RenderConfig()
        x, res["render_cold_s"] = per(n, lambda: render_structures(ds, config=cfg, cache=d, progress=False))
        _, res["render_cached_s"] = per(n, lambda: render_structures(ds, config=cfg, cache=d, progress=False))
        tf = TabularFeaturizer(cache=d, progress=False)
        X, res["tabular_cold_s"] = per(n, lambda: tf(ds))
        _, res["tabular_cached_s"] = per(n, lambda: tf(ds))
    enc, tenc = ImageEncoder().eval(), TabularEncoder.from_features(X).eval()
    with torch.no_grad():
        xi, xt = torch.from_numpy(x), torch.from_numpy(X)
        enc(xi[:8]); tenc(xt[:8])   # warm-up
        _, res["image_encoder_forward_s"] = per(n, lambda: [enc(xi[i:i + 64]) for i in range(0, n, 64)])
        _, res["tabular_encoder_forward_s"] = per(n, lambda: [tenc(xt[i:i + 64]) for i in range(0, n, 64)])
    out = dict(data=f"{name} ({'val, ' if name == 'perov_5' else ''}first {n} structures)", n=n,
               render=dict(size=cfg.size, views=list(cfg.views), extent=cfg.extent),
               image_encoder_parameters=sum(p.numel() for p in enc.parameters()), tabular_features=X.shape[1],
               seconds_per_structure={k: round(v, 6) for k, v in res.items()},
               hardware=f"{platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs, torch 1 thread, batch 64",
               date=time.strftime("%Y-%m-%d"))
    OUT.parent.mkdir(parents=True, exist_ok=True); OUT.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))

if __name__ == "__main__": main()
