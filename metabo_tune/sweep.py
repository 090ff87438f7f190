"""`python -m metabo_tune.sweep CONFIG --vary SECTION.KEY=V1,V2,...`: train one configuration over a grid
of values (training seeds, network seeds, noise levels) and tabulate every headline metric.

    python -m metabo_tune.sweep CONFIG.yaml [--set SECTION.KEY=VALUE ...] --vary SECTION.KEY=V1,V2,...
                                [--vary ...] [--over SECTION.KEY] [--out DIR] [--jobs 2]

Each point of the grid (the product of the `--vary` lists) is a full trial (`train.run_trial`) in
`DIR/runs/<key=value,...>/`; a rerun resumes or reuses them, so an interrupted sweep goes on where it
stopped. `DIR/sweep.csv` has one row per run: the varied values, status, classification and every
metric. `DIR/summary.csv` and `summary.md` aggregate over the `--over` key (default: the last `--vary`
key) for each combination of the others: the number of runs, the count per classification, and mean and
sd of each reported metric. The exit code is 0 when every run converged, 1 when not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

from metabo_tune.config import Config, ConfigError, apply_overrides, config_from_dict, load_config
from metabo_tune.simulate import DataError

# Per-type metrics appear once per metabolite type; REPORTED lists them with {t} for the type.
REPORTED = ("rate_constants_R2", "rate_constants_R2_all", "log_k_rmse", "slope", "MLP_node_slope_ratio_{t}",
            "avg_slope_ratio", "MLP_node_baseline_{t}", "homeostasis_R2", "embedding_cluster_acc",
            "embedding_n_clusters", "embedding_ari", "test_onestep_R2", "test_pearson", "final_loss",
            "training_time_min")


def reported_columns(columns: pd.Index | list[str]) -> list[str]:
    """The REPORTED metrics present in `columns`, per-type ones expanded in type order."""
    present = []
    for name in REPORTED:
        if "{t}" not in name:
            present += [name] if name in columns else []
            continue
        pattern = re.compile(re.escape(name).replace(r"\{t\}", r"(\d+)"))
        present += sorted((c for c in columns if pattern.fullmatch(c)), key=lambda c: int(pattern.fullmatch(c)[1]))
    return present


def parse_vary(items: list[str]) -> dict[str, list[str]]:
    """`section.key=v1,v2` strings → {section.key: [v1, v2]}, the values as written."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values or key.count(".") != 1:
            raise ConfigError(f"--vary '{item}': expected section.key=v1,v2,..., e.g. training.seed=0,1,2")
        if key in grid:
            raise ConfigError(f"--vary '{item}': {key} is varied twice")
        grid[key] = [value.strip() for value in values.split(",")]
    return grid


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of the varied values, the last key varying fastest."""
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def point_name(point: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in point.items())


def with_values(cfg: Config, point: dict[str, Any]) -> Config:
    """`cfg` with the point's values set, validated like a `--set`."""
    overrides = [f"{key}={value}" for key, value in point.items()]
    return config_from_dict(apply_overrides(cfg.to_dict(), overrides, source="--vary"), source="--vary")


def _train(cfg: Config, out_dir: Path) -> dict:
    from metabo_tune.train import run_trial

    return run_trial(cfg, out_dir, show_progress=False).metrics


def train_runs(configs: list[Config], out_dirs: list[Path], jobs: int = 1) -> list[dict]:
    """Each config trained into its directory, `jobs` at a time in separate processes (one torch thread
    each); the metrics in the given order. A line on stderr reports each finished run."""
    results: list[dict | None] = [None] * len(configs)

    def finished(index: int, metrics: dict) -> None:
        results[index] = metrics
        done = sum(result is not None for result in results)
        print(f"[metabo_tune] {done}/{len(configs)} {out_dirs[index].name}: {metrics['status']}, "
              f"{metrics['classification']}", file=sys.stderr, flush=True)

    if jobs == 1:
        for index, (cfg, out_dir) in enumerate(zip(configs, out_dirs, strict=True)):
            finished(index, _train(cfg, out_dir))
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_train, cfg, out_dir): index
                       for index, (cfg, out_dir) in enumerate(zip(configs, out_dirs, strict=True))}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    return [result for result in results if result is not None]


