"""Search efficiency: how good a config each searcher finds at the same trial budget and concurrency.

    python benchmarks/bench_search.py [--space search_spaces/smoke.yaml] [--num-trials 8] [--concurrency 4]
                                      [--reps 5] [--methods tree,random,tpe] [--out results/bench_search]
                                      [--cpus N] [--resume]

Compared, each with real training through the project's trainable (`trainable.run_search_trial`) and
scored by the project's reward (searcher.METRIC, in [0, 1]):

* tree: `metabo_tune.searcher.TreeSearcher`, the UCB tree over one-parameter mutations, which starts
  from the space's base config and its initial spread;
* random: Ray Tune's random search (`BasicVariantGenerator`) over the space's parameter ranges;
* tpe: Optuna's TPE (`ray.tune.search.optuna.OptunaSearch`) over the same ranges. Its first
  --concurrency trials are random (`n_startup_trials`), not Optuna's default 10, which at budgets of
  10 trials or fewer would make it random search again.

Why: the tree's rules encode what is known about this problem (an initial spread around a good base,
replicate-before-trust, condition overrides); the two generic searchers show what that knowledge buys
over knowing only the ranges. Random and TPE train each config with the base seed, as the tree does for
its new nodes, so configs differ by their values, not by noise. A parameter with `requires` is sampled
always and takes effect only when its requirement is on, because the trainer ignores it otherwise (the
same `SearchSpace.config_for` path the tree's configs take).

Repetition r seeds every searcher with r; the methods alternate within a repetition, so a machine that
gets slower or busier affects them alike. Per run it records the best reward after each finished trial
(completion order), the first trial classified `converged` and the wall time, writes
`<out>/runs.csv` (one row per run) and `<out>/summary.md`, and prints the summary table. Each run is its
own Tune experiment in `<out>/<method>_rep<r>/`. With --resume, the runs already in `<out>/runs.csv` are
kept and skipped, and a run directory without a row (a run cut off by a crash) is started again.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from metabo_tune.search import trial_name, trial_resources
from metabo_tune.simulate import load_or_simulate
from metabo_tune.space import SearchSpace, SpaceError, load_space

REPO = Path(__file__).resolve().parents[1]
METHODS = ("tree", "random", "tpe")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(REPO / "search_spaces" / "smoke.yaml"))
    parser.add_argument("--num-trials", type=int, default=8, help="trials per run (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="trials at once (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per method, seeds 0.. (default: %(default)s)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--out", default="results/bench_search", help="output directory (default: %(default)s)")
    parser.add_argument("--cpus", type=float, help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs recorded in <out>/runs.csv and do only the missing ones")
    args = parser.parse_args(argv)
    if min(args.num_trials, args.concurrency, args.reps) < 1:
        parser.error("--num-trials, --concurrency and --reps must be >= 1")
    args.methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown or not args.methods:
        parser.error(f"--methods: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    return args


def tune_param_space(space: SearchSpace) -> dict[str, Any]:
    """The space's parameters as Tune domains, 'section.key' → domain (ranges inclusive, as in the space)."""
    from ray import tune

    domains: dict[str, Any] = {}
    for name, parameter in space.parameters.items():
        if parameter.kind == "log_float":
            domains[name] = tune.loguniform(parameter.low, parameter.high)
        elif parameter.kind == "float":
            domains[name] = tune.uniform(parameter.low, parameter.high)
        elif parameter.kind == "int":
            domains[name] = tune.randint(int(parameter.low), int(parameter.high) + 1)  # randint excludes high
        elif parameter.kind == "choice":
            domains[name] = tune.choice(list(parameter.values))
        else:
            domains[name] = tune.choice([False, True])
    return domains


