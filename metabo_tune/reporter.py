"""Ray Tune callback that keeps the experiment's tables: one row per trial in `trials.csv`, one entry per
trial in `analysis.md` (the mission's log form), and a one-line progress display on the console.

Rows are kept by trial id: a trial resumed after an error reports again and replaces its error row,
while the row of a finished trial is final (a trial that finished just before the driver was killed
may be started again by the resume, see trainable.py, and must not change its row). Both files are
rewritten whole and atomically after every trial, so a killed driver loses nothing that had finished.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from metabo_tune.atomic_file import write_atomically
from metabo_tune.metrics import degeneracy
from metabo_tune.tree import FULL, SCREEN

IDENTITY_COLUMNS = ("trial_id", "node_id", "parent_id", "strategy", "mutation", "seed", "fidelity", "status",
                    "classification", "reward", "degeneracy_gap", "diagnosis", "homeostasis_assessment")
_SKIP = {"config", "trial_dir", "final", "done", "training_iteration", "trial_id", "date", "timestamp",
         "pid", "hostname", "node_ip", "time_this_iter_s", "time_since_restore", "iterations_since_restore",
         "checkpoint_dir_name", "should_checkpoint"}


class TrialTable(tune.Callback):
    def __init__(self, experiment_dir: str | Path, num_trials: int, echo: bool = True) -> None:
        self.experiment_dir = str(experiment_dir)
        self.num_trials = num_trials
        self.echo = echo
        self.rows: dict[str, dict[str, Any]] = {}
        self.running: set[str] = set()

    def setup(self, **info: Any) -> None:
        """On a resumed experiment this callback comes back as it was pickled at the start, so the rows
        of the trials that finished before the interruption are read back from trials.csv."""
        path = Path(self.experiment_dir) / "trials.csv"
        if path.is_file() and not self.rows:
            table = pd.read_csv(path, dtype={"trial_id": str, "node_id": str, "parent_id": str})
            self.rows = {row["trial_id"]: row for row in table.to_dict("records")}

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self.running.add(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._record(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._record(trial, error=True)

    def _record(self, trial, error: bool) -> None:
        self.running.discard(trial.trial_id)
        if self.rows.get(trial.trial_id, {}).get("status", "error") != "error":
            return
        result = dict(trial.last_result or {})
        config = trial.config
        row: dict[str, Any] = {
            "trial_id": trial.trial_id, "node_id": config.get("node_id"), "parent_id": config.get("parent_id"),
            "strategy": config.get("strategy"), "mutation": config.get("mutation"), "seed": config.get("seed"),
            "fidelity": config.get("fidelity", FULL),
        }
        if error or not result.get("final", False):
            result.update(status="error", classification="failed", reward=0.0)
        gap, diagnosis = degeneracy(float(result.get("test_pearson", math.nan)),
                                    float(result.get("rate_constants_R2", math.nan)))
        result.setdefault("degeneracy_gap", gap)
        result.setdefault("diagnosis", diagnosis)
        row |= {key: value for key, value in result.items() if key not in _SKIP and not key.startswith("config/")}
        row |= {key: value for key, value in config.get("values", {}).items()}
        # Relative to the experiment directory, so an experiment copied off a cluster still resolves.
        row["trial_dir"] = self._relative(result.get("trial_dir", ""))
        row["ray_trial_dir"] = self._relative(trial.path)
        self.rows[trial.trial_id] = row
        self._write()
        if self.echo:
            self._print_progress()

    def _relative(self, path: str) -> str:
        if not path:
            return ""
        return os.path.relpath(path, self.experiment_dir) if os.path.isabs(path) else path

    def _write(self) -> None:
        directory = Path(self.experiment_dir)
        directory.mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame(list(self.rows.values()))
        ordered = [c for c in IDENTITY_COLUMNS if c in table.columns]
        table = table[ordered + [c for c in table.columns if c not in ordered]]
        write_atomically(directory / "trials.csv", table.to_csv(index=False))
        write_atomically(directory / "analysis.md", render_analysis(list(self.rows.values())))

    def _print_progress(self) -> None:
        """The best trial at full budget, or at screen (and said so) while none has finished at full."""
        done = len(self.rows)
        full = [row for row in self.rows.values() if row.get("fidelity") != SCREEN]
        best = max(full or self.rows.values(), key=lambda r: r.get("reward") or 0.0)
        at = "" if full else " at screen"
        print(f"[metabo_tune] {done}/{self.num_trials} trials done, {len(self.running)} running; best reward{at} "
              f"{best.get('reward', 0.0):.3f} (node {best['node_id']}, {best.get('classification')}, "
              f"rate_constants_R2 {_fmt(best.get('rate_constants_R2'))}, avg_slope_ratio "
              f"{_fmt(best.get('avg_slope_ratio'))})", file=sys.stderr, flush=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "nan"
    return str(value)


CONFIG_KEYS_SHOWN = 8
METRIC_KEYS = ("rate_constants_R2", "rate_constants_R2_all", "trimmed_R2", "n_outliers", "log_k_rmse", "slope",
               "alpha", "alpha_ls", "avg_slope_ratio", "MLP_node_slope_ratio_0", "MLP_node_slope_ratio_1",
               "embedding_cluster_acc", "embedding_n_clusters", "embedding_ari", "test_R2", "test_pearson",
               "final_loss", "training_time_min", "reward")


def visual_line(row: dict[str, Any]) -> str:
    """The log form's `Visual:` judgement, generated from what the plots measure."""
    parts = []
    sub_r2 = row.get("MLP_sub_R2")
    if isinstance(sub_r2, (int, float)) and math.isfinite(sub_r2):
        shape = "linear in c" if sub_r2 > 0.99 else "roughly linear" if sub_r2 > 0.9 else "not linear"
        parts.append(f"MLP_sub={shape} (R² vs c {sub_r2:.3f})")
    ratios = [row.get(f"MLP_node_slope_ratio_{t}") for t in (0, 1)]
    if all(isinstance(r, (int, float)) and math.isfinite(r) for r in ratios):
        verdict = row.get("homeostasis_assessment", "")
        parts.append(f"MLP_node={verdict} (slope ratios {ratios[0]:.2f} / {ratios[1]:.2f})")
    if "n_outliers" in row:
        parts.append(f"k scatter: {row['n_outliers']} outliers of {row.get('n_identifiable', '?')} identifiable, "
                     f"RMSE {_fmt(row.get('log_k_rmse'))}")
    if "embedding_n_clusters" in row:
        parts.append(f"embeddings: {row['embedding_n_clusters']} clusters, accuracy "
                     f"{_fmt(row.get('embedding_cluster_acc'), 2)}")
    return "; ".join(parts) if parts else "no plots (trial did not finish)"


