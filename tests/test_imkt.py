"Tests of the imKT stages: mmlit.comp.data / pretrain / align / finetune (tiny models, tiny corpora, CPU)."
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure

from mmlit.core import ConfigError, DataError
from mmlit.data.core import Dataset
from mmlit.comp.tokenizer import CompositionTokenizer
from mmlit.comp.model import load_composition_model, CompositionModelConfig
from mmlit.comp.teachers import Teacher, TorchModuleTeacher
from mmlit.comp.data import CompositionDataset, composition_corpus, exclusion_set, stability_weights
from mmlit.comp.pretrain import pretrain_mlm, read_stage
from mmlit.comp.align import align, CompositionForAlignment, alignment_loss
from mmlit.comp.finetune import finetune, predict, load_finetuned
from mmlit.comp.imkt import (run_imkt, parse_stages, ImKTConfig, ImKTModel, make_clm_model, register_clm_models, check_clean,
                             CLM_MODEL_NAMES)
from mmlit.train.core import TrainConfig

ELS = ["Li", "Na", "K", "Mg", "Ca", "Sr", "Ba", "Al", "Ga", "Zn", "Fe", "Co", "Ni", "Cu", "Ti", "O", "S", "Se", "F", "Cl", "Br", "N"]


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMLIT_CACHE", str(tmp_path/"cache"))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    "Tiny models run fastest single-threaded (20x faster than 2 threads on a busy 2-core machine)."
    n = torch.get_num_threads(); torch.set_num_threads(1); yield; torch.set_num_threads(n)


def formulas(n, seed=0):
    "n distinct binary formulas A_a B_b."
    rng, out = np.random.default_rng(seed), {}
    while len(out) < n:
        a, b = rng.choice(ELS, 2, replace=False); x, y = rng.integers(1, 5, 2)
        f = f"{a}{x}{b}{y}"
        from mmlit.data.composition import reduced_formula
        out.setdefault(reduced_formula(f), f)
    return list(out.values())


def toy_task(n=160, seed=1, name="toy_task"):
    "Compositions -> a smooth function of their elements' Z (learnable from tokens)."
    from pymatgen.core import Composition
    comps = formulas(n, seed)
    y = [sum(e.Z * f for e, f in Composition(c).fractional_composition.items()) / 10 for c in comps]
    return Dataset(name, [f"t{i}" for i in range(n)], comps, pd.DataFrame({"y": y}))


def tc(epochs, **kw):
    return TrainConfig(**{**dict(epochs=epochs, lr=3e-3, batch_size=16, progress=False, cpu=True, warmup_frac=0.1), **kw})


# --- stage 1 -------------------------------------------------------------------------------------------------------
def test_mlm_loss_decreases(tmp_path):
    res = pretrain_mlm(formulas(240), tc(5), arch="bert", preset="tiny", valid_frac=0.1, out_dir=tmp_path/"mlm")
    print("MLM train loss per epoch:", res.history.train_loss.round(3).tolist())
    assert res.last_loss < 0.85 * res.first_loss
    assert res.history.valid_loss.iloc[-1] < res.history.valid_loss.iloc[0]
    model, tok = load_composition_model(tmp_path/"mlm")
    assert type(model).__name__ == "CompositionForMaskedLM" and read_stage(tmp_path/"mlm")["n_train"] == 216


def test_mlm_stability_weights_reach_the_loss():
    corpus = Dataset("c", ["a", "b"], ["NaCl", "KBr"], pd.DataFrame(index=range(2)),
                     meta=pd.DataFrame({"e_above_hull": [0.0, 0.2]}))
    res = pretrain_mlm(corpus, tc(1, batch_size=2), valid_frac=0)
    assert res.info["mean_weight"] == pytest.approx(float(np.mean(stability_weights([0.0, 0.2]))))
    assert stability_weights([0.0])[0] == 1 and stability_weights([np.nan], missing=0.5)[0] == 0.5


