"""The group solve (metabo_tune.group_solve, training.group_solve_moves) applied to a finished free-form run's
checkpoint, scored against the truth. (A diagnostic: it reads the truth for its scores, as metrics do; the solve
never does.)

The run's learned rate law f̂ is held and its groups (its embeddings after type grouping) are the start; the solve
gives k and each group's homeostasis as a piecewise-linear function of c, then moves single metabolites between
groups while a move lowers the solved misfit, merges two where that raises it less than 1.25-fold, and splits a
group where that lowers it twofold. Two rows per run: the solve on the run's own groups (moves 0), and after the
moves, merges and splits. Scores: the k R² over the identifiable reactions (non-positive solved k counted and left
out), the h R² per true type (each member over its own 5–95 % range, as MLP_node_R2_t), the groups' accuracy
against the types. The trainer's own step (training.group_solve_moves) does the same and then writes k, the
embeddings and MLP_node, whose metrics are the run's.

    python docs/results/group_solve_probe.py RUN_DIR [RUN_DIR ...] [--csv OUT.csv]
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import r2_score
from threadpoolctl import threadpool_limits

from metabo_tune.config import load_config
from metabo_tune.group_solve import KNOTS_PER_GROUP, GroupSolution, GroupSolve, window_mean
from metabo_tune.homeostasis_losses import window_rates
from metabo_tune.metrics import matched_accuracy
from metabo_tune.simulate import Dataset, load_or_simulate
from metabo_tune.train import GROUP_SOLVE_MIN_GAIN, Trainer

FRAME_STRIDE, MAX_MOVES = 2, 30


def scores(solution: GroupSolution, dataset) -> dict:
    truth, conc = dataset.truth, dataset.observed.trajectory.concentrations
    k, identifiable = solution.rate_constants, dataset.identifiability.identifiable
    kept = identifiable & (k > 0)
    row = {"k_R2": r2_score(truth.log_k[kept], np.log10(k[kept])),
           "k_non_positive_identifiable": int((identifiable & (k <= 0)).sum())}
    low, high = np.quantile(conc, [0.05, 0.95], axis=0)
    grids = np.linspace(low, high, 200)  # [200, metabolites]: each metabolite over its own 5–95 % range
    true_h = truth.homeostasis(grids)
    learned_h = np.stack([solution.homeostasis(g, grids[:, i]) for i, g in enumerate(solution.groups)], 1)
    for t in range(len(truth.lambda_per_type)):
        members = truth.types == t
        row[f"h_R2_{t}"] = r2_score(true_h[:, members].ravel(), learned_h[:, members].ravel())
    row["types"] = matched_accuracy(solution.groups, truth.types)
    row["groups"] = len(solution.knots)
    return row


def checkpoint_inputs(run: Path) -> tuple[torch.nn.Module, Dataset, tuple, np.ndarray]:
    """The run's model (float64, from its checkpoint), its data, the group solve's inputs with the groups its
    embeddings hold, and the run's k. The inputs are the trainer's (Trainer.finish_with_group_solve): dc/dt on every
    FRAME_STRIDE-th frame, or with the run's prediction_window > 1 the weak form over group_solve_window frames."""
    cfg = load_config(run / "config.yaml")
    dataset = load_or_simulate(cfg.simulation, measurement_noise_level=cfg.training.measurement_noise_level)
    trainer = Trainer(cfg, dataset.observed, device="cpu")
    model = trainer.model
    model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=False)["model"])
    model.double()
    trajectory = dataset.observed.trajectory
    weak = trainer.prediction_window > 1
    conc = trajectory.concentrations[::1 if weak else FRAME_STRIDE].astype(np.float64)
    with torch.no_grad():
        rates_per_k = (model.rates(torch.tensor(conc)) / torch.pow(10.0, model.log_k)).numpy()
        run_k = torch.pow(10.0, model.log_k).numpy()
    _, groups = np.unique(np.round(model.embedding.detach().numpy(), 6), axis=0, return_inverse=True)
    stoichiometry = dataset.observed.network.stoichiometry.astype(np.float64)
    if weak:
        starts, window = trainer.solve_starts, trainer.solve_window
        target = window_rates(trajectory.concentrations.astype(np.float64), window, trajectory.delta_t)[starts]
        inputs = (rates_per_k, stoichiometry, conc, target, groups.ravel(), KNOTS_PER_GROUP,
                  window_mean(starts, window, len(conc)))
    else:
        inputs = (rates_per_k, stoichiometry, conc, trajectory.derivatives[::FRAME_STRIDE].astype(np.float64),
                  groups.ravel())
    return model, dataset, inputs, run_k


def probe(run: Path) -> list[dict]:
    _, dataset, inputs, run_k = checkpoint_inputs(run)
    rows = []
    for max_moves in (0, MAX_MOVES):
        split_gain = GROUP_SOLVE_MIN_GAIN if max_moves else None
        solution = GroupSolve(*inputs).solve(max_moves, run_k, min_split_gain=split_gain)
        rows.append({"run": str(run), "moves": solution.moves, "merges": solution.merges,
                     "splits": solution.splits,
                     "misfit_rms": solution.misfit_rms,
                     "start_misfit_rms": solution.start_misfit_rms, "noise_rms": solution.noise_rms,
                     **scores(solution, dataset)})
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.5g}"), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(limits=1)
    rows = [row for run in args.runs for row in probe(run)]
    if args.csv:
        pd.DataFrame(rows).to_csv(args.csv, index=False, float_format="%.6g")


if __name__ == "__main__":
    main()
