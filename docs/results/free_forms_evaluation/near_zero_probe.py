"""Why a metabolite that lives near zero is left off its type (a diagnostic: it reads the truth, as metrics do). For
each (finished run, metabolite): its true and measured concentration over the frames where the truth is below
`LOW`, and the fraction measured as zero (the measurement is max(c + ε, 0)); then, in the group solve from the run's
final groups as trained (data read as measured), the misfit change were it moved to its type's group with k and
every h solved again, the part of it in its own rows, and its own rows' mean residual in either place, with that
mean's standard error at the solve's noise floor.

    python docs/results/free_forms_evaluation/near_zero_probe.py OUT.csv RUN_DIR:METABOLITE [...]
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from misplaced_free_probe import finished_run, type_of_group

from metabo_tune.simulate import load_or_simulate

LOW = 0.01


def probe(run: Path, metabolite: int) -> dict:
    cfg, dataset, trainer = finished_run(run)
    exact = load_or_simulate(cfg.simulation).observed.trajectory.concentrations[:, metabolite]
    measured = dataset.observed.trajectory.concentrations[:, metabolite]  # as measured (decensoring is training's)
    low = exact < LOW
    truth, groups = dataset.truth, trainer.type_groups.labels
    solve, run_k = trainer.group_solve_from_own_groups()
    home = next(g for g, t in type_of_group(groups, truth.types).items() if t == truth.types[metabolite])
    moved = groups.copy()
    moved[metabolite] = home
    residuals = []
    for placed in (groups, moved):
        matrix, rhs = solve.matrix.copy(), solve.rhs.copy()
        if placed is moved:
            solve._move(matrix, rhs, metabolite, home)
        x = solve._solve(matrix, rhs)
        values = [x[solve.offsets[g]:solve.offsets[g + 1]] for g in range(len(solve.knots))]
        residuals.append(solve._residual(x[:solve.n_reactions], values, placed))
    change = np.square(residuals[1]).sum(0) - np.square(residuals[0]).sum(0)
    own = solve.weight[:, metabolite] > 0
    floor = solve.solve(0, run_k).noise_rms
    return {"run": f"{run.parent.parent.name}/{run.name}", "metabolite": metabolite,
            "type": int(truth.types[metabolite]), "frames_true_below_low": float(low.mean()),
            "true_mean_there": float(exact[low].mean()), "measured_mean_there": float(measured[low].mean()),
            "measured_zero_there": float((measured[low] <= 0).mean()),
            "misfit_change_moved": float(change.sum()), "of_it_own_rows": float(change[metabolite]),
            "own_rows": int(own.sum()), "own_mean_residual_where_placed": float(residuals[0][own, metabolite].mean()),
            "own_mean_residual_moved": float(residuals[1][own, metabolite].mean()),
            "standard_error_of_that_mean": float(floor / np.sqrt(own.sum()))}


if __name__ == "__main__":
    torch.set_num_threads(1)
    pairs = [argument.rsplit(":", 1) for argument in sys.argv[2:]]
    table = pd.DataFrame([probe(Path(run), int(metabolite)) for run, metabolite in pairs])
    table.to_csv(sys.argv[1], index=False)
    print(table.T.to_string())
