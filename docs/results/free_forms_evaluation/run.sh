#!/usr/bin/env bash
# Issue 28 evaluation (docs/results.md, "Learned forms"), resumable: every sweep reuses finished runs. Training seed 2026.
# Stage 1 (networks 5001-5004): configs/free_forms.yaml as it was then, with the conservation loss.
# Stage 2 (networks 7001-7003): configs/free_forms.yaml as shipped, without it; the Michaelis–Menten points only.
# Stage 3 (networks 8001-8003): as stage 2 on three trajectories from their own initial states (simulation.n_runs 3,
# chosen on network 5004), the regression and joint_recovery.yaml on the same data.
# Stage 4 (networks 8201-8203): as stage 3 with the group solve at the end of every run (training.group_solve_moves
# 100), the five MM points and mass action, and the regression on the same data.
# Stage 5 (networks 8301-8303): as stage 4 at the five MM points, after the group solve's merges and screened moves.
# Stage 6 (networks 8401-8403): as stage 5 with MLP_node fitted 30 rounds to the solved functions (W=1: w 1 only).
# Stage 7 (networks 8601-8603): measurement noise σ_m 0.01, the windows read from the data (prediction_window and
# moment_window auto: 10 and 100 frames) and the weak-form group solve; mass action, then the five MM points (K3W2=1:
# the point K 3, w 2 only).
# Stage 8 (networks NETS, default 8929-8931): the moonshot, stage 7 on fresh networks at all six points; the four
# points stage 7 never reached first (K 1 and 10 at w 2, w 1 and 4 at K 3), then K 3 w 2, then mass action; SUFFIX
# (default _noise01_8929) names its sweeps; POINTS (default "K1,K10 w1,w4 K3 ma") runs some of them, e.g. "K10 w4".
# Stage 9 (networks NETS, default 8935-8937): exact data on fresh networks with configs/free_forms.yaml as shipped
# since group_solve_takes_groups (on since 2026-12-06); mass action, then the five MM points; SUFFIX default
# _takes_groups_8935.
# Stage 10 (networks NETS, default 8941-8943): the shipped configs/free_forms.yaml as a user runs it (one trajectory,
# exact data, mass action) since the key's merge rule (2026-12-07: merged groups taken only where they fit better at
# the run's k); the regression on the same data; SUFFIX default _one_run_8941.
set -u
cd "$(dirname "$0")/../../.."
PY=${PYTHON:-python}  # the interpreter with metabo_tune installed; JOBS (default 2): runs in parallel
MM="--set simulation.substrate_kinetics=michaelis_menten --set simulation.homeostasis_form=saturating"
sweep() {  # sweep CONFIG METHOD TAG NETWORKS [--set ...]: the mass-action rows (TAG ma) or the five MM points
  local cfg=$1 method=$2 tag=$3 nets=$4; shift 4
  if [ "$tag" = ma ]; then
    $PY -m metabo_tune.sweep configs/$cfg.yaml --method $method --set training.seed=2026 "$@" --vary simulation.seed=$nets --jobs ${JOBS:-2} --out results/eval_ma_$cfg${SUFFIX}_$method
    return
  fi
  $PY -m metabo_tune.sweep configs/$cfg.yaml --method $method --set training.seed=2026 $MM --set simulation.homeostasis_width=2 "$@" --vary simulation.michaelis_K=1,3,10 --vary simulation.seed=$nets --jobs ${JOBS:-2} --out results/eval_mmK_$cfg${SUFFIX}_$method
  $PY -m metabo_tune.sweep configs/$cfg.yaml --method $method --set training.seed=2026 $MM --set simulation.michaelis_K=3 "$@" --vary simulation.homeostasis_width=1,4 --vary simulation.seed=$nets --jobs ${JOBS:-2} --out results/eval_mmw_$cfg${SUFFIX}_$method
}
WITH_CONSERVATION="--set training.coeff_conservation=1e4 --set training.conservation_frames=64"
if [ "${STAGE:-2}" = 1 ]; then
  SUFFIX=
  for tag in ma mm; do
    nets=$([ $tag = ma ] && echo 5001,5002,5003 || echo 5004)
    sweep free_forms regression $tag $nets
    sweep free_forms gnn $tag $nets $WITH_CONSERVATION
    sweep joint_recovery gnn $tag $nets
  done
elif [ "${STAGE:-2}" = 2 ]; then
  SUFFIX=_7000
  sweep free_forms regression mm 7001,7002,7003
  sweep free_forms gnn mm 7001,7002,7003
  sweep joint_recovery gnn mm 7001,7002,7003
