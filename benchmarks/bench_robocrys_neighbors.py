"""Is robocrys faster with another neighbour finder or mineral matcher, and is its text the same?

Describes a fixed sample (the first 20 mp_20 pilot test structures, the first 20 perov_5 test structures and the
first 10 matbench_phonons structures) with robocrys 0.2.13 under several condenser configurations, each in its own
fresh process (so no configuration profits from another's caches), one structure at a time, and records per
structure the CPU seconds (`time.process_time`, condense + describe) and the canonical text. Each configuration's
texts are compared byte for byte with the default configuration's; the default's are also compared with the shared
robocrys 0.2.13 descriptions of mp_20_pilot and matbench_phonons. Before timing, each process describes one shipped
structure (pymatgen's example set) after importing robocrys, to fill its caches; the import and that first
structure (warm-up) are reported apart.

Configurations:
  default                   StructureCondenser() as in `robocrys_description`
  crystalnn_cutoff5         CrystalNN(search_cutoff=5.0) (default 7 Å) as the bonding neighbour finder
  fast_minerals             default neighbours, mmlit's reduce-once AFLOW mineral matcher (`fast_minerals=True`)
  fast_minerals_cutoff5     both of the above

Run (about 8 CPU-minutes on one core, 23 min wall on the shared 2-core machine; MMLIT_DATA must hold the sets):
    OMP_NUM_THREADS=1 MMLIT_DATA=/work/shared/data nice -n 10 python benchmarks/bench_robocrys_neighbors.py
Writes benchmarks/results/modalities/robocrys_neighbors.json. `--profile N` instead prints a cProfile of the default
condenser on the first N sample structures.
"""
from __future__ import annotations
import argparse, datetime, difflib, json, os, platform, re, statistics, sys, time, warnings
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from multiprocessing import get_context
from pathlib import Path

OUT = Path(__file__).parent/"results"/"modalities"/"robocrys_neighbors.json"
SAMPLE = [("mp_20_pilot", "test", 20), ("perov_5", "test", 20), ("matbench_phonons", None, 10)]
CONFIGS = {
    "default": dict(cutoff=None, fast_minerals=False),
    "crystalnn_cutoff5": dict(cutoff=5.0, fast_minerals=False),
    "fast_minerals": dict(cutoff=None, fast_minerals=True),
    "fast_minerals_cutoff5": dict(cutoff=5.0, fast_minerals=True),
}


def load_sample():
    from mmlit.data.structures import load_structure_set
    rows = []
    for name, split, n in SAMPLE:
        ds = load_structure_set(name, split=split, max_rows=n, progress=False)
        rows += [(name, str(i), s) for i, s in zip(ds.ids, ds.structures)]
    return rows


def _condenser(cutoff, fast_minerals):
    "robocrys' condenser as mmlit builds it (molecule db read once), with the benchmarked knobs."
    from pymatgen.analysis.local_env import CrystalNN
    from robocrys import StructureCondenser
    from mmlit.text.describe import _load_robocrys, _reduce_once_mineral_matcher
    _, describer = _load_robocrys()   # imports robocrys and applies mmlit's molecule-db patch
    kw = {}
    if cutoff is not None: kw["near_neighbors"] = CrystalNN(search_cutoff=cutoff)
    if fast_minerals: kw["mineral_matcher"] = _reduce_once_mineral_matcher()
    return StructureCondenser(**kw), describer


def _timed(obj, method, acc, key):
    "Wrap `obj.method` (on this instance only) to add its CPU seconds to acc[key]."
    f = getattr(obj, method)
    def wrapped(*a, **kw):
        t0 = time.process_time()
        try: return f(*a, **kw)
        finally: acc[key] += time.process_time() - t0
    setattr(obj, method, wrapped)


def run_config(name, rows, warm):
    "In a fresh process: warm up on `warm`, then describe each structure; CPU seconds, phase seconds and texts."
    warnings.simplefilter("ignore")
    from mmlit.text.describe import canonical_description
    t0 = time.process_time()
    condenser, describer = _condenser(**CONFIGS[name])
    t1 = time.process_time()
    describer.describe(condenser.condense_structure(warm))
    imports, warmup = t1 - t0, time.process_time() - t1
    phases = dict(neighbours=0.0, minerals=0.0, describe=0.0)
    _timed(condenser.near_neighbors, "get_bonded_structure", phases, "neighbours")
    _timed(condenser.mineral_matcher, "get_best_mineral_name", phases, "minerals")
    _timed(describer, "describe", phases, "describe")
    out = []
    for set_name, sid, s in rows:
        t0 = time.process_time()
        try: text, err = canonical_description(describer.describe(condenser.condense_structure(s))), ""
        except Exception as e: text, err = None, f"{type(e).__name__}: {str(e)[:200]}"
        out.append(dict(set=set_name, id=sid, seconds=time.process_time() - t0, text=text, error=err))
    total = sum(r["seconds"] for r in out)
    phases["other (symmetry, components, site analysis)"] = total - sum(phases.values())
    return dict(import_seconds=imports, warmup_seconds=warmup, phase_seconds=phases, rows=out)