def per_run_table(points: list[dict[str, str]], metrics: list[dict]) -> pd.DataFrame:
    """One row per run: the varied values (as numbers where they are), status, classification, metrics."""
    varied = pd.DataFrame(points).apply(lambda column: pd.to_numeric(column) if column.map(_is_number).all()
                                        else column)
    values = pd.DataFrame(metrics)
    columns = [name for name in ("status", "classification") if name in values]
    return pd.concat([varied, values[columns + reported_columns(values.columns)]], axis=1)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def summary_table(per_run: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of `by` values (all runs when empty): runs, count per classification, mean and sd
    (ddof 1) of each reported metric."""
    metrics = reported_columns(per_run.columns)
    groups = per_run.groupby(by, sort=False) if by else per_run.groupby(lambda _: "all")
    counts = groups["classification"].value_counts().unstack(fill_value=0)
    numeric = per_run[metrics].astype(float).assign(**{key: per_run[key] for key in by})
    grouped = numeric.groupby(by, sort=False) if by else numeric.groupby(lambda _: "all")
    stats = grouped[metrics].agg(["mean", "std"])
    stats.columns = [f"{metric}_{'sd' if stat == 'std' else stat}" for metric, stat in stats.columns]
    table = pd.concat([groups.size().rename("runs"), counts, stats], axis=1)
    table.index.name = by[0] if len(by) == 1 else None
    return table


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary with each metric as one 'mean ± sd' column."""
    metrics = [name[: -len("_mean")] for name in summary.columns if name.endswith("_mean")]
    shown = summary.drop(columns=[f"{m}_{s}" for m in metrics for s in ("mean", "sd")])
    for metric in metrics:
        shown[metric] = [f"{mean:.4g} ± {sd:.2g}" for mean, sd in
                         zip(summary[f"{metric}_mean"], summary[f"{metric}_sd"].fillna(0.0), strict=True)]
    return shown.T.to_markdown() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metabo_tune.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="run config YAML, or a search-space YAML (its `base` is trained)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value for every run (repeatable)")
    parser.add_argument("--vary", action="append", required=True, metavar="SECTION.KEY=V1,V2,...",
                        help="values of one key to train over (repeatable: the runs are the product)")
    parser.add_argument("--over", metavar="SECTION.KEY",
                        help="the varied key the summary averages over (default: the last --vary key)")
    parser.add_argument("--out", help="output directory (default: runs/sweep_<config name>)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    out_dir = Path(args.out or Path("runs") / f"sweep_{Path(args.config).stem}")
    try:
        grid = parse_vary(args.vary)
        over = args.over or list(grid)[-1]
        if over not in grid:
            raise ConfigError(f"--over {over}: not one of the --vary keys ({', '.join(grid)})")
        base = load_config(args.config, args.overrides)
        points = grid_points(grid)
        configs = [with_values(base, point) for point in points]
        print(f"[metabo_tune] {len(points)} runs in {out_dir / 'runs'}, {args.jobs} at a time",
              file=sys.stderr, flush=True)
        metrics = train_runs(configs, [out_dir / "runs" / point_name(point) for point in points], args.jobs)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    per_run = per_run_table(points, metrics)
    summary = summary_table(per_run, [key for key in grid if key != over])
    per_run.to_csv(out_dir / "sweep.csv", index=False)
    summary.to_csv(out_dir / "summary.csv")
    text = summary_markdown(summary)
    (out_dir / "summary.md").write_text(text)
    print(text, end="")
    return 0 if (per_run["classification"] == "converged").all() else 1


if __name__ == "__main__":
    sys.exit(main())
