"""Training loop: loss, regularisers, rollout, optimiser groups, seeding, checkpoints. The optional
homeostasis terms (conservation, residual fit, embedding fusion) are in `homeostasis_losses`.

Only `Observed` data reach this module's trainer: concentrations, derivatives, S and the substrate
edges. A `Trainer` advances in segments (`run(until)`) and can save and restore its whole state, so a
run can be checkpointed and resumed mid-way with identical results. The trial pipeline at the bottom
(`run_trial`, `main`) adds data loading, metrics and plots around it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import pickle
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse
import torch
import yaml
from threadpoolctl import threadpool_limits

from metabo_tune.atomic_file import write_atomically
from metabo_tune.censoring import DecensorSetting, decensored_observed
from metabo_tune.cli import ArgumentParser, output_folder
from metabo_tune.config import Config, ConfigError, load_config, same_config, with_defaults
from metabo_tune.free_regress import FreeFormFit, fit_free_config
from metabo_tune.group_solve import KNOTS_PER_GROUP, SPLIT_GAIN, GroupSolution, GroupSolve, uncovered, window_mean
from metabo_tune.homeostasis_losses import HomeostasisLosses, shared_relaxation_fit, window_rates
from metabo_tune.model import MetabolicGNN, build_model
from metabo_tune.noise_estimate import (
    noise_report,
    resolved_moment_window,
    resolved_prediction_window,
    resolved_zero_margin,
)
from metabo_tune.regress import KnownFormFit, chosen_mixture, fit_config, fit_mixtures, monomials, rows_clear_of_zero
from metabo_tune.simulate import DataError, Dataset, Observed, left_null_space, load_or_simulate
from metabo_tune.splines import mixed_breakpoints
from metabo_tune.substrate_grid import SubstrateGrid, grid_rule
from metabo_tune.type_groups import TypeGroups, group_types

LOSS_COMPONENTS = ("loss", "prediction", "MLP_sub_diff", "MLP_node_L1", "MLP_sub_norm", "k_floor", "conservation",
                   "residual_fit", "embedding_fusion", "MLP_node_restoring")
_RESTORING_GRID_POINTS = 24
GROUP_SOLVE_FRAME_STRIDE = 2  # the group solve's frames: every 2nd (the exact-data fit is as good as on all)
GROUP_SOLVE_HEAD_POINTS = 2000  # per group, where the head is fitted to the solved function
LINEAR_HEAD_KNOTS = 2  # with the linear head the group solve's h is linear in c: knots at the members' extremes
SUBSTRATE_START_POINTS = 64  # per order present: where MLP_sub is fitted to the form-free fit's f
SUBSTRATE_START_ROUNDS = 2  # of L-BFGS: its relative misfit to f is about 1e-8 after one (E. coli core)
MIXTURE_SPLIT_TYPES = 2  # training.group_solve_mixture with n_types 'auto': one or two types, by BIC
GROUP_SOLVE_MIN_GAIN = 2.0  # the solve is applied where it lowers the run's misfit (RMS) at least this many-fold
# L-BFGS rounds of that fit: it converges in about 30 (development, 8202 at w 1: relative misfit 2.8e-3 after 6,
# 2.2e-4 after 30 and after 60; a sharp h fitted in 6 kept 0.49-0.65 of its slope at the zero, in 30 0.90-0.98)
GROUP_SOLVE_HEAD_ROUNDS = 30
# ... or fewer: the fit stops after a round (500 L-BFGS iterations) that lowers its misfit by less than 0.1 %. On
# development networks 8929, 8930 and 8951 (MM K 3, w 1, three trajectories; exact, σ_m 0.01 on 8929 and 8951) it
# stopped after 17, 24, 6 and 13 rounds, the head fit took 19 / 35 / 7 / 12 s against 51 / 41 / 38 / 29 s, and every
# metric matched the 30 rounds' to 2-3 digits (docs/results/head_fit_cost_probe.py, evidence head_fit_cost_probe.csv).
# A 1 % rule stopped 8951 after 5 rounds with 0.61 / 0.45 of λ at the zero (30 rounds: 1.04 / 0.77); 500 points a
# group lost slope at the zero too.
GROUP_SOLVE_HEAD_MIN_GAIN = 1e-3
# Each group's h in the free group solve (its fit and its regrouping), on breakpoints half at quantiles of its
# members' concentrations, half evenly spaced over them: with the form-free fit's f the misfit is small enough that h's
# interpolation error dominates it, and splitting one law's members in two (each part with knots of its own) lowered
# it past the split's 2-fold bar. On 24 knots at quantiles: 3 groups and types 0.60-0.94 in 6 of 17 Michaelis-Menten
# runs (E. coli core 8119-8121, development since); on 96, regrouped from the true types, no split in 5 cases
# (8113, 8118). At quantiles the tail of a type whose member reaches far beyond the others kept one span: on 96 knots
# the true types' misfit 1.07e-7, a split of that type 1.70e-8 (8121, w 4, a run's 3 groups); half evenly spaced,
# 1.66e-8 and 1.58e-8 (1.05-fold, no split). One group of two laws still splits to them (8114, w 1).
FREE_GROUP_SOLVE_KNOTS = 96
_SAMPLE_CHUNK = 1000  # iterations whose frame draws come from one seeded generator


def select_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def input_scale(observed: Observed) -> float:
    """xnorm = 1.5 · std of all observed concentrations (the reference's definition)."""
    return float(1.5 * np.std(observed.trajectory.concentrations, ddof=1))


class GroupAdam:
    """Adam with PyTorch's defaults over named parameter groups: one fused kernel per group per step.

    The arithmetic is torch.optim.Adam(fused=True)'s own kernel (a test checks equality), without the
    ~0.2 ms of Python bookkeeping per step that torch.optim spends: a tenth of an iteration here. All
    groups step together, so one step counter serves every parameter (the kernel only reads it)."""

    def __init__(self, groups: dict[str, list[torch.nn.Parameter]], lrs: dict[str, float],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.groups, self.lrs, self.betas, self.eps = groups, lrs, betas, eps
        self.exp_avg = {name: [torch.zeros_like(p) for p in params] for name, params in groups.items()}
        self.exp_avg_sq = {name: [torch.zeros_like(p) for p in params] for name, params in groups.items()}
        device = next(p.device for params in groups.values() for p in params)
        self.step_count = torch.zeros((), dtype=torch.float32, device=device)
        self._one = torch.ones((), dtype=torch.float32, device=device)

    def zero_grad(self) -> None:
        for params in self.groups.values():
            for p in params:
                p.grad = None

    @torch.no_grad()
    def step(self, lrs: dict[str, float] | None = None) -> None:
        """One step with the learning rates `lrs` per group (default: those given at construction); the
        groups that share a rate in one kernel call (the kernel treats every tensor on its own)."""
        lrs = self.lrs if lrs is None else lrs
        self.step_count.add_(self._one)
        by_rate: dict[float, list[str]] = {}
        for name in self.groups:
            by_rate.setdefault(lrs[name], []).append(name)
        for lr, names in by_rate.items():
            params = [p for name in names for p in self.groups[name]]
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            torch._fused_adam_(params, grads, [m for name in names for m in self.exp_avg[name]],
                               [v for name in names for v in self.exp_avg_sq[name]], [],
                               [self.step_count] * len(params), amsgrad=False, lr=lr,
                               beta1=self.betas[0], beta2=self.betas[1], weight_decay=0.0, eps=self.eps,
                               maximize=False)

    def state_dict(self) -> dict:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        for key in ("exp_avg", "exp_avg_sq"):
            for name, tensors in getattr(self, key).items():
                for mine, stored in zip(tensors, state[key][name], strict=True):
                    mine.copy_(stored)
        self.step_count.copy_(state["step_count"])


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: another config's, or not readable."""


def mixture_seeded_solution(solve: GroupSolve, one_group: GroupSolution, run_k: np.ndarray, n_types: int | str,
                            max_moves: int, seed: int = 0) -> tuple[GroupSolution | None, int]:
    """Groups seeded from the known-form regression's mixture of shared linear relaxations over each metabolite's
    own relaxation, fitted with k held at the one-group solution's (GroupSolve.relaxation_estimates), then refined
    by the solve's moves (run_k: the misfit they are measured against); with the number of types the mixture found:
    n_types, or with 'auto' one or two by BIC (a split in two, as the solve's own split). None where that is one.

    For a solve that ends with one group under noise: its split must lower the misfit above the noise floor
    twofold, and where the learned k's error makes up most of that excess the true types lower it far less (7 %
    on development network 8905 at σ_m 0.05). The mixture weighs each metabolite's estimate by its own covariance
    instead. Measured on development networks 8905, 8907 and 8909 at σ_m 0.05 (one group, types 0.50): refined
    types 0.86 / 0.80 / 0.87 (the regression on the same data: 0.76 / 0.56 / 0.88). With k held at the run's
    instead, BIC kept one type on 8909 (its two-type fit stuck at types 0.51); with up to four types it chose
    three or four on 8907 and on synthetic problems and lost the types. Its limit: the k error scatters the
    estimates beyond their own covariance, so on data of one law BIC still prefers two types (8 of 8 synthetic
    one-law problems of 60 metabolites under a 0.1-decade k error): give n_types 1 where one type is known."""
    estimates, blocks = solve.relaxation_estimates(one_group.rate_constants)
    mixture = chosen_mixture(fit_mixtures(estimates, blocks, n_types, MIXTURE_SPLIT_TYPES, seed), n_types)
    labels = np.unique(mixture.labels, return_inverse=True)[1].ravel()
    found = int(labels.max()) + 1
    if found == 1:
        return None, found
    return solve.regrouped(labels).solve(max_moves, run_k), found


@dataclass
class TrainResult:
    model: MetabolicGNN
    status: str  # "completed" or "diverged"
    iterations: int
    total_iterations: int
    loss_history: dict[str, np.ndarray]
    training_time_s: float
    moment_window: int  # training.moment_window as resolved
    prediction_window: int  # training.prediction_window as resolved
    type_groups: TypeGroups | None = None  # the groups of training.type_grouping_at, once made
    group_solve: dict[str, float] | None = None  # training.group_solve_moves: its moves and misfit, once made


def minimise_lbfgs(parameters: Iterable[torch.Tensor], loss_fn: Callable[[], torch.Tensor], rounds: int,
                   min_round_gain: float = 0.0) -> int:
    """Up to `rounds` full L-BFGS steps (strong Wolfe line search, tolerances at float64's floor) on loss_fn: a fit to
    fixed values, run to convergence rather than for a step budget. Stops after a round that lowered the loss by less
    than the fraction `min_round_gain` of it (each round is up to 500 iterations); returns the rounds run."""
    optimiser = torch.optim.LBFGS(parameters, lr=1, max_iter=500, history_size=50, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-14, tolerance_change=1e-20)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    if min_round_gain > 0:
        with torch.no_grad():
            before = float(loss_fn())
    for done in range(1, rounds + 1):
        optimiser.step(closure)
        if min_round_gain > 0:
            with torch.no_grad():
                after = float(loss_fn())
            if before - after <= min_round_gain * before:
                return done
            before = after
    return rounds


def solve_applies(solution: GroupSolution) -> bool:
    """Whether the end-of-run group solve is applied (its k taken): where it lowers the misfit of the run's own k at
    least GROUP_SOLVE_MIN_GAIN-fold, or, where it kept a split, SPLIT_GAIN-fold. The twofold bar keeps the solve off
    runs whose k are right (mass action: there the misfit is the learned rate law's error, and the solve moves k
    without fitting better); a kept split says the run trained with too few groups, its k fitted beside the wrong
    homeostasis. Development, 8957 (MM K 3, w 1, σ_m 0.01; split_apply_probe.py): the split gained 1.91-fold in all,
    its k 1.25-fold at its groups; taken, h R² 0.952 / 0.975 → 0.966 / 0.993 and k R² (gauge) 0.99993 → 0.99998."""
    bar = SPLIT_GAIN if solution.splits else GROUP_SOLVE_MIN_GAIN
    return solution.excess_rms * bar <= solution.start_excess_rms


class Trainer:
    def __init__(self, cfg: Config, observed: Observed, device: torch.device | str | None = None,
                 resume_from: str | Path | None = None) -> None:
        """`resume_from`: a checkpoint of this config; where the file exists the trainer goes on from it, without
        computing the warm start again (on E. coli core the form-free fit and MLP_sub's fit to it take a minute)."""
        self.cfg = cfg
        tcfg = cfg.training
        self.device = torch.device(device) if device is not None else select_device(tcfg.device)
        measured, observed = observed, decensored_observed(observed, tcfg.decensor_zeros)[0]
        self.measured = measured
        traj = observed.trajectory
        self.xnorm = input_scale(observed)
        self.model = build_model(observed.network, cfg.graph_model, self.xnorm, tcfg.seed,
                                 (tcfg.log_k_init_min, tcfg.log_k_init_max)).to(self.device)
        self.conc = torch.tensor(traj.concentrations, dtype=torch.float32, device=self.device)
        self.deriv = torch.tensor(traj.derivatives, dtype=torch.float32, device=self.device)
        self.delta_t = traj.delta_t
        self.rollout = tcfg.time_step if tcfg.recurrent_training else 1
        self.prediction_window = (1 if tcfg.recurrent_training
                                  else resolved_prediction_window(tcfg.prediction_window, traj.concentrations,
                                                                  traj.run_starts))
        span, key = max((self.rollout, "time_step"), (self.prediction_window, "prediction_window"))
        # the frames a window (or rollout) may start at: frames t … t+span within one run
        self.start_frames = torch.as_tensor(traj.window_starts(span), device=self.device)
        if len(self.start_frames) < 1:
            raise DataError(f"training.{key} {span} needs more than the {traj.n_frames} frames of the data"
                            + (f" in one of its {traj.n_runs} runs" if traj.n_runs > 1 else ""))
        # The prediction loss's frames (t + window_frames) and target for a window starting at frame t.
        self.window_frames = torch.arange(self.prediction_window, device=self.device)
        # the group solve's weak form (with a prediction window): its rows' window starts
        self.solve_window = tcfg.group_solve_window
        self.solve_starts = traj.window_starts(self.solve_window) if self.prediction_window > 1 else None
        if tcfg.group_solve_moves is not None and self.solve_starts is not None and len(self.solve_starts) < 2:
            raise DataError(f"training.group_solve_window {self.solve_window} needs more than the {traj.n_frames} "
                            f"frames of the data" + (f" in one of its {traj.n_runs} runs" if traj.n_runs > 1 else "")
                            + ": its noise floor is read from consecutive window starts")
        self.target = (self.deriv if self.prediction_window == 1
                       else window_rates(self.conc, self.prediction_window, self.delta_t))
        self.zero_margin = resolved_zero_margin(tcfg.zero_margin, traj.concentrations, traj.run_starts)
        # [frames, n] 1 where frames t … t+W of the metabolite stay clear of zero (W 1: t and t+1); None: all kept
        self.prediction_clear = None
        if self.zero_margin is not None:
            clear = np.zeros(traj.concentrations.shape, dtype=np.float32)
            clear[:traj.n_frames - self.prediction_window] = traj.clear_of_zero(self.prediction_window,
                                                                                 self.zero_margin)
            self.prediction_clear = torch.as_tensor(clear, device=self.device)
        # the group solve's entries clear of zero: each weak-form row's W + 1 frames, or each strong-form frame and
        # the next (None: all)
        self.solve_kept = None
        if self.zero_margin is not None and self.solve_starts is not None:
            self.solve_kept = traj.clear_of_zero(self.solve_window, self.zero_margin)[self.solve_starts]
        elif self.zero_margin is not None:
            self.solve_kept = rows_clear_of_zero(traj, 1, self.zero_margin)[::GROUP_SOLVE_FRAME_STRIDE]
        # the weak-form solve's second block of rows: prediction windows over the stretches clear of zero too short
        # for one of its long windows (starts, kept); None where there are none, or no solve
        self.solve_short = None
        if (tcfg.group_solve_moves is not None and self.solve_kept is not None and self.solve_starts is not None
                and self.prediction_window < self.solve_window):
            starts = traj.window_starts(self.prediction_window)
            kept = uncovered(self.solve_kept, self.solve_starts, self.solve_window,
                             traj.clear_of_zero(self.prediction_window, self.zero_margin), starts,
                             self.prediction_window)
            self.solve_short = (starts, kept) if kept.any() else None
        null = left_null_space(observed.network.stoichiometry)
        # Constants are 0-dim tensors: a Python float would be converted to a tensor on every use.
        self.constants = {key: torch.tensor(float(getattr(tcfg, key)), device=self.device) for key in (
            "coeff_MLP_sub_diff", "coeff_MLP_node_L1", "coeff_MLP_sub_norm", "coeff_k_floor", "k_floor_threshold",
            "coeff_MLP_node_restoring")}
        self.constants["inverse_batch"] = torch.tensor(1.0 / tcfg.batch_size, device=self.device)
        n = observed.network.n_metabolites
        self.constants["homeo_count"] = torch.tensor(float(tcfg.batch_size * n), device=self.device)
        self.zero = torch.zeros((), device=self.device)
        self.regularised = {name for name in ("MLP_sub_diff", "MLP_node_L1", "MLP_sub_norm", "k_floor",
                                              "MLP_node_restoring") if getattr(tcfg, f"coeff_{name}") > 0}
        # every metabolite's head on one grid of c from 0 past the largest observation: [grid points, n]
        self.restoring_grid = torch.linspace(0.0, 1.1 * float(traj.concentrations.max()), _RESTORING_GRID_POINTS,
                                             device=self.device).unsqueeze(1).repeat(1, n)
        # Probe points of the MLP_sub regularisers: the monotonicity grid [0.1, 2·xnorm] plus one step
        # for every order present, then the pinned points: |MLP_sub(c*, 1)| = c* (sub_norm_target
        # 'concentration'), or |MLP_sub(1, s)| = 1 for every order s present ('gauge').
        orders = np.unique(observed.network.substrate_order)
        grid = np.linspace(0.1, 2 * self.xnorm, 100)
        grid = np.append(grid, grid[-1] + (grid[1] - grid[0]))
        if tcfg.sub_norm_target == "gauge":
            pin_conc, pin_order, pin_target = np.ones(len(orders)), orders, np.ones(len(orders))
        else:
            pin_conc = pin_target = np.array([tcfg.sub_norm_concentration])
            pin_order = np.array([1.0])
        self.pin_targets = torch.tensor(pin_target, dtype=torch.float32, device=self.device)
        probe_conc = np.concatenate([np.tile(grid, len(orders)), pin_conc])
        probe_order = np.concatenate([np.repeat(orders, len(grid)), pin_order])
        self.sub_orders, self.grid_points = orders, len(grid)
        self.probe_conc = torch.tensor(probe_conc, dtype=torch.float32, device=self.device)
        self.probe_order = torch.tensor(probe_order, dtype=torch.float32, device=self.device)
        self._probe_order: tuple[int, torch.Tensor] | None = None
        self.substrate_grid = self._substrate_grid(traj.concentrations)

        groups = self.model.parameter_groups()
        self.base_lrs = {name: tcfg.learning_rate(name) for name in groups}
        self.optimizer = GroupAdam(groups, self.base_lrs)
        self.total_iterations = cfg.total_iterations()
        self.attach_iteration = math.ceil(tcfg.attach_homeostasis_fraction * self.total_iterations)
        self.grouping_iteration = (None if tcfg.type_grouping_at is None
                                   else math.ceil(tcfg.type_grouping_at * self.total_iterations))
        self.type_groups: TypeGroups | None = None
        self.stoichiometry = observed.network.stoichiometry
        self.group_solve_report: dict[str, float] | None = None
        self.moment_window = resolved_moment_window(tcfg.moment_window, traj.concentrations, traj.run_starts)
        self.homeostasis_losses = HomeostasisLosses(tcfg, self.model, traj, null, self.conc, self.deriv,
                                                    self.total_iterations, self.moment_window, self.zero_margin,
                                                    self.reactions)
        resuming = resume_from is not None and Path(resume_from).is_file()
        if not resuming:
            self.start_from_data(measured, observed, null)
        self.iteration = 0
        self.status = "running"
        self.elapsed_s = 0.0
        self.history = torch.zeros(self.total_iterations, len(LOSS_COMPONENTS), device=self.device)
        self._chunk: tuple[int, torch.Tensor, torch.Tensor] | None = None
        if resuming:
            self.load_checkpoint(resume_from)

    def start_from_data(self, measured: Observed, observed: Observed, null: np.ndarray) -> None:
        """The linear head's shared (λ, b) and the warm start (`training.init`): weights only, which a checkpoint
        holds. The regressions read the data as measured: each decensors by its own setting."""
        cfg, started = self.cfg, time.perf_counter()
        if cfg.training.init != "random":
            print(f"warm start (training.init {cfg.training.init}): fitting k to the data", file=sys.stderr, flush=True)
        warm_start: KnownFormFit | FreeFormFit | None = None
        if cfg.training.init == "regression":
            warm_start = fit_config(cfg, measured)
        elif cfg.training.init == "free_regression":
            warm_start = fit_free_config(cfg, measured)
        if self.model.relaxation is not None:
            shared = warm_start.shared_relaxation() if isinstance(warm_start, KnownFormFit) else None
            self.model.relaxation.initialise(*(shared or shared_relaxation_fit(
                self.homeostasis_losses.window_concentrations, self.homeostasis_losses.window_derivatives, null)))
        if warm_start is not None:
            self.start_rate_constants(warm_start, undetermined=True)
        if isinstance(warm_start, FreeFormFit) and cfg.graph_model.substrate_form == "mlp":
            self.start_substrate_law(warm_start, observed)
        if warm_start is not None:
            print(f"warm start: the fit determines {warm_start.determined.sum()} of {len(warm_start.determined)} rate "
                  f"constants; {time.perf_counter() - started:.1f} s", file=sys.stderr)

    @torch.no_grad()
    def start_rate_constants(self, fit: KnownFormFit | FreeFormFit, undetermined: bool = False) -> None:
        """log k from a regression where the data determine k and it came out positive; the rest keep their value (a
        log of a non-positive k does not exist). From the form-free fit, a determined k that came out non-positive
        starts at its smallest determined positive k: the data say the reaction barely runs, and a random start
        10²–10⁵ above its truth (E. coli core's hub rule, development seed 42, Michaelis–Menten K 3) made the first
        prediction loss 10.0 where the fit's own k give 0.012, and the run failed (k R² 0.40).

        With `undetermined` (the warm start; the form-free fit only), the k the data leave undetermined take the
        fit's values as well (its solution has no component along the free directions), a non-positive one that
        smallest positive k, instead of their random start: the data fix their combinations with the others, so
        random values there broke the fit's prediction (9 of 256 on random network 9001: the first prediction loss
        97 instead of 0.04) and the training moved the determined k to make up for them (k R² 0.9999994 → 0.59 in
        900 iterations; with this, 0.99; docs/results.md, "The screen under-ranks slow k learners"). At the run's
        end (the free group solve) the run's own undetermined k are kept: trained beside the others, they agree with
        the data already."""
        positive = fit.rate_constants > 0
        usable = fit.determined & positive
        log_k = fit.log_k.copy()
        if isinstance(fit, FreeFormFit) and usable.any():
            replaced = np.ones_like(usable) if undetermined else fit.determined
            log_k[replaced & ~positive] = fit.log_k[usable].min()
            usable = replaced
        start = torch.tensor(log_k, dtype=self.model.log_k.dtype, device=self.device)
        self.model.log_k.copy_(torch.where(torch.tensor(usable, device=self.device), start, self.model.log_k))

    def start_substrate_law(self, fit: FreeFormFit, observed: Observed) -> None:
        """MLP_sub fitted (in float64) to the form-free fit's f, raised to each order present, at quantiles of
        that order's substrates' concentrations, each order's misfit relative to its own values' scale: a rate law
        and a k that belong together, where a random MLP_sub beside the fit's k pulls k off it while it learns."""
        network, conc = observed.network, observed.trajectory.concentrations
        points, orders = [], []
        for order in np.unique(network.substrate_order):
            seen = conc[:, network.substrate_metabolite[network.substrate_order == order]]
            points.append(np.quantile(seen, np.linspace(0.0, 1.0, SUBSTRATE_START_POINTS)))
            orders.append(np.full(SUBSTRATE_START_POINTS, float(order)))
        points, orders = np.concatenate(points), np.concatenate(orders)
        values = fit.substrate(points) ** orders
        scale = np.concatenate([np.full(SUBSTRATE_START_POINTS, max(np.square(part).mean(), 1e-300))
                                for part in np.split(values, len(values) // SUBSTRATE_START_POINTS)])
        points, orders, values, scale = (torch.as_tensor(x, dtype=torch.float64, device=self.device)
                                         for x in (points, orders, values, scale))
        sub_mlp = self.model.sub_mlp.double()
        minimise_lbfgs(sub_mlp.parameters(),
                       lambda: ((self.model.substrate(points, orders) - values).square() / scale).mean(),
                       SUBSTRATE_START_ROUNDS)
        sub_mlp.float()

    # -- sampling --------------------------------------------------------------------------

    def _frames(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch and conservation frame indices for one iteration; a pure function of (seed, iteration)
        so that a resumed run draws exactly what an uninterrupted one would."""
        chunk = iteration // _SAMPLE_CHUNK
        if self._chunk is None or self._chunk[0] != chunk:
            gen = torch.Generator().manual_seed(self.cfg.training.seed * 1_000_003 + chunk)
            tcfg = self.cfg.training
            batch = torch.randint(len(self.start_frames), (_SAMPLE_CHUNK, tcfg.batch_size), generator=gen)
            n_cons = self.cfg.sampled_conservation_frames() or 1
            cons = torch.randint(self.conc.shape[0], (_SAMPLE_CHUNK, n_cons), generator=gen)
            self._chunk = (chunk, self.start_frames[batch.to(self.device)], cons.to(self.device))
        offset = iteration % _SAMPLE_CHUNK
        return self._chunk[1][offset], self._chunk[2][offset]

    # -- loss ------------------------------------------------------------------------------

    def losses(self, iteration: int) -> dict[str, torch.Tensor]:
        """Every loss term for one iteration. MLP_sub is evaluated once on the batch's (metabolite,
        order) pairs together with the regularisers' probe points, and the homeostasis head once on the
        batch together with the sampled conservation frames: two MLP passes instead of five."""
        model = self.model
        batch, cons_frames = self._frames(iteration)
        frames = batch if self.prediction_window == 1 else (batch.unsqueeze(1) + self.window_frames).flatten()
        conc = self.conc.index_select(0, frames)  # index_select, not [batch]: less dispatch per call
        n_pair_values = conc.shape[0] * model.pair_metabolite.shape[0]
        sub_values = self.substrate_values(conc.index_select(1, model.pair_metabolite))
        # split, not slices: its backward is one concatenation instead of a zero-filled copy per slice
        pair_values, grid_values, pinned_values = torch.split(sub_values, self._sub_split(n_pair_values))
        pair_values = pair_values.view(conc.shape[0], model.pair_metabolite.shape[0])
        cons = self.homeostasis_losses.conservation_frames(cons_frames)
        # nothing differentiates the head's output on the batch when the prediction loss detaches it, its L1
        # is off and no conservation frames ride along: then it costs no autograd graph
        head_gradient = cons is not None or not self.detached(iteration) or "MLP_node_L1" in self.regularised
        with torch.set_grad_enabled(head_gradient):
            node_out = model.homeostasis(conc if cons is None else torch.cat([conc, cons[0]]))
        homeo, cons_out = ((node_out, None) if cons is None
                           else torch.split(node_out, [conc.shape[0], node_out.shape[0] - conc.shape[0]]))
        out = {"prediction": self.prediction_loss(iteration, batch, conc, pair_values, homeo)}
        out |= self.regularisers(grid_values, pinned_values, homeo)
        out |= self.homeostasis_losses.terms(iteration, None if cons is None else (cons_out, cons[1]))
        terms = list(out.values())
        out["loss"] = sum(terms[1:], start=terms[0])
        for name in LOSS_COMPONENTS:  # the terms switched off: recorded as 0, left out of the sum
            out.setdefault(name, self.zero)
        return out

    def prediction_loss(self, iteration: int, batch: torch.Tensor, conc: torch.Tensor, pair_values: torch.Tensor,
                        homeo: torch.Tensor) -> torch.Tensor:
        """Squared error of dc/dt on the batch, or of the rolled-out states with recurrent_training. With
        prediction_window W each batch entry is a window of W frames from t, and the error is the mean of the
        model's rates over them against (c[t+W] − c[t]) / (W·dt), which equals that mean exactly for Euler steps
        (the left Riemann sum; no derivative of the data is taken)."""
        model = self.model
        detach = self.detached(iteration)
        first_step = model.reaction_part(conc, pair_values) + (homeo.detach() if detach else homeo)
        if self.prediction_window > 1:
            first_step = first_step.unflatten(0, (-1, self.prediction_window)).mean(1)
        if self.rollout == 1:
            residual = first_step - self.target.index_select(0, batch)
            if self.prediction_clear is not None:  # entries near zero concentration left out (zero_margin)
                residual = residual * self.prediction_clear.index_select(0, batch)
            return (residual * residual).sum() * self.constants["inverse_batch"]
        state, step_losses = conc, []
        for step in range(1, self.rollout + 1):
            deriv = first_step if step == 1 else model(state, detach_homeostasis=detach)
            state = torch.clamp(state + self.delta_t * deriv, min=0.0)
            err = (state - self.conc.index_select(0, batch + step)) / (self.delta_t * step)
            step_losses.append(err.square().sum(-1).mean())
        return torch.stack(step_losses).mean()

    def detached(self, iteration: int) -> bool:
        """Whether the prediction loss sees the head's output as a constant at `iteration`."""
        return self.cfg.training.detach_homeostasis and iteration < self.attach_iteration

    def regularisers(self, grid_values: torch.Tensor, pinned_values: torch.Tensor,
                     homeo: torch.Tensor) -> dict[str, torch.Tensor]:
        """MLP_sub's monotonicity and pinned point, the head's L1 and restoring prior, the k floor: cheap once the
        probes are evaluated; a term with a zero coefficient is left out (recorded as 0), as the optional terms are."""
        const, out, active = self.constants, {}, self.regularised
        if "MLP_sub_diff" in active:
            grid = grid_values.view(len(self.sub_orders), self.grid_points).abs()
            out["MLP_sub_diff"] = const["coeff_MLP_sub_diff"] * torch.linalg.vector_norm(
                torch.relu(grid[:, :-1] - grid[:, 1:]))
        if "MLP_node_L1" in active:
            # sum / count is mean()'s own arithmetic, without the count's conversion to a tensor each call
            out["MLP_node_L1"] = const["coeff_MLP_node_L1"] * (homeo.abs().sum() / const["homeo_count"])
        if "MLP_sub_norm" in active:
            pin_error = pinned_values.abs() - self.pin_targets
            out["MLP_sub_norm"] = const["coeff_MLP_sub_norm"] * (pin_error * pin_error).sum()
        if "k_floor" in active:
            below_floor = torch.relu(const["k_floor_threshold"] - self.model.log_k)
            out["k_floor"] = const["coeff_k_floor"] * (below_floor * below_floor).sum()
        if "MLP_node_restoring" in active:
            grid = self.model.homeostasis(self.restoring_grid)
            out["MLP_node_restoring"] = const["coeff_MLP_node_restoring"] * torch.linalg.vector_norm(
                torch.relu(grid[1:] - grid[:-1]))
        return out

    def _substrate_grid(self, concentrations: np.ndarray) -> SubstrateGrid | None:
        """MLP_sub's grid for the batch (graph_model.substrate_grid); None where MLP_sub runs at every batch value."""
        model, gcfg = self.model, self.cfg.graph_model
        if gcfg.substrate_form == "mass_action":
            return None
        return SubstrateGrid.from_data(concentrations, model.pair_metabolite.cpu().numpy(),
                                       model.pair_order.cpu().numpy(), model.repeated_orders,
                                       grid_rule(gcfg.substrate_grid),
                                       self.cfg.training.batch_size * self.prediction_window, self.device)

    def _mlp_at_pairs(self, pair_conc: torch.Tensor, tail_conc: torch.Tensor,
                      tail_order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`substrate_mlp` at the pairs [frames, P], the gridded ones interpolated from the grid, and at the `tail`
        points: one MLP_sub pass over the grid's points, the pairs it leaves exact and the tail."""
        grid, model = self.substrate_grid, self.model
        exact_conc = pair_conc.index_select(1, grid.exact)
        exact_order = model.pair_order.index_select(0, grid.exact).repeat(pair_conc.shape[0])
        values = model.substrate_mlp(torch.cat([grid.conc, exact_conc.reshape(-1), tail_conc]),
                                     torch.cat([grid.order, exact_order, tail_order]))
        on_grid, exact, tail = torch.split(values, [len(grid), exact_conc.numel(), tail_conc.shape[0]])
        gridded = grid.interpolate(on_grid, pair_conc.index_select(1, grid.gridded))
        return torch.cat([gridded, exact.view(exact_conc.shape)], dim=1).index_select(1, grid.restore), tail

    def substrate_values(self, pair_conc: torch.Tensor) -> torch.Tensor:
        """The rate law's factor at the batch's pairs [frames, P], flattened, then at the probes, from one MLP_sub
        pass (with a grid: over its points, the pairs it leaves exact and the probes)."""
        model = self.model
        conc = torch.cat([pair_conc.reshape(-1), self.probe_conc])
        batch_order = self.probe_order_with(pair_conc.shape[0])
        if self.substrate_grid is None:
            return model.substrate(conc, batch_order)
        at_pairs, at_probes = self._mlp_at_pairs(pair_conc, self.probe_conc, self.probe_order)
        return model.substrate_law(conc, batch_order, torch.cat([at_pairs.reshape(-1), at_probes]))

    def reactions(self, conc: torch.Tensor) -> torch.Tensor:
        """S·v at frames of c [frames, n] with MLP_sub evaluated as training evaluates it (on its grid where it
        has one): the residual's reactions."""
        model = self.model
        if self.substrate_grid is None:
            return model.reaction_part(conc)
        pair_conc = conc.index_select(1, model.pair_metabolite)
        at_pairs, _ = self._mlp_at_pairs(pair_conc, conc.new_zeros(0), conc.new_zeros(0))
        return model.reaction_part(conc, model.substrate_law(pair_conc, model.pair_order.expand_as(pair_conc),
                                                             at_pairs))

    def _sub_split(self, n_pair_values: int) -> list[int]:
        """Sizes of [batch pairs, monotonicity grid, the pinned points] in one MLP_sub pass."""
        pins = self.pin_targets.shape[0]
        return [n_pair_values, self.probe_conc.shape[0] - pins, pins]

    def probe_order_with(self, batch_size: int) -> torch.Tensor:
        """The order column for [batch pairs, probes], cached per batch size."""
        if self._probe_order is None or self._probe_order[0] != batch_size:
            pairs = self.model.pair_order.repeat(batch_size)
            self._probe_order = (batch_size, torch.cat([pairs, self.probe_order]))
        return self._probe_order[1]

    # -- loop ------------------------------------------------------------------------------

    def run(self, until: int | None = None) -> None:
        """Train up to iteration `until` (default: the end), or until the loss is not finite."""
        until = self.total_iterations if until is None else min(until, self.total_iterations)
        check_every = 1 if self.device.type == "cpu" else 50
        start = time.perf_counter()
        self.model.train()
        while self.iteration < until and self.status == "running":
            it = self.iteration
            if it == self.grouping_iteration:
                self.group_types()
            self.optimizer.zero_grad()
            losses = self.losses(it)
            total = losses["loss"]
            if (it % check_every == 0 or it == until - 1) and not math.isfinite(total.item()):
                self.status = "diverged"
                break
            total.backward()
            self.optimizer.step(self.learning_rates(it))
            with torch.no_grad():
                torch.stack([losses[name] for name in LOSS_COMPONENTS], out=self.history[it])
            self.iteration += 1
        if self.status == "running" and self.iteration >= self.total_iterations:
            if self.cfg.training.group_solve_moves is not None and self.type_groups is not None:
                self.finish_with_group_solve()
                if self.cfg.training.free_group_solve:
                    self.finish_with_free_group_solve()
            self.status = "completed"
        self.elapsed_s += time.perf_counter() - start

    @torch.no_grad()
    def group_types(self) -> None:
        """Every embedding becomes its group's centre (type_groups.group_types), fixed from here on."""
        tcfg = self.cfg.training
        self.type_groups = group_types(self.model.embedding.cpu().numpy(), self.homeostasis_losses.centre_fit,
                                       tcfg.n_types, tcfg.type_merge_tolerance, seed=tcfg.seed)
        members = self.type_groups.centres[self.type_groups.labels]
        self.model.embedding.copy_(torch.as_tensor(members, dtype=self.model.embedding.dtype))

    def finish_with_group_solve(self) -> None:
        """k and each group's homeostasis from one least-squares solve with the learned rate law held, the groups
        refined by its misfit, two merged where that raises it at most group_solve.ONE_LAW_GAIN-fold and one split
        where that lowers it more than SPLIT_GAIN-fold (metabo_tune.group_solve). With prediction_window 1
        it fits the data's dc/dt on every 2nd frame; with a window it fits the weak form (c[t+W] − c[t]) / (W·dt) at
        every start t, W = group_solve_window (with the zero margin, short windows too: _weak_form_rows), and compares
        misfits above their noise floor.
        Applied only where it lowers the misfit of the run's own k (each group's h solved) at least
        GROUP_SOLVE_MIN_GAIN-fold, or SPLIT_GAIN-fold where it kept a split (solve_applies): then log k takes the
        solved k where positive, every embedding its group's centre,
        and the head the solved functions. Where it does not, the data do not prefer its k over the run's: the run
        keeps its k, and stays as it is unless training.group_solve_takes_groups, where it takes the solve's groups
        (if they differ from its own) with each group's h solved at its own k; groups the solve merged are taken only
        where at the run's k they fit the data better than its own groups (a merge may raise the misfit), else the
        groups its moves alone gave. With
        training.group_solve_mixture, a solve that ends with one group is seeded again from the relaxation mixture
        (mixture_seeded_solution)."""
        started = time.perf_counter()
        weak = self.solve_starts is not None
        with threadpool_limits(limits=self.cfg.training.n_threads):  # numpy's BLAS too: one thread per trial
            solve, run_k = self.group_solve_from_own_groups()
            solution = solve.solve(self.cfg.training.group_solve_moves, run_k, min_split_gain=SPLIT_GAIN)
            mixture_types = None
            if self.cfg.training.group_solve_mixture and self.model.relaxation is not None and len(solution.knots) == 1:
                seeded, mixture_types = mixture_seeded_solution(
                    solve, solution, run_k, self.cfg.training.n_types, self.cfg.training.group_solve_moves,
                    seed=self.cfg.training.seed)
                solution = seeded or solution
        applied = solve_applies(solution)
        regrouped = not np.array_equal(solution.groups, self.type_groups.labels)
        at_run_k = held = merged_held = None
        if regrouped:  # the solve's groups at the run's own k: what its k adds to what its groups do
            with threadpool_limits(limits=self.cfg.training.n_threads):
                at_run_k = solve.regrouped(solution.groups).with_rate_constants(run_k)
        if at_run_k is not None and not applied and self.cfg.training.group_solve_takes_groups:
            held = at_run_k
            with threadpool_limits(limits=self.cfg.training.n_threads):
                # Moves and splits lower the misfit; a merge may raise it (ONE_LAW_GAIN), so merged groups must fit
                # better at the run's own k, else the solve's moves alone are taken (each of them lowered the misfit).
                if solution.merges and held.misfit_rms >= solution.start_misfit_rms:
                    merged_held = held
                    moved = solution.moved_groups
                    held = (None if np.array_equal(moved, self.type_groups.labels)
                            else solve.regrouped(moved).with_rate_constants(run_k))
        groups_taken = held is not None
        self.group_solve_report = {"group_solve_applied": int(applied), "group_solve_moves": solution.moves,
                                   "group_solve_merges": solution.merges, "group_solve_splits": solution.splits,
                                   "group_solve_misfit_rms": solution.misfit_rms,
                                   "group_solve_start_misfit_rms": solution.start_misfit_rms,
                                   "group_solve_noise_rms": solution.noise_rms,
                                   "group_solve_noise_resolution_rms": solution.resolution_rms}
        if at_run_k is not None:
            self.group_solve_report["group_solve_held_misfit_rms"] = at_run_k.misfit_rms
        if self.cfg.training.group_solve_takes_groups:
            self.group_solve_report["group_solve_groups_taken"] = int(groups_taken)
        if merged_held is not None:  # the merged groups at the run's k, refused
            self.group_solve_report["group_solve_merged_misfit_rms"] = merged_held.misfit_rms
        if mixture_types is not None:
            self.group_solve_report["group_solve_mixture_types"] = mixture_types
        if applied:
            self._apply_group_solution(solution, with_rate_constants=True)
        elif groups_taken:
            self._apply_group_solution(held, with_rate_constants=False)
        if self.solve_kept is not None and weak:
            self.group_solve_report["group_solve_short_entries"] = (0 if self.solve_short is None
                                                                    else int(self.solve_short[1].sum()))
        self.group_solve_report["group_solve_time_s"] = time.perf_counter() - started

    def group_solve_from_own_groups(self) -> tuple[GroupSolve, np.ndarray]:
        """The group solve on the run's rows with its learned rate law held, started from its groups; and its k."""
        conc, target, frame_mean, kept = self._group_solve_rows()
        knots = LINEAR_HEAD_KNOTS if self.model.relaxation is not None else KNOTS_PER_GROUP
        with torch.no_grad():
            rates_per_k = (self.model.rates(conc) / torch.pow(10.0, self.model.log_k)).double().cpu().numpy()
            run_k = torch.pow(10.0, self.model.log_k.double()).cpu().numpy()
        solve = GroupSolve(rates_per_k, self.stoichiometry.astype(np.float64), conc.double().cpu().numpy(),
                           target.astype(np.float64), self.type_groups.labels, knots, frame_mean, kept=kept,
                           degree=self._group_solve_degree(), pair_moves=self.cfg.training.group_solve_pairs)
        return solve, run_k

    def _group_solve_rows(self) -> tuple[torch.Tensor, np.ndarray, scipy.sparse.csr_matrix | None,
                                         np.ndarray | None]:
        """The group solve's concentrations, target, frame means (weak form; None: strong) and kept entries."""
        if self.solve_starts is not None:
            return (self.conc, *self._weak_form_rows())
        return (self.conc[::GROUP_SOLVE_FRAME_STRIDE], self.deriv[::GROUP_SOLVE_FRAME_STRIDE].cpu().numpy(), None,
                self.solve_kept)

    def _group_solve_degree(self) -> int:
        return 3 if self.cfg.training.group_solve_smooth and self.model.relaxation is None else 1

    def _regrouped_by(self, fit: FreeFormFit) -> GroupSolution:
        """The group solve's moves, merges and splits from the run's groups with the form-free fit's f held instead
        of MLP_sub's."""
        conc, target, frame_mean, kept = self._group_solve_rows()
        conc = conc.double().cpu().numpy()
        rates_per_k = monomials(fit.substrate(conc), self.measured.network)
        solve = GroupSolve(rates_per_k, self.stoichiometry.astype(np.float64), conc, target.astype(np.float64),
                           self.type_groups.labels, FREE_GROUP_SOLVE_KNOTS, frame_mean, kept=kept,
                           degree=self._group_solve_degree(), pair_moves=self.cfg.training.group_solve_pairs,
                           breakpoints=mixed_breakpoints)
        return solve.solve(self.cfg.training.group_solve_moves, fit.rate_constants,
                           min_split_gain=SPLIT_GAIN)

    def finish_with_free_group_solve(self) -> None:
        """The form-free fit with the run's groups sharing one h each (training.free_group_solve): the group solve
        holds the learned rate law, whose shape error then sets k's (E. coli core, Michaelis–Menten K 1: f shape R²
        0.96–0.99 left k R² 0.82–0.93); searched as well, with the true types as groups, post hoc, the fit gets k R²
        0.9993 on the same data (simulation seed 8104, development since). Applied where its misfit is below the
        group solve's. A determined k it leaves non-positive (the data put it within their error of 0) takes its
        smallest positive k, as at the warm start: where it kept the run's instead, three such k of 10⁻⁷ stayed 10²
        too high and set k R² to 0.93 (0.98 with the rule; seed 8111 at K 1, development since).
        The groups are refined first with the fit's f held (_regrouped_by), and the fit repeated on them where they
        changed, kept where its misfit is lower: MLP_sub's f̂ can be off enough that the group solve leaves members in
        the wrong group (seed 8113 at K 1: f̂ shape R² 0.974, three wrong, k R² 0.70), which the fit's f moves back
        even when fitted with those wrong groups (3 moves; k R² 0.992 after; development since)."""
        started = time.perf_counter()
        report = self.group_solve_report
        reference = report["group_solve_misfit_rms"] if report["group_solve_applied"] \
            else report["group_solve_start_misfit_rms"]
        with threadpool_limits(limits=self.cfg.training.n_threads):
            fit = fit_free_config(self.cfg, self.measured, self.type_groups.labels, FREE_GROUP_SOLVE_KNOTS,
                                  mixed_breakpoints)
            regrouped = self._regrouped_by(fit)
            moves = 0
            if not np.array_equal(regrouped.groups, self.type_groups.labels):
                refit = fit_free_config(self.cfg, self.measured, regrouped.groups, FREE_GROUP_SOLVE_KNOTS,
                                        mixed_breakpoints)
                if refit.residual_rms < fit.residual_rms:
                    fit, moves = refit, regrouped.moves
        applied = fit.residual_rms < reference
        if applied:  # as at the warm start: a determined k the fit leaves non-positive at its smallest positive k
            self.start_rate_constants(fit)
            if self.cfg.graph_model.substrate_form == "mlp":
                self.start_substrate_law(fit, self.measured)
            if not np.array_equal(fit.groups, self.type_groups.labels):
                self._take_groups(fit.groups)
            self._fit_head_to(fit.groups, fit.homeostasis)
        report |= {"free_group_solve_applied": int(applied), "free_group_solve_moves": moves if applied else 0,
                   "free_group_solve_misfit_rms": fit.residual_rms,
                   "free_group_solve_time_s": time.perf_counter() - started}

    def _weak_form_rows(self) -> tuple[np.ndarray, scipy.sparse.csr_matrix, np.ndarray | None]:
        """The weak-form solve's target, frame means and kept entries: (c[t+W] − c[t]) / (W·dt) over every start t,
        W = group_solve_window, and with the zero margin a second block over the stretches clear of zero too short for
        W (a metabolite that sits near zero nearly all the time may have no long window at all, and the solve could
        neither see nor move it), rows of the prediction window w scaled by w/W: (c[t+w] − c[t]) / (W·dt), so every
        row's noise is the same as a long row's (least squares weights them alike) and a row's model is its mean
        over w frames scaled alike."""
        conc = self.conc.double().cpu().numpy()
        n_frames, long_window = len(conc), self.solve_window
        target = window_rates(conc, long_window, self.delta_t)[self.solve_starts]
        frame_mean = window_mean(self.solve_starts, long_window, n_frames)
        if self.solve_short is None:
            return target, frame_mean, self.solve_kept
        starts, kept = self.solve_short
        window, scale = self.prediction_window, self.prediction_window / long_window
        return (np.concatenate([target, window_rates(conc, window, self.delta_t)[starts] * scale]),
                scipy.sparse.vstack([frame_mean, window_mean(starts, window, n_frames, scale)], format="csr"),
                np.concatenate([self.solve_kept, kept]))

    def _apply_group_solution(self, solution: GroupSolution, with_rate_constants: bool) -> None:
        if with_rate_constants:
            positive = solution.rate_constants > 0
            with torch.no_grad():
                self.model.log_k[torch.as_tensor(positive, device=self.device)] = torch.as_tensor(
                    np.log10(solution.rate_constants[positive]), dtype=self.model.log_k.dtype, device=self.device)
        self._take_groups(solution.groups)
        self._fit_head_to(solution.groups, solution.homeostasis)

    def _take_groups(self, groups: np.ndarray) -> None:
        """The run's groups become `groups`, every embedding its group's centre."""
        self.type_groups = self.type_groups.regrouped(groups)
        with torch.no_grad():
            self.model.embedding.copy_(torch.as_tensor(self.type_groups.centres[groups],
                                                       dtype=self.model.embedding.dtype))

    def _fit_head_to(self, groups: np.ndarray, homeostasis: Callable[[int, np.ndarray], np.ndarray]) -> None:
        """The head (MLP_node or the linear relaxation) at each group's centre fitted (in float64) to the group's
        solved function `homeostasis(group, c)`, at quantiles of its members' concentrations: where the data are,
        and where the head is read."""
        conc = self.conc.double().cpu().numpy()
        points, values, embeddings = [], [], []
        for g in np.unique(groups):  # a group that moves emptied has no function to fit
            where = np.quantile(conc[:, groups == g], np.linspace(0.0, 1.0, GROUP_SOLVE_HEAD_POINTS))
            points.append(where)
            values.append(homeostasis(g, where))
            embeddings.append(np.repeat(self.type_groups.centres[g][None], len(where), 0))
        points, values, embeddings = (torch.as_tensor(np.concatenate(parts), dtype=torch.float64, device=self.device)
                                      for parts in (points, values, embeddings))
        head = (self.model.node_mlp if self.model.relaxation is None else self.model.relaxation).double()
        scale = values.square().mean().clamp(min=1e-300)
        minimise_lbfgs(head.parameters(),
                       lambda: (self.model.head(points, embeddings) - values).square().mean() / scale,
                       GROUP_SOLVE_HEAD_ROUNDS, GROUP_SOLVE_HEAD_MIN_GAIN)
        head.float()

    def _schedule(self, progress: float) -> float:
        """The learning-rate factor at `progress` ∈ [0, 1) of a (sub-)run."""
        if self.cfg.training.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    def learning_rates(self, iteration: int) -> dict[str, float]:
        """Every group's rate at `iteration`. In the residual-fit phase with residual_fit_learning_rate set,
        the head and the embeddings restart there: by then a cosine schedule has left them too little
        rate to move to the residual's per-metabolite (λ, b), which the conservation moments alone leave loose."""
        factor = self._schedule(iteration / self.total_iterations)
        lrs = {name: lr * factor for name, lr in self.base_lrs.items()}
        restart, start = self.cfg.training.residual_fit_learning_rate, self.homeostasis_losses.residual_start
        if restart > 0 and self.homeostasis_losses.in_residual_phase(iteration):
            phase = (iteration - start) / (self.total_iterations - start)
            lrs["node"] = lrs["embedding"] = restart * self._schedule(phase)
        if self.grouping_iteration is not None and iteration >= self.grouping_iteration:
            lrs["embedding"] = 0.0
        return lrs

    @property
    def done(self) -> bool:
        return self.status != "running"

    def result(self) -> TrainResult:
        hist = self.history[: self.iteration].cpu().numpy().astype(np.float64)
        return TrainResult(self.model, self.status, self.iteration, self.total_iterations,
                           {name: hist[:, i] for i, name in enumerate(LOSS_COMPONENTS)}, self.elapsed_s,
                           self.moment_window, self.prediction_window, self.type_groups, self.group_solve_report)

    # -- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "residual": self.homeostasis_losses.state_dict(),
                "type_groups": None if self.type_groups is None else dataclasses.asdict(self.type_groups),
                "group_solve": self.group_solve_report,
                "iteration": self.iteration, "status": self.status, "elapsed_s": self.elapsed_s,
                "history": self.history[: self.iteration].cpu(), "config": self.cfg.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        if with_defaults(state["config"]) != self.cfg.to_dict():
            raise CheckpointError("the checkpoint was written by a different config; "
                                     "train into another --out directory or delete the checkpoint")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration, self.status, self.elapsed_s = state["iteration"], state["status"], state["elapsed_s"]
        self.homeostasis_losses.load_state_dict(state.get("residual"))
        groups = state.get("type_groups")
        self.type_groups = None if groups is None else TypeGroups(**groups)
        self.group_solve_report = state.get("group_solve")
        stored = state["history"]  # a checkpoint from before a loss component was added holds a prefix of them
        self.history[: self.iteration, : stored.shape[1]] = stored.to(self.device)

    def save_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        write_atomically(path, buffer.getvalue())

    def load_checkpoint(self, path: str | Path) -> None:
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
        except (EOFError, OSError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:  # cut short, or not one
            raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}); delete it to start "
                                  "this run afresh, or train into another --out directory") from None
        self.load_state_dict(state)


def train(cfg: Config, observed: Observed, *, checkpoint_path: str | Path | None = None,
          on_progress: Callable[[Trainer], dict[str, float]] | None = None, show_progress: bool = True,
          device: torch.device | str | None = None) -> TrainResult:
    """Train to the end in segments: checkpoint after each `checkpoint_every` iterations (resuming
    from `checkpoint_path` if it exists) and refresh the progress bar with `on_progress`'s figures."""
    from tqdm.auto import tqdm

    torch.set_num_threads(cfg.training.n_threads)
    trainer = Trainer(cfg, observed, device, resume_from=checkpoint_path)
    total = trainer.total_iterations
    progress_every = cfg.training.progress_every or max(1, total // 100)
    checkpoint_every = cfg.training.checkpoint_every or max(1, total // 10)
    bar = tqdm(total=total, initial=trainer.iteration, disable=not show_progress, unit="it", smoothing=0.1)
    while not trainer.done:
        before = trainer.iteration
        next_stop = min(total, (before // progress_every + 1) * progress_every)
        trainer.run(until=next_stop)
        bar.update(trainer.iteration - before)
        if trainer.iteration > 0:
            figures = {"loss": float(trainer.history[trainer.iteration - 1, 1])}
            if on_progress is not None:
                figures |= on_progress(trainer)
            bar.set_postfix({k: f"{v:.4g}" for k, v in figures.items()}, refresh=False)
        crossed = trainer.iteration // checkpoint_every > before // checkpoint_every
        if checkpoint_path is not None and (crossed or trainer.done):
            trainer.save_checkpoint(checkpoint_path)
    bar.close()
    return trainer.result()


# --------------------------------------------------------------------------------------------
# One trial: data → train → metrics → plots → files


CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrialOutcome:
    metrics: dict[str, float | int | str]
    out_dir: Path
    result: TrainResult


def run_trial(cfg: Config, out_dir: str | Path, *, dataset: Dataset | None = None, show_progress: bool = True,
              device: torch.device | str | None = None) -> TrialOutcome:
    """Train one config and write everything a user needs into out_dir: the resolved config,
    analysis.log, metrics.json, losses.csv, identifiability.txt, plots and the final checkpoint.
    A checkpoint of the same config already in out_dir is resumed, not restarted."""
    from metabo_tune import metrics

    out_dir = Path(out_dir)
    if dataset is None:
        dataset = load_or_simulate(cfg.simulation, measurement_noise_level=cfg.training.measurement_noise_level)
    write_trial_inputs(out_dir, cfg, dataset)

    def progress(trainer: Trainer) -> dict[str, float]:
        return {"R2": metrics.progress_r2(trainer.model, dataset)} if dataset.truth is not None else {}

    result = train(cfg, dataset.observed, checkpoint_path=out_dir / CHECKPOINT_NAME, on_progress=progress,
                   show_progress=show_progress, device=device)
    values = metrics.compute_metrics(result.model, dataset, status=result.status, loss_history=result.loss_history,
                                     training_time_s=result.training_time_s, iterations=result.iterations)
    values |= run_report(cfg, dataset, result)
    write_trial_outputs(out_dir, dataset, result, values)
    return TrialOutcome(values, out_dir, result)


def run_report(cfg: Config, dataset: Dataset, result: TrainResult) -> dict[str, float]:
    """What a run chose for itself, beside its metrics: the noise read from the data, the windows, the type groups."""
    values = data_report(cfg, dataset) | {"moment_window": result.moment_window,
                                          "prediction_window": result.prediction_window}
    if result.type_groups is not None:
        values |= {"type_groups": len(result.type_groups.centres), "type_groups_seeded": result.type_groups.seed_groups}
    if result.group_solve is not None:
        values |= result.group_solve
    return values


def data_report(cfg: Config, dataset: Dataset, decensor: DecensorSetting | None = None) -> dict[str, float]:
    """The measurement noise read from the training data, beside the level simulated (known only when the data
    were simulated here), and with decensoring on (default: training.decensor_zeros) the fraction of entries it
    replaced."""
    simulated = cfg.simulation.data_dir is None
    trajectory = dataset.observed.trajectory
    report = noise_report(trajectory.concentrations, cfg.training.measurement_noise_level if simulated else None,
                          trajectory.run_starts)
    decensor = cfg.training.decensor_zeros if decensor is None else decensor
    if decensor is not False:
        report["decensored_entries"] = decensored_observed(dataset.observed, decensor)[1]
    return report


METHOD_FILES = {"gnn": CHECKPOINT_NAME, "regression": "rate_constants.csv"}  # a file only that method writes


def refuse_another_run(out_dir: Path, cfg: Config, method: str) -> None:
    """Keep one run's files in one folder: out_dir may hold this config's run by this method (resumed or
    re-evaluated), never another config's or another method's, whose files would be overwritten or mixed."""
    if (out_dir / "config.yaml").is_file() and not same_config(out_dir / "config.yaml", cfg):
        raise ConfigError(f"{out_dir} holds a run of a different config (its config.yaml); write into another "
                          "--out directory or delete it")
    others = [name for other, name in METHOD_FILES.items() if other != method and (out_dir / name).exists()]
    if others:
        raise ConfigError(f"{out_dir} holds another method's run ({others[0]}); write into another --out "
                          "directory or delete it")


def write_trial_inputs(out_dir: Path, cfg: Config, dataset: Dataset, method: str = "gnn") -> None:
    """What a trial starts from, written before training so an interrupted run still shows it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    refuse_another_run(out_dir, cfg, method)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    write_identifiability(dataset, out_dir / "identifiability.txt")


def write_trial_outputs(out_dir: Path, dataset: Dataset, result: TrainResult,
                        values: dict[str, float | int | str]) -> None:
    """The files of one finished trial, for the train command and for a search trial alike."""
    from metabo_tune import metrics, plots

    (out_dir / "analysis.log").write_text(metrics.format_analysis_log(values))
    (out_dir / "metrics.json").write_text(json.dumps(values, indent=1))
    write_loss_table(result.loss_history, out_dir / "losses.csv")
    plots.write_trial_plots(result.model, dataset, result.loss_history, out_dir)


HEADLINE_METRICS = ("rate_constants_R2", "rate_constants_R2_all", "avg_slope_ratio", "embedding_cluster_acc",
                    "test_pearson", "final_loss", "training_time_min")


def write_loss_table(history: dict[str, np.ndarray], path: Path, max_rows: int = 2000) -> None:
    """Per-iteration loss components, evenly thinned to at most max_rows rows."""
    import pandas as pd

    n = len(history["loss"])
    rows = np.unique(np.linspace(0, n - 1, min(n, max_rows)).astype(int)) if n else np.array([], dtype=int)
    table = pd.DataFrame({"iteration": rows} | {name: values[rows] for name, values in history.items()})
    table.to_csv(path, index=False)


def write_identifiability(dataset: Dataset, path: Path) -> None:
    ident = dataset.identifiability
    lines = [f"{ident.n_identifiable} of {len(ident.identifiable)} rate constants are identifiable from S "
             "and the substrate edges; the others cannot be determined by any data:"]
    lines += [f"reaction {rxn}: {reason}" for rxn, reason in sorted(ident.reasons.items())]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m metabo_tune.train",
        description="Train one config (or a search space's base config) and write its metrics and plots.")
    parser.add_argument("config", help="run config YAML, or a search-space YAML (its `base` is trained)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set training.learning_rate_node=5e-4 (repeatable)")
    parser.add_argument("--out", help="output directory (default: runs/<config name>); "
                                      "an unfinished run of the same config there is resumed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    out_dir = Path(args.out or Path("runs") / Path(args.config).stem)
    try:
        output_folder(out_dir, "--out")
        cfg = load_config(args.config, args.overrides)
        outcome = run_trial(cfg, out_dir, show_progress=not args.quiet)
    except (ConfigError, DataError, CheckpointError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: the last checkpoint is in {out_dir}; run the same command again to resume",
              file=sys.stderr)
        return 130
    values = outcome.metrics
    from metabo_tune.metrics import headline

    summary = headline(values, HEADLINE_METRICS)
    print(f"{values['status']}, {values['classification']}: {summary}; results in {outcome.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