# --- stage 2 -------------------------------------------------------------------------------------------------------
def rocksalts(n, seed=0):
    "n distinct rock-salt binaries (2-atom primitive fcc cells; `from_spacegroup` is 100x slower)."
    rng, out, seen = np.random.default_rng(seed), [], set()
    cations, anions = ["Li", "Na", "K", "Rb", "Mg", "Ca", "Sr", "Ba", "Zn", "Ni", "Co", "Fe"], ["O", "S", "Se", "F", "Cl", "Br", "I", "Te"]
    while len(out) < n:
        c, a = rng.choice(cations), rng.choice(anions); lat = float(rng.uniform(4, 6.5))
        if (c, a) in seen: continue
        seen.add((c, a))
        out.append(Structure(Lattice(np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]]) * lat / 2), [c, a], [[0, 0, 0], [0.5, 0.5, 0.5]]))
    return out


def featurize(structs):
    x = torch.zeros(len(structs), 61)
    for i, s in enumerate(structs):
        for el, f in s.composition.fractional_composition.items(): x[i, min(el.Z, 59)] = f
        x[i, 60] = s.volume / len(s) / 20
    return x


class HalfTeacher(Teacher):
    "Knows only structures containing oxygen or sulfur (NaN rows otherwise): exercises the mask."
    name, version, dim, cacheable = "half", "1", 4, False
    def _embed_batch(self, structures, ids):
        out = np.full((len(structures), 4), np.nan, np.float32)
        for i, s in enumerate(structures):
            if {"O", "S"} & {e.symbol for e in s.composition}: out[i] = [s.volume, s.density, len(s), s.volume / s.density]
        return out


def test_align_loss_decreases_with_missing_vectors(tmp_path):
    structs = rocksalts(90)
    corpus = Dataset("rs", [f"s{i}" for i in range(90)], [s.composition.reduced_formula for s in structs],
                     pd.DataFrame(index=range(90)), structures=structs)
    torch.manual_seed(0)
    lin = TorchModuleTeacher(torch.nn.Linear(61, 8), name="lin8", featurize=featurize)
    res = align(corpus, [lin, HalfTeacher()], tc(15), arch="bert", preset="tiny", cosine_weight=0.1,
                out_dir=tmp_path/"align", progress=False)
    print("align train loss per epoch:", res.history.train_loss.round(3).tolist())
    assert res.last_loss < 0.8 * res.first_loss
    n_half = res.info["teachers"]["half"]["n"]
    assert 0 < n_half < 90 and res.info["teachers"]["lin8"]["n"] == 90
    back = CompositionForAlignment.from_pretrained(tmp_path/"align")
    assert back.teacher_dims == {"lin8": 8, "half": 4}
    assert (tmp_path/"align"/"teacher_stats.npz").exists()


def test_alignment_loss_ignores_masked_rows():
    torch.manual_seed(0)
    preds, y = [torch.randn(3, 2), torch.randn(3, 4)], torch.randn(3, 6)
    mask = torch.tensor([[1, 0], [1, 1], [0, 1]])
    y2 = y.clone(); y2[0, 2:] = 1e9; y2[2, :2] = -1e9
    assert torch.isclose(alignment_loss(preds, y, mask), alignment_loss(preds, y2, mask))
    # a teacher absent from the whole batch does not count in the mean
    only_first = torch.tensor([[1, 0], [1, 0], [1, 0]])
    want = ((preds[0] - y[:, :2]) ** 2).mean()
    assert torch.isclose(alignment_loss(preds, y, only_first), want)
    with pytest.raises(DataError, match="columns"): alignment_loss(preds, y[:, :5], mask)


# --- stage 3 -------------------------------------------------------------------------------------------------------
def test_finetune_loss_decreases_and_predicts(tmp_path):
    task = toy_task(160)
    res = finetune(task, config=tc(8, patience=5, valid_frac=0.15), arch="bert", preset="tiny", out_dir=tmp_path/"ft")
    print("finetune train loss per epoch:", res.history.train_loss.round(3).tolist())
    assert res.last_loss < 0.7 * res.first_loss
    m, tok, scaler = load_finetuned(tmp_path/"ft")
    p = predict(m, tok, task, scaler)
    assert p.shape == (160,) and np.isfinite(p).all()
    mae, mad = np.abs(p - task.y()).mean(), np.abs(task.y() - task.y().mean()).mean()
    print(f"finetune train-set MAE {mae:.3f} vs MAD {mad:.3f}")
    assert mae < mad   # in target units (the scaler was saved and applied)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ConfigError, match="distill"): parse_stages("mlm+distill+ft")
    with pytest.raises(ConfigError, match="distill"): run_imkt(toy_task(20), stages="distill")
    with pytest.raises(ConfigError, match="order"): ImKTConfig(stages=("finetune", "mlm"))
    bad = toy_task(20); bad.targets.loc[3, "y"] = np.nan
    with pytest.raises(DataError, match="t3"): finetune(bad, config=tc(1))
    with pytest.raises(DataError, match="non-finite"): CompositionDataset(["NaCl"], CompositionTokenizer(), targets=[np.inf])
    with pytest.raises(ConfigError, match="bad model name"): make_clm_model("clm-bert-tiny")
    with pytest.raises(ConfigError, match="clean protocol"):   # unknown task and no exclude=: refuse to pretrain
        ImKTModel(stages="mlm+ft").fit(toy_task(20, name="not_registered"))


