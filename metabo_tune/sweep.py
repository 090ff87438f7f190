"""`python -m metabo_tune.sweep CONFIG --vary SECTION.KEY=V1,V2,...`: train one configuration over a grid
of values (training seeds, network seeds, noise levels) and tabulate every headline metric; with
`--compare`, put finished sweeps side by side.

    python -m metabo_tune.sweep CONFIG.yaml [--set SECTION.KEY=VALUE ...] --vary SECTION.KEY=V1,V2,...
                                [--vary ...] [--over SECTION.KEY] [--out DIR] [--jobs 2]
    python -m metabo_tune.sweep --compare DIR1 DIR2 ... [--labels A B ...] [--key SECTION.KEY] [--out DIR]

Each point of the grid (the product of the `--vary` lists) is a full trial (`train.run_trial`) in
`DIR/runs/<key=value,...>/`; a rerun resumes or reuses them (and says how many runs finished before), so an
interrupted sweep goes on where it stopped. A point whose data cannot be made (a simulation that diverges), or
whose run raises, is recorded as a failed run with its error, and the other points go on. With `--method
regression` each point is fitted by the known-form regression instead (`regress.regression_trial`, seconds a
point): the baseline column of a `--compare`.

`DIR/sweep.csv` has one row per run: the varied values, status, classification and every
metric. `DIR/summary.csv` and `summary.md` aggregate over the `--over` key (default: the last `--vary`
key) for each combination of the others (a summary.md column headed `key=value,...`): the number of runs,
the count per classification, and mean and sd of each reported metric. When that leaves exactly one numeric
key, `DIR/curve.png` draws each headline metric (rate_constants_R2, log_k_rmse, slope ratio and baseline per
type, embedding_cluster_acc) and the converged fraction against it: mean with sd error bars, log x (symlog
when 0 is among the values), the slope ratios on a log y (symlog when one is ≤ 0), the simulated baselines
as dashed lines. The exit code is 0 when every run converged, 1 when not, 2 on bad input.

`--compare` reads the `sweep.csv` of each sweep directory (all must vary the same keys), groups by `--key`
(default: the first varied key) and averages over the other varied keys. It writes `DIR/compare.csv` (one
row per value and sweep: runs, count per classification, converged fraction, mean and sd of every reported
metric), `DIR/compare.md` (the same rows, the headline metrics as 'mean ± sd') and a figure with one line
per sweep: `noise_curve.png` when the key is training.measurement_noise_level, else `curve.png`. A noise
curve for two configurations (default output directory: runs/compare):

    python -m metabo_tune.sweep configs/joint_recovery.yaml --out runs/noise_joint --jobs 2 \\
        --vary training.measurement_noise_level=0,0.001,0.003,0.01,0.03,0.05,0.1 --vary simulation.seed=1,2,3
    python -m metabo_tune.sweep NOISY.yaml --out runs/noise_noisy --jobs 2 --vary ... (the same two)
    python -m metabo_tune.sweep --compare runs/noise_joint runs/noise_noisy --labels joint noisy --out runs/noise
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from metabo_tune.cli import ArgumentParser, output_folder
from metabo_tune.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    load_config,
    same_config,
)
from metabo_tune.labels import LABELS
from metabo_tune.plots import curve_figure
from metabo_tune.simulate import DataError

# Per-type metrics appear once per metabolite type; REPORTED lists them with {t} for the type.
REPORTED = ("rate_constants_R2", "rate_constants_R2_all", "rate_constants_R2_gauge", "log_k_rmse", "slope",
            "MLP_node_slope_ratio_{t}", "avg_slope_ratio", "MLP_node_baseline_{t}", "MLP_node_slope_at_zero_ratio_{t}",
            "MLP_node_zero_{t}", "homeostasis_R2", "embedding_cluster_acc",
            "embedding_n_clusters", "embedding_ari", "test_onestep_R2", "test_pearson", "final_loss",
            "training_time_min", "measurement_noise_estimate")
# The metrics drawn against the swept value and shown in compare.md.
HEADLINE = ("rate_constants_R2", "log_k_rmse", "MLP_node_slope_ratio_{t}", "MLP_node_baseline_{t}",
            "embedding_cluster_acc")
NOISE_KEY = "training.measurement_noise_level"


class SweepError(ValueError):
    """Sweep directories that cannot be compared."""


def reported_columns(columns: pd.Index | list[str], names: tuple[str, ...] = REPORTED) -> list[str]:
    """The metrics of `names` present in `columns`, per-type ones expanded in type order."""
    present = []
    for name in names:
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


METHODS = ("gnn", "regression")


ERROR_FILE = "error.txt"  # in a run's directory: the traceback of the exception that ended it


def _train(cfg: Config, out_dir: Path, method: str = "gnn") -> dict:
    if method == "regression":
        from metabo_tune.regress import regression_trial

        return regression_trial(cfg, out_dir).metrics
    from metabo_tune.train import run_trial

    return run_trial(cfg, out_dir, show_progress=False).metrics


def _train_or_record(cfg: Config, out_dir: Path, method: str = "gnn") -> dict:
    """`_train`, with a point whose data cannot be made (a simulation that diverges, a singular design) recorded
    as a failed run with its message: it fails the same way on every rerun, so it must not cost the others. Any
    other exception a run raises is recorded the same way, named, with its traceback in the run's `error.txt`:
    one run's failure must not end the others (a rerun tries that point again)."""
    try:
        return _train(cfg, out_dir, method)
    except DataError as exc:
        return {"status": "error", "classification": "failed", "error": str(exc)}
    except Exception as exc:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / ERROR_FILE).write_text(traceback.format_exc())
        return {"status": "error", "classification": "failed",
                "error": f"{type(exc).__name__}: {exc} (traceback in {out_dir / ERROR_FILE})"}


