"""Contrastive (MultiMat-style) pretraining and retrieval on held-out mp_20 pilot test structures (issue #14).

Two corpora:
- `--corpus mp_20_pilot` (the CPU run): mp_20 pilot train + val (2,000 structures); the shared robocrys descriptions are
  put in the description cache first, so robocrys does not run (rows without one would be described).
- `--corpus all` (the full-size run, e.g. on a GPU): `structure_corpus()`, every offline structure set (optionally
  `--max-per-source` rows of each), with `--exclude-task`'s compositions left out (clean protocol). The text view is
  the shared/committed robocrys description where one exists (mp_20 pilot, matbench phonons, the committed perov_5 and
  AFLOW subsets) given as a column, and masked elsewhere: robocrys never runs.
Both: retrieval on the mp_20 pilot test rows (1,000 structures, `--max-test` to cap), none of whose compositions is
in the pretraining rows. Views: crystal graph (CGCNN, the anchor; `--graph-kw` for a larger one), the description
(frozen MiniLM + trained projection) and the composition (tiny element-token BERT). Modes: anchored (MultiMat), all pairs.

    python benchmarks/run_contrastive_bench.py [--epochs 20] [--modes anchored,all] [--out benchmarks/results/contrastive]
    python benchmarks/run_contrastive_bench.py --corpus all --exclude-task matbench_expt_gap --device cuda --modes anchored \\
        --latent 128 --graph-kw '{"hidden_size": 128, "num_conv": 4}' --epochs 40 --out $OUT/contrastive
Writes <out>/<mode>_seed<seed>.json (retrieval top-1/5/10 both ways with chance, cost, settings) and the model under
<out>/models/<mode>_seed<seed>/ with `excluded_formulas.txt` (what the clean protocol left out).
"""
import argparse, json, os, platform, resource, time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from mmlit.core import DataError, default_device
from mmlit.data.structures import load_structure_set, structure_corpus
from mmlit.data.core import Dataset
from mmlit.comp.data import exclusion_set
from mmlit.text.describe import SHARED_DESCRIPTIONS, shared_descriptions, cache_descriptions
from mmlit.fusion.contrastive import ContrastiveModel

COMMITTED = Path(__file__).resolve().parent/"data"/"descriptions"   # robocrys subsets (see its README)

def with_descriptions(ds: Dataset) -> int:
    "Put the shared robocrys descriptions of these mp_20 pilot rows in the description cache."
    d = shared_descriptions("mp_20_pilot").set_index("id")
    rows = [i for i, x in enumerate(ds.ids) if str(x) in d.index and d.loc[str(x), "description"]]
    return cache_descriptions([ds.structures[i] for i in rows], [d.loc[str(ds.ids[i]), "description"] for i in rows])

def known_descriptions() -> dict:
    "(structure set, id) -> robocrys description: the shared files and the committed subsets (fallback texts left out)."
    out = {}
    for name in SHARED_DESCRIPTIONS:
        try: d = shared_descriptions(name)
        except DataError: continue   # that set is not in this machine's shared folder
        out.update({(name, str(i)): t for i, t in zip(d.id, d.description) if t})
    for f in sorted(COMMITTED.glob("*.csv.gz")):
        d = pd.read_csv(f, keep_default_na=False)
        d = d[(d.source == "robocrys") & (d.description != "")]
        src = "perov_5" if f.name.startswith("perov_5") else f.name[:-len(".csv.gz")]   # perov_5_gap: perov_5 rows
        out.update({(src, str(i)): t for i, t in zip(d.id, d.description)})
    return out

def with_description_column(ds: Dataset, known: dict, source: str | None = None) -> Dataset:
    "`ds` with `meta['description']`: the known description of each row (source from `meta['source']` or `source`), else None."
    meta = ds.meta.copy() if ds.meta is not None else pd.DataFrame(index=range(len(ds)))
    srcs = meta["source"].tolist() if source is None else [source] * len(ds)
    meta["description"] = [known.get((s, str(i))) for s, i in zip(srcs, ds.ids)]
    return replace(ds, meta=meta)

