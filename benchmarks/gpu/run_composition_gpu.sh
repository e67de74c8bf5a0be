#!/usr/bin/env bash
# Issue #9's GPU check, one prepared script of at most 8 minutes on one GPU:
#   1. training throughput of mmlit's Trainer against a plain Hugging Face Trainer (same model, data, device),
#      at the width of the composition recipes (256 x 3) -> $OUT/train_throughput_<device>.json;
#   2. the best composition recipe at the `small` preset (elm-small) on matbench expt_gap and log_gvrh, fold 0,
#      each finetuning capped at $FT_LIMIT seconds -> $OUT/composition/matbench_<task>/elm-small-<device>/.
# Needs the matbench tables (MMLIT_DATA) and mmlit's dependencies on that machine.
#   DEVICE=cuda OUT=benchmarks/results/gpu bash benchmarks/gpu/run_composition_gpu.sh
# DEVICE=cpu FT_LIMIT=20 THROUGHPUT_N=1000 runs the same steps on a CPU (a smoke test of the script itself).
set -euo pipefail
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-benchmarks/results/gpu}
FT_LIMIT=${FT_LIMIT:-120}
THROUGHPUT_N=${THROUGHPUT_N:-20000}
mkdir -p "$OUT"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/device_${DEVICE}.txt"
if [ "$DEVICE" = cuda ]; then python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'DEVICE=cuda but torch sees no GPU')"; fi

# 1. throughput (the timings alternate ours / HF after a warm-up of each; median of 2)
timeout 150 python benchmarks/bench_train_throughput.py --n "$THROUGHPUT_N" --hidden 256 --layers 3 --heads 4 \
  --batch-size 64 --repeats 2 --out "$OUT/train_throughput_${DEVICE}.json"

# 2. the recipe at the small preset, fold 0 of two tasks; the time limit bounds finetuning, the best epoch is kept
for task in expt_gap log_gvrh; do
  timeout $((FT_LIMIT + 90)) python benchmarks/run_composition_bench.py --models elm-small --tasks "$task" --folds 0 \
    --model-kw "{\"device\": \"$DEVICE\", \"time_limit\": $FT_LIMIT, \"num_threads\": null}" \
    --tag "elm-small-$DEVICE" --out "$OUT/composition"
done
echo "done: results under $OUT"
