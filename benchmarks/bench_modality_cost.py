"""Seconds per structure of every modality of the fusion wing, cold (nothing cached) and cached, and a forward pass
of each encoder (issue #12's cost table). Writes benchmarks/results/modalities/cost.json; nbs/66_bench.fusion shows it.

- text: robocrys description (cold: robocrys runs; cached: read back) on the first `--n-text` structures (robocrys
  costs seconds per structure), then the frozen MiniLM encoder (cold: the model runs; cached: read back);
- graph: CGCNN crystal-graph building (cold, cached) and a CGCNN forward pass;
- image: rendering (cold, cached) and the multi-view CNN forward pass;
- tabular: Magpie + structure descriptors (cold, cached) and the tabular encoder forward pass;
- composition: element-token encoding and the tiny BERT forward pass.
Every cache is a fresh temporary folder, so "cold" is cold. Encoders run in eval mode, batches of 64, no gradients.

Data: the first N structures of perov_5 val (shared data), else the AFLOW prototypes shipped with pymatgen.
Run on one thread: OMP_NUM_THREADS=1 python benchmarks/bench_modality_cost.py [--n 200] [--n-text 12]
"""
import argparse, json, os, platform, tempfile, time
from pathlib import Path

import numpy as np
import torch

from mmlit.core import shared_data_dir
from mmlit.data.structures import load_structure_set
from mmlit.fusion.core import CompositionModality
from mmlit.image.encoders import ImageEncoder
from mmlit.image.render import RenderConfig, render_structures
from mmlit.struct.graph import build_graphs, to_data
from mmlit.struct.models import build_structure_model
from mmlit.struct.tabular import TabularEncoder, TabularFeaturizer
from mmlit.text.describe import describe_structures, robocrys_version
from mmlit.text.encoders import FrozenTextEncoder

OUT = Path(__file__).parent/"results"/"modalities"/"cost.json"

def per(n, f):
    "f()'s result and its wall seconds per structure."
    t0 = time.perf_counter(); r = f(); return r, (time.perf_counter() - t0) / n

def batched(n, f, bs=64):
    "Wall seconds per structure of f(i, j) over batches [i, j) after one warm-up batch."
    f(0, min(8, n))
    return per(n, lambda: [f(i, min(i + bs, n)) for i in range(0, n, bs)])[1]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200); ap.add_argument("--n-text", type=int, default=12)
    a = ap.parse_args()
    torch.set_num_threads(1)
    name = "perov_5" if shared_data_dir() is not None else "aflow_prototypes"
    ds = load_structure_set(name, **({"split": "val"} if name == "perov_5" else {}), max_rows=a.n, progress=False)
    n, nt, res = len(ds), min(a.n_text, len(ds)), {}
    structs, ids = list(ds.structures), list(ds.ids)
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        # text: robocrys on a few structures (seconds each), then MiniLM over their texts
        desc, res["describe_cold_s"] = per(nt, lambda: describe_structures(structs[:nt], ids[:nt], n_jobs=1, cache=d, progress=False))
        _, res["describe_cached_s"] = per(nt, lambda: describe_structures(structs[:nt], ids[:nt], n_jobs=1, cache=d, progress=False))
        texts = desc.description.tolist()
        enc_t = FrozenTextEncoder(cache=d)
        enc_t.encode(texts[:1], progress=False)   # loads the model (not counted)
        _, res["text_encoder_cold_s"] = per(nt - 1, lambda: enc_t.encode(texts[1:], progress=False))
        _, res["text_encoder_cached_s"] = per(nt - 1, lambda: enc_t.encode(texts[1:], progress=False))
        # graph
        cg = build_structure_model("cgcnn").eval()
        graphs, res["graph_build_cold_s"] = per(n, lambda: build_graphs(structs, ids, cg.config.graph_config, cache=d, progress=False))
        _, res["graph_build_cached_s"] = per(n, lambda: build_graphs(structs, ids, cg.config.graph_config, cache=d, progress=False))
        coll = cg.config.collator()
        res["graph_encoder_forward_s"] = batched(n, lambda i, j: cg.embed(coll([to_data(g) for g in graphs[i:j]])))
        # image
        cfg = RenderConfig()
        x, res["render_cold_s"] = per(n, lambda: render_structures(ds, config=cfg, cache=d, progress=False))
        _, res["render_cached_s"] = per(n, lambda: render_structures(ds, config=cfg, cache=d, progress=False))
        enc_i, xi = ImageEncoder().eval(), torch.from_numpy(x)
        res["image_encoder_forward_s"] = batched(n, lambda i, j: enc_i(xi[i:j]))
        # tabular
        tf = TabularFeaturizer(cache=d, progress=False)
        X, res["tabular_cold_s"] = per(n, lambda: tf(ds))
        _, res["tabular_cached_s"] = per(n, lambda: tf(ds))
        enc_x, xt = TabularEncoder.from_features(X).eval(), torch.from_numpy(X)
        res["tabular_encoder_forward_s"] = batched(n, lambda i, j: enc_x(xt[i:j]))
        # composition
        cm = CompositionModality()
        items, res["composition_tokens_s"] = per(n, lambda: cm.featurize(ds))
        enc_c = cm.build_encoder().eval()
        res["composition_encoder_forward_s"] = batched(n, lambda i, j: enc_c(cm.collate(items[i:j])))
    params = lambda m: sum(p.numel() for p in m.parameters())
    out = dict(data=f"{name} ({'val, ' if name == 'perov_5' else ''}first {n} structures; text: first {nt})", n=n, n_text=nt,
               robocrys=robocrys_version(), render=dict(size=cfg.size, views=list(cfg.views), extent=cfg.extent),
               parameters=dict(graph_encoder=params(cg), image_encoder=params(enc_i), tabular_encoder=params(enc_x),
                               composition_encoder=params(enc_c), text_encoder_frozen=params(enc_t.model) if hasattr(enc_t, "model") else None),
               tabular_features=X.shape[1], seconds_per_structure={k: round(v, 6) for k, v in res.items()},
               hardware=f"{platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs, torch 1 thread, batch 64",
               load_average=os.getloadavg()[0], date=time.strftime("%Y-%m-%d"))
    OUT.parent.mkdir(parents=True, exist_ok=True); OUT.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))

if __name__ == "__main__": main()