def values_trial(config: dict[str, Any], space: SearchSpace, trials_dir: str) -> None:
    """A random/TPE config ('section.key' → value) in the form the project's trainable expects: the Ray
    trial id as node id, the base seed, the sampled values."""
    from ray import tune

    from metabo_tune.trainable import run_search_trial

    node = {"node_id": tune.get_context().get_trial_id(), "seed": space.base.training.seed, "values": dict(config)}
    run_search_trial(node, space=space, trials_dir=trials_dir)


def make_completion_log() -> Any:
    """A Tune callback that keeps (reward, classification) of each trial in completion order; an errored
    or unfinished trial counts as reward 0, as in the search's own tables."""
    from ray import tune

    class CompletionLog(tune.Callback):
        def __init__(self) -> None:
            self.finished: list[tuple[float, str]] = []

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            result = trial.last_result or {}
            if result.get("final", False):
                self.finished.append((float(result.get("reward", 0.0)), str(result.get("classification"))))
            else:
                self.finished.append((0.0, "error"))

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.finished.append((0.0, "error"))

    return CompletionLog()


class RunInterrupted(RuntimeError):
    """A run that ended before its trial budget: it gets no row, so --resume runs it again."""


def run_once(method: str, rep: int, space: SearchSpace, args: argparse.Namespace, resources: dict[str, float],
             out: Path) -> dict[str, Any]:
    """One search of `method` with seed `rep`; returns the run's row for runs.csv."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from metabo_tune.searcher import METRIC, TreeSearcher
    from metabo_tune.trainable import run_search_trial

    name = f"{method}_rep{rep}"
    experiment_dir = out / name
    trials_dir = str(experiment_dir / "trials")
    param_space: dict[str, Any] = {}
    max_concurrent: int | None = args.concurrency
    if method == "tree":
        trainable, search_alg = run_search_trial, TreeSearcher(space, experiment_dir, seed=rep)
    else:
        trainable, param_space = values_trial, tune_param_space(space)
        if method == "random":
            # A SearchGenerator takes its concurrency itself; Tune ignores max_concurrent_trials for it.
            search_alg, max_concurrent = BasicVariantGenerator(max_concurrent=args.concurrency, random_state=rep), None
        else:
            import optuna
            from ray.tune.search.optuna import OptunaSearch

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            sampler = optuna.samplers.TPESampler(seed=rep, n_startup_trials=args.concurrency)
            search_alg = OptunaSearch(sampler=sampler)
    log = make_completion_log()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, space=space, trials_dir=trials_dir), resources),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg, metric=METRIC, mode="max", num_samples=args.num_trials,
            max_concurrent_trials=max_concurrent, reuse_actors=False,
            trial_name_creator=trial_name, trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(
            name=name, storage_path=str(out), verbose=0, failure_config=tune.FailureConfig(max_failures=0),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2), callbacks=[log]))
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Tune's experiment banners; stdout keeps the table alone
        tuner.fit()
    wall_s = time.perf_counter() - start
    if len(log.finished) < args.num_trials:  # Tune returns normally after a Ctrl-C
        raise RunInterrupted(f"{name} stopped after {len(log.finished)} of {args.num_trials} trials")

    row: dict[str, Any] = {"method": method, "rep": rep, "seed": rep, "trials_done": len(log.finished),
                           "errors": sum(1 for _, label in log.finished if label == "error"),
                           "first_converged": math.nan, "wall_s": wall_s}
    best = -math.inf
    for k in range(1, args.num_trials + 1):
        if k <= len(log.finished):
            reward, label = log.finished[k - 1]
            best = max(best, reward)
            if label == "converged" and math.isnan(row["first_converged"]):
                row["first_converged"] = k
        row[f"best_after_{k}"] = best if k <= len(log.finished) else math.nan
    return row


def _range(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    return f"{values.median():.3f} [{values.min():.3f}–{values.max():.3f}]"


def summarize(runs: pd.DataFrame, num_trials: int) -> str:
    """Per method: best reward after N/2 and N trials (median [min–max] over repetitions), median trials
    to the first converged trial (over the runs that had one) with that count, median wall time; markdown."""
    half = max(1, num_trials // 2)
    header = ["method", "runs", f"best after {half}", f"best after {num_trials}", "first converged at trial",
              "wall time"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, group in runs.groupby("method", sort=False):
        converged = group["first_converged"].dropna()
        first = f"{converged.median():g}" if not converged.empty else "–"
        cells = [str(method), str(len(group)), _range(group[f"best_after_{half}"]),
                 _range(group[f"best_after_{num_trials}"]), f"{first} ({len(converged)}/{len(group)} runs)",
                 f"{group['wall_s'].median():.0f} s"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def recorded_runs(out: Path, num_trials: int) -> list[dict[str, Any]]:
    """The rows of `<out>/runs.csv` (none if it does not exist yet); they must come from runs of
    `num_trials` trials, since rewards after different budgets do not compare."""
    path = out / "runs.csv"
    if not path.exists():
        return []
    runs = pd.read_csv(path)
    if f"best_after_{num_trials}" not in runs or f"best_after_{num_trials + 1}" in runs:
        raise ValueError(f"{path} holds runs of another --num-trials than {num_trials}; resume with the same one")
    return runs.to_dict("records")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        space = load_space(args.space)
    except SpaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    try:
        rows = recorded_runs(out, args.num_trials) if args.resume else []
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = {(row["method"], int(row["rep"])) for row in rows}
    todo = [(rep, m) for rep in range(args.reps) for m in args.methods if (m, rep) not in done]
    taken = [out / f"{m}_rep{r}" for r, m in todo if (out / f"{m}_rep{r}").exists()]
    if taken and not args.resume:
        print(f"error: {taken[0]} already exists; choose another --out, or add --resume", file=sys.stderr)
        return 2
    if "tpe" in args.methods:
        try:
            import optuna  # noqa: F401
        except ImportError:
            print("error: --methods tpe needs optuna: pip install -e '.[bench]'", file=sys.stderr)
            return 2
    out.mkdir(parents=True, exist_ok=True)
    load_or_simulate(space.base.simulation)  # the dataset cache is filled before any run is timed

    os.environ["RAY_AUTH_MODE"] = "disabled"  # a private local instance needs no token
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    resources = trial_resources(ray.cluster_resources(), "auto", args.concurrency)
    print(f"[bench] {args.space}: {args.num_trials} trials, {args.concurrency} at once, {resources} each, "
          f"{args.reps} reps of {', '.join(args.methods)}; results in {out}", file=sys.stderr, flush=True)
    for path in taken:
        print(f"[bench] {path.name} has no row in runs.csv (cut off); running it again", file=sys.stderr)
        shutil.rmtree(path)
    for rep, method in todo:
        try:
            row = run_once(method, rep, space, args, resources, out)
        except RunInterrupted as exc:
            ray.shutdown()
            print(f"[bench] {exc}; the finished runs are in {out / 'runs.csv'}, add --resume to go on",
                  file=sys.stderr)
            return 130
        rows.append(row)
        pd.DataFrame(rows).to_csv(out / "runs.csv", index=False)
        first = row["first_converged"]
        print(f"[bench] {method} rep {rep}: best {row[f'best_after_{args.num_trials}']:.3f} after "
              f"{row['trials_done']} trials ({row['errors']} errored), first converged at "
              f"{'none' if math.isnan(first) else f'trial {first:g}'}, {row['wall_s']:.0f} s",
              file=sys.stderr, flush=True)
    ray.shutdown()
    runs = pd.DataFrame(rows)
    runs = runs[runs["rep"].lt(args.reps) & runs["method"].isin(args.methods)]
    summary = summarize(runs, args.num_trials)
    (out / "summary.md").write_text(
        f"# Search benchmark: {args.space}\n\n{args.num_trials} trials per run, {args.concurrency} at once, "
        f"{args.reps} repetitions (seeds 0–{args.reps - 1}); rewards median [min–max] over repetitions.\n\n"
        + summary)
    print(summary, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
