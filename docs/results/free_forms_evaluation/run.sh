#!/usr/bin/env bash
# Issue 28 evaluation (docs/results.md, "Learned forms") (resumable: every sweep reuses finished runs). Networks 5001-5004, training seed 2026.
set -u
cd "$(dirname "$0")/../../.."
PY=${PYTHON:-python}  # the interpreter with metabo_tune installed
MM="--set simulation.substrate_kinetics=michaelis_menten --set simulation.homeostasis_form=saturating"
for method in regression gnn; do
  for cfg in free_forms joint_recovery; do
    [ "$method" = regression ] && [ "$cfg" = joint_recovery ] && continue
    tag=${cfg}_${method}
    $PY -m metabo_tune.sweep configs/$cfg.yaml --method $method --set training.seed=2026 --vary simulation.seed=5001,5002,5003 --jobs 2 --out results/eval_ma_$tag
    $PY -m metabo_tune.sweep configs/$cfg.yaml --method $method --set training.seed=2026 $MM --set simulation.homeostasis_width=2 --vary simulation.michaelis_K=1,3,10 --vary simulation.seed=5004 --jobs 2 --out results/eval_mmK_$tag
    $PY -m metabo_tune.sweep configs/$cfg.yaml --method $method --set training.seed=2026 $MM --set simulation.michaelis_K=3 --vary simulation.homeostasis_width=1,4 --vary simulation.seed=5004 --jobs 2 --out results/eval_mmw_$tag
  done
done
