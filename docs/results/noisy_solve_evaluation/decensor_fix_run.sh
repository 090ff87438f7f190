#!/bin/bash
# Evaluation of eb60d3a (decensoring beside fast moves fixed) on fresh networks 8917-8919, GNN and regression.
cd /tmp/eval_wt
PY="env OPENBLAS_NUM_THREADS=1 PYTHONPATH=/tmp/eval_wt /work/main/.venv/bin/python"
R=/work/main/results
FRESH="--vary training.measurement_noise_level=0.01,0.05,0.001 --vary simulation.seed=8917,8918,8919"
$PY -m metabo_tune.sweep search_spaces/noisy_rank_50.yaml $FRESH --method regression --out $R/eval29_fix_regression > $R/eval29_fix_regression.log 2>&1
$PY -m metabo_tune.sweep search_spaces/noisy_rank_50.yaml $FRESH --jobs 2 --out $R/eval29_fix > $R/eval29_fix.log 2>&1
