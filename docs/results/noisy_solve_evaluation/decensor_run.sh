#!/bin/bash
# Evaluation of a7b7c32 (decensor_zeros auto) on fresh networks 8914-8916, then the one-law check 8921-8923.
cd /tmp/eval_wt
PY="env OPENBLAS_NUM_THREADS=1 PYTHONPATH=/tmp/eval_wt /work/main/.venv/bin/python"
R=/work/main/results
FRESH="--vary training.measurement_noise_level=0.05,0.01,0.001 --vary simulation.seed=8914,8915,8916"
OL='--set simulation.homeostatic_lambda_per_type=[0.0015,0.0015] --set simulation.homeostatic_baseline_per_type=[5.0,5.0] --set training.measurement_noise_level=0.05 --vary simulation.seed=8921,8922,8923'
$PY -m metabo_tune.sweep search_spaces/noisy_rank_50.yaml $FRESH --method regression --out $R/eval29_dc_fresh_regression > $R/eval29_dc_fresh_regression.log 2>&1
$PY -m metabo_tune.sweep search_spaces/noisy_rank_50.yaml $OL --method regression --out $R/eval29_dc_onelaw_regression > $R/eval29_dc_onelaw_regression.log 2>&1
$PY -m metabo_tune.sweep search_spaces/noisy_rank_50.yaml $FRESH --jobs 2 --out $R/eval29_dc_fresh > $R/eval29_dc_fresh.log 2>&1
$PY -m metabo_tune.sweep search_spaces/noisy_rank_50.yaml $OL --jobs 2 --out $R/eval29_dc_onelaw > $R/eval29_dc_onelaw.log 2>&1