# --- pipeline + clean protocol -------------------------------------------------------------------------------------
def test_pipeline_checkpoints_and_clean_protocol(tmp_path):
    task = toy_task(60, seed=3)
    # corpora that contain task compositions, spelled differently (x2 multiples)
    from pymatgen.core import Composition
    doubled = [(Composition(c) * 2).formula.replace(" ", "") for c in task.compositions[:15]]
    mlm_src = Dataset("src", [f"m{i}" for i in range(215)], formulas(200, seed=9) + doubled, pd.DataFrame(index=range(215)))
    structs = rocksalts(40, seed=2)
    task_with_rocksalt = Dataset("toy_task", task.ids + ["r0"], task.compositions + [structs[0].composition.reduced_formula],
                                 pd.concat([task.targets, pd.DataFrame({"y": [1.0]})], ignore_index=True))
    st_src = Dataset("st", [f"s{i}" for i in range(40)], [s.composition.reduced_formula for s in structs],
                     pd.DataFrame(index=range(40)), structures=structs)
    torch.manual_seed(0)
    lin = TorchModuleTeacher(torch.nn.Linear(61, 8), name="lin8", featurize=featurize)
    kw = dict(mlm_sources=(mlm_src,), mlm_epochs=2, align_sources=(st_src,), align_epochs=2, ft_epochs=3, patience=2,
              batch_size=16, device="cpu", progress=False)
    r = run_imkt(task_with_rocksalt, "mlm+align+ft", teachers=[lin], out_dir=tmp_path, **kw)
    excluded = exclusion_set(task_with_rocksalt)
    for stage, path in r.stage_paths.items():
        corpus = set((path/"corpus_formulas.txt").read_text().split())
        assert corpus and not corpus & excluded, f"{stage} corpus leaks task compositions"
        assert check_clean(path, task_with_rocksalt)
        m, tok = load_composition_model(path)     # a loadable HF directory
        assert m.config.arch == "bert"
    want = exclusion_set(formulas(200, seed=9)) - excluded      # the source minus the task (some overlap by chance)
    assert set((r.stage_paths["mlm"]/"corpus_formulas.txt").read_text().split()) == want
    assert "clean" in r.bench.protocol and "clean" in r.bench.params["imkt_protocol"]
    # same config: stage checkpoints reused (not retrained)
    stamp = {k: (p/"model.safetensors").stat().st_mtime_ns for k, p in r.stage_paths.items()}
    r2 = run_imkt(task_with_rocksalt, "mlm+align+ft", teachers=[lin], out_dir=tmp_path, **kw)
    assert {k: (p/"model.safetensors").stat().st_mtime_ns for k, p in r2.stage_paths.items()} == stamp
    # another budget -> another checkpoint
    r3 = run_imkt(task_with_rocksalt, "mlm+ft", out_dir=tmp_path, **{**kw, "mlm_epochs": 1})
    assert r3.stage_paths["mlm"] != r.stage_paths["mlm"]
    # pretraining only: the MLM checkpoint of r3 is reused, nothing is finetuned
    r4 = run_imkt(task_with_rocksalt, "mlm", out_dir=tmp_path, **{**kw, "mlm_epochs": 1})
    assert r4.bench is None and r4.stage_paths == r3.stage_paths and "pretraining only" in repr(r4)
    with pytest.raises(ConfigError, match="no finetune stage"): ImKTModel(stages="mlm").fit(task)
    # a task whose formula the stage has seen is not clean; one that is absent from its corpus is
    seen = (r3.stage_paths["mlm"]/"corpus_formulas.txt").read_text().split()[0]
    assert not check_clean(r3.stage_paths["mlm"], Dataset("other", ["z"], [seen], pd.DataFrame({"y": [0.]})))
    assert check_clean(r3.stage_paths["mlm"], Dataset("other", ["z"], ["Fe0.7Cr0.18Ni0.1C0.0004Mn0.0196"], pd.DataFrame({"y": [0.]})))
    # protocol "none": the task's compositions stay in the corpus (and the checkpoint is not clean for the task)
    r5 = run_imkt(task_with_rocksalt, "mlm", out_dir=tmp_path, **{**kw, "mlm_epochs": 1, "protocol": "none"})
    assert set((r5.stage_paths["mlm"]/"corpus_formulas.txt").read_text().split()) & excluded
    assert not check_clean(r5.stage_paths["mlm"], task_with_rocksalt)


