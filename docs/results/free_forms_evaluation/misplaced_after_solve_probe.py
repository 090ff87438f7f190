"""misplaced_free_probe.py's table for a run trained without the end solve (training.group_solve_moves null, as
split_apply_dev.sh trains development 8957), after the shipped end solve has run on it in memory: the metabolites the
solve leaves off their type, and why.

    python docs/results/free_forms_evaluation/misplaced_after_solve_probe.py OUT.csv RUN_DIR [RUN_DIR ...]
"""

from pathlib import Path

from misplaced_free_probe import finished_run, misplaced_rows, write_table


def probe(run: Path) -> list[dict]:
    cfg, dataset, trainer = finished_run(run, ["training.group_solve_moves=100"])
    trainer.finish_with_group_solve()
    return [row | {"solve_applied": trainer.group_solve_report["group_solve_applied"]}
            for row in misplaced_rows(run.name, cfg, dataset, trainer)]


if __name__ == "__main__":
    write_table(probe)
