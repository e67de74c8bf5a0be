"""imKT with teacher = CHGNet / our own multimodal (contrastive) model / both, fold-paired (issue #14).

For each matbench task: a `ContrastiveModel` (graph anchor; description and composition views) is pretrained on the
mp_20 pilot structures with every composition of the task excluded (the clean protocol holds for the teacher too);
then the `elm-imkt` recipe (MLM -> alignment -> finetuning, clean protocol) runs with each teacher set on the same
folds. The MLM stage does not depend on the teacher, so the three runs share it; only alignment and finetuning differ.

    python benchmarks/run_teacher_comparison.py --tasks expt_gap --folds 0 [--clip-epochs 15]
Outputs: benchmarks/results/teacher_comparison/matbench_<task>/<teachers>/ (results.json, predictions) and
teacher.json (the contrastive model's retrieval on the held-out mp_20 pilot test rows and its cost).
"""
import argparse, json, os, time
from pathlib import Path

import torch

from mmlit.bench.core import save_bench, parse_folds
from mmlit.comp.finetune import run_imkt
from mmlit.comp.recipes import recipe_config
from mmlit.data.external import load_matbench
from mmlit.data.structures import load_structure_set
from mmlit.fusion.contrastive import ContrastiveModel

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="expt_gap")
    p.add_argument("--folds", default="0")
    p.add_argument("--clip-epochs", type=int, default=15)
    p.add_argument("--teachers", default="chgnet,multimodal,chgnet+multimodal")
    p.add_argument("--out", default="benchmarks/results/teacher_comparison")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from run_contrastive_bench import with_descriptions   # the shared descriptions -> description cache
    structs = load_structure_set("mp_20_pilot", progress=False)
    with_descriptions(structs)
    split = structs.meta["split"].to_numpy()
    for name in a.tasks.split(","):
        task = load_matbench(name, progress=False)
        out = Path(a.out)/task.name; out.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        pre = structs.subset([i for i in range(len(structs)) if split[i] != "test"])
        cm = ContrastiveModel(("graph", "text", "composition"), epochs=a.clip_epochs, progress=False, num_threads=1).fit(pre, exclude=task)
        held = structs.subset([i for i in range(len(structs)) if split[i] == "test"])
        ret = cm.retrieval(held)
        (out/"teacher.json").write_text(json.dumps(dict(info=cm.info, retrieval=ret.to_dict("records"),
                                                        seconds=round(time.time() - t0, 1)), indent=1, default=str))
        teacher = cm.teacher()
        sets = {"chgnet": ["chgnet"], "multimodal": [teacher], "chgnet+multimodal": ["chgnet", teacher]}
        for tag in a.teachers.split(","):
            t1 = time.time()
            r = run_imkt(task, config=recipe_config("elm-imkt", progress=False), teachers=sets[tag], folds=parse_folds(a.folds))
            r.bench.extra.update(teachers=tag, recipe="elm-imkt", teacher_version=teacher.version)
            save_bench(r.bench, out/tag, plot=False)
            print(task.name, tag, f"MAE {r.bench.mean():.4f}", f"{time.time() - t1:.0f} s", flush=True)

if __name__ == "__main__":
    main()
