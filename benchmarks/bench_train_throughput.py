"""Training throughput of mmlit's `Trainer` vs a plain Hugging Face `Trainer`, same model, data, device, process.

Model: a randomly initialised `BertForSequenceClassification` regression head (num_labels=1, MSE loss) with a small
config (`mmlit.testing.tiny_bert`). Data: synthetic composition-like token sequences, lengths 5-20, vocab 150
(`mmlit.testing.SyntheticSequences`). Both trainers use the same collate function (dynamic padding to the longest
item of the batch), batch size, epochs, AdamW (lr, weight decay), warmup + cosine schedule, gradient clipping at 1.0,
num_workers=0, bf16 autocast on a GPU (fp32 on CPU), and no evaluation/checkpointing/logging during the timed run.
HF Trainer runs with `report_to="none"`, `train_sampling_strategy="group_by_length"` (default; "random" with
`--group-by-length 0`; the fair match for our length
bucketing), `disable_tqdm=True`, `save_strategy="no"`, `eval_strategy="no"`. Each trainer is run `--repeats` times,
alternating (ours, HF, ours, HF, ...) after one untimed warm-up of each, and the median wall time of `fit()` /
`train()` is used: samples/s = n_train * epochs / time. Prints the ratio ours/HF and writes a JSON.

Usage: python benchmarks/bench_train_throughput.py [--n 2000 --epochs 1 --batch-size 64 --repeats 2 --threads 0 --out FILE]
"""
import argparse, json, os, platform, statistics, sys, tempfile, time
from pathlib import Path

import torch
import transformers
from transformers import Trainer as HFTrainer, TrainingArguments

from mmlit.core import seed_everything
from mmlit.testing import SyntheticSequences, tiny_bert
from mmlit.train.core import Trainer, TrainConfig, pad_collate


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000, help="training sequences")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--group-by-length", type=int, default=1, help="1: HF train_sampling_strategy=group_by_length and our length bucketing; 0: random / no bucketing")
    p.add_argument("--warmup-n", type=int, default=512, help="sequences of the untimed warm-up runs")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/train_throughput_<device>.json)")
    return p.parse_args()


def model_of(a):
    seed_everything(0)
    return tiny_bert(vocab_size=150, hidden=a.hidden, layers=a.layers, heads=a.heads, max_len=32)


def run_ours(a, ds, epochs):
    cfg = TrainConfig(lr=a.lr, weight_decay=0.01, epochs=epochs, batch_size=a.batch_size, warmup_frac=0.1,
                      schedule="cosine", grad_clip=1.0, valid_frac=0.0, num_workers=0, progress=False,
                      bucket_by_length=bool(a.group_by_length), scale_targets=True, mixed_precision="auto")
    tr = Trainer(model_of(a), ds, config=cfg)
    t0 = time.perf_counter(); h = tr.fit(); dt = time.perf_counter() - t0
    return dt, float(h.time.sum()), float(h.train_loss.iloc[-1])


def run_hf(a, ds, epochs):
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(output_dir=d, per_device_train_batch_size=a.batch_size, num_train_epochs=epochs,
                                 learning_rate=a.lr, weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="cosine",
                                 max_grad_norm=1.0, report_to="none", save_strategy="no", eval_strategy="no",
                                 logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
                                 dataloader_pin_memory=cuda, bf16=cuda,
                                 train_sampling_strategy="group_by_length" if a.group_by_length else "random",
                                 use_cpu=not cuda, seed=0, data_seed=0)
        tr = HFTrainer(model=model_of(a), args=args, train_dataset=ds, data_collator=pad_collate)
        t0 = time.perf_counter(); out = tr.train(); dt = time.perf_counter() - t0
    return dt, float(out.metrics["train_runtime"]), float(out.training_loss)


def main():
    a = parse()
    if a.threads: torch.set_num_threads(a.threads)
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    ds = SyntheticSequences(n=a.n, vocab_size=150, min_len=5, max_len=20, seed=0)
    warm = SyntheticSequences(n=a.warmup_n, vocab_size=150, min_len=5, max_len=20, seed=1)
    run_ours(a, warm, 1); run_hf(a, warm, 1)                         # untimed warm-up of both code paths
    times, inner, losses = {"ours": [], "hf": []}, {"ours": [], "hf": []}, {}
    for r in range(a.repeats):
        for name, fn in (("ours", run_ours), ("hf", run_hf)):
            dt, loop, loss = fn(a, ds, a.epochs); times[name].append(dt); inner[name].append(loop); losses[name] = loss
            print(f"repeat {r}: {name:4s} {dt:7.2f} s  {a.n * a.epochs / dt:9.1f} samples/s  (loop only {loop:.2f} s)  "
                  f"final train loss {loss:.4f}")
    sps = {k: a.n * a.epochs / statistics.median(v) for k, v in times.items()}
    sps_inner = {k: a.n * a.epochs / statistics.median(v) for k, v in inner.items()}
    ratio, ratio_inner = sps["ours"] / sps["hf"], sps_inner["ours"] / sps_inner["hf"]
    print(f"device: {dev}\nours {sps['ours']:.1f} samples/s | HF Trainer {sps['hf']:.1f} samples/s | "
          f"ratio ours/HF = {ratio:.2f} (whole fit()/train() call; loop only, i.e. our epoch times vs HF's "
          f"train_runtime: {ratio_inner:.2f})")
    res = {"device": dev, "ratio_ours_over_hf": ratio, "ratio_loop_only": ratio_inner, "samples_per_s": sps,
           "samples_per_s_loop_only": sps_inner, "times_s": times, "loop_times_s": inner, "final_train_loss": losses,
           "note": "final train loss: ours on standardised targets (TargetScaler), HF on raw targets",
           "config": {**{k: v for k, v in vars(a).items() if k != "out"}, "vocab_size": 150, "lengths": [5, 20],
                      "mixed_precision": "bf16" if torch.cuda.is_available() else "no", "num_workers": 0,
                      "schedule": "cosine, warmup 0.1", "grad_clip": 1.0, "weight_decay": 0.01},
           "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "python": platform.python_version()}}
    out = Path(a.out or Path(__file__).parent/"results"/
               f"train_throughput_{'cuda' if torch.cuda.is_available() else 'cpu'}.json")
    out.parent.mkdir(parents=True, exist_ok=True); out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
