"""A finished run's end-of-run group solve done again with the trainer as it is now, and the run's metrics after it:
what a rule of that solve changed since would have given, without training again. Valid where the run's own solve
changed nothing (neither applied nor its groups taken), so that its checkpoint holds the state the solve started
from; other runs are refused. Training before the solve is the same for both, so a run trained before a change of the
solve's rules and not used to choose them evaluates the change. Writes the goal's figures before and after.

    python docs/results/free_forms_evaluation/end_solve_probe.py OUT.csv RUN_DIR [RUN_DIR ...]
"""

import json
from pathlib import Path

from misplaced_free_probe import finished_run, write_table

from metabo_tune import metrics
from metabo_tune.simulate import Dataset
from metabo_tune.train import Trainer

GOAL = {"rate_constants_R2_gauge": 0.95, "MLP_sub_shape_R2": 0.99, "MLP_node_R2": 0.95}


def goal_met(values: dict) -> bool:
    """Issue 28's Michaelis–Menten goal: k under the gauge, f's shape per order, h per type, every type found."""
    def above(prefix: str, bar: float) -> bool:
        found = [float(v) for k, v in values.items() if k.startswith(prefix) and "_gt_" not in k]
        return bool(found) and min(found) > bar
    return all(above(prefix, bar) for prefix, bar in GOAL.items()) and float(values["embedding_cluster_acc"]) == 1.0


def figures(values: dict) -> dict:
    keep = [k for k in values if k.startswith(tuple(GOAL)) and "_gt_" not in k]
    return {k: values[k] for k in ["classification", *keep, "embedding_cluster_acc"]} | {"goal": goal_met(values)}


def metrics_after(trainer: Trainer, dataset: Dataset) -> dict:
    """The run's metrics as the trainer now stands."""
    result = trainer.result()
    return metrics.compute_metrics(result.model, dataset, status="completed", loss_history=result.loss_history,
                                   training_time_s=result.training_time_s, iterations=result.iterations)


def probe(run: Path) -> list[dict]:
    before = json.loads((run / "metrics.json").read_text())
    if before.get("group_solve_applied") or before.get("group_solve_groups_taken"):
        raise SystemExit(f"error: {run}: its own group solve changed the run; its checkpoint is not where it started")
    _, dataset, trainer = finished_run(run)
    trainer.finish_with_group_solve()
    after = metrics_after(trainer, dataset)
    row = {"run": f"{run.parent.parent.name} {run.name}"}
    row |= {f"{k} before": v for k, v in figures(before).items()}
    row |= {f"{k} after": v for k, v in figures(after).items()}
    return [row | {k: v for k, v in trainer.group_solve_report.items() if k != "group_solve_time_s"}]


if __name__ == "__main__":
    write_table(probe)
