"""How much a split of one of a finished free-form run's groups earns, for a split of two laws and for one of a
single law (a diagnostic: it reads the truth, as metrics do). On the trainer's own rows with its learned rate law
held, from the run's groups (`Trainer.group_solve_from_own_groups`), solved with moves but without regrouping: its
misfit above the noise floor (excess). Then, one row each:

* "true types": the true types as the groups, refined by moves (for a run left with one group: the split it missed);
* "group g by mean" / "by slope": group g split as the solve tries it (by the sign of its members' mean residual, or
  of their residual's slope), before moves and refined by them; with the group's purity (the share of its most
  common type: a pure group's split is a split of one law) and the split's accuracy against the types.

The gain is the excess before the split over the excess after. The solve refines a split whose gain before moves is
above ONE_LAW_GAIN and keeps it where the refined gain is above GROUP_SOLVE_MIN_GAIN.

    python docs/results/free_forms_evaluation/split_gain_probe.py OUT.csv RUN_DIR [RUN_DIR ...]
"""

from pathlib import Path

import numpy as np
from misplaced_free_probe import finished_run, write_table

from metabo_tune.metrics import matched_accuracy


def probe(run: Path) -> list[dict]:
    cfg, dataset, trainer = finished_run(run)
    types, moves = dataset.truth.types, cfg.training.group_solve_moves
    solve, run_k = trainer.group_solve_from_own_groups()
    own = solve.solve(moves, run_k)
    common = {"run": f"{run.parent.parent.name} {run.name}", "groups": len(np.unique(own.groups)),
              "types": matched_accuracy(own.groups, types), "noise_rms": own.noise_rms,
              "resolution_rms": own.resolution_rms, "excess_rms": own.excess_rms}

    def row(split: str, groups: np.ndarray, purity: float) -> dict:
        regrouped = solve.regrouped(groups.copy())
        before = regrouped._refined(0, own.start_misfit_rms, own.floor)
        after = regrouped._refined(moves, own.start_misfit_rms, own.floor)
        return common | {"split": split, "purity": purity, "split_types": matched_accuracy(after.groups, types),
                         "gain_before_moves": own.excess_rms / max(before.excess_rms, 1e-300),
                         "gain": own.excess_rms / max(after.excess_rms, 1e-300)}

    rows = [row("true types", types, np.nan)]
    for g in np.unique(own.groups):
        members = own.groups == g
        purity = float(np.bincount(types[members]).max() / members.sum())
        for name, score in zip(("mean", "slope"), solve._split_scores(own), strict=True):
            groups = solve._split_groups(own.groups, score, int(g))
            if groups is not None:
                rows.append(row(f"group {g} by {name}", groups, purity))
    return rows


if __name__ == "__main__":
    write_table(probe)
