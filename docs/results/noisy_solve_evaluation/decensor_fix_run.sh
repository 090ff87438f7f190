#!/bin/bash
# Evaluations of the decensoring's fix on fresh networks, GNN and regression, from a worktree pinned at /tmp/eval_wt:
#   at eb60d3a: bash decensor_fix_run.sh                      (8917-8919 at σ_m 0.01, 0.05, 0.001 -> eval29_fix)
#   at bdb7789: NETWORKS=8920,8924,8925 LEVELS=0.01,0.05 OUT=eval29_fix2 bash decensor_fix_run.sh
cd /tmp/eval_wt
PY="env OPENBLAS_NUM_THREADS=1 PYTHONPATH=/tmp/eval_wt /work/main/.venv/bin/python"
R=/work/main/results
OUT=${OUT:-eval29_fix}
FRESH="--vary training.measurement_noise_level=${LEVELS:-0.01,0.05,0.001} --vary simulation.seed=${NETWORKS:-8917,8918,8919}"
$PY -m metabo_tune.sweep search_spaces/noisy_rank_50.yaml $FRESH --method regression --out $R/${OUT}_regression > $R/${OUT}_regression.log 2>&1
$PY -m metabo_tune.sweep search_spaces/noisy_rank_50.yaml $FRESH --jobs 2 --out $R/$OUT > $R/$OUT.log 2>&1
