"""Training speed of the mission's base config, one torch thread: ms per iteration at time_step 1 and 4,
and the projected wall time of one trial at data_augmentation_loop 1000 (72 000 iterations) including
data, evaluation and plots.

    python benchmarks/bench_train.py [--space search_spaces/homeo_rank_50.yaml] [--iterations 1500]

The machine is shared and noisy: each figure is the median over --repeats windows (min and max shown).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from metabo_tune import metrics, plots
from metabo_tune.config import load_config
from metabo_tune.simulate import load_or_simulate, simulate
from metabo_tune.train import Trainer

REPO = Path(__file__).resolve().parents[1]


def ms_per_iteration(trainer: Trainer, iterations: int, repeats: int) -> list[float]:
    trainer.run(until=trainer.iteration + 100)  # warm-up: allocator, first sampling chunk
    windows = []
    for _ in range(repeats):
        start = time.perf_counter()
        trainer.run(until=trainer.iteration + iterations)
        windows.append((time.perf_counter() - start) / iterations * 1e3)
    return windows


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(REPO / "search_spaces" / "homeo_rank_50.yaml"))
    parser.add_argument("--iterations", type=int, default=1500, help="iterations per timing window")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg = load_config(args.space)
    simulate_s = seconds(lambda: simulate(cfg.simulation))
    with tempfile.TemporaryDirectory() as cache:
        import os

        os.environ["METABO_TUNE_CACHE"] = cache
        load_or_simulate(cfg.simulation)
        cached_s = seconds(lambda: load_or_simulate(cfg.simulation))
        dataset = load_or_simulate(cfg.simulation)

    rows = []
    for time_step in (1, 4):
        run_cfg = load_config(args.space, [f"training.recurrent_training={time_step > 1}",
                                           f"training.time_step={time_step}"])
        trainer = Trainer(run_cfg, dataset.observed, device="cpu")
        windows = ms_per_iteration(trainer, args.iterations if time_step == 1 else args.iterations // 3, args.repeats)
        rows.append((time_step, windows, trainer))

    trainer = rows[0][2]
    result = trainer.result()
    eval_s = seconds(lambda: metrics.compute_metrics(result.model, dataset, status="completed",
                                                     loss_history=result.loss_history, training_time_s=1.0,
                                                     iterations=result.iterations))
    with tempfile.TemporaryDirectory() as out:
        plot_s = seconds(lambda: plots.write_trial_plots(result.model, dataset, result.loss_history, out))

    total_iterations = cfg.training.iterations_per_epoch(cfg.simulation.n_frames) * cfg.training.n_epochs
    print(f"torch {torch.__version__}, 1 thread, config {Path(args.space).name} (batch {cfg.training.batch_size}, "
          f"MLP_sub {cfg.graph_model.hidden_dim_sub}x{cfg.graph_model.n_layers_sub}, "
          f"MLP_node {cfg.graph_model.hidden_dim_node}x{cfg.graph_model.n_layers_node})")
    print(f"{'time_step':>9}  {'median ms/it':>12}  {'min':>6}  {'max':>6}  {'trial training':>14}")
    for time_step, windows, _ in rows:
        median = statistics.median(windows)
        print(f"{time_step:>9}  {median:>12.2f}  {min(windows):>6.2f}  {max(windows):>6.2f}  "
              f"{median * total_iterations / 60e3:>12.1f} min")
    median = statistics.median(rows[0][1])
    overhead = cached_s + eval_s + plot_s
    print(f"data: simulate {simulate_s:.2f} s (first trial), cached load {cached_s:.2f} s; "
          f"evaluation {eval_s:.2f} s; plots {plot_s:.2f} s")
    print(f"projected trial at {total_iterations} iterations (time_step 1, cached data): "
          f"{(median * total_iterations / 1e3 + overhead) / 60:.2f} min "
          f"(first trial on a machine: +{simulate_s:.1f} s to simulate)")


if __name__ == "__main__":
    main()
