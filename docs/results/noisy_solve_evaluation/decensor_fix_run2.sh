#!/bin/bash
# A second evaluation of the decensoring's fix, at bdb7789, on fresh networks 8920, 8924, 8925 (σ_m 0.01 and 0.05).
cd /tmp/eval_wt
PY="env OPENBLAS_NUM_THREADS=1 PYTHONPATH=/tmp/eval_wt /work/main/.venv/bin/python"
R=/work/main/results
FRESH="--vary training.measurement_noise_level=0.01,0.05 --vary simulation.seed=8920,8924,8925"
$PY -m metabo_tune.sweep search_spaces/noisy_rank_50.yaml $FRESH --method regression --out $R/eval29_fix2_regression > $R/eval29_fix2_regression.log 2>&1
$PY -m metabo_tune.sweep search_spaces/noisy_rank_50.yaml $FRESH --jobs 2 --out $R/eval29_fix2 > $R/eval29_fix2.log 2>&1