def test_bench_registry_names():
    reg = {}
    register_clm_models(lambda n, f, d: reg.__setitem__(n, f))
    assert set(reg) == set(CLM_MODEL_NAMES) and "clm-bert-tiny-mlm+align+ft" in reg and "clm-modernbert-small-ft" in reg
    m = reg["clm-roformer-base-align+ft"](seed=3, progress=False, n_jobs=2)
    assert (m.config.arch, m.config.preset, m.config.stages, m.config.seed) == ("roformer", "base", ("align", "finetune"), 3)


@pytest.mark.parametrize("arch,preset", [("bert", "small"), ("roformer", "small"), ("modernbert", "small"),
                                         ("modernbert", "base")])
def test_larger_presets_train_and_round_trip(tmp_path, arch, preset):
    "The presets meant for a GPU go through the same code path on the CPU: one finetuning epoch, save, reload, predict."
    task = toy_task(24, seed=5)
    res = finetune(task, config=tc(1, batch_size=8, valid_frac=0.25, num_threads=2), arch=arch, preset=preset,
                   out_dir=tmp_path/"ft")
    assert np.isfinite(res.history.train_loss).all() and np.isfinite(res.history.valid_loss).all()
    m, tok, scaler = load_finetuned(tmp_path/"ft")
    assert (m.config.arch, m.config.preset) == (arch, preset)
    p = predict(m, tok, task, scaler)
    np.testing.assert_allclose(p, predict(res.model, res.tokenizer, task, scaler), rtol=1e-5, atol=1e-6)


_BUILD_STAGE = """
import json, os, sys, torch
torch.set_num_threads(1)
import mmlit.comp.imkt as ft
from mmlit.comp.imkt import ImKTConfig, pretrain_imkt
build = ft._build_stage
def logged_build(cfg, stage, path, *a):   # record every build of a stage, by process
    with open(sys.argv[2], "a") as f: f.write(f"{os.getpid()} {stage}\\n")
    return build(cfg, stage, path, *a)
ft._build_stage = logged_build
cfg = ImKTConfig(stages="mlm+ft", mlm_sources=("ricci",), mlm_max_size=600, mlm_epochs=6, batch_size=16, protocol="none",
                 device="cpu", progress=False, out_dir=sys.argv[1])
print(json.dumps({k: str(v) for k, v in pretrain_imkt(cfg).items()}))
"""

def test_parallel_processes_share_one_stage_build(tmp_path):
    "Two processes asking for the same pretraining stage at once: one trains, the other waits and reuses it."
    import subprocess, sys, os
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MMLIT_CACHE": str(tmp_path/"cache")}
    log = tmp_path/"builds.txt"
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD_STAGE, str(tmp_path/"stages"), str(log)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs): assert p.returncode == 0, err[-2000:]
    paths = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert paths[0] == paths[1]
    assert len(log.read_text().splitlines()) == 1, log.read_text()   # built by one process only
    mlm = Path(paths[0]["mlm"])
    assert read_stage(mlm) and len(pd.read_csv(mlm/"history.csv")) == 6   # trained once, not twice into one folder
    m, tok = load_composition_model(mlm)
    assert m.config.task == "mlm"
