"""The DDP path on CPU: two processes (torchrun, gloo) train, checkpoint per-rank RNG states, and a run stopped
mid-epoch and resumed ends with bit-identical weights to an uninterrupted 2-process run."""
import os, shutil, subprocess, sys, textwrap

import pytest
import torch

TORCHRUN = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")

SCRIPT = textwrap.dedent('''
    import os, sys, torch
    torch.set_num_threads(1)
    from mmlit.core import seed_everything
    from mmlit.testing import SyntheticSequences, TinySeqRegressor
    from mmlit.train.core import Callback, Trainer, TrainConfig

    class Stop(Callback):  # simulated crash right after optimizer step STOP_AT
        def after_step(self):
            if self.trainer.step == int(os.environ.get("STOP_AT", -1)): raise SystemExit(3)

    out, resume = sys.argv[1], sys.argv[2] == "1"
    seed_everything(0)
    tr = Trainer(TinySeqRegressor(32, dim=32, dropout=0.2), SyntheticSequences(n=200), callbacks=[Stop()],
                 config=TrainConfig(lr=1e-2, epochs=3, batch_size=16, patience=3, out_dir=out, save_every_n_steps=4,
                                    progress=False))
    h = tr.fit(resume=resume)
    assert tr.accelerator.num_processes == 2 and tr.steps_per_epoch == 6
    if tr.accelerator.is_main_process:
        torch.save({"model": tr.unwrapped.state_dict(), "history": tr.history}, out + "/final.pt")
''')


def _torchrun(script, out, resume, stop_at=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if stop_at: env["STOP_AT"] = str(stop_at)
    return subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", str(script), str(out),
                           "1" if resume else "0"], env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun not found")
def test_ddp_cpu_resume_bit_identical(tmp_path):
    script = tmp_path/"ddp.py"; script.write_text(SCRIPT)
    r = _torchrun(script, tmp_path/"full", False)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _torchrun(script, tmp_path/"cut", False, stop_at=10)
    assert r.returncode != 0                                   # the simulated crash
    ck = torch.load(tmp_path/"cut"/"checkpoints"/"last.pt", weights_only=False)
    assert (ck["epoch"], ck["batch_in_epoch"], ck["step"]) == (1, 2, 8) and len(ck["rng"]) == 2
    r = _torchrun(script, tmp_path/"cut", True)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (torch.load(tmp_path/d/"final.pt", weights_only=False) for d in ("full", "cut"))
    for k, v in a["model"].items(): assert torch.equal(v, b["model"][k]), k
    assert [h["valid_loss"] for h in a["history"]] == [h["valid_loss"] for h in b["history"]]