elif [ "${STAGE:-2}" = 6 ]; then
  SUFFIX=_group_solve_8400
  if [ "${W:-}" = 1 ]; then  # the narrowest homeostasis alone, the point the 30-round head was chosen for
    $PY -m metabo_tune.sweep configs/free_forms.yaml --method regression --set training.seed=2026 $MM --set simulation.michaelis_K=3 --set simulation.n_runs=3 --vary simulation.homeostasis_width=1 --vary simulation.seed=8401,8402,8403 --jobs ${JOBS:-2} --out results/eval_mmw_free_forms${SUFFIX}_regression
    $PY -m metabo_tune.sweep configs/free_forms.yaml --method gnn --set training.seed=2026 $MM --set simulation.michaelis_K=3 --set simulation.n_runs=3 --vary simulation.homeostasis_width=1 --vary simulation.seed=8401,8402,8403 --jobs ${JOBS:-2} --out results/eval_mmw_free_forms${SUFFIX}_gnn
  else
    sweep free_forms regression mm 8401,8402,8403 --set simulation.n_runs=3
    sweep free_forms gnn mm 8401,8402,8403 --set simulation.n_runs=3
  fi
elif [ "${STAGE:-2}" = 7 ]; then
  SUFFIX=_noise01_8600
  NOISY="--set simulation.n_runs=3 --set training.measurement_noise_level=0.01"
  if [ "${K3W2:-}" = 1 ]; then
    for method in regression gnn; do
      $PY -m metabo_tune.sweep configs/free_forms.yaml --method $method --set training.seed=2026 $MM $NOISY --set simulation.michaelis_K=3 --set simulation.homeostasis_width=2 --vary simulation.seed=8601,8602,8603 --jobs ${JOBS:-2} --out results/eval_mmK_free_forms${SUFFIX}_$method
    done
  else
    for tag in ma mm; do
      sweep free_forms regression $tag 8601,8602,8603 $NOISY
      sweep free_forms gnn $tag 8601,8602,8603 $NOISY
    done
  fi
elif [ "${STAGE:-2}" = 8 ]; then
  SUFFIX=${SUFFIX:-_noise01_8929}
  NETS=${NETS:-8929,8930,8931}
  NOISY="--set simulation.n_runs=3 --set training.measurement_noise_level=0.01"
  for method in regression gnn; do
    point() {  # point TAG --set/--vary ...: one sweep of this stage
      local tag=$1; shift
      $PY -m metabo_tune.sweep configs/free_forms.yaml --method $method --set training.seed=2026 $NOISY "$@" \
          --vary simulation.seed=$NETS --jobs ${JOBS:-2} --out results/eval_${tag}_free_forms${SUFFIX}_$method
    }
    for p in ${POINTS:-K1,K10 w1,w4 K3 ma}; do  # POINTS: the points to run, each sweep one word
      case $p in
        K*) point mmK $MM --set simulation.homeostasis_width=2 --vary simulation.michaelis_K=$(echo "$p" | tr -d K) ;;
        w*) point mmw $MM --set simulation.michaelis_K=3 --vary simulation.homeostasis_width=$(echo "$p" | tr -d w) ;;
        ma) point ma ;;
      esac
    done
  done
elif [ "${STAGE:-2}" = 9 ]; then
  SUFFIX=${SUFFIX:-_takes_groups_8935}
  NETS=${NETS:-8935,8936,8937}
  for tag in ma mm; do
    sweep free_forms regression $tag $NETS --set simulation.n_runs=3
    sweep free_forms gnn $tag $NETS --set simulation.n_runs=3
  done
elif [ "${STAGE:-2}" = 10 ]; then
  SUFFIX=${SUFFIX:-_one_run_8941}
  NETS=${NETS:-8941,8942,8943}
  sweep free_forms regression ma $NETS
  sweep free_forms gnn ma $NETS
elif [ "${STAGE:-2}" = 5 ]; then
  SUFFIX=_group_solve_8300
  sweep free_forms regression mm 8301,8302,8303 --set simulation.n_runs=3
  sweep free_forms gnn mm 8301,8302,8303 --set simulation.n_runs=3 --set training.group_solve_moves=100
elif [ "${STAGE:-2}" = 4 ]; then
  SUFFIX=_group_solve_8200
  for tag in mm ma; do
    sweep free_forms regression $tag 8201,8202,8203 --set simulation.n_runs=3
    sweep free_forms gnn $tag 8201,8202,8203 --set simulation.n_runs=3 --set training.group_solve_moves=100
  done
else
  SUFFIX=_8000_runs3
  sweep free_forms regression mm 8001,8002,8003 --set simulation.n_runs=3
  sweep free_forms gnn mm 8001,8002,8003 --set simulation.n_runs=3
  sweep joint_recovery gnn mm 8001,8002,8003 --set simulation.n_runs=3
fi
