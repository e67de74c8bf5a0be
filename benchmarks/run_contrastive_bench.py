"""Contrastive (MultiMat-style) pretraining on the mp_20 pilot structures and retrieval on held-out ones (issue #14).

Pretraining rows: mp_20 pilot train + val (2,000 structures); retrieval: mp_20 pilot test (1,000 structures, none of
whose compositions is in the pretraining rows: the clean protocol's exclusion is applied). Views: crystal graph
(CGCNN encoder, the anchor), the robocrystallographer description (frozen MiniLM + trained projection; the shared
descriptions are put in the description cache first, so robocrys does not run) and the composition (tiny element-token
BERT). Modes: anchored (MultiMat) and all pairs.

    python benchmarks/run_contrastive_bench.py [--epochs 20] [--modes anchored,all] [--out benchmarks/results/contrastive]
"""
import argparse, json, os, platform, resource, time
from pathlib import Path

import torch

from mmlit.data.structures import load_structure_set
from mmlit.data.core import Dataset
from mmlit.text.describe import shared_descriptions, cache_descriptions
from mmlit.fusion.contrastive import ContrastiveModel

def with_descriptions(ds: Dataset) -> int:
    "Put the shared robocrys descriptions of these mp_20 pilot rows in the description cache."
    d = shared_descriptions("mp_20_pilot").set_index("id")
    rows = [i for i, x in enumerate(ds.ids) if str(x) in d.index and d.loc[str(x), "description"]]
    return cache_descriptions([ds.structures[i] for i in rows], [d.loc[str(ds.ids[i]), "description"] for i in rows])

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--modes", default="anchored,all")
    p.add_argument("--max-rows", type=int, default=None, help="cap each split (a quick look)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/contrastive")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    ds = load_structure_set("mp_20_pilot", progress=False)
    split = ds.meta["split"].to_numpy()
    rows = lambda names: [i for i in range(len(ds)) if split[i] in names]
    pre, test = ds.subset(rows(("train", "val"))[:a.max_rows]), ds.subset(rows(("test",))[:a.max_rows])
    n_cached = with_descriptions(pre) + with_descriptions(test)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    for mode in a.modes.split(","):
        t0, c0 = time.time(), time.process_time()
        cm = ContrastiveModel(("graph", "text", "composition"), mode=mode, epochs=a.epochs, batch_size=64, patience=5,
                              seed=a.seed, progress=False, num_threads=1).fit(pre, exclude=test)
        ret = cm.retrieval(test)
        rec = dict(mode=mode, seed=a.seed, epochs=a.epochs, info=cm.info, retrieval=ret.to_dict("records"),
                   wall_s=round(time.time() - t0, 1), cpu_s=round(time.process_time() - c0, 1),
                   n_pretrain=len(pre), n_test=len(test), descriptions_cached=n_cached,
                   hardware=f"{platform.machine()}, {os.cpu_count()} cores, 1 torch thread", date=time.strftime("%Y-%m-%d"),
                   peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
        (out/f"{mode}_seed{a.seed}.json").write_text(json.dumps(rec, indent=1, default=str))
        print(mode, ret.round(3).to_string(index=False), rec["wall_s"], "s", flush=True)
        cm.save(out/"models"/f"{mode}_seed{a.seed}")

if __name__ == "__main__":
    main()
