"""`python -m metabo_tune.confirm results/<experiment>`: retrain the search's best config on fresh
training seeds and report every headline metric as mean ± sd.

A search ranks configs by one or two seeds each; seed noise on this problem is large (two seeds of one
config have differed by 0.3 in R²), so a result counts only once it holds on seeds the search never
used. By default the best node of the leaderboard is taken (`--node` picks another) and retrained, with
the config of its full-budget trial (a node that was only screened is refused), on the first `--n-seeds`
seeds that none of its search trials used:

    python -m metabo_tune.confirm results/<experiment> [--node ID] [--n-seeds 3 | --seeds 1 2 3] [--jobs 2]

Each seed is a full trial (`train.run_trial`: analysis.log, metrics.json, plots) in
`<experiment>/confirm/node_<id>/seed_<s>/`; a rerun resumes or reuses them. The table goes to stdout and
to `confirm.md` and `confirm.csv` beside them. The exit code is 0 when every seed is classified
converged, 1 when not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from metabo_tune import analysis
from metabo_tune.cli import ArgumentParser
from metabo_tune.config import Config, ConfigError, load_config
from metabo_tune.simulate import DataError
from metabo_tune.sweep import reported_columns, train_runs, with_values
from metabo_tune.tree import FULL


class ConfirmError(ValueError):
    """Input that cannot be confirmed; the message is one line meant for the user."""


def node_config(experiment_dir: Path, node_id: str | None) -> tuple[str, Config, set[int]]:
    """The node (default: the leaderboard's first), its trained config and the seeds its trials used."""
    try:
        df = analysis.load(experiment_dir)
    except analysis.AnalysisError as exc:
        raise ConfirmError(str(exc)) from None
    board = analysis.leaderboard(df, top=None)
    if board.empty:
        raise ConfirmError(f"{experiment_dir}: no finished trial to confirm")
    node_id = node_id or str(board.iloc[0]["node_id"])
    trials = df[(df["node_id"] == node_id) & (df["status"] != "running")]
    if trials.empty:
        raise ConfirmError(f"{experiment_dir}: no finished trial of node '{node_id}' (see trials.csv)")
    trials = trials[trials["fidelity"] == FULL]  # a screening trial's config.yaml has the screening budget
    if trials.empty:
        raise ConfirmError(f"{experiment_dir}: node '{node_id}' was only screened; confirm needs a full-budget "
                           "trial of it (see trials.csv, fidelity)")
    config_file = Path(str(trials["trial_dir"].iloc[0])) / "config.yaml"
    try:
        cfg = load_config(config_file)
    except ConfigError as exc:
        raise ConfirmError(str(exc)) from None
    return node_id, cfg, {int(seed) for seed in df.loc[df["node_id"] == node_id, "seed"]}


def fresh_seeds(used: set[int], n: int) -> list[int]:
    """The first n non-negative seeds that are not in `used`."""
    seeds: list[int] = []
    candidate = 0
    while len(seeds) < n:
        if candidate not in used:
            seeds.append(candidate)
        candidate += 1
    return seeds


def confirm(cfg: Config, seeds: list[int], out_dir: Path, jobs: int = 1) -> pd.DataFrame:
    """One row per seed (its metrics), trained `jobs` at a time in separate processes."""
    configs = [with_values(cfg, {"training.seed": seed}) for seed in seeds]
    results = train_runs(configs, [out_dir / f"seed_{seed}" for seed in seeds], jobs)
    table = pd.DataFrame(results, index=pd.Index(seeds, name="seed"))
    return table[[name for name in ("status", "classification") if name in table] + reported_columns(table.columns)]


def summary_table(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per metric: mean, sd (ddof 1), min and max over the seeds."""
    numeric = per_seed[reported_columns(per_seed.columns)].astype(float)
    table = pd.DataFrame({"mean": numeric.mean(), "sd": numeric.std(ddof=1), "min": numeric.min(),
                          "max": numeric.max()})
    table.index.name = "metric"
    return table


def report(node_id: str, per_seed: pd.DataFrame) -> str:
    """Markdown: the verdict, then one row per metric with each seed's value and mean ± sd."""
    converged = int((per_seed["classification"] == "converged").sum())
    table = per_seed.T.rename(columns=lambda seed: f"seed {seed}")
    summary = summary_table(per_seed)
    table["mean ± sd"] = [f"{summary.at[name, 'mean']:.4g} ± {summary.at[name, 'sd']:.2g}"
                          if name in summary.index else "" for name in table.index]
    table.index.name = "metric"
    return "\n".join([f"# Seed confirmation of node {node_id}", "",
                      f"{converged} of {len(per_seed)} seeds classified converged.", "",
                      analysis.markdown_table(table), ""])


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m metabo_tune.confirm", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="experiment directory, e.g. results/homeo_rank_50")
    parser.add_argument("--node", help="node id to confirm (default: the best on the leaderboard)")
    parser.add_argument("--n-seeds", type=int, default=3, help="fresh seeds to train (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", help="these seeds (two or more) instead of fresh ones")
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once, one process and one "
                                                            "torch thread each (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.n_seeds < 2 or args.jobs < 1:
        parser.error("--n-seeds must be >= 2 (an sd needs two) and --jobs >= 1")
    if args.seeds is not None and len(set(args.seeds)) < len(args.seeds):
        parser.error(f"--seeds {' '.join(map(str, args.seeds))}: a seed given twice would train into one folder")
    if args.seeds is not None and len(args.seeds) < 2:
        parser.error("--seeds needs at least two seeds (an sd needs two)")
    experiment = Path(args.experiment)
    try:
        node_id, cfg, used = node_config(experiment, args.node)
        seeds = args.seeds or fresh_seeds(used, args.n_seeds)
        out_dir = experiment / "confirm" / f"node_{node_id}"
        print(f"[metabo_tune] confirming node {node_id} on seeds {seeds} (the search used {sorted(used)}); "
              f"trials in {out_dir}", file=sys.stderr, flush=True)
        per_seed = confirm(cfg, seeds, out_dir, args.jobs)
    except (ConfirmError, ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = report(node_id, per_seed)
    (out_dir / "confirm.md").write_text(text)
    per_seed.to_csv(out_dir / "confirm.csv")
    print(text, end="")
    return 0 if (per_seed["classification"] == "converged").all() else 1


if __name__ == "__main__":
    sys.exit(main())