def _sentences(t): return re.split(r"(?<=\.) ", t or "")


def example_diff(a, b, width=1500):
    d = "\n".join(difflib.unified_diff(_sentences(a), _sentences(b), "default", "config", lineterm="", n=0))
    return d[:width]


def summarise(name, res, ref):
    rows = res["rows"]
    secs = [r["seconds"] for r in rows]
    differ = [r for r, d in zip(rows, ref) if r["text"] != d["text"]]
    per_set = {s: round(statistics.mean(r["seconds"] for r in rows if r["set"] == s), 3) for s in dict.fromkeys(r["set"] for r in rows)}
    return {"seconds_per_structure": round(statistics.mean(secs), 3), "median_seconds": round(statistics.median(secs), 3),
            "seconds_per_structure_by_set": per_set, "n": len(rows), "identical_to_default": len(rows) - len(differ),
            "errors": sum(bool(r["error"]) for r in rows), "import_seconds": round(res["import_seconds"], 2),
            "warmup_seconds": round(res["warmup_seconds"], 2),
            "phase_seconds_per_structure": {k: round(v / len(rows), 3) for k, v in res["phase_seconds"].items()},
            "differing_ids": [f"{r['set']}:{r['id']}" for r in differ],
            "example_diff": example_diff(ref[rows.index(differ[0])]["text"], differ[0]["text"]) if differ else ""}


def check_shared(ref):
    "How many default texts equal the shared robocrys 0.2.13 descriptions (canonical) of the same structures."
    from mmlit.text.describe import shared_descriptions
    out = {}
    for set_name in ("mp_20_pilot", "matbench_phonons"):
        sd = shared_descriptions(set_name).set_index("id").description
        mine = [r for r in ref if r["set"] == set_name]
        out[set_name] = dict(n=len(mine), identical=sum(sd.get(r["id"]) == r["text"] for r in mine))
    return out


def hardware():
    model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), platform.processor())
    return dict(cpu=model, cores=os.cpu_count(), threads=1, note="shared with other jobs; CPU time per structure, one thread",
                loadavg_at_start=os.getloadavg()[0], python=platform.python_version(),
                robocrys=version("robocrys"), pymatgen=version("pymatgen"))


def profile(n):
    import cProfile, pstats
    warnings.simplefilter("ignore")
    rows = load_sample()[:n]
    condenser, describer = _condenser(None, False)
    pr = cProfile.Profile(); pr.enable()
    for _, _, s in rows: describer.describe(condenser.condense_structure(s))
    pr.disable(); pstats.Stats(pr).sort_stats("cumulative").print_stats(30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", type=int, default=0, help="print a cProfile of the default on this many structures instead")
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    a = ap.parse_args()
    if a.profile: return profile(a.profile)
    if os.environ.get("OMP_NUM_THREADS") != "1": sys.exit("run with OMP_NUM_THREADS=1 (see the docstring)")
    from mmlit.data.structures import load_structure_set
    hw, started = hardware(), time.time()
    rows = load_sample()
    warm = load_structure_set("pymatgen_structures", progress=False).structures[0]
    results = {}
    for name in ["default"] + [c for c in a.configs if c != "default"]:
        print(f"{name} ...", flush=True)
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:   # fresh caches per configuration
            results[name] = pool.submit(run_config, name, rows, warm).result()
        print(f"  {statistics.mean(r['seconds'] for r in results[name]['rows']):.2f} s/structure", flush=True)
    ref = results["default"]["rows"]
    summary = {name: summarise(name, res, ref) for name, res in results.items()}
    base = summary["default"]["seconds_per_structure"]
    for s in summary.values(): s["speedup_vs_default"] = round(base / s["seconds_per_structure"], 2)
    out = dict(benchmark="robocrys condenser configurations: CPU time and identical text",
               date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               command="OMP_NUM_THREADS=1 MMLIT_DATA=/work/shared/data nice -n 10 python benchmarks/bench_robocrys_neighbors.py",
               sample=[dict(set=s, split=sp, first_n=n) for s, sp, n in SAMPLE], warmup_structure="pymatgen_structures[0]",
               hardware=hw, wall_seconds=round(time.time() - started), configs=summary,
               default_vs_shared_descriptions=check_shared(ref))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    for name, s in summary.items():
        print(f"{name:24s} {s['seconds_per_structure']:.2f} s/structure  x{s['speedup_vs_default']}  identical {s['identical_to_default']}/{s['n']}")
    print("default vs shared:", out["default_vs_shared_descriptions"], "->", OUT)


if __name__ == "__main__":
    main()
