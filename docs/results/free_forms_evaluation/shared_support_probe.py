"""Whether a group's homeostasis read only where several of its members live places the metabolites that live
alone (a diagnostic: it reads the truth, as metrics do). The group solve's h is a spline on knots at quantiles of
its members' concentrations, constant beyond the ends; a metabolite that lives where no other member of its group
does (far above both baselines at w 1, at the clamp at K 10) then has a stretch of h to itself, which fits it in
either group. Here each group's knots span only the range that at least `M` of its members cover (each member's
1st to 99th percentile), so h beyond it is the constant its members share. For each finished run, the solve is run
from the run's final groups with the knots as shipped and with each M: the types it ends with and its misfit.

    python docs/results/free_forms_evaluation/shared_support_probe.py OUT.csv RUN_DIR [RUN_DIR ...]
"""

from pathlib import Path

import numpy as np
from misplaced_free_probe import finished_run, write_table

from metabo_tune.metrics import matched_accuracy
from metabo_tune.splines import Breakpoints, spread_breakpoints
from metabo_tune.train import GROUP_SOLVE_MIN_GAIN

SHARED_BY = (2, 3)


def shared_breakpoints(members: int) -> Breakpoints:
    def breakpoints(values: np.ndarray, count: int) -> np.ndarray:
        if values.ndim < 2 or values.shape[1] < members:
            return spread_breakpoints(values, count)
        low, high = np.quantile(values, [0.01, 0.99], axis=0)
        return spread_breakpoints(np.clip(values, np.sort(low)[members - 1], np.sort(high)[-members]), count)
    return breakpoints


def probe(run: Path) -> list[dict]:
    cfg, dataset, trainer = finished_run(run)
    truth, groups = dataset.truth, trainer.type_groups.labels
    solve, run_k = trainer.group_solve_from_own_groups()
    rows = []
    for members in (1, *SHARED_BY):
        solve.breakpoints = spread_breakpoints if members == 1 else shared_breakpoints(members)
        again = solve.regrouped(groups).solve(cfg.training.group_solve_moves, run_k,
                                              min_split_gain=GROUP_SOLVE_MIN_GAIN)
        rows.append({"run": str(run.parent.parent.name) + "/" + run.name, "shared_by": members,
                     "run_types": matched_accuracy(groups, truth.types),
                     "solved_types": matched_accuracy(again.groups, truth.types), "moves": again.moves,
                     "splits": again.splits, "merges": again.merges, "misfit_rms": again.misfit_rms,
                     "noise_rms": again.noise_rms, "resolution_rms": again.resolution_rms})
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    write_table(probe)
