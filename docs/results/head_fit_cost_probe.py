"""The cost and the quality of the head's fit to the group solve's functions (Trainer._fit_head_to), on one run per
network: the run is trained to its last iteration once (its state kept under STATE_DIR, reused on a second call),
then finished once per variant of the fit (points per group, most L-BFGS rounds, the least gain a round must make
to go on: GROUP_SOLVE_HEAD_POINTS, _ROUNDS, _MIN_GAIN), each from that same state, and scored
against the truth as a finished run is (a diagnostic: it reads the truth for the metrics, as metrics do).

    python docs/results/head_fit_cost_probe.py OUT.csv STATE_DIR CONFIG NETWORK[,NETWORK...] [--set KEY=VALUE ...]
"""

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from metabo_tune import metrics, train
from metabo_tune.config import load_config
from metabo_tune.simulate import load_or_simulate

VARIANTS = [(2000, 30, 0.0), (2000, 30, 1e-2), (2000, 30, 1e-3), (500, 30, 1e-2), (2000, 10, 0.0)]
KEYS = ["rate_constants_R2_gauge", "MLP_node_R2_0", "MLP_node_R2_1", "MLP_node_slope_at_zero_ratio_0",
        "MLP_node_slope_at_zero_ratio_1", "MLP_node_zero_rel_err_0", "MLP_node_zero_rel_err_1",
        "embedding_cluster_acc", "classification", "group_solve_applied", "group_solve_groups_taken"]


ORIGINAL_LBFGS = train.minimise_lbfgs


def timed_lbfgs(log: list[tuple[float, int]]):
    """minimise_lbfgs, its wall time and rounds added to `log`."""
    def wrapped(parameters, loss_fn, rounds, min_round_gain=0.0):
        start = time.perf_counter()
        done = ORIGINAL_LBFGS(parameters, loss_fn, rounds, min_round_gain)
        log.append((time.perf_counter() - start, done))
        return done
    return wrapped


def probe(cfg, state_path: Path) -> list[dict]:
    dataset = load_or_simulate(cfg.simulation, measurement_noise_level=cfg.training.measurement_noise_level)
    trainer = train.Trainer(cfg, dataset.observed, device="cpu")
    if state_path.is_file():
        trainer.load_checkpoint(state_path)
    else:
        trainer.run(until=trainer.total_iterations - 1)
        trainer.save_checkpoint(state_path)
    rows = []
    for points, rounds, min_gain in VARIANTS:
        trainer = train.Trainer(cfg, dataset.observed, device="cpu")
        trainer.load_checkpoint(state_path)
        train.GROUP_SOLVE_HEAD_POINTS, train.GROUP_SOLVE_HEAD_ROUNDS = points, rounds
        train.GROUP_SOLVE_HEAD_MIN_GAIN = min_gain
        fits: list[tuple[float, int]] = []
        train.minimise_lbfgs = timed_lbfgs(fits)
        trainer.run(until=trainer.total_iterations)
        result = trainer.result()
        values = metrics.compute_metrics(result.model, dataset, status=result.status,
                                         loss_history=result.loss_history, training_time_s=1.0, iterations=1)
        values |= result.group_solve
        rows.append({"network": cfg.simulation.seed, "points": points, "rounds": rounds,
                     "min_gain": min_gain, "head_fit_s": sum(t for t, _ in fits),
                     "rounds_run": sum(n for _, n in fits), "group_solve_time_s": values["group_solve_time_s"]}
                    | {key: values.get(key) for key in KEYS})
        print(pd.Series(rows[-1]).to_string(), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("config")
    parser.add_argument("networks")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for network in args.networks.split(","):
        cfg = load_config(args.config, [*args.set, f"simulation.seed={network}"])
        rows += probe(cfg, args.state_dir / f"before_finish_{network}.pt")
        pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