def finished_before(cfg: Config, out_dir: Path) -> bool:
    """Whether `out_dir` holds a run of `cfg` trained to the end (its metrics written): training it again only
    evaluates its final checkpoint."""
    config = out_dir / "config.yaml"
    return (out_dir / "metrics.json").is_file() and config.is_file() and same_config(config, cfg)


PARENT_POLL_S = 2.0


def _end_with_parent(parent: int) -> None:
    """Worker initializer: a thread ends this worker once the sweep that started it is gone. A sweep stopped by
    SIGTERM (a scheduler, `kill`) would otherwise leave its workers training into its directories unseen; each
    run's last checkpoint lets the rerun resume it."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def train_runs(configs: list[Config], out_dirs: list[Path], jobs: int = 1, method: str = "gnn") -> list[dict]:
    """Each config trained (or, with method 'regression', fitted by the known-form regression) into its
    directory, `jobs` at a time in separate processes (one torch thread each); the metrics in the given
    order. A line on stderr reports each finished run; a point whose data cannot be made is a failed run with
    an `error` message (`_train_or_record`)."""
    results: list[dict | None] = [None] * len(configs)

    def finished(index: int, metrics: dict) -> None:
        results[index] = metrics
        done = sum(result is not None for result in results)
        error = f": {metrics['error']}" if "error" in metrics else ""
        print(f"[metabo_tune] {done}/{len(configs)} {out_dirs[index].name}: {metrics['status']}, "
              f"{metrics['classification']}{error}", file=sys.stderr, flush=True)

    if jobs == 1:
        for index, (cfg, out_dir) in enumerate(zip(configs, out_dirs, strict=True)):
            finished(index, _train_or_record(cfg, out_dir, method))
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=_end_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(_train_or_record, cfg, out_dir, method): index
                       for index, (cfg, out_dir) in enumerate(zip(configs, out_dirs, strict=True))}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    return [result for result in results if result is not None]


def per_run_table(points: list[dict[str, str]], metrics: list[dict], method: str = "gnn") -> pd.DataFrame:
    """One row per run: the varied values (as numbers where they are), the method (gnn: trained, regression:
    fitted), status, classification, the error of a point whose data could not be made, metrics."""
    varied = pd.DataFrame(points).apply(lambda column: pd.to_numeric(column) if column.map(_is_number).all()
                                        else column)
    values = pd.DataFrame(metrics)
    columns = [name for name in ("status", "classification", "error") if name in values]
    table = pd.concat([varied, values[columns + reported_columns(values.columns)]], axis=1)
    table.insert(len(varied.columns), "method", method)
    return table


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


def _mean_sd(table: pd.DataFrame, metric: str) -> list[str]:
    return [f"{mean:.4g} ± {sd:.2g}" for mean, sd in
            zip(table[f"{metric}_mean"], table[f"{metric}_sd"].fillna(0.0), strict=True)]


def _metrics_of(table: pd.DataFrame) -> list[str]:
    return [name[: -len("_mean")] for name in table.columns if name.endswith("_mean")]


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary with each metric as one 'mean ± sd' row and a column per group, headed by its values of the
    grouping keys as in a run's directory name ('training.seed=1', 'simulation.seed=1,training.seed=2')."""
    metrics = _metrics_of(summary)
    shown = summary.drop(columns=[f"{m}_{s}" for m in metrics for s in ("mean", "sd")])
    for metric in metrics:
        shown[metric] = _mean_sd(summary, metric)
    if summary.index.names != [None]:
        shown.index = [point_name(group) for group in summary.index.to_frame().to_dict("records")]
    return shown.T.to_markdown() + "\n"


