"""Why a finished free-form run leaves a metabolite in the other type's group (a diagnostic: it reads the truth, as
metrics do). For each metabolite whose group is not its type's majority group: where its concentrations lie against
the two types' baselines (in units of the homeostasis width w), how far apart the two types' true laws are over its
own frames (RMS of h_own − h_other, against the RMS of h_own), and the change of the group solve's misfit (k and
every group's h solved, the run's learned rate law held, the trainer's own rows and knots) were it moved to its type's
group: a positive change means the data, as the solve reads them, prefer it where it is (NaN where one group holds both
types); the same with k held at the solve's, to show how much of that evidence k absorbs. And the solve run once
more from the run's final groups, each group's knots placed from its final members (the trainer's solve keeps a
group's knots while members move): whether it moves the metabolite to its type, and its misfit against the run's own
solve's. Two types only.

    python docs/results/free_forms_evaluation/misplaced_free_probe.py OUT.csv RUN_DIR [RUN_DIR ...]
"""

import copy
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from metabo_tune.config import Config, load_config
from metabo_tune.group_solve import GroupSolve
from metabo_tune.metrics import matched_accuracy
from metabo_tune.simulate import Dataset, load_or_simulate
from metabo_tune.train import GROUP_SOLVE_MIN_GAIN, Trainer


def finished_run(run: Path, reading: list[str] | None = None) -> tuple[Config, Dataset, Trainer]:
    """A finished run's config, its data (with the truth) and its trainer at the end of the run; with `reading`
    (`training.KEY=VALUE` overrides, e.g. of decensor_zeros or zero_margin), the same trained state with the data read
    as those keys say."""
    cfg = load_config(run / "config.yaml", reading or [])
    dataset = load_or_simulate(cfg.simulation, measurement_noise_level=cfg.training.measurement_noise_level)
    trainer = Trainer(cfg, dataset.observed, device="cpu")
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    state["config"] = cfg.to_dict()  # the state as trained; only the reading of the data differs
    trainer.load_state_dict(state)
    return cfg, dataset, trainer


def type_of_group(groups: np.ndarray, types: np.ndarray) -> dict[int, int]:
    """Each group's type: the true type of most of its members."""
    return {g: int(np.bincount(types[groups == g]).argmax()) for g in np.unique(groups)}


def write_table(probe: Callable[[Path], list[dict]]) -> None:
    """`probe` on every RUN_DIR of the command line, its rows to OUT.csv and printed."""
    torch.set_num_threads(1)
    table = pd.DataFrame([row for run in sys.argv[2:] for row in probe(Path(run))])
    table.to_csv(sys.argv[1], index=False)
    print(table.to_string(index=False))


def moved_with_k_held(solve: GroupSolve, metabolite: int, group: int, solved: np.ndarray, misfit: float) -> float:
    """The misfit's change were `metabolite` moved to `group` with k held at the solve's (`solved`, misfit `misfit`)
    and each group's h solved again: set beside the change with k solved again, it shows how much of a move's
    evidence the rate constants absorb."""
    moved = copy.copy(solve)
    moved.matrix, moved.rhs = solve.matrix.copy(), solve.rhs.copy()
    moved._move(moved.matrix, moved.rhs, metabolite, group)
    return moved.misfit_with_rate_constants(solved[:solve.n_reactions]) - misfit


def probe(run: Path) -> list[dict]:
    return misplaced_rows(run.name, *finished_run(run))


def misplaced_rows(name: str, cfg: Config, dataset: Dataset, trainer: Trainer) -> list[dict]:
    """The table's rows for a trainer at the end of its run."""
    truth, groups = dataset.truth, trainer.type_groups.labels
    group_type = type_of_group(groups, truth.types)
    group_of_type = {t: g for g, t in group_type.items()}
    solve, run_k = trainer.group_solve_from_own_groups()
    solved, misfit = solve._misfit(solve.matrix, solve.rhs)
    again = solve.regrouped(groups).solve(cfg.training.group_solve_moves, run_k, min_split_gain=GROUP_SOLVE_MIN_GAIN)
    type_of_again = type_of_group(again.groups, truth.types)
    observed = dataset.observed.trajectory.concentrations.astype(np.float64)
    other = dataclasses.replace(truth, types=1 - truth.types)
    own_h, other_h = truth.homeostasis(observed), other.homeostasis(observed)
    width, rows = truth.homeostasis_width, []
    for m in np.flatnonzero(np.array([group_type[g] for g in groups]) != truth.types):
        t = truth.types[m]
        low, median, high = np.quantile(observed[:, m], [0.05, 0.5, 0.95])
        rows.append({"run": name, "metabolite": int(m), "type": int(t), "c_5": low, "c_50": median, "c_95": high,
                     "own_baseline": truth.baseline_per_type[t], "other_baseline": truth.baseline_per_type[1 - t],
                     "frames_within_w_of_own_baseline": float((abs(observed[:, m] - truth.baseline_per_type[t])
                                                               < width).mean()),
                     "h_rms": float(np.sqrt(np.mean(own_h[:, m] ** 2))),
                     "h_own_minus_other_rms": float(np.sqrt(np.mean((own_h[:, m] - other_h[:, m]) ** 2))),
                     "solve_misfit": misfit,
                     "misfit_change_moved_to_its_type": (solve._change([(m, group_of_type[t])], misfit)
                                                         if t in group_of_type else np.nan),
                     "misfit_change_moved_k_held": (moved_with_k_held(solve, m, group_of_type[t], solved, misfit)
                                                    if t in group_of_type else np.nan),
                     "solved_again_to_its_type": bool(type_of_again[again.groups[m]] == t),
                     "solved_again_types": matched_accuracy(again.groups, truth.types),
                     "solved_again_misfit_rms": again.misfit_rms,
                     "run_solve_misfit_rms": trainer.group_solve_report["group_solve_misfit_rms"]})
    return rows


if __name__ == "__main__":
    write_table(probe)
