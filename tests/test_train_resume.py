"""Exact resume: a training process killed with SIGKILL mid-epoch, resumed from its last checkpoint, ends with
bit-identical weights (CPU) to an uninterrupted run. The model has dropout, so the RNG states must be restored too."""
import os, shutil, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pytest
import torch

SCRIPT = textwrap.dedent('''
    import sys, time, torch
    from mmlit.core import seed_everything
    from mmlit.testing import SyntheticSequences, TinySeqRegressor
    from mmlit.train.core import Callback, Trainer, TrainConfig

    out, resume, sleep = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3])
    torch.set_num_threads(1)

    class Slow(Callback):  # slows the steps down so the parent can kill us mid-epoch (no effect on the numbers)
        def after_step(self): time.sleep(sleep)

    seed_everything(0)
    model = TinySeqRegressor(vocab_size=32, dim=32, dropout=0.2)
    cfg = TrainConfig(lr=5e-3, epochs=3, batch_size=16, warmup_frac=0.2, schedule="cosine", patience=5,
                      seed=123, out_dir=out, save_every_n_steps=4, num_workers=0, deterministic=True, progress=False)
    tr = Trainer(model, SyntheticSequences(n=300, vocab_size=32), config=cfg, callbacks=[Slow()] if sleep else [])
    tr.fit(resume=resume)
    torch.save({"model": tr.unwrapped.state_dict(), "history": tr.history}, f"{out}/final.pt")
''')


def _run(script, out, resume=False, sleep=0.0):
    cmd = [sys.executable, str(script), str(out), "1" if resume else "0", str(sleep)]
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_mid_epoch_checkpoint(proc, ckpt, timeout=90):
    "Poll the checkpoint file until it is a mid-epoch one of epoch >= 2 (0-based 1)."
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        if ckpt.exists():
            ck = torch.load(ckpt, weights_only=False)
            if ck["epoch"] >= 1 and ck["batch_in_epoch"] > 0: return
        time.sleep(0.02)
    raise TimeoutError("no mid-epoch checkpoint appeared")


def _weights(path): return torch.load(path, weights_only=False)


def _finish(proc):
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err.decode()[-3000:]


def _tamper_rng(ckpt):
    "Replace the saved torch RNG state (negative control: resuming from it must NOT reproduce the reference)."
    ck = torch.load(ckpt, weights_only=False)
    ck["rng"][0]["torch"] = torch.Generator().manual_seed(999).get_state()
    torch.save(ck, ckpt)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "Two rounds of two concurrent processes: (reference, to-be-killed), then (resume, tampered resume)."
    d = tmp_path_factory.mktemp("resume")
    script = d/"train.py"; script.write_text(SCRIPT)
    full = _run(script, d/"full")                       # uninterrupted reference
    proc = _run(script, d/"killed", sleep=0.05)
    ckpt = d/"killed"/"checkpoints"/"last.pt"
    try: _wait_mid_epoch_checkpoint(proc, ckpt)
    finally:
        proc.send_signal(signal.SIGKILL); proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_state = torch.load(ckpt, weights_only=False)
    shutil.copytree(d/"killed", d/"tampered")
    _tamper_rng(d/"tampered"/"checkpoints"/"last.pt")
    resumed, tampered = _run(script, d/"killed", resume=True), _run(script, d/"tampered", resume=True)
    for p in (full, resumed, tampered): _finish(p)
    return d, killed_state


def test_killed_run_left_a_mid_epoch_checkpoint(runs):
    d, ck = runs
    assert ck["epoch"] >= 1 and 0 < ck["batch_in_epoch"] and ck["step"] % 4 == 0
    assert len(list((d/"killed"/"checkpoints").glob("*.tmp"))) == 0


def test_resumed_weights_bit_identical(runs):
    d, _ = runs
    full, resumed = _weights(d/"full"/"final.pt"), _weights(d/"killed"/"final.pt")
    assert full["model"].keys() == resumed["model"].keys()
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), f"{k} differs after resume"
    drop_time = lambda h: [{k: v for k, v in r.items() if k != "time"} for r in h]
    assert drop_time(full["history"]) == drop_time(resumed["history"])


def test_rng_restore_matters(runs):
    "Negative control: the same resume with the torch RNG state replaced ends with different weights."
    d, _ = runs
    full, tampered = _weights(d/"full"/"final.pt"), _weights(d/"tampered"/"final.pt")
    assert any(not torch.equal(v, tampered["model"][k]) for k, v in full["model"].items())