def curve_table(per_run: pd.DataFrame, key: str) -> pd.DataFrame:
    """The summary grouped by `key`, sorted by it, with the fraction of runs that converged."""
    table = summary_table(per_run, [key]).sort_index()
    converged = table.get("converged", 0)
    return table.assign(converged_fraction=converged / table["runs"])


def curve_panels(columns: pd.Index | list[str]) -> list[str]:
    return [*reported_columns(columns, HEADLINE), "converged_fraction"]


def true_baselines(simulations: list[dict]) -> dict[str, float]:
    """{MLP_node_baseline_t: b_t} when every simulation section gives the same baselines and none trains on
    its own data (data_dir: no known truth); else empty. Config values for a reference line, never trained on."""
    found = {() if section.get("data_dir") else tuple(section.get("homeostatic_baseline_per_type") or ())
             for section in simulations}
    if len(found) != 1 or not (baselines := found.pop()):
        return {}
    return {f"MLP_node_baseline_{t}": float(b) for t, b in enumerate(baselines)}


def varied_columns(per_run: pd.DataFrame) -> list[str]:
    """The columns of a sweep.csv that hold the varied values."""
    measured = {"method", "status", "classification", *reported_columns(per_run.columns)}
    return [name for name in per_run.columns if name not in measured]


def read_sweep(directory: Path) -> pd.DataFrame:
    path = directory / "sweep.csv"
    if not path.is_file():
        raise SweepError(f"{directory}: no sweep.csv (not a sweep directory, or its sweep has not finished)")
    per_run = pd.read_csv(path)
    if "classification" not in per_run:
        raise SweepError(f"{path}: no classification column, not written by a sweep")
    return per_run


def combined_table(per_runs: dict[str, pd.DataFrame], key: str) -> pd.DataFrame:
    """One row per value of `key` and sweep (label → its per-run table), the sweeps in the given order
    within a value: runs, count per classification, converged fraction, mean and sd of each reported metric."""
    parts = [curve_table(per_run, key).reset_index().assign(configuration=label)
             for label, per_run in per_runs.items()]
    table = pd.concat(parts, ignore_index=True).sort_values(key, kind="stable", ignore_index=True)
    classes = [label for label in LABELS if label in table]
    table[classes] = table[classes].fillna(0).astype(int)
    metrics = reported_columns(sorted(set().union(*(per_run.columns for per_run in per_runs.values()))))
    stats = [f"{metric}_{stat}" for metric in metrics for stat in ("mean", "sd")]
    return table[[key, "configuration", "runs", *classes, "converged_fraction", *stats]]


def combined_markdown(table: pd.DataFrame) -> str:
    """The combined table with the headline metrics as 'mean ± sd' columns."""
    shown = table[table.columns[: table.columns.get_loc("converged_fraction")]].copy()
    for metric in reported_columns(_metrics_of(table), HEADLINE):
        shown[metric] = _mean_sd(table, metric)
    return shown.to_markdown(index=False) + "\n"


