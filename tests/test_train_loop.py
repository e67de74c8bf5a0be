"""Training loop behaviour: divergence stop, non-finite targets, early stopping + best restore, schedules, sampler,
target scaling, resume config checks."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mmlit.core import ConfigError, DataError, seed_everything
from mmlit.testing import SyntheticSequences, SyntheticTabular, TinyMLP, TinySeqRegressor
from mmlit.train.core import Callback, Trainer, TrainConfig, TrainingDivergedError, make_optimizer, make_scheduler
from mmlit.train.data import EpochBatchSampler

torch.set_num_threads(1)


def cfg(**kw): return TrainConfig(**{"progress": False, **kw})


# ---------------------------------------------------------------- divergence
def _finite(sd): return all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())


def test_huge_lr_diverges_and_keeps_last_good_checkpoint(tmp_path):
    seed_everything(0)
    tr = Trainer(TinyMLP(8), SyntheticTabular(n=64), config=cfg(lr=1e30, grad_clip=None, epochs=20, batch_size=8,
                 warmup_frac=0.0, schedule="constant", out_dir=str(tmp_path), save_every_n_steps=1, log_every=1))
    with pytest.raises(TrainingDivergedError, match="non-finite loss"):
        tr.fit()
    assert issubclass(TrainingDivergedError, RuntimeError)
    ck = torch.load(tmp_path/"checkpoints"/"last.pt", weights_only=False)
    assert ck["step"] == tr.last_saved_step and ck["step"] < tr.step
    assert _finite(ck["model"])


class InjectInf(Callback):
    def __init__(self, at): self.at = at
    def after_loss(self):
        if self.trainer.step == self.at: self.trainer.loss = self.trainer.loss * float("inf")


def test_injected_inf_stops_before_overwriting_checkpoint(tmp_path):
    seed_everything(0)
    tr = Trainer(TinyMLP(8), SyntheticTabular(n=64), callbacks=[InjectInf(13)],
                 config=cfg(epochs=5, batch_size=8, out_dir=str(tmp_path), save_every_n_steps=5))
    with pytest.raises(TrainingDivergedError, match=r"step 10\)"):
        tr.fit()
    ck = torch.load(tmp_path/"checkpoints"/"last.pt", weights_only=False)
    assert ck["step"] == 10 and _finite(ck["model"])
    assert not _finite(tr.unwrapped.state_dict())  # the live weights did blow up


# ---------------------------------------------------------------- non-finite targets
def test_nonfinite_targets_rejected_with_ids():
    ds = SyntheticSequences(n=50, bad_rows=(4, 31, 40))
    with pytest.raises(DataError) as e:
        Trainer(TinySeqRegressor(), ds, config=cfg()).fit()
    msg = str(e.value)
    for i in ("syn-00004", "syn-00031", "syn-00040"): assert i in msg
    assert "3 non-finite" in msg and "syn-00005" not in msg


def test_nonfinite_targets_generic_dataset():
    with pytest.raises(DataError, match="row 7"):
        Trainer(TinyMLP(8), SyntheticTabular(n=40, bad_rows=(7,)), config=cfg(valid_frac=0.0)).fit()


def test_nonfinite_labels_made_by_collate_reported_per_batch():
    "Labels that only exist after collation cannot be checked up front: the batch check names the sample indices."
    class Raw(torch.utils.data.Dataset):
        def __init__(self): self.t = SyntheticTabular(n=40, bad_rows=(21,))
        def __len__(self): return 40
        def __getitem__(self, i): it = self.t[i]; return {"x": it["x"], "target": it["labels"]}
    def collate(items):
        return {"x": torch.stack([i["x"] for i in items]), "labels": torch.stack([i["target"] for i in items])}
    tr = Trainer(TinyMLP(8), Raw(), collate_fn=collate, config=cfg(valid_frac=0.0, batch_size=8, scale_targets=False))
    with pytest.raises(DataError, match="sample indices") as e:
        tr.fit()
    assert "21" in str(e.value)


# ---------------------------------------------------------------- early stopping + best restore
@pytest.mark.parametrize("with_out_dir", [False, True])
def test_early_stopping_restores_best(tmp_path, with_out_dir):
    scores = iter([5., 3., 1., 2., 4., 6., 7., 8., 9., 10.])
    snaps = {}
    class Snapshot(Callback):
        order = 5
        def after_epoch(self): snaps[self.trainer.epoch] = copy.deepcopy(self.trainer.unwrapped.state_dict())
    seed_everything(0)
    tr = Trainer(TinyMLP(8), SyntheticTabular(n=64), metrics={"s": lambda y, p: next(scores)}, callbacks=[Snapshot()],
                 config=cfg(epochs=10, patience=3, monitor="valid_s", out_dir=str(tmp_path) if with_out_dir else None))
    h = tr.fit()
    assert len(h) == 6 and tr.best_epoch == 3
    for k, v in tr.unwrapped.state_dict().items(): assert torch.equal(v, snaps[3][k])
    assert not all(torch.equal(v, snaps[6][k]) for k, v in tr.unwrapped.state_dict().items())
    if with_out_dir:
        assert (tmp_path/"best.pt").exists() and (tmp_path/"history.csv").exists()
        assert (tmp_path/"learning_curve.png").stat().st_size > 1000


def test_max_mode_and_bad_monitor():
    scores = iter([1., 3., 2., 2., 2.])
    tr = Trainer(TinyMLP(8), SyntheticTabular(n=64), metrics={"r2": lambda y, p: next(scores)},
                 config=cfg(epochs=5, patience=2, monitor="valid_r2", mode="max"))
    assert len(tr.fit()) == 4 and tr.best_epoch == 2
    tr = Trainer(TinyMLP(8), SyntheticTabular(n=64), config=cfg(epochs=2, patience=2, monitor="valid_banana"))
    with pytest.raises(ConfigError, match="valid_banana"):
        tr.fit()


# ---------------------------------------------------------------- schedules
@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant", "onecycle"])
def test_schedule_shape(schedule):
    c = cfg(lr=0.1, warmup_frac=0.2, schedule=schedule)
    opt = make_optimizer(TinyMLP(3), c)
    sch = make_scheduler(opt, c, total_steps=100)
    lrs = []
    for _ in range(100): lrs.append(sch.get_last_lr()[0]); opt.step(); sch.step()
    lrs = np.array(lrs)
    peak = int(np.argmax(lrs))
    assert abs(lrs.max() - 0.1) < 1e-9 and 18 <= peak <= 21
    assert np.all(np.diff(lrs[:peak + 1]) >= 0)                    # rising during warmup
    if schedule == "constant": assert np.allclose(lrs[peak:], 0.1)
    else:
        assert np.all(np.diff(lrs[peak:]) <= 1e-12) and lrs[-1] < 0.01  # decaying to ~0
    if schedule in ("cosine", "linear"):
        assert lrs[0] == 0 and np.allclose(np.diff(lrs[:20]), 0.1 / 20)  # linear warmup from 0
    if schedule == "cosine": assert abs(lrs[60] - 0.05) < 1e-3     # half-way through the decay: lr/2
    if schedule == "linear": assert abs(lrs[60] - 0.05) < 1e-3


@pytest.mark.parametrize("total", [1, 2, 3, 4, 5, 8])
def test_onecycle_on_a_few_steps(total):
    "A tiny training set gives a handful of steps: one-cycle must neither divide by zero nor leave the [0, lr] range."
    c = cfg(lr=0.1, warmup_frac=0.1, schedule="onecycle")
    opt = make_optimizer(TinyMLP(3), c)
    sch = make_scheduler(opt, c, total_steps=total)
    for _ in range(total):
        assert 0 <= sch.get_last_lr()[0] <= 0.1 + 1e-12; opt.step(); sch.step()


def test_fit_follows_schedule():
    lrs = []
    class Rec(Callback):
        def before_batch(self): lrs.append(self.trainer.opt.param_groups[0]["lr"])
    c = cfg(lr=0.01, epochs=4, batch_size=8, warmup_frac=0.25, valid_frac=0.0)
    tr = Trainer(TinyMLP(8), SyntheticTabular(n=64), config=c, callbacks=[Rec()])
    tr.fit()
    assert len(lrs) == 32 and int(np.argmax(lrs)) == 8 and abs(max(lrs) - 0.01) < 1e-12 and lrs[0] == 0


# ---------------------------------------------------------------- sampler
@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), bs=st.integers(1, 40), seed=st.integers(0, 10), epoch=st.integers(0, 5),
       bucket=st.booleans(), start=st.integers(0, 50))
def test_sampler_partition_and_resume(n, bs, seed, epoch, bucket, start):
    lengths = (np.arange(n) * 7919) % 23 if bucket else None
    s = EpochBatchSampler(n, bs, seed, lengths=lengths, bucket_mult=3)
    s.set_epoch(epoch)
    full = [b for b in s]
    assert len(full) == len(s) and sorted(sum(full, [])) == list(range(n))
    s.set_epoch(epoch, start)
    assert list(s) == full[start:]
    shards = [EpochBatchSampler(n, bs, seed, lengths=lengths, num_replicas=2, rank=r).batches(epoch) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(full) // 2
    assert not set(np.concatenate(shards[0] or [np.array([], int)])) & set(np.concatenate(shards[1] or [np.array([], int)]))


# ---------------------------------------------------------------- target scaling
def test_target_scaler_in_wrapper():
    seen = []
    class Spy(Callback):
        def after_loss(self): seen.append(self.trainer.batch["labels"].clone())
    ds = SyntheticSequences(n=200, scale=50.0, shift=1000.0)
    seed_everything(0)
    tr = Trainer(TinySeqRegressor(32, dim=32), ds, config=cfg(lr=1e-2, epochs=6, batch_size=16), callbacks=[Spy()])
    tr.fit()
    y = torch.cat(seen[:len(seen) // 6])                        # the labels the model saw in epoch 1
    assert abs(y.mean()) < 0.3 and abs(y.std() - 1) < 0.3
    p = tr.predict(tr.valid_ds)
    yv = ds.targets.y.to_numpy()[tr.valid_ds.indices]
    assert abs(p.mean() - 1000) < 30 and np.abs(p - yv).mean() < np.abs(yv - yv.mean()).mean()
    ck_scaler = tr.scaler.state_dict()
    assert abs(ck_scaler["mean"][0] - 1000) < 30


def test_predict_keeps_dataset_order():
    ds = SyntheticSequences(n=90)
    seed_everything(0)
    tr = Trainer(TinySeqRegressor(32), ds, config=cfg(epochs=1, batch_size=8))
    tr.fit()
    p = tr.predict(ds)
    tr.config.bucket_by_length = False                            # no length sorting at inference
    assert np.allclose(p, tr.predict(ds), atol=1e-6)
    one = tr.predict(torch.utils.data.Subset(ds, [17]))
    assert np.allclose(one, p[17], atol=1e-6)


# ---------------------------------------------------------------- resume guards
def test_resume_refuses_different_config(tmp_path):
    seed_everything(0)
    Trainer(TinyMLP(8), SyntheticTabular(n=64), config=cfg(epochs=1, out_dir=str(tmp_path))).fit()
    tr = Trainer(TinyMLP(8), SyntheticTabular(n=64), config=cfg(epochs=1, lr=0.5, out_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="lr"):
        tr.fit(resume=True)
    with pytest.raises(ConfigError, match="no checkpoint"):
        tr.fit(resume=tmp_path/"nope.pt")


def test_resume_of_finished_run_is_a_no_op(tmp_path):
    seed_everything(0)
    a = Trainer(TinyMLP(8), SyntheticTabular(n=64), config=cfg(epochs=2, out_dir=str(tmp_path)))
    ha = a.fit()
    b = Trainer(TinyMLP(8), SyntheticTabular(n=64), config=cfg(epochs=2, out_dir=str(tmp_path)))
    hb = b.fit(resume=True)
    assert len(hb) == 2 and hb.train_loss.tolist() == ha.train_loss.tolist()
    for k, v in a.unwrapped.state_dict().items(): assert torch.equal(v, b.unwrapped.state_dict()[k])


def test_config_validation():
    for bad in [dict(lr=-1), dict(epochs=0), dict(schedule="step"), dict(mode="up"), dict(warmup_frac=1.0),
                dict(save_every_n_steps=3), dict(mixed_precision="fp8"), dict(patience=0)]:
        with pytest.raises(ConfigError): TrainConfig(**bad)
    with pytest.raises(ConfigError, match="no validation set"):
        Trainer(TinyMLP(8), SyntheticTabular(n=64), config=cfg(valid_frac=0.0, patience=2))


def test_bf16_autocast_then_fp32_in_one_process():
    "bf16 autocast (CPU autocast here, the GPU path on a GPU) trains; a later fp32 Trainer in the same process works."
    seed_everything(0)
    a = Trainer(TinySeqRegressor(32), SyntheticSequences(n=120), config=cfg(epochs=2, mixed_precision="bf16"))
    ha = a.fit()
    assert a.accelerator.mixed_precision == "bf16" and np.isfinite(ha.valid_loss).all()
    b = Trainer(TinySeqRegressor(32), SyntheticSequences(n=120), config=cfg(epochs=1, mixed_precision="no"))
    assert b.accelerator.mixed_precision == "no" and np.isfinite(b.fit().valid_loss).all()
    assert a.predict(SyntheticSequences(n=10)).dtype == np.float32


# ---------------------------------------------------------------- token-level (ragged) outputs
class TokenTagger(torch.nn.Module):
    "Per-token regression: one output per position, so output widths follow each batch's padding."
    def __init__(self, vocab_size=32):
        super().__init__(); self.emb = torch.nn.Embedding(vocab_size, 1, padding_idx=0)
    def forward(self, input_ids, attention_mask=None, labels=None, **kw):
        out = self.emb(input_ids)[..., 0]
        return {"logits": out, "loss": out.pow(2).mean()}


def test_predict_token_level_outputs_across_ragged_batches():
    ds = SyntheticSequences(n=50, min_len=2, max_len=12, seed=3)
    seed_everything(0)
    tr = Trainer(TokenTagger(), ds, config=cfg(epochs=1, batch_size=4, eval_batch_size=4, scale_targets=False))
    tr.fit()
    p = tr.predict(ds)
    assert p.shape == (50, ds.lengths.max())   # padded to the widest batch
    emb = tr.unwrapped.emb.weight.detach()[:, 0].numpy()
    for i in range(50):   # real positions match a per-item forward; beyond them: the pad token's output or NaN
        L = ds.lengths[i]
        np.testing.assert_allclose(p[i, :L], emb[ds.seqs[i]], rtol=1e-6)
        assert np.all(np.isnan(p[i, L:]) | (p[i, L:] == emb[0]))
    assert np.isnan(p).any()   # some batches were narrower than the widest one


def test_num_threads_is_scoped_to_the_run():
    before = torch.get_num_threads()
    seen = []
    class Probe(Callback):
        def after_step(self): seen.append(torch.get_num_threads())
    tr = Trainer(TinySeqRegressor(), SyntheticSequences(n=40), callbacks=[Probe()],
                 config=cfg(epochs=1, batch_size=8, num_threads=before + 1))
    tr.fit()
    assert set(seen) == {before + 1} and torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="num_threads"): cfg(num_threads=-2)
