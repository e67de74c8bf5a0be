"""imKT with teacher = CHGNet / our own multimodal (contrastive) model / both, fold-paired (issue #14).

For each matbench task: a `ContrastiveModel` (graph anchor; description and composition views) is pretrained on the
mp_20 pilot structures with every composition of the task excluded (the clean protocol holds for the teacher too),
or a saved one is loaded (`--teacher-model`, e.g. the full-size model of `run_contrastive_bench.py --corpus all`; its
`excluded_formulas.txt` must hold every composition of the task, or this stops); then the imKT recipe (`elm-imkt`:
MLM -> alignment -> finetuning, clean protocol) runs with each teacher set on the same folds. The MLM stage does not
depend on the teacher, so the runs share it; only alignment and finetuning differ.

    python benchmarks/run_teacher_comparison.py --tasks expt_gap --folds 0 [--clip-epochs 15]
    python benchmarks/run_teacher_comparison.py --tasks expt_gap --folds 0 --teachers multimodal --preset small \\
        --device cuda --teacher-model $OUT/contrastive/models/anchored_seed0 --recipe-kw '{"time_limit": 120}'
Outputs: <out>/matbench_<task>/<teachers><suffix>/ (results.json, predictions; folds already there with the same
settings are kept, so runs resume and extend fold by fold) and teacher<suffix>.json (the contrastive
model's retrieval on the held-out mp_20 pilot test rows and its cost, or where the loaded teacher came from).
"""
import argparse, json, time
from pathlib import Path

import torch

from mmlit.core import ConfigError, default_device
from mmlit.bench.core import parse_folds, resume_bench, save_resumed
from mmlit.comp.data import exclusion_set
from mmlit.comp.imkt import run_imkt
from mmlit.comp.recipes import recipe_config
from mmlit.data.external import load_matbench
from mmlit.data.structures import load_structure_set
from mmlit.fusion.contrastive import ContrastiveModel

def saved_teacher(path, task, device) -> ContrastiveModel:
    "A saved contrastive model whose pretraining left out every composition of `task` (checked, not assumed)."
    ex = Path(path)/"excluded_formulas.txt"
    if not ex.exists(): raise ConfigError(f"{path}: no excluded_formulas.txt, so the clean protocol cannot be checked")
    missing = exclusion_set(task) - set(ex.read_text().split())
    if missing: raise ConfigError(f"{path} does not list {len(missing)} compositions of {task.name} as excluded from its "
                                  f"pretraining (e.g. {sorted(missing)[:3]}): the clean protocol is not shown")
    return ContrastiveModel.load(path, device=device)

def recorded_path(path) -> str:
    "`path` as result files record it: relative to the repository that holds it, so records read the same in any checkout."
    p = Path(path).resolve()
    root = next((d for d in p.parents if (d/"settings.ini").exists() and (d/"mmlit").is_dir()), None)
    return str(p.relative_to(root)) if root else str(p)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="expt_gap")
    p.add_argument("--folds", default="0")
    p.add_argument("--clip-epochs", type=int, default=15)
    p.add_argument("--teachers", default="chgnet,multimodal,chgnet+multimodal")
    p.add_argument("--teacher-model", default=None, help="a saved ContrastiveModel to use instead of pretraining one")
    p.add_argument("--recipe", default="elm-imkt")
    p.add_argument("--preset", default=None, help="backbone preset (e.g. small: the recipe's width override is dropped)")
    p.add_argument("--recipe-kw", default="{}", help="JSON: more ImKTConfig fields (budgets, time_limit, out_dir, ...)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the GPU when torch sees one)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--suffix", default="", help="appended to each result folder's name, e.g. -small-cuda")
    p.add_argument("--out", default="benchmarks/results/teacher_comparison")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    default_device(a.device)   # fails now, by name, on a device this machine lacks
    kw = dict(progress=False, device=a.device, num_threads=a.threads, **json.loads(a.recipe_kw))
    if a.preset: kw.update(preset=a.preset, backbone_overrides=None)
    cfg = recipe_config(a.recipe, **kw)
    teacher_path = a.teacher_model and recorded_path(a.teacher_model)   # as the result files record it
    structs = None
    tags = a.teachers.split(",")
    if bad := [t for t in tags if t not in ("chgnet", "multimodal", "chgnet+multimodal")]:
        raise ConfigError(f"unknown teacher set(s) {bad}; choose from chgnet, multimodal, chgnet+multimodal")
    for name in a.tasks.split(","):
        task = load_matbench(name, progress=False)
        out = Path(a.out)/task.name; out.mkdir(parents=True, exist_ok=True)
        teacher = None
        if any("multimodal" in t for t in tags):   # CHGNet alone needs no contrastive model
            t0 = time.time()
            if a.teacher_model:
                cm = saved_teacher(a.teacher_model, task, a.device)
                record = dict(loaded_from=teacher_path, info=cm.info)
            else:
                if structs is None:
                    from run_contrastive_bench import with_descriptions   # the shared descriptions -> description cache
                    structs = load_structure_set("mp_20_pilot", progress=False)
                    with_descriptions(structs)
                    split = structs.meta["split"].to_numpy()
                pre = structs.subset([i for i in range(len(structs)) if split[i] != "test"])
                cm = ContrastiveModel(("graph", "text", "composition"), epochs=a.clip_epochs, progress=False,
                                      num_threads=a.threads, device=a.device).fit(pre, exclude=task)
                held = structs.subset([i for i in range(len(structs)) if split[i] == "test"])
                record = dict(info=cm.info, retrieval=cm.retrieval(held).to_dict("records"))
            teacher = cm.teacher()
            record = dict(record, teacher_version=teacher.version, seconds=round(time.time() - t0, 1))
        sets = {"chgnet": ["chgnet"], "multimodal": [teacher], "chgnet+multimodal": ["chgnet", teacher]}
        for tag in tags:
            t1 = time.time()
            # resume: folds saved with the same recipe (and the same multimodal teacher) are kept, only the others run
            same = dict(recipe=a.recipe, preset=a.preset) | ({"teacher_version": teacher.version} if teacher and "multimodal" in tag else {})
            old, todo = resume_bench(out/f"{tag}{a.suffix}", parse_folds(a.folds), same)
            if not todo: print(task.name, tag, "all folds done", flush=True); continue
            if teacher and "multimodal" in tag:   # only once a run is accepted: a refused resume changes no result file
                (out/f"teacher{a.suffix}.json").write_text(json.dumps(record, indent=1, default=str))
            r = run_imkt(task, config=cfg, teachers=sets[tag], folds=todo)
            r.bench.extra.update(teachers=tag, device=str(default_device(a.device)), teacher_model=teacher_path,
                                 gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, **same)
            res = save_resumed(r.bench, out/f"{tag}{a.suffix}", same, plot=False)   # keeps folds other lanes saved meanwhile
            print(task.name, tag, f"MAE {res.mean():.4f} over folds {[f.fold for f in res.folds]}", f"{time.time() - t1:.0f} s", flush=True)

if __name__ == "__main__":
    main()
