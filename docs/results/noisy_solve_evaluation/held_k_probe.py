"""Would the group solve place the types better with k held at the run's (tried, not adopted)? A diagnostic on
finished runs of the noisy known-form configuration (it reads the truth, as metrics do). On 8928 at σ_m 0.01 the
one misplaced metabolite stays wrong because the joint solve's k absorbs it (misplaced_probe.py). Here each run's
own groups at its last checkpoint are refined by moves with k held at the checkpoint's (each group's h solved;
GroupSolve's screen), each the move that lowers that misfit most, until none does; the types' accuracy before and
after. Writes held_k_probe.csv beside it. Runs as a script (it imports type_slope_probe.py beside it).

    python docs/results/noisy_solve_evaluation/held_k_probe.py RUN_DIR [RUN_DIR ...]
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from type_slope_probe import finished_run  # beside this script

from metabo_tune.group_solve import KNOTS_PER_GROUP, GroupSolve
from metabo_tune.metrics import matched_accuracy
from metabo_tune.train import LINEAR_HEAD_KNOTS

MAX_MOVES = 100


def probe(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    raw, dataset, trainer = finished_run(run)
    conc, target, frame_mean, kept = trainer._group_solve_rows()
    knots = LINEAR_HEAD_KNOTS if trainer.model.relaxation is not None else KNOTS_PER_GROUP
    with torch.no_grad():
        rates_per_k = (trainer.model.rates(conc) / torch.pow(10.0, trainer.model.log_k)).double().numpy()
        run_k = torch.pow(10.0, trainer.model.log_k.double()).numpy()
    start = trainer.type_groups.labels.copy()
    solve = GroupSolve(rates_per_k, trainer.stoichiometry.astype(np.float64), conc.double().numpy(),
                       target.astype(np.float64), start, knots, frame_mean, kept=kept,
                       degree=trainer._group_solve_degree())
    moves = 0
    while moves < MAX_MOVES and (candidates := solve._screened_moves(run_k)):
        i, g = candidates[0]
        solve._move(solve.matrix, solve.rhs, i, g)
        solve.groups[i] = g
        moves += 1
    return {"network": raw["simulation"]["seed"], "measurement_noise_level": raw["training"]["measurement_noise_level"],
            "classification": metrics["classification"], "group_solve_applied": metrics["group_solve_applied"],
            "types_run": matched_accuracy(start, dataset.truth.types), "held_k_moves": moves,
            "types_held_k": matched_accuracy(solve.groups, dataset.truth.types)}


if __name__ == "__main__":
    torch.set_num_threads(1)
    table = pd.DataFrame([probe(Path(run)) for run in sys.argv[1:]])
    table.to_csv(Path(__file__).with_name("held_k_probe.csv"), index=False)
    print(table.to_string(index=False))
