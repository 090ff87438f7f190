#!/usr/bin/env bash
# Issue 30's free-form goal on E. coli core (docs/results.md, "Real networks"), resumable: every sweep reuses finished
# runs. configs/e_coli_core_free_forms.yaml as shipped, training seed 2026, simulation seeds 8104-8106 (never used
# while choosing), exact data: mass action, then the five Michaelis–Menten points with saturating homeostasis (K 1, 3,
# 10 at w 2; w 1, 4 at K 3), each beside the known-form regression on the same data. PYTHON: the interpreter with
# metabo_tune installed; JOBS (default 1): runs at once; NETS (default 8104,8105,8106); OUT (default
# results/ecoli_free_eval). First run at effa73b on 8104-8106, without training.free_group_solve; then at the commit
# that turned it on, on 8107-8109 (NETS=8107,8108,8109 OUT=results/ecoli_free_eval2); then at 3b297d1, the form-free
# fit's laws smooth splines, on 8110-8112 (NETS=8110,8111,8112 OUT=results/ecoli_free_eval3). NOISE (default 0):
# training.measurement_noise_level, the same draw for the regression and the GNN.
set -u
cd "$(dirname "$0")/../../../.."
PY=${PYTHON:-python}
NETS=${NETS:-8104,8105,8106}
OUT=${OUT:-results/ecoli_free_eval}
CFG=configs/e_coli_core_free_forms.yaml
COMMON="--set training.seed=2026 --set training.measurement_noise_level=${NOISE:-0}"
MM="--set simulation.substrate_kinetics=michaelis_menten --set simulation.homeostasis_form=saturating"
for method in regression gnn; do
  $PY -m metabo_tune.sweep $CFG --method $method $COMMON --vary simulation.seed=$NETS \
      --jobs ${JOBS:-1} --out $OUT/ma_$method
  $PY -m metabo_tune.sweep $CFG --method $method $COMMON $MM --set simulation.homeostasis_width=2 \
      --vary simulation.michaelis_K=1,3,10 --vary simulation.seed=$NETS --jobs ${JOBS:-1} \
      --out $OUT/mmK_$method
  $PY -m metabo_tune.sweep $CFG --method $method $COMMON $MM --set simulation.michaelis_K=3 \
      --vary simulation.homeostasis_width=1,4 --vary simulation.seed=$NETS --jobs ${JOBS:-1} \
      --out $OUT/mmw_$method
done
