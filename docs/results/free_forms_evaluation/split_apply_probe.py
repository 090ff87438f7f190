"""The end-of-run group solve from a run trained without it (training.group_solve_moves null, so its checkpoint is
where the solve starts), finished twice: its k taken (applied) and not (the run's own k, the solve's groups taken with
each group's h solved at that k); the metrics after each, the solve's gain above the noise floor, its splits, and its
groups' misfit at the run's own k. Asks whether, once the solve split a group, the solve's k should be taken below the
twofold bar that keeps it off mass-action runs.

    python docs/results/free_forms_evaluation/split_apply_probe.py OUT.csv RUN_DIR [RUN_DIR ...]
"""

import copy
import json
from pathlib import Path

from end_solve_probe import figures, metrics_after
from misplaced_free_probe import finished_run, write_table

from metabo_tune import train as train_module
from metabo_tune.group_solve import _above


def finish(trainer: train_module.Trainer, dataset, applied: bool) -> tuple[dict, dict]:
    """The trainer's end solve with its k taken or not, and the run's figures and solve report after it."""
    trainer = copy.deepcopy(trainer)
    rule = train_module.solve_applies
    train_module.solve_applies = lambda solution: applied
    try:
        trainer.finish_with_group_solve()
    finally:
        train_module.solve_applies = rule
    return figures(metrics_after(trainer, dataset)), trainer.group_solve_report


def probe(run: Path) -> list[dict]:
    before = json.loads((run / "metrics.json").read_text())
    if "group_solve_applied" in before:
        raise SystemExit(f"error: {run}: trained with the end solve; train with --set training.group_solve_moves=null")
    _, dataset, trainer = finished_run(run, ["training.group_solve_moves=100"])
    row = {"run": f"{run.parent.parent.name} {run.name}"} | {f"{k} before": v for k, v in figures(before).items()}
    for applied in (False, True):
        after, report = finish(trainer, dataset, applied)
        row |= {f"{k} {'applied' if applied else 'not applied'}": v for k, v in after.items()}
    floor = report["group_solve_noise_rms"], report["group_solve_noise_resolution_rms"]
    solved = _above(report["group_solve_misfit_rms"], *floor)
    row |= {"gain": _above(report["group_solve_start_misfit_rms"], *floor) / solved,
            "gain_of_k_at_its_groups": (_above(report["group_solve_held_misfit_rms"], *floor) / solved
                                        if "group_solve_held_misfit_rms" in report else 1.0)}
    return [row | {k: v for k, v in report.items() if k not in ("group_solve_time_s", "group_solve_applied")}]


if __name__ == "__main__":
    write_table(probe)