def corpora(a, test: Dataset):
    "(pretraining rows, held-out rows, rows to exclude by composition, notes) of the chosen corpus."
    tasks = []   # one teacher for several tasks: leave out the compositions of all of them
    if a.exclude_task:
        from mmlit.data.external import load_dataset
        tasks = [load_dataset(t) for t in a.exclude_task.split(",")]
    if a.corpus == "mp_20_pilot":
        ds = load_structure_set("mp_20_pilot", split=None, progress=False)
        split = ds.meta["split"].to_numpy()
        pre = ds.subset([i for i in range(len(ds)) if split[i] in ("train", "val")][:a.max_per_source])
        return pre, test, [test] + tasks, dict(descriptions_cached=with_descriptions(pre) + with_descriptions(test))
    pre = structure_corpus(max_rows=a.max_per_source, dedupe=a.dedupe, progress=False)
    disordered = [i for i, s in enumerate(pre.structures) if not s.is_ordered]   # graphs need ordered structures
    pre = pre.subset(sorted(set(range(len(pre))) - set(disordered)))
    known = known_descriptions()
    pre, test = with_description_column(pre, known), with_description_column(test, known, "mp_20_pilot")
    n_text = int(pre.meta.description.notna().sum())
    sources = pre.meta.source.value_counts().to_dict()
    return pre, test, [test] + tasks, dict(corpus_rows_by_source=sources, corpus_rows_with_text=n_text,
                                                                         disordered_dropped=len(disordered))

def warm_text_cache(datasets, device: torch.device) -> int:
    "Encode the description column with the frozen text encoder on `device` now (its cache then serves the model)."
    from mmlit.text.encoders import FrozenTextEncoder
    texts = sorted({t for ds in datasets for t in ds.meta.description if t})
    if texts: FrozenTextEncoder(device=str(device)).encode(texts, batch_size=128, progress=False)
    return len(texts)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", choices=("mp_20_pilot", "all"), default="mp_20_pilot")
    p.add_argument("--exclude-task", default=None, help="registered dataset(s), comma-separated, whose compositions are left out (clean protocol)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--modes", default="anchored,all")
    p.add_argument("--max-rows", "--max-per-source", dest="max_per_source", type=int, default=None,
                   help="cap the pretraining rows of each source (mp_20_pilot: of the pretraining split)")
    p.add_argument("--max-test", type=int, default=None, help="cap the held-out mp_20 pilot test rows")
    p.add_argument("--dedupe", default="formula+spacegroup", help="structure_corpus dedupe (formula+spacegroup, id, none)")
    p.add_argument("--latent", type=int, default=128)
    p.add_argument("--graph-kw", default="{}", help="JSON: graph encoder keywords, e.g. a larger CGCNN")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--time-limit", type=float, default=None, help="wall seconds of training per mode (best epoch kept)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the GPU when torch sees one)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--n-jobs", type=int, default=1, help="graph-building processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/contrastive")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = default_device(a.device)   # fails now, by name, on a device this machine lacks
    t_data = time.time()
    test = load_structure_set("mp_20_pilot", split="test", progress=False)
    if a.max_test: test = test.subset(list(range(min(a.max_test, len(test)))))
    pre, test, exclude, notes = corpora(a, test)
    text_kw = {"column": "description"} if a.corpus == "all" else {}
    n_warm = warm_text_cache([pre, test], dev) if a.corpus == "all" and dev.type == "cuda" else 0
    data_s = round(time.time() - t_data, 1)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    graph_kw = {"n_jobs": a.n_jobs, **json.loads(a.graph_kw)}
    for mode in a.modes.split(","):
        t0, c0 = time.time(), time.process_time()
        cm = ContrastiveModel(("graph", "text", "composition"), mode=mode, latent=a.latent, epochs=a.epochs, lr=a.lr,
                              batch_size=a.batch_size, patience=a.patience, seed=a.seed, progress=False, num_threads=a.threads,
                              time_limit=a.time_limit, device=a.device,
                              modality_kw={"graph": graph_kw, "text": text_kw}).fit(pre, exclude=exclude)
        ret = cm.retrieval(test)
        rec = dict(mode=mode, seed=a.seed, epochs=a.epochs, corpus=a.corpus, exclude_task=a.exclude_task,
                   settings={k: v for k, v in vars(a).items() if k not in ("out",)}, info=cm.info,
                   retrieval=ret.to_dict("records"), wall_s=round(time.time() - t0, 1), cpu_s=round(time.process_time() - c0, 1),
                   data_s=data_s, texts_encoded_on_device=n_warm, n_pretrain=len(pre), n_test=len(test), **notes,
                   device=str(next(cm.model.parameters()).device),
                   gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, torch=torch.__version__,
                   hardware=f"{platform.machine()}, {os.cpu_count()} cores, {a.threads} torch thread(s)", date=time.strftime("%Y-%m-%d"),
                   peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
        (out/f"{mode}_seed{a.seed}.json").write_text(json.dumps(rec, indent=1, default=str))
        print(mode, ret.round(3).to_string(index=False), rec["wall_s"], "s", flush=True)
        saved = cm.save(out/"models"/f"{mode}_seed{a.seed}")
        (saved/"excluded_formulas.txt").write_text("\n".join(sorted(exclusion_set(*exclude))))

if __name__ == "__main__":
    main()
