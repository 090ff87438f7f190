"""The weak-form group solve (metabo_tune.group_solve) on a finished noisy free-form run's checkpoint, at several
solve windows, scored against the truth: how long a window the solve needs (training.group_solve_window). A
diagnostic: it reads the truth for its scores, as metrics do; the solve never does.

Per window W three solves, the learned rate law held: on the run's own groups without moves, on the true types
without moves (what the solve gives where the groups are right), and the trainer's own (moves, merges and splits
from the run's groups). Columns: the misfit, the noise floor read from the residual, the misfit above it (excess)
and that of the run's own k (start_excess), and the scores of group_solve_probe.scores.

    python docs/results/group_solve_window_probe.py RUN_DIR --windows 10,30,100,300 [--csv OUT.csv]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from group_solve_probe import checkpoint_inputs, scores
from threadpoolctl import threadpool_limits

from metabo_tune.group_solve import KNOTS_PER_GROUP, GroupSolve, window_mean
from metabo_tune.homeostasis_losses import window_rates
from metabo_tune.train import GROUP_SOLVE_MIN_GAIN

MAX_MOVES = 100  # configs/free_forms.yaml's group_solve_moves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--windows", default="10,30,100,300")
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(limits=1)
    _, dataset, inputs, run_k = checkpoint_inputs(args.run)
    trajectory = dataset.observed.trajectory
    rates_per_k, stoichiometry, conc, _, run_groups = inputs[:5]
    if len(conc) != trajectory.n_frames:
        raise SystemExit(f"error: {args.run} did not train with a prediction window: its solve is the strong form")
    starts_of = {"run groups": (run_groups, 0, None), "true types": (dataset.truth.types, 0, None),
                 "trainer's": (run_groups, MAX_MOVES, GROUP_SOLVE_MIN_GAIN)}
    rows = []
    for window in (int(w) for w in args.windows.split(",")):
        starts = trajectory.window_starts(window)
        target = window_rates(trajectory.concentrations.astype(np.float64), window, trajectory.delta_t)[starts]
        for label, (groups, moves, gain) in starts_of.items():
            started = time.perf_counter()
            solution = GroupSolve(rates_per_k, stoichiometry, conc, target, np.array(groups), KNOTS_PER_GROUP,
                                  window_mean(starts, window, len(conc))).solve(moves, run_k, min_split_gain=gain)
            rows.append({"run": str(args.run), "window": window, "solve": label, "moves": solution.moves,
                         "merges": solution.merges, "splits": solution.splits, "misfit_rms": solution.misfit_rms,
                         "noise_rms": solution.noise_rms, "excess_rms": solution.excess_rms,
                         "start_excess_rms": solution.start_excess_rms, **scores(solution, dataset),
                         "time_s": time.perf_counter() - started})
            print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format=lambda v: f"{v:.5g}"), flush=True)
    if args.csv:
        pd.DataFrame(rows).to_csv(args.csv, index=False, float_format="%.6g")


if __name__ == "__main__":
    main()
