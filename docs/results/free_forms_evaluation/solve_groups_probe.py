"""Where the group solve is not applied, were its groups right? A diagnostic on finished runs (it reads the truth,
as metrics do): the trainer's own group solve (Trainer.finish_with_group_solve) on each run's last checkpoint, and
the types' accuracy of the run's groups and of the solve's. A run whose solve was not applied in training holds its
own k and groups at its checkpoint, so this repeats the training's solve. Writes the CSV named first. Runs as a
script (it imports type_slope_probe.py from docs/results/noisy_solve_evaluation).

    python docs/results/free_forms_evaluation/solve_groups_probe.py OUT.csv RUN_DIR [RUN_DIR ...]
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "noisy_solve_evaluation"))
from type_slope_probe import finished_run

from metabo_tune.group_solve import GroupSolution, GroupSolve
from metabo_tune.metrics import matched_accuracy

SOLVE = GroupSolve.solve


def probe(run: Path) -> dict:
    solutions: list[GroupSolution] = []

    def solve_and_keep(solve: GroupSolve, *args, **kwargs) -> GroupSolution:
        solutions.append(SOLVE(solve, *args, **kwargs))
        return solutions[-1]

    _, dataset, trainer = finished_run(run)
    run_types = matched_accuracy(trainer.type_groups.labels, dataset.truth.types)
    GroupSolve.solve = solve_and_keep
    try:
        trainer.finish_with_group_solve()
    finally:
        GroupSolve.solve = SOLVE
    solution = solutions[0]
    row = {"run": f"{run.parent.parent.name} {run.name}", "run_types": run_types,
           "solve_types": matched_accuracy(solution.groups, dataset.truth.types),
           "solve_groups": len(np.unique(solution.groups)), "moves": solution.moves, "merges": solution.merges,
           "splits": solution.splits, "excess_rms": solution.excess_rms,
           "start_excess_rms": solution.start_excess_rms,
           "applied": trainer.group_solve_report["group_solve_applied"]}
    print(row, flush=True)
    return row


def main() -> None:
    torch.set_num_threads(1)
    threadpool_limits(limits=1)
    out, runs = Path(sys.argv[1]), [Path(run) for run in sys.argv[2:]]
    pd.DataFrame([probe(run) for run in runs]).to_csv(out, index=False, float_format="%.6g")


if __name__ == "__main__":
    main()
