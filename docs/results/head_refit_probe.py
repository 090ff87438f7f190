"""MLP_node fitted again to the group solve's functions, post hoc on finished runs whose solve was applied: the solve
once more on the run's own (already solved) groups and k, which leaves them where they are (0 moves, merges and
splits on every run it was used on), then the head fitted GROUP_SOLVE_HEAD_ROUNDS L-BFGS rounds further from where
the run left it, and the run's metrics before and after. What the trainer now does in one fit of that many rounds,
measured on runs made with 6 (a diagnostic: it reads the truth for the metrics, as metrics do).

    python docs/results/head_refit_probe.py OUT.csv RUN_DIR [RUN_DIR ...]
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from group_solve_probe import checkpoint_inputs  # its sibling in docs/results: the checkpoint and the solve's inputs
from threadpoolctl import threadpool_limits

from metabo_tune import metrics
from metabo_tune.group_solve import GroupSolve
from metabo_tune.train import GROUP_SOLVE_HEAD_POINTS, GROUP_SOLVE_HEAD_ROUNDS, GROUP_SOLVE_MIN_GAIN, minimise_lbfgs

KEYS = ["rate_constants_R2_gauge", "MLP_node_R2_0", "MLP_node_R2_1", "MLP_node_slope_at_zero_ratio_0",
        "MLP_node_slope_at_zero_ratio_1", "MLP_node_zero_rel_err_0", "MLP_node_zero_rel_err_1",
        "embedding_cluster_acc", "classification"]


def refit(run: Path) -> dict:
    model, dataset, inputs, run_k = checkpoint_inputs(run)
    with threadpool_limits(limits=1):
        solution = GroupSolve(*inputs).solve(100, run_k, min_split_gain=GROUP_SOLVE_MIN_GAIN)
    embeddings = model.embedding.detach().numpy()
    all_conc = dataset.observed.trajectory.concentrations.astype(np.float64)
    points, values, centres = [], [], []
    for g in np.unique(solution.groups):
        where = np.quantile(all_conc[:, solution.groups == g], np.linspace(0.0, 1.0, GROUP_SOLVE_HEAD_POINTS))
        points.append(where)
        values.append(solution.homeostasis(g, where))
        centres.append(np.repeat(embeddings[np.flatnonzero(solution.groups == g)[0]][None], len(where), 0))
    points, values, centres = (torch.as_tensor(np.concatenate(parts)) for parts in (points, values, centres))
    minimise_lbfgs(model.node_mlp.parameters(),
                   lambda: (model.head(points, centres) - values).square().mean() / values.square().mean(),
                   GROUP_SOLVE_HEAD_ROUNDS)
    model.float()
    before = json.loads((run / "metrics.json").read_text())
    after = metrics.compute_metrics(model, dataset, status="completed", loss_history={}, training_time_s=0.0,
                                    iterations=1)
    return ({"run": str(run), "moves": solution.moves, "merges": solution.merges, "splits": solution.splits}
            | {f"{key}_run": before[key] for key in KEYS} | {f"{key}_refit": after[key] for key in KEYS})


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for run in map(Path, sys.argv[2:]):
        rows.append(refit(run))
        print(pd.Series(rows[-1]).to_string(), flush=True)
    pd.DataFrame(rows).to_csv(sys.argv[1], index=False)


if __name__ == "__main__":
    main()
