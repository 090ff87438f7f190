#!/usr/bin/env bash
# Evaluation of train.solve_applies' split bar (docs/results.md, "The group solve under measurement noise"): the shipped
# configs/free_forms.yaml at 0e9f8e1 on fresh networks 8962-8964, Michaelis–Menten K 3, w 1 (the point the bar was
# chosen for), σ_m 0.01, three trajectories, training seed 2026; the regression on the same data. Resumable (every
# sweep reuses finished runs). Evidence: free_forms_split_apply_8962_{gnn,regression}.csv.
set -eu
cd "$(dirname "$0")/../../.."
PY=${PYTHON:-python}
MM="--set simulation.substrate_kinetics=michaelis_menten --set simulation.homeostasis_form=saturating"
for method in regression gnn; do
  $PY -m metabo_tune.sweep configs/free_forms.yaml --method $method --set training.seed=2026 $MM --set simulation.n_runs=3 \
    --set training.measurement_noise_level=0.01 --set simulation.michaelis_K=3 --vary simulation.homeostasis_width=1 \
    --vary simulation.seed=8962,8963,8964 --jobs ${JOBS:-1} --out results/eval_mmw_free_forms_split_apply_8962_$method
done
