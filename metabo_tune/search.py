"""`python -m metabo_tune.search`: the UCB-tree search on Ray Tune, locally or on a Ray cluster."""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
from pathlib import Path

from metabo_tune.atomic_file import write_atomically
from metabo_tune.cli import ArgumentParser, output_folder
from metabo_tune.config import Config, ConfigError
from metabo_tune.simulate import DataError
from metabo_tune.space import SpaceError, load_space

DEFAULT_SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "homeo_rank_50.yaml"
SETTINGS_FILE = "search.json"  # the experiment's --num-trials, --concurrency and --seed, checked on --resume


class SearchError(ValueError):
    """A search that cannot start; the message is one line meant for the user."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m metabo_tune.search", description=__doc__)
    parser.add_argument("--space", default=str(DEFAULT_SPACE), help="search-space YAML (default: %(default)s)")
    parser.add_argument("--num-trials", type=int, default=48, help="trials in total (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="trials at once (default: %(default)s)")
    parser.add_argument("--name", help="experiment name (default: the space file's name)")
    parser.add_argument("--storage", default="results", help="experiments directory; on a multi-node cluster "
                                                             "a shared path (default: %(default)s)")
    parser.add_argument("--address", help="Ray address: 'auto' joins a running cluster; default: join the "
                                           "cluster started on this machine, else start a local one")
    parser.add_argument("--gpus-per-trial", default="auto",
                        help="'auto' (1 when the cluster has GPUs, else a CPU share), or a number, fractions "
                             "allowed so several trials share a GPU (default: %(default)s)")
    parser.add_argument("--cpus", type=float, help="CPUs for a local Ray instance (default: all)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted experiment of this name")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search's own choices (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.num_trials < 1 or args.concurrency < 1:
        parser.error("--num-trials and --concurrency must be >= 1")
    if args.cpus is not None and args.cpus <= 0:
        parser.error(f"--cpus {args.cpus:g}: must be > 0")
    if args.cpus is not None and args.address is not None:
        parser.error("--cpus sizes a local Ray instance; the cluster at --address has its own CPUs: leave one out")
    try:
        gpus_wanted(args.gpus_per_trial)
    except SearchError as exc:
        parser.error(str(exc))
    return args


def gpus_wanted(gpus_per_trial: str) -> float | None:
    """--gpus-per-trial as a number of GPUs, None for 'auto'."""
    if gpus_per_trial == "auto":
        return None
    try:
        wanted = float(gpus_per_trial)
    except ValueError:
        raise SearchError(f"--gpus-per-trial '{gpus_per_trial}': expected 'auto' or a number") from None
    if wanted < 0:
        raise SearchError(f"--gpus-per-trial {wanted:g}: must be >= 0")
    return wanted


def trial_resources(cluster: dict[str, float], gpus_per_trial: str, concurrency: int) -> dict[str, float]:
    """Resources of one trial. Never asks for a GPU the cluster lacks: Ray would wait forever."""
    gpus = cluster.get("GPU", 0.0)
    cpu_share = {"cpu": max(0.1, min(1.0, cluster.get("CPU", 1.0) / concurrency))}
    wanted = gpus_wanted(gpus_per_trial)
    if wanted is None:
        return {"cpu": 1.0, "gpu": 1.0} if gpus >= 1 else cpu_share
    if wanted == 0:
        return cpu_share
    if wanted > gpus:
        raise SearchError(f"--gpus-per-trial {wanted}: the Ray cluster has {gpus:g} GPUs; use --gpus-per-trial "
                          "auto or 0 to train on CPUs, or start GPU workers first")
    return cpu_share | {"gpu": wanted}


def unreachable(address: str | None, timeout_s: float = 3.0) -> str | None:
    """Why a HOST:PORT (or ray://HOST:PORT) address takes no connection, else None. Probed before ray.init, which
    would retry an unreachable address for about 20 s of warnings; 'auto' and the default are left to Ray."""
    if address is None:
        return None
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def short_of(resources: dict[str, float], free: dict[str, float]) -> list[str]:
    """The kinds (Ray's names: CPU, GPU) of which one trial needs more than the cluster has free."""
    return [kind.upper() for kind, need in resources.items() if free.get(kind.upper(), 0.0) < need]


def trial_name(trial) -> str:
    return f"trial_{trial.config.get('node_id', 'x')}_{trial.trial_id}"


def write_regression_baseline(base: Config, experiment_dir: Path) -> None:
    """The known-form regression on the experiment's data, in experiment_dir/regression/ (once: the space freezes
    the data, so one fit serves every trial): the baseline row of `python -m metabo_tune.analysis`."""
    from metabo_tune.regress import regression_trial

    target = experiment_dir / "regression"
    if (target / "metrics.json").is_file():
        return
    values = regression_trial(base, target).metrics
    print(f"[metabo_tune] known-form regression on the same data (mass action, linear relaxation): "
          f"{values['classification']}, rate_constants_R2 {values.get('rate_constants_R2', math.nan):.4g}; "
          f"in {target}", file=sys.stderr, flush=True)


RESUMED_SETTINGS = ("num_trials", "concurrency", "seed")  # fixed in the experiment Tune restores


def check_resumed_settings(args: argparse.Namespace, experiment_dir: Path) -> None:
    """Refuse a --resume whose settings differ from the experiment's: Tune would keep the old ones in silence."""
    kept = experiment_dir / SETTINGS_FILE
    if not kept.is_file():
        return
    started = json.loads(kept.read_text())
    for key in RESUMED_SETTINGS:
        if key in started and started[key] != getattr(args, key):
            option = "--" + key.replace("_", "-")
            raise SearchError(f"--resume: {experiment_dir} was started with {option} {started[key]}, not "
                              f"{getattr(args, key)}; resume with {option} {started[key]}, or start a new --name")


def run(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    name = args.name or Path(args.space).stem
    storage = output_folder(args.storage, "--storage").resolve()
    experiment_dir = output_folder(storage / name, "--name")

    # Checkpointing every 10 % of a trial forces frequent experiment snapshots; that is intended (a
    # resume loses at most 10 % of a trial), so Tune's warning about it is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray
    from ray import tune

    from metabo_tune.reporter import TrialTable
    from metabo_tune.searcher import METRIC, TreeSearcher
    from metabo_tune.trainable import run_search_trial

    if args.resume and not tune.Tuner.can_restore(str(experiment_dir)):
        raise SearchError(f"--resume: no experiment to resume at {experiment_dir} (check --name and --storage)")
    if not args.resume and (experiment_dir / "tuner.pkl").exists():
        raise SearchError(f"{experiment_dir} already holds an experiment: add --resume to continue it, "
                          "or choose another --name")
    if args.resume:
        check_resumed_settings(args, experiment_dir)
    init = {"address": args.address, "include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
    if args.address is None and args.cpus is not None:
        init["num_cpus"] = args.cpus
    reason = unreachable(args.address)
    try:
        if reason is None:
            ray.init(**init)
    except (ConnectionError, ValueError) as exc:
        reason = str(exc).splitlines()[0]
    if reason is not None:
        where = f"--address {args.address}" if args.address else "the local Ray instance"
        raise SearchError(f"{where}: cannot connect ({reason}); check the address, or leave "
                          "--address out to start a local instance")
    resources = trial_resources(ray.cluster_resources(), args.gpus_per_trial, args.concurrency)
    busy = short_of(resources, ray.available_resources())
    if busy:
        print(f"[metabo_tune] the Ray cluster has too little {' or '.join(busy)} free for one trial now (other jobs "
              "hold it): trials wait until it is freed", file=sys.stderr, flush=True)
    write_regression_baseline(space.base, experiment_dir)
    print(f"[metabo_tune] {name}: {args.num_trials} trials, {args.concurrency} at once, {resources} each; "
          f"results in {experiment_dir}", file=sys.stderr, flush=True)
    trainable = tune.with_resources(
        tune.with_parameters(run_search_trial, space=space, trials_dir=str(experiment_dir / "trials")), resources)
    if args.resume:
        tuner = tune.Tuner.restore(str(experiment_dir), trainable=trainable, resume_errored=True)
    else:
        experiment_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(experiment_dir / SETTINGS_FILE,
                         json.dumps({key: getattr(args, key) for key in RESUMED_SETTINGS}, indent=1))
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=TreeSearcher(space, experiment_dir, seed=args.seed), metric=METRIC, mode="max",
                num_samples=args.num_trials, max_concurrent_trials=args.concurrency, reuse_actors=True,
                trial_name_creator=trial_name, trial_dirname_creator=trial_name),
            run_config=tune.RunConfig(
                name=name, storage_path=str(storage), verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[TrialTable(experiment_dir, args.num_trials)]))
    results = tuner.fit()
    unfinished = sum(1 for result in results if result.error is None and not result.metrics.get("final", False))
    if unfinished or len(results) < args.num_trials:
        # Tune catches Ctrl-C itself and returns; its own hint names Tuner.restore, ours the command.
        print(f"[metabo_tune] interrupted with {unfinished} trials unfinished and {len(results)} of "
              f"{args.num_trials} started: run the same command with --resume to continue", file=sys.stderr)
        return 130
    print(f"[metabo_tune] finished: {len(results)} trials, {results.num_errors} errored; "
          f"see {experiment_dir}/trials.csv and analysis.md", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.address is None:
        # A private local instance needs no token; a cluster keeps the auth mode it was started with.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        return run(args)
    except (SpaceError, ConfigError, DataError, SearchError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command with --resume to continue", file=sys.stderr)
        return 130

if __name__ == "__main__":
    sys.exit(main())
