"""Why a finished run's group solve leaves a metabolite in the other type's group (a diagnostic: it reads the truth,
as metrics do). For each metabolite whose group is not its type's: how often it sits near zero, how many of its
weak-form rows the zero margin keeps, its own relaxation fitted at the run's k and at the true k (GroupSolve.
relaxation_estimates), its reactions' log k errors, and the change of the joint solve's misfit (k and every group's
law solved) were it moved to its type's group. Writes misplaced_probe.csv beside it. Runs as a script (it imports
type_slope_probe.py beside it).

    python docs/results/noisy_solve_evaluation/misplaced_probe.py RUN_DIR [RUN_DIR ...]
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from type_slope_probe import finished_run  # beside this script

from metabo_tune.group_solve import GroupSolve
from metabo_tune.train import LINEAR_HEAD_KNOTS

NEAR_ZERO = 0.05  # concentration below which a frame counts as near zero


def probe(run: Path) -> list[dict]:
    raw, dataset, trainer = finished_run(run)
    groups, truth = trainer.type_groups.labels, dataset.truth
    type_of_group = {g: np.bincount(truth.types[groups == g]).argmax() for g in np.unique(groups)}
    group_of_type = {t: g for g, t in type_of_group.items()}
    target, frame_mean, kept = trainer._weak_form_rows()
    log_k = trainer.model.log_k.detach().double().numpy()
    with torch.no_grad():
        rates_per_k = (trainer.model.rates(trainer.conc) / torch.pow(10.0, trainer.model.log_k)).double().numpy()
    solve = GroupSolve(rates_per_k, trainer.stoichiometry.astype(np.float64), trainer.conc.double().numpy(),
                       target.astype(np.float64), groups, LINEAR_HEAD_KNOTS, frame_mean, kept=kept)
    at_run_k, _ = solve.relaxation_estimates(10.0 ** log_k)
    at_true_k, _ = solve.relaxation_estimates(10.0 ** truth.log_k)
    _, misfit = solve._misfit(solve.matrix, solve.rhs)
    conc = dataset.observed.trajectory.concentrations
    rows = []
    for m in np.flatnonzero(np.array([type_of_group[g] for g in groups]) != truth.types):
        reactions = np.flatnonzero(trainer.stoichiometry[m] != 0)
        rows.append({"network": raw["simulation"]["seed"], "metabolite": int(m), "type": int(truth.types[m]),
                     "frames_near_zero": float((conc[:, m] < NEAR_ZERO).mean()),
                     "rows_kept": int(kept[:, m].sum()), "rows": int(kept.shape[0]),
                     "own_rate_at_run_k": at_run_k[m, 0], "own_rate_at_true_k": at_true_k[m, 0],
                     "true_rate": truth.lambda_per_type[truth.types[m]],
                     "max_abs_log_k_error_of_its_reactions": float(np.abs(log_k - truth.log_k)[reactions].max()),
                     "solve_misfit": misfit,
                     "misfit_change_moved_to_its_type": solve._change([(m, group_of_type[truth.types[m]])], misfit)})
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)
    table = pd.DataFrame([row for run in sys.argv[1:] for row in probe(Path(run))])
    table.to_csv(Path(__file__).with_name("misplaced_probe.csv"), index=False)
    print(table.to_string(index=False))