def render_analysis(rows: list[dict[str, Any]]) -> str:
    """One `## Iter` entry per trial in the mission's log form, oldest first."""
    lines = ["# Exploration log", ""]
    for number, row in enumerate(rows, start=1):
        values = {k: v for k, v in row.items() if "." in k and k.split(".")[0] in ("training", "graph_model")}
        config = ", ".join(f"{k.split('.', 1)[1]}={_fmt(v, 4) if isinstance(v, float) else v}"
                           for k, v in values.items())
        metrics = ", ".join(f"{k}={_fmt(row[k], 4)}" for k in METRIC_KEYS if k in row)
        lines += [
            f"## Iter {number}: {row.get('classification', 'unknown')}",
            f"Node: id={row.get('node_id')}, parent={row.get('parent_id') or 'root'}",
            f"Mode/Strategy: {row.get('strategy')}",
            f"Config: seed={row.get('seed')}, " + (f"fidelity={row['fidelity']}, " if "fidelity" in row else "")
            + config,
            f"Metrics: {metrics}",
            f"Visual: {visual_line(row)}",
            f"Mutation: {row.get('mutation')}",
            f"Parent rule: {row.get('strategy')} (UCB tree, see ucb_scores.txt)",
            f"Observation: status {row.get('status')}, diagnosis {row.get('diagnosis')}, "
            f"homeostasis {row.get('homeostasis_assessment', 'n/a')}, degeneracy gap {_fmt(row.get('degeneracy_gap'))}",
            "",
        ]
    return "\n".join(lines)
