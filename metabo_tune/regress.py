"""The known-form regression: mass action and linear relaxation fitted by one least-squares solve.

With the simulator's forms assumed, dc_i/dt = Σ_j S_ij k_j Π_e c_e^|s_e| − λ_i c_i + μ_i (μ_i = λ_i·b_i) is
linear in (k, λ, μ). Over windows of W frames it is fitted in its weak form: (c[t+W] − c[t]) / (W·dt)
against the features' left Riemann means over frames t … t+W−1, which is exact for the simulator's Euler
steps (a trapezoid rule biases the weak homeostasis) and never differentiates the data. W = 1 is the
strong form, fitted to the data's own dc/dt.

The solve goes through the normal equations. Every row (t, i) of the design holds S_ij·M_tj for the
reactions, so its Gram matrix over k is (SᵀS) ⊙ (MᵀM) with M the [windows, reactions] monomials: one
shared Gram matrix, built in time linear in windows × substrate edges plus one matrix product. (λ_i, μ_i)
touch the rows of metabolite i only, so they are eliminated exactly (a Schur complement over 2 × 2
blocks) and recovered afterwards. The reduced system is Jacobi-scaled, so the monomials' decades do not
ruin its conditioning, and solved by its eigen-decomposition: its (numerical) null space says which rate
constants the data leave undetermined, and the solution has no component along it.

Rows near zero concentration are left out (`regression.zero_margin`): a metabolite's row whose window comes within
3σ̂ of zero (σ̂ the noise read from the data; on exact data, a window that touches zero) fits no rate law, because the
simulator clamps c at zero and measurements are clipped there. The k block's Gram matrix is still formed over all
rows, less each left-out row's term on its metabolite's few reactions.

Types: a mixture with one shared (λ, μ) per type over the per-metabolite estimates, each scattering by its
own least-squares covariance with heavy (t) tails, fitted by EM; the number of types given or chosen by BIC.
Only observed data reach the fit; its metrics (which alone read the truth) come from `metrics.compute_metrics`
on a `KnownFormModel` in `regression_trial`.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.linalg
import torch
from scipy import sparse
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

from metabo_tune.censoring import decensored_observed
from metabo_tune.cli import ArgumentParser, output_folder
from metabo_tune.config import Config, ConfigError, load_config
from metabo_tune.group_solve import reaction_gram
from metabo_tune.homeostasis_losses import sliding_mean, window_rates
from metabo_tune.noise_estimate import (
    estimate_measurement_noise,
    regression_window,
    resolved_zero_margin,
)
from metabo_tune.simulate import DataError, Dataset, Network, Observed, Trajectory, load_or_simulate

NULL_SPACE_TOLERANCE = 1e-10  # eigenvalues of the scaled Gram matrix below this × the largest span its null space
K_FLOOR = 1e-10  # log10 k of a non-positive fitted k is written as log10 of this: an outlier, not a nan


@dataclass(frozen=True)
class KnownFormFit:
    """What the regression recovers, in the learner's terms."""

    rate_constants: np.ndarray  # k [reactions], min-norm along the undetermined directions
    determined: np.ndarray  # bool [reactions]: the data's null space leaves this k alone
    relaxation_rate: np.ndarray  # λ_i [metabolites]
    relaxation_offset: np.ndarray  # μ_i = λ_i·b_i [metabolites]
    types: np.ndarray  # mixture assignment [metabolites]
    type_rate: np.ndarray  # shared λ per type
    type_offset: np.ndarray  # shared μ per type
    type_scores: dict[int, float]  # BIC per number of types tried
    shared: np.ndarray  # (λ, μ) of one relaxation shared by every metabolite
    window: int
    noise_estimate: float
    residual_rms: float  # RMS of the fitted rows' residual (rate units)
    solve_time_s: float
    zero_margin: float | None = None  # rows within it of zero concentration left out (None: every row kept)
    rows_kept: float = 1.0  # the fraction of (row, metabolite) entries fitted

    @property
    def log_k(self) -> np.ndarray:
        return np.log10(np.maximum(self.rate_constants, K_FLOOR))

    @property
    def baselines(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.relaxation_offset / self.relaxation_rate

    @property
    def type_baselines(self) -> np.ndarray:
        return self.type_offset / self.type_rate

    def shared_relaxation(self) -> tuple[float, float] | None:
        """(λ, b) of the one relaxation all metabolites share best, None when its λ is not positive."""
        rate, offset = (float(x) for x in self.shared)
        return (rate, offset / rate) if rate > 0 else None


def monomials(concentrations: np.ndarray, network: Network) -> np.ndarray:
    """Π over each reaction's substrate edges of c^|s|, [frames, reactions]; an empty reaction gives 1."""
    index, order = network.padded_substrates()
    padded = np.concatenate([concentrations, np.ones((concentrations.shape[0], 1))], axis=1)
    product = np.ones((concentrations.shape[0], network.n_reactions))
    for slot in range(index.shape[1]):  # c^1 and c^0 need no pow (c^0 == 1 exactly, so the product skips it)
        linear, power = order[:, slot] == 1, (order[:, slot] != 1) & (order[:, slot] != 0)
        product[:, linear] *= padded[:, index[linear, slot]]
        if power.any():
            product[:, power] *= padded[:, index[power, slot]] ** order[power, slot]
    return product


def weak_form_rows(trajectory: Trajectory, network: Network, window: int) -> tuple[np.ndarray, np.ndarray,
                                                                                   np.ndarray]:
    """(M, C, Y): the windows' mean monomials [w, reactions], mean concentrations [w, n] and rates [w, n].
    W = 1: every frame with the data's dc/dt (the strong form). No window spans two runs."""
    conc = trajectory.concentrations
    if window == 1:
        return monomials(conc, network), conc, trajectory.derivatives
    n_windows = trajectory.n_frames - window
    if len(trajectory.window_starts(window)) < 1:
        raise DataError(f"regression.window {window} needs more than the {trajectory.n_frames} frames of the data")
    rates = window_rates(conc, window, trajectory.delta_t)
    # left Riemann means over frames t … t+W−1: the first n_windows sliding means

    def windows(rows: np.ndarray) -> np.ndarray:
        return trajectory.within_runs(rows[:n_windows], window)

    return windows(sliding_mean(monomials(conc, network), window)), windows(sliding_mean(conc, window)), windows(rates)


def rows_clear_of_zero(trajectory: Trajectory, window: int, margin: float | None) -> np.ndarray | None:
    """[rows, n] bool, aligned with weak_form_rows: True where the metabolite's observed concentration stays above
    `margin` over the row's frames (t … t+W; in the strong form t and t+1, which a forward difference reads, the
    last frame alone). None (every row kept) for no margin. Near zero the simulator's clamp breaks the ODE and
    measurements clipped at zero are biased, so such rows disagree with any rate law: measured on development
    networks 8703 and 8802 at σ_m 0.001, they left the fit's k R² at 0.989 and 0.9998, and without them 1.0000 on
    both. The strong form checks the frame after too, as training's rows do: a measured dc/dt is a forward
    difference, and a frame before a fall to the clamp (5.8 to 0 in one step on development network 8905) gives a
    row far off any rate law."""
    if margin is None:
        return None
    if window == 1:
        clear = trajectory.clear_of_zero(0, margin)
        clear[:-1] &= trajectory.clear_of_zero(1, margin)
        return clear
    return trajectory.within_runs(trajectory.clear_of_zero(window, margin), window)


@dataclass(frozen=True)
class NoiseMoments:
    """What measurement noise σ adds, in expectation, to the homeostasis moments of the weak form: the mean of
    W noisy c has variance σ²/W, and it shares the noise of frame t with the rate (c[t+W] − c[t]) / (W·dt),
    whose expected product with it is −σ²/(W²·dt). Subtracting both per row removes the bias they give the
    fitted λ (about +25 % at σ 0.05, W 10 here). Zero for the strong form, whose dc/dt is the data's own."""

    square: float = 0.0
    cross: float = 0.0

    @classmethod
    def of(cls, noise: float, window: int, delta_t: float) -> NoiseMoments:
        if window == 1:
            return cls()
        return cls(noise**2 / window, -(noise**2) / (window**2 * delta_t))


def relaxation_blocks(conc_means: np.ndarray, noise: NoiseMoments, kept: np.ndarray) -> np.ndarray:
    """[n, 2, 2]: each metabolite's Gram matrix of its (λ_i, μ_i) columns (−C_i, 1) over its kept rows."""
    count = kept.sum(0)
    sum_c, sum_cc = (conc_means * kept).sum(0), (conc_means * conc_means * kept).sum(0) - count * noise.square
    return np.stack([np.stack([sum_cc, -sum_c], -1), np.stack([-sum_c, count], -1)], 1)


@dataclass(frozen=True)
class NormalEquations:
    """The normal equations with (λ, μ) eliminated: reduced [R, R] matrix and right-hand side over k, and
    what recovers (λ_i, μ_i) from k."""

    reduced: np.ndarray
    reduced_rhs: np.ndarray
    coupling: sparse.csr_matrix  # [2n, R]: the (λ, μ) rows of the Gram matrix's k columns
    blocks: np.ndarray  # [n, 2, 2] each metabolite's (λ_i, μ_i) Gram block
    block_pinv: np.ndarray  # [n, 2, 2] its pseudo-inverse
    block_rhs: np.ndarray  # [n, 2]
    n_rows: int


def normal_equations(monomial_means: np.ndarray, conc_means: np.ndarray, rates: np.ndarray,
                     stoichiometry: np.ndarray, noise: NoiseMoments, kept: np.ndarray | None = None) -> NormalEquations:
    """Unknowns (k_j, then per metabolite λ_i, μ_i); the row (t, i) reads
    Y_ti = Σ_j S_ij M_tj k_j − C_ti λ_i + μ_i, over the rows `kept` [rows, n] (all of them for None). The k block
    is (SᵀS) ⊙ (MᵀM) over all rows, less each left-out row's own term on its metabolite's few reactions."""
    n = conc_means.shape[1]
    kept = np.ones(conc_means.shape, dtype=bool) if kept is None else kept
    weight = kept.astype(np.float64)
    s_sparse = sparse.csr_matrix(stoichiometry)
    gram_kk = reaction_gram(monomial_means, stoichiometry, kept)
    mc, my = monomial_means.T @ (conc_means * weight), monomial_means.T @ (rates * weight)  # [R, n]
    rhs_k = np.asarray(s_sparse.multiply(my.T).sum(axis=0)).ravel()
    # rows of λ_i and μ_i against k_j: −S_ij Σ_t M_tj C_ti and S_ij Σ_t M_tj over metabolite i's kept rows
    coupling_lambda = -s_sparse.multiply(mc.T)
    coupling_mu = s_sparse.multiply((monomial_means.T @ weight).T)
    coupling = sparse.vstack([coupling_lambda, coupling_mu]).tocsr()
    blocks = relaxation_blocks(conc_means, noise, weight)
    block_pinv = np.linalg.pinv(blocks, hermitian=True)
    cross = (conc_means * rates * weight).sum(0) - weight.sum(0) * noise.cross
    block_rhs = np.stack([-cross, (rates * weight).sum(0)], -1)
    # Schur complement: K − Bᵀ D⁺ B with B = coupling, split into its λ and μ rows
    b_lambda, b_mu = coupling[:n], coupling[n:]
    correction = np.zeros_like(gram_kk)
    for row, first in enumerate((b_lambda, b_mu)):
        for col, second in enumerate((b_lambda, b_mu)):
            correction += (first.T @ (sparse.diags(block_pinv[:, row, col]) @ second)).toarray()
    pinv_rhs = np.einsum("nab,nb->na", block_pinv, block_rhs)
    reduced_rhs = rhs_k - (b_lambda.T @ pinv_rhs[:, 0] + b_mu.T @ pinv_rhs[:, 1])
    return NormalEquations(gram_kk - correction, reduced_rhs, coupling, blocks, block_pinv, block_rhs,
                           int(kept.sum()))


def solve_rate_constants(equations: NormalEquations) -> tuple[np.ndarray, np.ndarray]:
    """(k, determined) from the reduced system (solve_reduced)."""
    return solve_reduced(equations.reduced, equations.reduced_rhs)


def solve_reduced(matrix: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k, determined) from the Jacobi-scaled reduced system over k: the eigenvectors whose eigenvalue is below
    NULL_SPACE_TOLERANCE × the largest span the directions the data leave free; k has no component there,
    and a reaction is determined when it has none either."""
    diagonal = np.diag(matrix).copy()
    live = diagonal > 0
    scale = np.where(live, 1.0 / np.sqrt(np.where(live, diagonal, 1.0)), 0.0)
    scaled = matrix * scale[:, None] * scale[None, :]
    try:
        values, vectors = np.linalg.eigh(scaled)
    except np.linalg.LinAlgError:  # syevd failed to converge on a finite, well-scaled matrix (E. coli core's
        values, vectors = scipy.linalg.eigh(scaled, driver="evr")  # form-free fit, seed 8120 at K 10); evr did not
    if not live.any() or values[-1] <= 0:
        raise DataError("the regression's design is singular: no reaction ever runs in the data "
                        "(no frames, or every substrate at zero)")
    kept = values > NULL_SPACE_TOLERANCE * values[-1]
    coordinates = vectors[:, kept] @ ((vectors[:, kept].T @ (scale * rhs)) / values[kept])
    null = vectors[:, ~kept]
    determined = live & (np.linalg.norm(null, axis=1) < 1e-6)
    return scale * coordinates, determined


def relaxation_from(equations: NormalEquations, rate_constants: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(λ_i, μ_i) given k: each metabolite's block solved with the reactions' part moved to the right."""
    n = equations.block_rhs.shape[0]
    coupled = (equations.coupling @ rate_constants).reshape(2, n).T
    solution = np.einsum("nab,nb->na", equations.block_pinv, equations.block_rhs - coupled)
    return solution[:, 0], solution[:, 1]


# Frames of the per-row noise variance computed at once: [frames, substrate pairs] floats each (iJO1366: about 20 000
# pairs, so 256 frames take 40 MB)
_VARIANCE_FRAME_CHUNK = 256


def row_noise_variance(trajectory: Trajectory, network: Network, rate_constants: np.ndarray, window: int,
                       noise: float) -> np.ndarray:
    """[rows, n], aligned with weak_form_rows: the variance measurement noise σ gives row (t, i), to first order,
    frames independent, the rate read as (c[t+W] − c[t]) / (W·dt) (W 1: a forward difference): with
    G_ia(s) = ∂/∂c_a Σ_j S_ij k_j m_j at frame s, σ² · (2 / (W·dt)² + 2·G_ii(t) / (W²·dt) + Σ_a mean_s G_ia(s)² / W),
    the middle term the rate's start sharing its noise with the reactions' first frame. Rows whose reactions run fast
    carry far more noise than the rest (a metabolite spiking to 150 on development network 8905: four times the
    median row's standard deviation), and an unweighted fit lets them dominate its relaxation."""
    conc = trajectory.concentrations
    n, (index, order) = conc.shape[1], network.padded_substrates()
    edge_reaction, edge_slot = np.nonzero((order > 0) & (index < n))
    edge_metabolite, edge_order = index[edge_reaction, edge_slot], order[edge_reaction, edge_slot]
    # (edge e, metabolite i of its reaction) → the pair (i, substrate of e), weighted by S_ij
    of_edges = sparse.csc_matrix(network.stoichiometry)[:, edge_reaction]
    edges = np.repeat(np.arange(len(edge_reaction)), np.diff(of_edges.indptr))
    pairs, pair_index = np.unique(of_edges.indices * n + edge_metabolite[edges], return_inverse=True)
    to_pairs = sparse.csr_matrix((of_edges.data, (edges, pair_index.ravel())), shape=(len(edge_reaction), len(pairs)))
    to_metabolites = sparse.csr_matrix((np.ones(len(pairs)), (np.arange(len(pairs)), pairs // n)),
                                       shape=(len(pairs), n))
    own_pairs = np.flatnonzero(pairs // n == pairs % n)  # (i, i): the metabolite's own noise
    squared, own = np.zeros_like(conc, dtype=np.float64), np.zeros_like(conc, dtype=np.float64)
    for start in range(0, len(conc), _VARIANCE_FRAME_CHUNK):
        frames = conc[start:start + _VARIANCE_FRAME_CHUNK]
        padded = np.concatenate([frames, np.ones((len(frames), 1))], axis=1)
        factors = padded[:, index] ** order  # [frames, reactions, slots]
        # ∂(k_j Π_e c_e^s_e)/∂c_a for the edge in slot p: k_j s_p c_a^(s_p − 1) × the other slots' factors
        partial = np.empty((len(frames), len(edge_reaction)))
        for slot in np.unique(edge_slot):
            at = edge_slot == slot
            j = edge_reaction[at]
            others = np.prod(np.delete(factors[:, j], slot, axis=2), axis=2)
            partial[:, at] = edge_order[at] * padded[:, edge_metabolite[at]] ** (edge_order[at] - 1) * others
        partial *= rate_constants[edge_reaction]
        gradients = to_pairs.T @ partial.T  # [pairs, frames]
        squared[start:start + len(frames)] = (to_metabolites.T @ (gradients * gradients)).T
        own[start:start + len(frames), pairs[own_pairs] % n] = gradients[own_pairs].T
    if window > 1:
        rows = trajectory.n_frames - window
        squared = trajectory.within_runs(sliding_mean(squared, window)[:rows], window)
        own = trajectory.within_runs(own[:rows], window)
    return noise**2 * (2.0 / (window * trajectory.delta_t) ** 2 + 2.0 * own / (window**2 * trajectory.delta_t)
                       + squared / window)


def weighted_relaxations(conc_means: np.ndarray, target: np.ndarray, noise: NoiseMoments, weight: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(λ_i, μ_i, Gram blocks [n, 2, 2]) of target = −λ_i·C + μ_i (the rates less the reactions' part at a given k),
    each metabolite's rows weighted by `weight` [rows, n] (0 for a row left out)."""
    total = weight.sum(0)
    blocks = relaxation_blocks(conc_means, noise, weight)
    rhs = np.stack([-((weight * conc_means * target).sum(0) - total * noise.cross), (weight * target).sum(0)], -1)
    solution = np.einsum("nab,nb->na", np.linalg.pinv(blocks, hermitian=True), rhs)
    return solution[:, 0], solution[:, 1], blocks


def excess_errors(theta: np.ndarray, per_metabolite: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """[n, K]: how much more squared error metabolite i's rows have under the K relaxations (λ, μ) of theta
    than under its own best fit θ̂_i, exactly (θ − θ̂_i)ᵀ D_i (θ − θ̂_i) with D_i its block: no residual is
    formed, so nothing cancels on exact data."""
    dx = theta[None, :, 0] - per_metabolite[:, None, 0]
    dy = theta[None, :, 1] - per_metabolite[:, None, 1]
    return blocks[:, None, 0, 0] * dx * dx + 2 * blocks[:, None, 0, 1] * dx * dy + blocks[:, None, 1, 1] * dy * dy


def _solve_2x2(matrices: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """[K, 2]: each 2 × 2 system solved in closed form; a (near) singular one by its pseudo-inverse."""
    a, b, c, d = matrices[:, 0, 0], matrices[:, 0, 1], matrices[:, 1, 0], matrices[:, 1, 1]
    det = a * d - b * c
    regular = np.abs(det) > 1e-12 * np.abs(a * d)
    solution = np.empty_like(rhs)
    with np.errstate(divide="ignore", invalid="ignore"):
        solution[:, 0] = (d * rhs[:, 0] - b * rhs[:, 1]) / det
        solution[:, 1] = (a * rhs[:, 1] - c * rhs[:, 0]) / det
    if not regular.all():
        solution[~regular] = np.einsum("kab,kb->ka", np.linalg.pinv(matrices[~regular], hermitian=True),
                                       rhs[~regular])
    return solution


# Degrees of freedom of the t distribution each type's estimates scatter by: heavy tails, so that a few
# metabolites estimated badly (short range, biased by noise) stay in their type instead of forming one.
TYPE_TAIL_DOF = 1.0
_T_LOG_NORMALISER = math.lgamma((TYPE_TAIL_DOF + 2) / 2) - math.lgamma(TYPE_TAIL_DOF / 2)


@dataclass(frozen=True)
class Mixture:
    """K shared relaxations fitted to the per-metabolite estimates: θ̂_i ~ Σ_t π_t N(θ_t, s²·D_i⁻¹), the
    covariance of a least-squares estimate from metabolite i's rows (D_i its Gram block) scaled by one s²."""

    labels: np.ndarray  # [n]: the most probable type of each metabolite
    theta: np.ndarray  # [K, 2]: (λ, μ) per type
    log_likelihood: float

    @property
    def bic(self) -> float:
        """−2 ln L + (2K centres + K − 1 weights + s²)·ln n."""
        n, k = len(self.labels), len(self.theta)
        return -2.0 * self.log_likelihood + 3 * k * math.log(n)


def _kmeans_labels(per_metabolite: np.ndarray, n_types: int, seed: int) -> np.ndarray:
    spread = per_metabolite.std(axis=0)
    points = per_metabolite / np.where(spread > 0, spread, 1.0)
    with warnings.catch_warnings():  # identical estimates (exact data) give fewer distinct clusters
        warnings.simplefilter("ignore", ConvergenceWarning)
        return KMeans(n_clusters=n_types, n_init=1, random_state=seed).fit_predict(points)


def fit_mixture(per_metabolite: np.ndarray, blocks: np.ndarray, n_types: int, variance_floor: float, seed: int = 0,
                n_starts: int = 3, max_steps: int = 200) -> Mixture:
    """The mixture of n_types relaxations by EM from k-means starts on the per-metabolite estimates, the best
    of n_starts by likelihood. s² is fitted too (floored at variance_floor): it measures how far the
    estimates scatter about their type, so a type split off from a single scatter gains almost nothing."""
    n = per_metabolite.shape[0]
    flat_blocks, weighted_estimates = blocks.reshape(n, 4), np.einsum("nab,nb->na", blocks, per_metabolite)
    best: Mixture | None = None
    for start in range(n_starts if n_types > 1 else 1):
        responsibility = np.eye(n_types)[_kmeans_labels(per_metabolite, n_types, seed + start)]
        previous = -math.inf
        scale = np.ones_like(responsibility)  # the t distribution's per-point precision weights
        for _ in range(max_steps):
            weights = responsibility.sum(0) / n
            weighted = responsibility * scale
            gram = (weighted.T @ flat_blocks).reshape(n_types, 2, 2)
            theta = _solve_2x2(gram, weighted.T @ weighted_estimates)
            errors = excess_errors(theta, per_metabolite, blocks)
            variance = max(float((weighted * errors).sum()) / (2 * n), variance_floor)
            log_density = (_T_LOG_NORMALISER - math.log(TYPE_TAIL_DOF * math.pi * variance)
                           - (TYPE_TAIL_DOF + 2) / 2 * np.log1p(errors / (TYPE_TAIL_DOF * variance)))
            with np.errstate(divide="ignore"):
                log_joint = np.log(weights)[None, :] + log_density
            top = log_joint.max(axis=1)
            log_marginal = top + np.log(np.exp(log_joint - top[:, None]).sum(axis=1))
            responsibility = np.exp(log_joint - log_marginal[:, None])
            scale = (TYPE_TAIL_DOF + 2) / (TYPE_TAIL_DOF + errors / variance)
            log_likelihood = float(log_marginal.sum())
            if log_likelihood - previous <= 1e-8 * abs(log_likelihood):
                break
            previous = log_likelihood
        fitted = Mixture(np.argmax(responsibility, axis=1), theta, log_likelihood)
        if best is None or fitted.log_likelihood > best.log_likelihood:
            best = fitted
    return best


def fit_mixtures(per_metabolite: np.ndarray, blocks: np.ndarray, n_types: int | str, max_types: int,
                 seed: int = 0) -> dict[int, Mixture]:
    """The mixtures of 1 … max_types relaxations ('auto'), or of 1 and n_types, over per-metabolite estimates
    [n, 2] (λ, μ) with their Gram blocks [n, 2, 2]."""
    # s² cannot go below 1e-12 of the per-metabolite estimates' own scale: on exact data they coincide
    # with their type's to rounding, and the likelihood would otherwise reward fitting that rounding
    variance_floor = 1e-12 * float(np.mean(excess_errors(np.zeros((1, 2)), per_metabolite, blocks)))
    n = len(per_metabolite)
    tried = range(1, min(max_types, n) + 1) if n_types == "auto" else sorted({1, min(int(n_types), n)})
    return {k: fit_mixture(per_metabolite, blocks, k, variance_floor, seed) for k in tried}


def chosen_mixture(fits: dict[int, Mixture], n_types: int | str) -> Mixture:
    """The fit of lowest BIC ('auto'), or the one of n_types."""
    return min(fits.values(), key=lambda fit: fit.bic) if n_types == "auto" else fits[max(fits)]


def fit_known_forms(observed: Observed, window: int | str = "auto", n_types: int | str = "auto",
                    max_types: int = 4, seed: int = 0, zero_margin: float | str | None = "auto",
                    row_weights: str = "noise") -> KnownFormFit:
    """The regression on observed data; `window`, `n_types` and `zero_margin` may be 'auto' (from the estimated
    measurement noise, and by BIC). With row_weights 'noise' (and noise read from the data), each metabolite's
    relaxation is fitted again, given k, with its rows weighted by the inverse of their noise variance
    (row_noise_variance), and the mixture reads those estimates and their weighted Gram blocks."""
    start = time.perf_counter()
    trajectory, network = observed.trajectory, observed.network
    noise = estimate_measurement_noise(trajectory.concentrations, trajectory.run_starts)
    if window == "auto":
        window = regression_window(trajectory.concentrations, noise, trajectory.run_starts)
    if len(trajectory.window_starts(window if window > 1 else 0)) < 2:
        raise DataError(f"regression.window {window} leaves fewer than 2 rows in the {trajectory.n_frames} frames "
                        f"of the data")
    monomial_means, conc_means, rates = weak_form_rows(trajectory, network, window)
    margin = resolved_zero_margin(zero_margin, trajectory.concentrations, trajectory.run_starts)
    kept = rows_clear_of_zero(trajectory, window, margin)
    noise_moments = NoiseMoments.of(noise, window, trajectory.delta_t)
    equations = normal_equations(monomial_means, conc_means, rates, network.stoichiometry, noise_moments, kept)
    rate_constants, determined = solve_rate_constants(equations)
    relaxation_part = rates - (monomial_means * rate_constants) @ network.stoichiometry.T
    if row_weights == "noise" and noise > 0:
        weight = (np.ones(rates.shape) if kept is None else kept) / row_noise_variance(
            trajectory, network, np.where(rate_constants > 0, rate_constants, 0.0), window, noise)
        lam, mu, blocks = weighted_relaxations(conc_means, relaxation_part, noise_moments, weight)
    else:
        (lam, mu), blocks = relaxation_from(equations, rate_constants), equations.blocks
    residual = relaxation_part + lam * conc_means - mu
    squared_error = float((residual * residual * (1.0 if kept is None else kept)).sum())
    fits = fit_mixtures(np.stack([lam, mu], -1), blocks, n_types, max_types, seed)
    mixture = chosen_mixture(fits, n_types)
    scores = {k: fit.bic for k, fit in fits.items()}
    return KnownFormFit(rate_constants, determined, lam, mu, mixture.labels, mixture.theta[:, 0],
                        mixture.theta[:, 1], scores, fits[1].theta[0], int(window),
                        noise, math.sqrt(squared_error / equations.n_rows), time.perf_counter() - start,
                        margin, equations.n_rows / rates.size)


def fit_config(cfg: Config, observed: Observed) -> KnownFormFit:
    """The regression of a run config's `regression` section on observed data."""
    rcfg = cfg.regression
    observed = decensored_observed(observed, rcfg.decensor_zeros)[0]
    return fit_known_forms(observed, rcfg.window, rcfg.n_types, rcfg.max_types, zero_margin=rcfg.zero_margin,
                           row_weights=rcfg.row_weights)


# --------------------------------------------------------------------------------------------
# One regression as a trial: the same files and metrics as a trained model


class KnownFormModel(torch.nn.Module):
    """A fit in the learner's interface (log_k, embedding, substrate, homeostasis, forward), so that every
    metric and plot of a trial applies to it unchanged. The substrate law is c^|s| and the homeostasis the
    per-metabolite relaxation; each metabolite's embedding is its mixture type's (λ, b), standardised, so
    the embedding metrics score the mixture's types."""

    def __init__(self, network: Network, fit: KnownFormFit) -> None:
        super().__init__()
        index, order = network.padded_substrates()

        def buffer(name: str, values: np.ndarray, dtype: torch.dtype = torch.float64) -> None:
            self.register_buffer(name, torch.tensor(values, dtype=dtype))

        buffer("log_k", fit.log_k)
        buffer("rate_constants", fit.rate_constants)
        buffer("stoichiometry", network.stoichiometry)
        buffer("substrate_index", index, torch.long)
        buffer("substrate_order", order)
        buffer("rate", fit.relaxation_rate)
        buffer("offset", fit.relaxation_offset)
        coordinates = np.stack([fit.type_rate, fit.type_baselines], -1)[fit.types]
        spread = coordinates.std(axis=0)
        buffer("embedding", (coordinates - coordinates.mean(0)) / np.where(spread > 0, spread, 1.0))

    def substrate(self, conc: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        conc, order = torch.broadcast_tensors(conc, order)
        return conc.clamp(min=0.0).pow(order)

    def homeostasis(self, conc: torch.Tensor) -> torch.Tensor:
        return -self.rate * conc + self.offset

    def forward(self, conc: torch.Tensor) -> torch.Tensor:
        padded = torch.nn.functional.pad(conc, (0, 1), value=1.0)
        products = padded[..., self.substrate_index].pow(self.substrate_order).prod(dim=-1)
        return (self.rate_constants * products) @ self.stoichiometry.T + self.homeostasis(conc)


def fit_metrics(cfg: Config, dataset: Dataset, fit: KnownFormFit) -> dict[str, float | int | str]:
    """A trial's metrics for a fit (metrics.compute_metrics on its KnownFormModel), marked method: regression,
    with what the regression itself chose and measured."""
    from metabo_tune import metrics
    from metabo_tune.train import data_report

    model = KnownFormModel(dataset.observed.network, fit)
    values = metrics.compute_metrics(model, dataset, status="completed", loss_history={},
                                     training_time_s=fit.solve_time_s, iterations=0)
    del values["iterations_per_s"]
    n = dataset.observed.network.n_metabolites
    values |= data_report(cfg, dataset, cfg.regression.decensor_zeros) | {
        "method": "regression",
        "final_loss": fit.residual_rms**2 * n,  # the squared error per frame, as a trial's final_loss
        "regression_window": fit.window,
        "regression_n_types": len(fit.type_rate),
        "regression_solve_s": fit.solve_time_s,
        "regression_zero_margin": math.nan if fit.zero_margin is None else fit.zero_margin,
        "regression_rows_kept": fit.rows_kept,
        "n_determined_by_data": int(fit.determined.sum()),
        "n_nonpositive_k": int(np.sum(fit.determined & (fit.rate_constants <= 0))),
    } | {f"regression_bic_{k}": score for k, score in fit.type_scores.items()}
    return values


@dataclass
class RegressionOutcome:
    metrics: dict[str, float | int | str]
    out_dir: Path
    fit: KnownFormFit


def regression_trial(cfg: Config, out_dir: str | Path, *, dataset: Dataset | None = None) -> RegressionOutcome:
    """Fit a run config's data by the regression and write a trial's files into out_dir: config.yaml,
    identifiability.txt, analysis.log, metrics.json, rate_constants.csv, metabolites.csv and plots."""
    from metabo_tune import metrics, plots
    from metabo_tune.train import write_trial_inputs

    out_dir = Path(out_dir)
    if dataset is None:
        dataset = load_or_simulate(cfg.simulation, measurement_noise_level=cfg.training.measurement_noise_level)
    write_trial_inputs(out_dir, cfg, dataset, method="regression")
    fit = fit_config(cfg, dataset.observed)
    values = fit_metrics(cfg, dataset, fit)
    (out_dir / "analysis.log").write_text(metrics.format_analysis_log(values))
    (out_dir / "metrics.json").write_text(json.dumps(values, indent=1))
    write_fit_tables(fit, out_dir)
    plots.write_trial_plots(KnownFormModel(dataset.observed.network, fit), dataset, None, out_dir)
    return RegressionOutcome(values, out_dir, fit)


def write_fit_tables(fit: KnownFormFit, out_dir: Path) -> None:
    """rate_constants.csv (k, log10 k, determined) and metabolites.csv (λ, μ, b, type) of a fit."""
    pd.DataFrame({"reaction": np.arange(len(fit.rate_constants)), "k": fit.rate_constants, "log10_k": fit.log_k,
                  "determined": fit.determined}).to_csv(out_dir / "rate_constants.csv", index=False)
    pd.DataFrame({"metabolite": np.arange(len(fit.types)), "lambda": fit.relaxation_rate,
                  "mu": fit.relaxation_offset, "baseline": fit.baselines, "type": fit.types,
                  "type_lambda": fit.type_rate[fit.types], "type_baseline": fit.type_baselines[fit.types]}
                 ).to_csv(out_dir / "metabolites.csv", index=False)


SUMMARY_METRICS = ("rate_constants_R2", "log_k_rmse", "avg_slope_ratio", "embedding_cluster_acc",
                   "measurement_noise_estimate", "regression_window", "regression_n_types", "regression_solve_s")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m metabo_tune.regress",
        description="Fit a config's data by the known-form least-squares regression (mass action, linear "
                    "relaxation) and write the same metrics and plots as a trained trial.")
    parser.add_argument("config", help="run config YAML, or a search-space YAML (its `base` data are fitted)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set regression.window=10 (repeatable)")
    parser.add_argument("--out", help="output directory (default: runs/<config name>_regression)")
    args = parser.parse_args(argv)
    out_dir = Path(args.out or Path("runs") / f"{Path(args.config).stem}_regression")
    try:
        output_folder(out_dir, "--out")
        outcome = regression_trial(load_config(args.config, args.overrides), out_dir)
    except (ConfigError, DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    values = outcome.metrics
    from metabo_tune.metrics import headline

    summary = headline(values, SUMMARY_METRICS)
    print(f"regression, {values['classification']}: {summary}; results in {outcome.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
