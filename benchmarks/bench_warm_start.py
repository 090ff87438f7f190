"""The regression's warm start against a random start, and the recommended noisy-data configuration beside the
known-form regression, on networks never used while choosing either.

    python benchmarks/bench_warm_start.py [--config search_spaces/noisy_rank_50.yaml] [--networks 3001,3002,3003]
                                          [--levels 0.001,0.01,0.05] [--warm-levels 0.01,0.05]
                                          [--evaluate-every 0.05] [--jobs 2] [--out results/bench_warm_start]

For each network (simulation seed) and measurement-noise level it fits the regression (`metabo_tune.regress`,
seconds) and trains the configuration's base at the full budget from a random start (`training.init: random`)
and, at the `--warm-levels`, from the regression (`training.init: regression`). Every `--evaluate-every` of a
run the trainer stops and the metrics (which alone see the truth) are computed: the iterations to the first
converged evaluation are the benchmark's figure, with the final recovery. A run is trained in segments of one
Trainer, which gives the same weights as one uninterrupted run.

Output in `--out`: `evaluations.csv` (one row per evaluation), `runs.csv` (one row per run and the regression:
final metrics, first converged iteration), `summary.md`. Both CSVs are rewritten after every finished run, and
a rerun skips the runs already in `runs.csv` (`--resume` is the default behaviour): a killed benchmark goes on.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

HEADLINE = ("classification", "rate_constants_R2", "log_k_rmse", "MLP_node_slope_ratio_0", "MLP_node_slope_ratio_1",
            "MLP_node_baseline_0", "MLP_node_baseline_1", "embedding_cluster_acc", "measurement_noise_estimate",
            "moment_window", "regression_window", "regression_n_types")


def _config(path: str, network: int, level: float, init: str):
    from metabo_tune.config import load_config

    return load_config(path, [f"simulation.seed={network}", f"training.measurement_noise_level={level}",
                              f"training.init={init}"])


def regression_row(path: str, network: int, level: float) -> dict:
    from metabo_tune.regress import fit_config, fit_metrics
    from metabo_tune.simulate import load_or_simulate

    cfg = _config(path, network, level, "random")
    dataset = load_or_simulate(cfg.simulation, measurement_noise_level=level)
    values = fit_metrics(cfg, dataset, fit_config(cfg, dataset.observed))
    return {"network": network, "level": level, "method": "regression"} | values


def training_rows(path: str, network: int, level: float, init: str, evaluate_every: float) -> tuple[dict, list[dict]]:
    """(final row, evaluation rows) of one full-budget run evaluated every `evaluate_every` of it."""
    import torch

    from metabo_tune import metrics
    from metabo_tune.simulate import load_or_simulate
    from metabo_tune.train import Trainer, data_report

    cfg = _config(path, network, level, init)
    torch.set_num_threads(1)
    dataset = load_or_simulate(cfg.simulation, measurement_noise_level=level)
    start = time.perf_counter()
    trainer = Trainer(cfg, dataset.observed)
    setup_s = time.perf_counter() - start
    total, step = trainer.total_iterations, max(1, math.ceil(evaluate_every * trainer.total_iterations))
    key = {"network": network, "level": level, "method": f"gnn, init {init}"}
    evaluations, first_converged = [], None
    while not trainer.done:
        trainer.run(until=min(total, trainer.iteration + step))
        result = trainer.result()
        values = metrics.compute_metrics(result.model, dataset, status=result.status,
                                         loss_history=result.loss_history, training_time_s=result.training_time_s,
                                         iterations=result.iterations)
        evaluations.append(key | {"iteration": trainer.iteration} | {name: values.get(name) for name in HEADLINE})
        if first_converged is None and values["classification"] == "converged":
            first_converged = trainer.iteration
    final = key | values | data_report(cfg, dataset) | {
        "moment_window": trainer.moment_window, "setup_s": setup_s, "total_iterations": total,
        "first_converged_iteration": first_converged if first_converged is not None else -1}
    return final, evaluations


def _read_rows(path: Path) -> list[dict]:
    """The rows an earlier invocation wrote (none before its first finished run), their floats read back exactly
    (pandas' default parser can be one unit in the last place off, and a rerun would rewrite them so)."""
    try:
        return pd.read_csv(path, float_precision="round_trip").to_dict("records")
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return []


def _write(out: Path, runs: list[dict], evaluations: list[dict]) -> None:
    from metabo_tune.atomic_file import write_atomically

    write_atomically(out / "runs.csv", pd.DataFrame(runs).to_csv(index=False))
    write_atomically(out / "evaluations.csv", pd.DataFrame(evaluations).to_csv(index=False))
    frame = pd.DataFrame(runs)
    table = frame[[name for name in ("network", "level", "method", "first_converged_iteration", *HEADLINE)
                   if name in frame]]
    write_atomically(out / "summary.md", table.sort_values(["level", "network", "method"]).to_markdown(index=False)
                     + "\n")


def _trained(config: str, todo: list[tuple[int, float, str]], evaluate_every: float,
             jobs: int) -> Iterator[tuple[dict, list[dict]]]:
    """Each run's (final row, evaluation rows) as it finishes: in this process with one job, else `jobs`
    spawned processes (one torch thread each)."""
    if jobs == 1:
        for job in todo:
            yield training_rows(config, *job, evaluate_every)
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(training_rows, config, *job, evaluate_every) for job in todo]
        for future in as_completed(futures):
            yield future.result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="search_spaces/noisy_rank_50.yaml")
    parser.add_argument("--networks", default="3001,3002,3003", help="simulation seeds (evaluation networks)")
    parser.add_argument("--levels", default="0.001,0.01,0.05", help="σ_m of the random-start runs")
    parser.add_argument("--warm-levels", default="0.01,0.05", help="σ_m of the warm-start runs")
    parser.add_argument("--evaluate-every", type=float, default=0.05, help="fraction of a run between evaluations")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/bench_warm_start"))
    args = parser.parse_args(argv)
    networks = [int(x) for x in args.networks.split(",")]
    levels = [float(x) for x in args.levels.split(",")]
    warm_levels = [float(x) for x in args.warm_levels.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    runs, evaluations = _read_rows(args.out / "runs.csv"), _read_rows(args.out / "evaluations.csv")
    done = {(row["network"], row["level"], row["method"]) for row in runs}
    for network in networks:
        for level in sorted(set(levels) | set(warm_levels)):
            if (network, level, "regression") not in done:
                runs.append(regression_row(args.config, network, level))
    _write(args.out, runs, evaluations)
    todo = [(network, level, init) for level in levels for network in networks for init in ("random",)]
    todo += [(network, level, "regression") for level in warm_levels for network in networks]
    todo = [job for job in todo if (job[0], job[1], f"gnn, init {job[2]}") not in done]
    print(f"[bench] {len(todo)} training runs, {args.jobs} at a time; results in {args.out}", file=sys.stderr,
          flush=True)
    for final, rows in _trained(args.config, todo, args.evaluate_every, args.jobs):
        runs.append(final)
        evaluations += rows
        _write(args.out, runs, evaluations)
        print(f"[bench] network {final['network']} σ_m {final['level']} {final['method']}: "
              f"{final['classification']}, R² {final['rate_constants_R2']:.4f}, first converged at "
              f"{final['first_converged_iteration']} of {final['total_iterations']}", file=sys.stderr, flush=True)
    print((args.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
