"""The groups a finished run would have taken from the solve's moves alone (no merges or splits), scored against the
truth: the run's own groups (from its checkpoint's embeddings), the moves-only groups, and their misfits with k solved
and at the run's own k. A diagnostic that reads the truth for its scores, as metrics do; the solve never does.

    python docs/results/free_forms_evaluation/moves_only_probe.py OUT.csv RUN_DIR [RUN_DIR ...]
"""

import sys
from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from group_solve_probe import checkpoint_inputs

from metabo_tune.group_solve import GroupSolve
from metabo_tune.metrics import matched_accuracy

MAX_MOVES = 100  # the shipped config's group_solve_moves


def probe(run: Path) -> dict:
    _, dataset, inputs, run_k = checkpoint_inputs(run)
    with threadpool_limits(1):
        solve = GroupSolve(*inputs)
        moved = solve.solve(MAX_MOVES, run_k)
        held = solve.regrouped(moved.groups).with_rate_constants(run_k)
    truth = dataset.truth.types
    return {"run": str(run), "run_groups_accuracy": matched_accuracy(inputs[4], truth), "moves": moved.moves,
            "moved_groups_accuracy": matched_accuracy(moved.groups, truth), "start_misfit_rms": moved.start_misfit_rms,
            "moved_misfit_rms": moved.misfit_rms, "moved_misfit_rms_at_run_k": held.misfit_rms}


if __name__ == "__main__":
    rows = pd.DataFrame([probe(Path(run)) for run in sys.argv[2:]])
    print(rows.to_string(index=False))
    rows.to_csv(sys.argv[1], index=False)