def compare(directories: list[Path], labels: list[str] | None, key: str | None, out_dir: Path) -> pd.DataFrame:
    """Write compare.csv, compare.md and the figure of the sweeps in `directories`; the table."""
    if labels is None:
        names = [directory.name for directory in directories]
        labels = names if len(set(names)) == len(names) else [str(directory) for directory in directories]
    if len(labels) != len(directories):
        raise SweepError(f"--labels: {len(labels)} labels for {len(directories)} sweeps")
    if len(set(labels)) != len(labels):
        raise SweepError(f"--labels: the labels must differ, got {' '.join(labels)}")
    per_runs = {label: read_sweep(directory) for label, directory in zip(labels, directories, strict=True)}
    varied = {label: varied_columns(per_run) for label, per_run in per_runs.items()}
    if len({frozenset(keys) for keys in varied.values()}) > 1:
        raise SweepError("the sweeps vary different keys: "
                         + "; ".join(f"{label} varies {', '.join(keys)}" for label, keys in varied.items()))
    key = key or next(iter(varied.values()))[0]
    if key not in next(iter(varied.values())):
        raise SweepError(f"--key {key}: not a varied key of the sweeps ({', '.join(next(iter(varied.values())))})")
    if not all(pd.api.types.is_numeric_dtype(per_run[key]) for per_run in per_runs.values()):
        raise SweepError(f"--key {key}: the values are not all numbers, nothing to draw a curve against")
    table = combined_table(per_runs, key)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "compare.csv", index=False)
    text = combined_markdown(table)
    (out_dir / "compare.md").write_text(text)
    columns = sorted(set().union(*(per_run.columns for per_run in per_runs.values())))
    simulations = [(yaml.safe_load(path.read_text()) or {}).get("simulation", {})
                   for directory in directories for path in sorted(directory.glob("runs/*/config.yaml"))]
    figure = curve_figure({label: curve_table(per_run, key) for label, per_run in per_runs.items()}, key,
                          curve_panels(columns), true_baselines(simulations))
    figure.savefig(out_dir / ("noise_curve.png" if key == NOISE_KEY else "curve.png"))
    print(text, end="")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m metabo_tune.sweep", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?",
                        help="run config YAML, or a search-space YAML (its `base` is trained)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value for every run (repeatable)")
    parser.add_argument("--vary", action="append", default=[], metavar="SECTION.KEY=V1,V2,...",
                        help="values of one key to train over (repeatable: the runs are the product)")
    parser.add_argument("--over", metavar="SECTION.KEY",
                        help="the varied key the summary averages over (default: the last --vary key)")
    parser.add_argument("--out", help="output directory (default: runs/sweep_<config name>, runs/compare)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (default: %(default)s)")
    parser.add_argument("--method", choices=METHODS, default="gnn",
                        help="'regression': fit each point by the known-form regression (metabo_tune.regress) "
                             "instead of training, for a baseline sweep to --compare with (default: %(default)s)")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="DIR",
                        help="put these finished sweeps side by side instead of training")
    parser.add_argument("--labels", nargs="+", metavar="LABEL",
                        help="with --compare: a name per sweep (default: the directory names)")
    parser.add_argument("--key", metavar="SECTION.KEY",
                        help="with --compare: the varied key on the x axis (default: the first varied key)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if args.compare:
        if args.config or args.vary or args.overrides or args.over:
            parser.error("--compare takes no CONFIG, --set, --vary or --over")
        try:
            compare(args.compare, args.labels, args.key,
                    output_folder(args.out or Path("runs") / "compare", "--out"))
        except (SweepError, ConfigError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if not args.config or not args.vary:
        parser.error("CONFIG and --vary are required (or --compare DIR ...)")
    if args.labels or args.key:
        parser.error("--labels and --key go with --compare")
    out_dir = Path(args.out or Path("runs") / f"sweep_{Path(args.config).stem}")
    try:
        output_folder(out_dir, "--out")
        grid = parse_vary(args.vary)
        over = args.over or list(grid)[-1]
        if over not in grid:
            raise ConfigError(f"--over {over}: not one of the --vary keys ({', '.join(grid)})")
        base = load_config(args.config, args.overrides)
        points = grid_points(grid)
        configs = [with_values(base, point) for point in points]
        run_dirs = [out_dir / "runs" / point_name(point) for point in points]
        reused = sum(map(finished_before, configs, run_dirs)) if args.method == "gnn" else 0
        note = f": {reused} finished before (reused), {len(points) - reused} to train" if reused else ""
        print(f"[metabo_tune] {len(points)} runs in {out_dir / 'runs'}, {args.jobs} at a time{note}",
              file=sys.stderr, flush=True)
        metrics = train_runs(configs, run_dirs, args.jobs, args.method)
        if all("error" in run for run in metrics):
            raise DataError(metrics[0]["error"])
    except (ConfigError, DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    per_run = per_run_table(points, metrics, args.method)
    by = [key for key in grid if key != over]
    summary = summary_table(per_run, by)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_run.to_csv(out_dir / "sweep.csv", index=False)
    summary.to_csv(out_dir / "summary.csv")
    text = summary_markdown(summary)
    (out_dir / "summary.md").write_text(text)
    if len(by) == 1 and pd.api.types.is_numeric_dtype(per_run[by[0]]):
        truths = true_baselines([cfg.to_dict()["simulation"] for cfg in configs])
        figure = curve_figure({Path(args.config).stem: curve_table(per_run, by[0])}, by[0],
                              curve_panels(per_run.columns), truths)
        figure.savefig(out_dir / "curve.png")
    print(text, end="")
    return 0 if (per_run["classification"] == "converged").all() else 1


if __name__ == "__main__":
    sys.exit(main())
