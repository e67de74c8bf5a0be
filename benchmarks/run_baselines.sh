#!/usr/bin/env bash
# Magpie + random forest baseline (mmlit's RF-SCM/Magpie analogue, composition only) on the full matbench v0.1 5-fold
# protocol. Reads the task tables from the shared data folder (MMLIT_DATA or ../shared/data); run from the repo root.
# Outputs: benchmarks/results/<task>/{results.json,results.md,bench.png,predictions.csv.gz,matbench_results.json.gz}
set -euo pipefail
cd "$(dirname "$0")/.."
N_ESTIMATORS=${N_ESTIMATORS:-100}   # trees per forest
N_JOBS=${N_JOBS:-2}                 # CPU cores
for task in expt_gap dielectric log_gvrh log_kvrh phonons perovskites; do
  /usr/bin/time -f "$task: %e s wall, %U s user, %S s sys, %M KB max RSS" \
    mmlit bench --task "$task" --model baseline-magpie-rf --folds 0,1,2,3,4 \
      --n-estimators "$N_ESTIMATORS" --n-jobs "$N_JOBS" --seed 0 --quiet \
      --out "benchmarks/results/matbench_$task"
done
