#!/usr/bin/env bash
# Crystal-graph models on structure benchmarks, with the `mmlit bench` command (results + plots per run).
# Run from the repository root; reads the shared data folder (MMLIT_DATA or ../shared/data). One torch thread per
# run (two runs share the 2-core CI-class machine). Outputs: benchmarks/results/structures/<task>_<model>/
#   JOBS="phonons-cgcnn phonons-alignn" bash benchmarks/run_structure_bench.sh   # a subset
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/results/structures
# The CPU recipe (see nbs/62_bench.structures.ipynb): L1 loss, one-cycle AdamW at 3e-3, batches of 32, early stopping
# on the validation MAE (10% of each training fold). ALIGNN-style: the `small` preset, angles between bonds <= 3.5 A.
# Epoch budgets: 100 on phonons and mp_20 (1,000 training rows); on perov_5 (11,356 training rows, ~12x the work per
# epoch) the budget of one session allowed 30 (CGCNN) and 8 (ALIGNN-style) epochs.
kw() {  # epochs [extra JSON fields] -> the model_kw JSON
  echo "{\"regression_loss\": \"l1\", \"lr\": 0.003, \"epochs\": $1, \"num_threads\": 1${2:+, $2}}"
}
CGCNN_KW=$(kw 100); ALIGNN_KW=$(kw 100 '"angle_cutoff": 3.5')
run() {  # name task model model_kw [extra args]
  local name=$1 task=$2 model=$3 kw=$4; shift 4
  /usr/bin/time -f "$name: %e s wall, %U s user, %M KB max RSS" \
    mmlit bench --task "$task" --model "$model" --model_kw "$kw" --n_jobs 1 --seed 0 --quiet --out "$OUT/$name" "$@"
}
for job in ${JOBS:-phonons-cgcnn phonons-alignn perov5-cgcnn perov5-alignn mp20-cgcnn mp20-alignn}; do
  case $job in
    phonons-cgcnn)  run matbench_phonons_cgcnn phonons cgcnn "$CGCNN_KW" --folds 0-4 ;;
    phonons-alignn) run matbench_phonons_alignn-small phonons alignn-small "$ALIGNN_KW" --folds 0-4 ;;
    perov5-cgcnn)   run perov_5_heat_all_cgcnn perov_5 cgcnn "$(kw 30)" --target heat_all ;;
    perov5-alignn)  run perov_5_heat_all_alignn-small perov_5 alignn-small "$(kw 8 '"angle_cutoff": 3.5')" --target heat_all ;;
    mp20-cgcnn)     run mp_20_pilot_e_form_cgcnn mp_20_pilot cgcnn "$CGCNN_KW" --target formation_energy_per_atom ;;
    mp20-alignn)    run mp_20_pilot_e_form_alignn-small mp_20_pilot alignn-small "$(kw 40 '"angle_cutoff": 3.5')" --target formation_energy_per_atom ;;
    *) echo "unknown job $job"; exit 2 ;;
  esac
done
