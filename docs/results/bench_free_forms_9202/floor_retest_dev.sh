#!/usr/bin/env bash
# Development evidence for the tree's floor-retest rule (docs/results.md, "floor-retest"): on 9202 (training seed 77,
# full budget), the line 9202's first tree repetition built from the baseline (the residual fit at 1e3; with the type
# grouping at 0.95 and the group solve) with the spread's priors entry applied (substrate_zero, the restoring prior
# at 1, the gauge). Resumable; writes floor_retest_dev.csv beside it. About 5 min a run on a quiet core.
set -eu
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
out=results/floor_retest_dev
python=${PYTHON:-.venv/bin/python}
priors="--set simulation.seed=9202 --set training.coeff_residual_fit=1000 --set graph_model.substrate_zero=true
        --set training.coeff_MLP_node_restoring=1.0 --set training.sub_norm_target=gauge"
switches="--set training.type_grouping_at=0.95 --set training.group_solve_moves=100"
train() {  # name, overrides
  [ -f $out/$1/metrics.json ] || OMP_NUM_THREADS=1 $python -m metabo_tune.train search_spaces/free_forms.yaml $2 \
    --out $out/$1 --quiet
}
train fit_priors "$priors"
train fit_grouping_solve_priors "$priors $switches"
$python - "$out" "$(dirname "$0")/floor_retest_dev.csv" <<'PY'
import json, sys
from pathlib import Path
import pandas as pd
keys = ["classification", "rate_constants_R2_gauge", "MLP_sub_shape_R2_s1", "MLP_node_R2_0", "MLP_node_R2_1",
        "embedding_cluster_acc", "group_solve_applied", "training_time_min"]
rows = [{"run": run, **{k: json.loads((Path(sys.argv[1]) / run / "metrics.json").read_text()).get(k) for k in keys}}
        for run in ("fit_priors", "fit_grouping_solve_priors")]
pd.DataFrame(rows).to_csv(sys.argv[2], index=False, float_format="%.6g")
print(pd.DataFrame(rows).to_string(index=False))
PY
