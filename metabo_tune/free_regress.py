"""The form-free fit: k, a substrate law and the homeostasis by least squares, with no form assumed.

    dc_i/dt = Σ_j S_ij k_j Π_e f(c_e)^|s_e| + h_g(i)(c_i)

f is one function for every substrate edge, an edge of order s counting as s molecules of its substrate that act
alike (graph_model.substrate_orders 'repeated'; mass action and Michaelis–Menten both hold it). Its log–log slope σ
is a quadratic B-spline of log c on breakpoints evenly spaced over the substrates' concentrations, constant beyond,
and f(c) = exp ∫_0^log c σ, so log f is a smooth (C²) cubic spline with the free-form model's priors built in: f(1) = 1
(the gauge that separates f's scale from k's), f does not decrease (every coefficient, and so σ, in [0, MAX_SLOPE]),
f(0) = 0 (a power law below the data). Each group's h (by default every metabolite its own group) is a cubic B-spline
of c on breakpoints over its members' concentrations (at quantiles, or placed by `homeostasis_breakpoints`),
constant beyond them, with no sign, shape or type.

Given f the model is linear in k and the h, so those are solved exactly (each group's h eliminated by a Schur
complement, as in the known-form regression, whose reduced solve and null space it shares), and only σ's coefficients
are searched: variable projection, scipy's least_squares over the solved residual, from a flat f. The rows are those
of the regression: the weak form over `window` frames (the strong form for 1), entries near zero concentration left
out.

Why: on a relaxing real network gradient training from a random k does not find k even with the forms known, and
the known-form regression's warm start assumes the forms (docs/results.md, "Real networks"). Measured on E. coli core
(development, simulation seed 42, four runs, exact mass-action data): from the flat start this fit gets log k
exactly (R² 1.0000) in seconds; with one free law per order instead of a shared one, R² −0.09 (the orders 2 to 4 sit
on a few edges and trade with their reactions' k); with knots linear in c instead of log–log, 0.50 on shorter runs.
Why smooth: the homeostasis is a small part of dc/dt, so a law's interpolation error, however small, moves k. With
piecewise-linear f and h instead (development seed 8104, Michaelis–Menten K 1, w 2), k R² 0.966 with the true types
as groups and 0.58 per metabolite; smooth, 0.9993 and 0.995. With the true f and piecewise-linear h on 24 knots,
0.964: both laws' smoothness matters.
Why evenly spaced in log c: at quantiles the breakpoints crowd where most data are and leave the tails, where the
Michaelis–Menten slope changes most at small K, to one span; a reaction whose substrates sit there then takes f's
error. Measured post hoc with the true types as groups (E. coli core, K 1, w 2, development seeds): k R² 0.8905 →
0.9933 (8118, two k had come out ≤ 0), 0.9820 → 0.9998 (8111), 0.9920 → 0.9940 (8113); unchanged (within 1e-4) at
K 3, K 10, w 1, w 4 and on mass action. Quantiles cut at the 1st and 99th percentiles instead: worse than either.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.interpolate
import scipy.optimize
from scipy import sparse

from metabo_tune.censoring import decensored_observed
from metabo_tune.config import Config
from metabo_tune.group_solve import reaction_gram, window_mean
from metabo_tune.noise_estimate import (
    estimate_measurement_noise,
    regression_window,
    resolved_zero_margin,
)
from metabo_tune.regress import K_FLOOR, monomials, rows_clear_of_zero, solve_reduced
from metabo_tune.simulate import DataError, Observed
from metabo_tune.splines import Breakpoints, clamped_knots, even_breakpoints, spline_basis, spread_breakpoints

SUBSTRATE_KNOTS = 12  # σ's breakpoints: evenly spaced in log c over the substrates' concentrations
HOMEOSTASIS_KNOTS = 12  # h's breakpoints per metabolite: quantiles of its own concentrations
SLOPE_DEGREE = 2  # σ quadratic, so log f is cubic in log c
HOMEOSTASIS_DEGREE = 3
MAX_ENTRIES = 400_000  # residual entries (rows × metabolites): rows are thinned evenly to stay within it
MAX_EVALUATIONS = 300
FLAT_START = 1e-3  # σ's coefficients at the start: f nearly constant
MAX_SLOPE = 8.0  # the steepest log–log slope f may take (a Hill coefficient of 8)


@dataclass(frozen=True)
class SubstrateLaw:
    """f(c) = exp ∫_0^log c σ, σ the log–log slope: a quadratic B-spline of log c, constant beyond its breakpoints
    (a power law there), coefficients in [0, MAX_SLOPE]; f(1) = 1, f(0) = 0, and f does not decrease."""

    breakpoints: np.ndarray  # in log c, increasing
    coefficients: np.ndarray  # σ's, len(breakpoints) + SLOPE_DEGREE − 1

    def log(self, concentrations: np.ndarray) -> np.ndarray:
        """log f at positive `concentrations`."""
        antiderivative = scipy.interpolate.BSpline(clamped_knots(self.breakpoints, SLOPE_DEGREE), self.coefficients,
                                                   SLOPE_DEGREE).antiderivative()
        low, high = self.breakpoints[0], self.breakpoints[-1]

        def integral(log_c: np.ndarray) -> np.ndarray:  # ∫ σ from the first breakpoint, σ constant beyond the ends
            return (antiderivative(np.clip(log_c, low, high)) - antiderivative(low)
                    + np.minimum(log_c - low, 0.0) * self.coefficients[0]
                    + np.maximum(log_c - high, 0.0) * self.coefficients[-1])

        return integral(np.log(concentrations)) - integral(np.zeros(1))[0]

    def __call__(self, concentrations: np.ndarray) -> np.ndarray:
        positive = concentrations > 0
        values = np.zeros(np.shape(concentrations))
        values[positive] = np.exp(self.log(concentrations[positive]))
        return values


@dataclass(frozen=True)
class FreeFormFit:
    rate_constants: np.ndarray  # k [reactions]; no component along the directions the data leave free
    determined: np.ndarray  # bool [reactions]
    substrate_law: SubstrateLaw
    residual_rms: float
    evaluations: int
    window: int
    solve_time_s: float
    groups: np.ndarray  # [metabolites] the groups that share one h (each metabolite its own unless given)
    homeostasis_functions: dict[int, tuple[np.ndarray, np.ndarray]]  # group → h's breakpoints in c, coefficients

    @property
    def log_k(self) -> np.ndarray:
        return np.log10(np.maximum(self.rate_constants, K_FLOOR))

    def substrate(self, concentrations: np.ndarray) -> np.ndarray:
        """f at `concentrations` (0 at c <= 0)."""
        return self.substrate_law(concentrations)

    def homeostasis(self, group: int, concentrations: np.ndarray) -> np.ndarray:
        """h of `group` at `concentrations`, constant beyond its end breakpoints."""
        breakpoints, coefficients = self.homeostasis_functions[group]
        return spline_basis(concentrations, breakpoints, HOMEOSTASIS_DEGREE) @ coefficients


class _Design:
    """The rows, targets and bases that do not depend on f, and the solve given f."""

    def __init__(self, observed: Observed, window: int, margin: float | None, substrate_knots: int,
                 homeostasis_knots: int, groups: np.ndarray | None, homeostasis_breakpoints: Breakpoints) -> None:
        trajectory, network = observed.trajectory, observed.network
        self.network, self.stoichiometry = network, network.stoichiometry
        self.s_sparse = sparse.csr_matrix(network.stoichiometry)
        n = network.n_metabolites
        starts = trajectory.window_starts(window)
        if len(starts) < 2:
            raise DataError(f"the form-free fit's window {window} leaves fewer than 2 rows in the "
                            f"{trajectory.n_frames} frames of the data")
        stride = max(1, math.ceil(len(starts) * n / MAX_ENTRIES))
        rows = np.arange(0, len(starts), stride)
        starts = starts[rows]
        conc = trajectory.concentrations
        frame_mean = window_mean(starts, window, trajectory.n_frames)
        frames = np.unique(frame_mean.indices)
        self.frame_mean = frame_mean[:, frames]
        self.conc = conc[frames]
        self.target = (conc[starts + window] - conc[starts]) / (window * trajectory.delta_t)
        clear = rows_clear_of_zero(trajectory, window, margin)  # per frame for W = 1, else per window start
        self.weight = (np.ones(self.target.shape) if clear is None
                       else clear[starts if window == 1 else rows].astype(np.float64))
        substrates = np.unique(network.substrate_metabolite)
        seen = self.conc[:, substrates].ravel()
        seen = seen[seen > (margin or 0.0)]
        self.slope_breakpoints = even_breakpoints(np.log(seen) if len(seen) else np.zeros(1), substrate_knots)
        self.reactions = [np.flatnonzero(network.stoichiometry[i]) for i in range(n)]
        self.groups = np.arange(n) if groups is None else np.asarray(groups, dtype=np.int64)
        self.labels = np.unique(self.groups)
        self.bases, self.homeostasis_knots = [], []
        for g in self.labels:
            members = np.flatnonzero(self.groups == g)
            breakpoints = homeostasis_breakpoints(self.conc[:, members], homeostasis_knots)
            self.homeostasis_knots.append(breakpoints)
            self.bases.append({i: (self.frame_mean @ spline_basis(self.conc[:, i], breakpoints, HOMEOSTASIS_DEGREE))
                               * self.weight[:, i:i + 1] for i in members})
        self.weighted_target = self.target * self.weight
        self.homeostasis_blocks = [self._homeostasis_block(members) for members in self.bases]

    def _homeostasis_block(self, members: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """A group's h block of the normal equations, which f does not change: (its pseudo-inverse, its right side)."""
        size = next(iter(members.values())).shape[1]
        gram, right = np.zeros((size, size)), np.zeros(size)
        for i, basis in members.items():
            gram += basis.T @ basis
            right += basis.T @ self.weighted_target[:, i]
        return np.linalg.pinv(gram, hermitian=True), right

    @property
    def n_slope_coefficients(self) -> int:
        return len(self.slope_breakpoints) + SLOPE_DEGREE - 1

    def substrate_law(self, slopes: np.ndarray) -> SubstrateLaw:
        return SubstrateLaw(self.slope_breakpoints, slopes)

    def rates_per_k(self, slopes: np.ndarray) -> np.ndarray:
        """[rows, reactions]: each reaction's rate at k = 1, averaged over the rows' windows."""
        substrate = self.substrate_law(slopes)(self.conc)
        return self.frame_mean @ monomials(substrate, self.network)  # Π f(c_e)^|s_e|: the regression's product

    def solve(self, slopes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """(residual [rows, n], k, determined, each group's h coefficients) given σ's coefficients, each group's
        h solved (its block of the normal equations eliminated by a Schur complement)."""
        rates = self.rates_per_k(slopes)
        weighted_target = self.weighted_target
        n_reactions = rates.shape[1]
        matrix = reaction_gram(rates, self.stoichiometry, self.weight > 0)
        rhs = np.asarray(self.s_sparse.multiply((rates.T @ weighted_target).T).sum(axis=0)).ravel()
        crosses = []
        for members, (inverse, right) in zip(self.bases, self.homeostasis_blocks, strict=True):
            cross = np.zeros((n_reactions, len(right)))
            for i, basis in members.items():
                reactions = self.reactions[i]
                cross[reactions] += (rates[:, reactions].T @ basis) * self.stoichiometry[i, reactions][:, None]
            touched = np.flatnonzero(cross.any(axis=1))
            matrix[np.ix_(touched, touched)] -= cross[touched] @ inverse @ cross[touched].T
            rhs[touched] -= cross[touched] @ (inverse @ right)
            crosses.append(cross)
        rate_constants, determined = solve_reduced(matrix, rhs)
        model = (rates * rate_constants) @ self.stoichiometry.T
        homeostasis = []
        for members, (inverse, right), cross in zip(self.bases, self.homeostasis_blocks, crosses, strict=True):
            homeostasis.append(inverse @ (right - cross.T @ rate_constants))
            for i, basis in members.items():
                model[:, i] += basis @ homeostasis[-1]
        return weighted_target - model * self.weight, rate_constants, determined, homeostasis


def fit_free_forms(observed: Observed, window: int | str = "auto", zero_margin: float | str | None = "auto",
                   substrate_knots: int = SUBSTRATE_KNOTS, homeostasis_knots: int = HOMEOSTASIS_KNOTS,
                   max_evaluations: int = MAX_EVALUATIONS, groups: np.ndarray | None = None,
                   homeostasis_breakpoints: Breakpoints = spread_breakpoints) -> FreeFormFit:
    """The form-free fit on observed data; `window` and `zero_margin` 'auto' as in the known-form regression.
    `groups` [metabolites]: metabolites that share one h (None: each its own)."""
    start = time.perf_counter()
    trajectory = observed.trajectory
    if window == "auto":
        noise = estimate_measurement_noise(trajectory.concentrations, trajectory.run_starts)
        window = regression_window(trajectory.concentrations, noise, trajectory.run_starts)
    margin = resolved_zero_margin(zero_margin, trajectory.concentrations, trajectory.run_starts)
    design = _Design(observed, int(window), margin, substrate_knots, homeostasis_knots, groups, homeostasis_breakpoints)
    slopes = np.full(design.n_slope_coefficients, FLAT_START)
    # no test on the cost's relative fall (ftol): under noise the cost is nearly all the noise's floor, which no f
    # lowers, so that test ends the search where f is still flat (E. coli core, Michaelis–Menten K 1, σ_m 0.01,
    # development seed 8104: 8 evaluations, k R² −6.0; without it 164, k R² 0.70); exact data end on gtol as before
    fit = scipy.optimize.least_squares(lambda x: design.solve(x)[0].ravel(), slopes, method="trf",
                                       bounds=(0.0, MAX_SLOPE), diff_step=1e-4, max_nfev=max_evaluations, ftol=None)
    residual, rate_constants, determined, homeostasis = design.solve(fit.x)
    rms = math.sqrt(float((residual ** 2).sum()) / max(design.weight.sum(), 1.0))
    return FreeFormFit(rate_constants, determined, design.substrate_law(fit.x), rms, int(fit.nfev),
                       int(window), time.perf_counter() - start, design.groups,
                       dict(zip(design.labels.tolist(), zip(design.homeostasis_knots, homeostasis, strict=True),
                                strict=True)))


def fit_free_config(cfg: Config, observed: Observed, groups: np.ndarray | None = None,
                    homeostasis_knots: int = HOMEOSTASIS_KNOTS,
                    homeostasis_breakpoints: Breakpoints = spread_breakpoints) -> FreeFormFit:
    """The form-free fit with a run config's `regression` section's window, zero margin and decensoring."""
    rcfg = cfg.regression
    observed = decensored_observed(observed, rcfg.decensor_zeros)[0]
    return fit_free_forms(observed, rcfg.window, rcfg.zero_margin, homeostasis_knots=homeostasis_knots, groups=groups,
                          homeostasis_breakpoints=homeostasis_breakpoints)
