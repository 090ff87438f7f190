#!/usr/bin/env bash
# Development for train.solve_applies' split bar (docs/results.md, "The group solve under measurement noise"): network
# 8957 (Michaelis–Menten K 3, w 1, σ_m 0.01, three trajectories, training seed 2026) trained at 1128cbb without the
# end solve, then the solve finished taken and not (split_apply_probe.py; evidence split_apply_dev_8957.csv).
set -eu
cd "$(dirname "$0")/../../.."
PY=${PYTHON:-python}
MM="--set simulation.substrate_kinetics=michaelis_menten --set simulation.homeostasis_form=saturating"
$PY -m metabo_tune.sweep configs/free_forms.yaml --method gnn --set training.seed=2026 $MM --set simulation.n_runs=3 \
  --set training.measurement_noise_level=0.01 --set simulation.michaelis_K=3 --set training.group_solve_moves=null \
  --vary simulation.homeostasis_width=1 --vary simulation.seed=${NETS:-8957} --jobs 1 --out results/dev_presolve_w1
cd docs/results/free_forms_evaluation
PYTHONPATH=../../..:. $PY split_apply_probe.py split_apply_dev_8957.csv ../../../results/dev_presolve_w1/runs/*
