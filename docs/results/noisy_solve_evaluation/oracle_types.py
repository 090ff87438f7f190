"""How many metabolites' types the measured data settle, with the true k and the true homeostasis laws given (a
diagnostic: it reads the truth, as metrics do; training never does). docs/results.md, "Decensoring beside fast
moves".

For each network, noise level and noise draw: the base of search_spaces/noisy_rank_50.yaml's data, measured as the
simulator measures (max(c + ε, 0)), read back as the regression reads them (the decensoring as shipped, or none),
in the weak form at the regression's window and zero margin. With k held at the truth, each metabolite's own
relaxation (λ_i, μ_i) is fitted by least squares over its rows, unweighted (as the regression and the group solve
do) or weighted by each row's noise variance propagated from the measurements (the rate's two ends and the
reactions' monomial means, first order, with the true k). Reported: `misplaced`, the metabolites whose rows fit
the other type's true law better (an oracle that knows both laws and k; on exact data it misplaces none), and
`mixture_types_acc`, the accuracy of the regression's mixture (types by BIC) on those estimates.

    python docs/results/noisy_solve_evaluation/oracle_types.py NETWORKS LEVELS DRAWS OUT.csv [--no-decensoring]

e.g. `8901,8903,8904 0.01,0.05 2 out.csv`; each draw's noise comes from its own seed (network, draw, level), not
from the simulator's measurement stream. Run at a commit to measure the decensoring of that commit.
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from metabo_tune import metrics
from metabo_tune import simulate as sim
from metabo_tune.censoring import decensored_observed
from metabo_tune.config import config_from_dict, load_config
from metabo_tune.homeostasis_losses import sliding_mean
from metabo_tune.noise_estimate import estimate_measurement_noise, regression_window, resolved_zero_margin
from metabo_tune.regress import (
    NoiseMoments,
    chosen_mixture,
    excess_errors,
    fit_mixtures,
    monomials,
    rows_clear_of_zero,
    weak_form_rows,
)

ROOT = Path(__file__).resolve().parents[3]


def row_variance(trajectory: sim.Trajectory, network: sim.Network, rate_constants: np.ndarray, window: int,
                 noise: float) -> np.ndarray:
    """[rows, n]: the variance the measurement noise gives each weak-form row of each metabolite: the probe's own
    first version of regress.row_noise_variance (without its covariance of the rate's start with the metabolite's
    own monomials), kept so that the probe runs at commits before that function existed and its figures stay as
    recorded."""
    conc, (index, order) = trajectory.concentrations, network.padded_substrates()
    n, rates = conc.shape[1], monomials(conc, network)
    gradients: dict[tuple[int, int], np.ndarray] = {}  # (i, a): Σ_j S_ij k_j ∂m_j/∂c_a per frame
    for j in range(network.n_reactions):
        for a, s in zip(index[j], order[j], strict=True):
            if s == 0 or a >= n:
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                part = np.where(conc[:, a] > 0, rate_constants[j] * s * rates[:, j] / conc[:, a], 0.0)
            for i in np.flatnonzero(network.stoichiometry[:, j]):
                gradients[i, a] = gradients.get((i, a), 0.0) + network.stoichiometry[i, j] * part
    squared = np.zeros_like(conc)
    for (i, _), gradient in gradients.items():
        squared[:, i] += gradient * gradient
    means = trajectory.within_runs(sliding_mean(squared, window)[: trajectory.n_frames - window], window)
    return 2 * noise**2 / (window * trajectory.delta_t) ** 2 + noise**2 * means / window


def probe(network: int, level: float, draw: int, decensor: bool) -> dict:
    raw = load_config(ROOT / "search_spaces/noisy_rank_50.yaml").to_dict()
    raw["simulation"]["seed"] = network
    clean = sim.load_or_simulate(config_from_dict(raw).simulation)
    rng = np.random.default_rng([network, draw, round(level * 1e4)])
    measured = sim.add_measurement_noise(clean.observed.trajectory, level, rng)
    observed = decensored_observed(sim.Observed(clean.observed.network, measured), decensor)[0]
    trajectory, network_, truth = observed.trajectory, observed.network, clean.truth
    noise = estimate_measurement_noise(trajectory.concentrations, trajectory.run_starts)
    window = regression_window(trajectory.concentrations, noise, trajectory.run_starts)
    monomial_means, conc_means, rates = weak_form_rows(trajectory, network_, window)
    margin = resolved_zero_margin("auto", trajectory.concentrations, trajectory.run_starts)
    kept = rows_clear_of_zero(trajectory, window, margin).astype(np.float64)
    rate_constants = 10.0 ** truth.log_k
    target = rates - (monomial_means * rate_constants) @ network_.stoichiometry.T  # = −λ_i C + μ_i + noise
    moments = NoiseMoments.of(noise, window, trajectory.delta_t)
    laws = np.stack([truth.lambda_per_type, truth.lambda_per_type * truth.baseline_per_type], -1)
    row = {"network": network, "sigma_m": level, "draw": draw, "decensoring": decensor, "window": window}
    variance = row_variance(trajectory, network_, rate_constants, window, noise)
    for name, weight in (("unweighted", kept), ("weighted", kept / variance)):
        total = weight.sum(0)
        sum_c, sum_cc = (weight * conc_means).sum(0), (weight * conc_means**2).sum(0) - total * moments.square
        sum_cy = (weight * conc_means * target).sum(0) - total * moments.cross
        blocks = np.stack([np.stack([sum_cc, -sum_c], -1), np.stack([-sum_c, total], -1)], 1)
        estimates = np.linalg.solve(blocks, np.stack([-sum_cy, (weight * target).sum(0)], -1)[..., None])[..., 0]
        misplaced = excess_errors(laws, estimates, blocks).argmin(1) != truth.types
        mixture = chosen_mixture(fit_mixtures(estimates, blocks, "auto", 4), "auto")
        row |= {f"{name}_misplaced": int(misplaced.sum()),
                f"{name}_misplaced_ids": " ".join(map(str, np.flatnonzero(misplaced))),
                f"{name}_mixture_types_acc": metrics.matched_accuracy(mixture.labels, truth.types),
                f"{name}_mixture_n_types": len(mixture.theta)}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks")
    parser.add_argument("levels")
    parser.add_argument("draws", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--no-decensoring", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [probe(int(network), float(level), draw, not args.no_decensoring)
            for network in args.networks.split(",") for level in args.levels.split(",") for draw in range(args.draws)]
    table = pd.DataFrame(rows)
    table.to_csv(args.out, index=False)
    print(table.drop(columns=[c for c in table.columns if c.endswith("_ids")]).to_string(index=False))


if __name__ == "__main__":
    main()
