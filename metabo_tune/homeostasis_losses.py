"""The optional homeostasis terms of the loss: conservation, the head's residual fit, and the embedding fusion
(all pairs, and each metabolite towards the neighbours that fit its residual best).

`HomeostasisLosses` holds what these terms need between iterations (the conservation moments, the
residual refreshed every `residual_refresh_every` iterations) and gives the trainer every active term
of one iteration in one call. Only observed data reach it, as for the trainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from metabo_tune.config import TrainingConfig
from metabo_tune.model import MetabolicGNN
from metabo_tune.simulate import ArrayT, DataError, Trajectory

# Metabolites from which two n × n costs take a cheaper form that rounds differently (smaller networks keep their
# rounding): the neighbours' ranking is one matrix product, and the conservation moments' gradient reuses the
# forward's product.
CHEAPER_FORMS_ABOVE = 1000


class _SymmetricQuadraticForm(torch.autograd.Function):
    """λᵀQλ for a symmetric Q, with the gradient 2Qλ taken from the forward's product: one n × n product per step
    where autograd would compute Qᵀλ again."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, lam: torch.Tensor, quadratic: torch.Tensor) -> torch.Tensor:
        product = quadratic @ lam
        ctx.save_for_backward(product)
        return lam @ product

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (product,) = ctx.saved_tensors
        return 2.0 * grad * product, None


def sum_of_norms(diff: torch.Tensor) -> torch.Tensor:
    """Σ ||diff|| over the last axis, the fusion penalties' form; +1e-12 keeps the gradient finite where
    two embeddings coincide."""
    return (diff.square().sum(-1) + 1e-12).sqrt().sum()


def sliding_mean(values: np.ndarray | torch.Tensor, window: int) -> np.ndarray | torch.Tensor:
    """Means over every run of `window` consecutive frames (axis 0), in float64: [frames − window + 1, ...]."""
    if window == 1:
        return values
    as_tensor = torch.as_tensor(values).double()
    sums = torch.cat([as_tensor.new_zeros((1, *as_tensor.shape[1:])), as_tensor.cumsum(0)])
    means = (sums[window:] - sums[:-window]) / window
    return means.numpy() if isinstance(values, np.ndarray) else means


def window_rates(concentrations: np.ndarray | torch.Tensor, window: int,
                 delta_t: float) -> np.ndarray | torch.Tensor:
    """(c[t+W] − c[t]) / (W·dt) for every window start t: the mean rate over frames t … t+W−1 for Euler steps,
    the weak form's target (no derivative of the data taken) [frames − window, ...]."""
    return (concentrations[window:] - concentrations[:-window]) / (window * delta_t)


def window_means(concentrations: np.ndarray | torch.Tensor, rates: np.ndarray | torch.Tensor, window: int,
                 shape: str) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """The pairs (mean c, mean dc/dt or residual) the weak form fits, one per window.

    `box`: both over the same W frames t … t+W−1; W = 1 is every frame on its own, exact for exact
    derivatives. `trapezoid`: the rates over frames t … t+W−1 and c over the W + 1 frames t … t+W that
    bound their forward differences, the two end frames at half weight (the trapezoidal rule for the
    integral whose derivative the rates are). Forward differences of noisy c carry −n(t)/dt and
    +n(t+W)/dt at the ends; the box mean of c holds n(t) at weight 1/W and leaves a bias −σ²/(W²·dt) in
    the fitted relaxation rate, the trapezoid holds n(t) and n(t+W) at 1/(2W) each and cancels it at any
    W. W = 1 is the midpoint (c[t] + c[t+1]) / 2."""
    if shape == "box":
        return sliding_mean(concentrations, window), sliding_mean(rates, window)
    c = torch.as_tensor(concentrations).double()
    trapezoid = (sliding_mean(c, window + 1) * (window + 1) - (c[:-window] + c[window:]) / 2) / window
    return (trapezoid.numpy() if isinstance(concentrations, np.ndarray) else trapezoid,
            sliding_mean(rates[:-1], window))


def shared_relaxation_fit(concentrations: np.ndarray, derivatives: np.ndarray,
                          null_space: np.ndarray) -> tuple[float, float]:
    """(λ, b) of one relaxation −λ(c − b) shared by all metabolites, fitted by least squares to the
    left-null-space projections of dc/dt (where the reactions cancel). It uses observed data only and
    starts the linear head at the best label-free guess instead of an arbitrary scale."""
    c_proj = (concentrations @ null_space).ravel()
    ones_proj = np.broadcast_to(null_space.sum(0), (len(concentrations), null_space.shape[1])).ravel()
    target = (derivatives @ null_space).ravel()
    if null_space.shape[1] > 0:
        (slope, offset), *_ = np.linalg.lstsq(np.stack([c_proj, ones_proj], 1), target, rcond=None)
        if slope < 0 and np.isfinite(slope):
            rate = -float(slope)
            low, high = float(concentrations.min()), float(concentrations.max())
            return rate, float(np.clip(offset / rate, low, high))
    return 1e-6, float(concentrations.mean())


class ConservationMoments:
    """The conservation loss over all frames for a head linear in c, from precomputed moments.

    With h_i = −λ_i(c_i − b_i) the residual on null vector n_k is r_k(t) = −u_k·c(t) + v_k − n_k·y(t),
    u_k = n_k ⊙ λ, v_k = Σ_i n_ki λ_i b_i, so its mean square over frames is a quadratic form in u_k and
    v_k with the frames' means and covariances: exact, and ~1e4× cheaper than visiting 2881 frames.
    Summed over k it is a form in λ and λ ⊙ (b − c̄) alone,
        λᵀ (C ⊙ N Nᵀ) λ + 2 λ·Σ_k (n_k ⊙ C_cz,k) + Σ_k var z_k + ‖Nᵀ (λ ⊙ (b − c̄)) − z̄‖²,
    whose matrices are precomputed: a dozen small operations per step instead of two dozen.
    Float64 because the minimum sits far below the terms that cancel in it."""

    def __init__(self, concentrations: np.ndarray, derivatives: np.ndarray, null_space: np.ndarray,
                 device: torch.device) -> None:
        c = concentrations.astype(np.float64)
        z = derivatives.astype(np.float64) @ null_space
        c_mean, z_mean = c.mean(0), z.mean(0)
        dc, dz = c - c_mean, z - z_mean

        def as_tensor(a: np.ndarray) -> torch.Tensor:
            return torch.tensor(a, dtype=torch.float64, device=device)

        self.null_space = as_tensor(null_space)
        self.c_mean, self.z_mean = as_tensor(c_mean), as_tensor(z_mean)
        self.quadratic = as_tensor((dc.T @ dc / len(c)) * (null_space @ null_space.T))
        self.linear = as_tensor(2.0 * (null_space * (dc.T @ dz / len(c))).sum(1))
        self.z_var = as_tensor((dz**2).mean(0).sum())

    def loss(self, rate: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
        """Σ_k mean_t r_k(t)², the same quantity the sampled conservation loss estimates."""
        lam = rate.double()
        offset = (lam * (baseline.double() - self.c_mean)) @ self.null_space - self.z_mean
        if lam.shape[0] > CHEAPER_FORMS_ABOVE:
            quadratic = _SymmetricQuadraticForm.apply(lam, self.quadratic) + lam @ self.linear
        else:
            quadratic = lam @ (self.quadratic @ lam + self.linear)
        return (quadratic + offset @ offset + self.z_var).float()


@dataclass
class ResidualMoments:
    """The linear head's fit to each metabolite's residual r_i(t) = dc_i/dt − reactions_i(c(t)) over every
    frame, Σ_i mean_t (−λ_i(c_i − b_i) − r_i)², from per-metabolite moments of c and r (exact, cheap).

    The conservation loss sees only sums over metabolites, which condition each metabolite's (λ, b)
    badly; the residual constrains every metabolite on its own, once the reactions fit well (a metabolite
    whose concentration barely moves still fixes only λ·(b − c̄)). r is recomputed with the current
    reaction part every `residual_refresh_every` iterations and held fixed in between."""

    c_mean: torch.Tensor
    c_sq: torch.Tensor
    r_mean: torch.Tensor
    cr_mean: torch.Tensor
    r_sq: torch.Tensor

    @classmethod
    def of(cls, concentrations: torch.Tensor, residual: torch.Tensor,
           weight: torch.Tensor | None = None) -> ResidualMoments:
        """The moments over every frame (or window), or over those `weight` [frames, n] keeps for each metabolite."""
        c, r = concentrations.double(), residual.double()
        if weight is None:
            return cls(c.mean(0), (c * c).mean(0), r.mean(0), (c * r).mean(0), (r * r).mean(0))
        w = weight.double()
        count = w.sum(0).clamp(min=1.0)

        def mean(values: torch.Tensor) -> torch.Tensor:
            return (values * w).sum(0) / count

        return cls(mean(c), mean(c * c), mean(r), mean(c * r), mean(r * r))

    def _mean_square(self, rate: torch.Tensor, baseline: torch.Tensor, metabolites: slice | None) -> torch.Tensor:
        """mean_t (−λ(c − b) − r)², the moments indexed by `metabolites` (None adds an axis) so that
        they broadcast against the coefficients."""
        lam, b = rate.double(), baseline.double()
        spread = self.c_sq[metabolites] - 2.0 * b * self.c_mean[metabolites] + b * b  # mean (c − b)²
        coupling = self.cr_mean[metabolites] - b * self.r_mean[metabolites]  # mean (c − b)·r
        return lam * lam * spread + 2.0 * lam * coupling + self.r_sq[metabolites]

    def cross_fit(self, rate: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
        """[i, j]: mean_t (−λ_j(c_i − b_j) − r_i)², metabolite i's residual fitted with j's coefficients."""
        return self._mean_square(rate[None, :], baseline[None, :], (slice(None), None))

    def ranking_fit(self, rate: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
        """[i, j] ordered within each row i as `cross_fit`: the neighbours' ranking. Above CHEAPER_FORMS_ABOVE
        metabolites it leaves out each row's constant mean_t r_i² and is one [n, 4] × [4, n] product of the moments
        with the expanded coefficients (λ_j², −2λ_j²b_j, 2λ_j, −2λ_j·b_j; λ_j²b_j² added to every row): on iJO1366
        (1 805 metabolites) 3 ms instead of 38 for the n × n elementwise form, whose rounding smaller networks keep."""
        if rate.shape[0] <= CHEAPER_FORMS_ABOVE:
            return self.cross_fit(rate, baseline)
        lam, b = rate.double(), baseline.double()
        lam_sq = lam * lam
        moments = torch.stack([self.c_sq, self.c_mean, self.cr_mean, self.r_mean], dim=1)
        expanded = torch.stack([lam_sq, -2.0 * lam_sq * b, 2.0 * lam, -2.0 * lam * b])
        return torch.addmm((lam_sq * b * b)[None, :], moments, expanded)

    def loss(self, rate: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
        return self._mean_square(rate, baseline, slice(None)).sum().float()


@dataclass
class ResidualFrames:
    """The MLP head's residual fit: c and r = dc/dt − reactions(c) per frame (or window), [frames, n], and each
    metabolite's neighbours for the fusion, [n, k] (empty without it), all from the last refresh. A head without
    a form has no moments to sum the frames into, so its fit samples frames."""

    concentrations: torch.Tensor
    residual: torch.Tensor
    neighbours: torch.Tensor


_CROSS_FIT_ROWS = 1 << 20  # head evaluations per block of the neighbours' cross fit


class HomeostasisLosses:
    """conservation, residual_fit and embedding_fusion for one iteration; a term whose coefficient is 0
    (or that the head cannot use) is left out of the result.

    `conc` and `deriv` are the trainer's float32 copies of the trajectory (every frame); the conservation
    moments are taken from the trajectory's own float64 arrays. With `moment_window` W > 1 both moment
    losses see sliding W-frame means of c and of dc/dt (or of the residual) instead of single frames: the
    weak form, in which measurement noise in dc/dt averages out (`window_concentrations`/`_derivatives`;
    `moment_window_shape` says how c is averaged, `window_means`)."""

    def __init__(self, tcfg: TrainingConfig, model: MetabolicGNN, trajectory: Trajectory, null_space: np.ndarray,
                 conc: torch.Tensor, deriv: torch.Tensor, total_iterations: int, window: int,
                 zero_margin: float | None = None,
                 reactions: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """`window` is tcfg.moment_window and `zero_margin` tcfg.zero_margin, resolved from the data where 'auto';
        `reactions` gives S·v at frames of c for the residual (default: the model's reaction part)."""
        self.tcfg, self.model, self.conc, self.deriv, self.window = tcfg, model, conc, deriv, window
        self.reactions = reactions or model.reaction_part
        device = conc.device
        self.null_space = torch.tensor(null_space, dtype=torch.float32, device=device)
        frames = window + (tcfg.moment_window_shape == "trapezoid")
        if frames > trajectory.n_frames:
            spans = " (a trapezoid window spans W + 1 frames)" if frames > window else ""
            raise DataError(f"training.moment_window {window} exceeds the {trajectory.n_frames} frames of the data"
                            f"{spans}: choose a smaller window")
        self.trajectory, self.window_span = trajectory, frames - 1
        # [windows, n] 1 where the metabolite's window stays clear of zero (None: every window): the residual's
        # moments and cross fit leave the rest out
        self.clear = (None if zero_margin is None else torch.as_tensor(
            self.windows_within_runs(trajectory.clear_of_zero(self.window_span, zero_margin))[0],
            dtype=torch.float32, device=device))
        self.window_concentrations, self.window_derivatives = self.windows_within_runs(*window_means(
            trajectory.concentrations, trajectory.derivatives, window, tcfg.moment_window_shape))
        self.moments: ConservationMoments | None = None
        if tcfg.coeff_conservation > 0 and tcfg.conservation_frames == "all" and model.relaxation is not None:
            self.moments = ConservationMoments(self.window_concentrations, self.window_derivatives, null_space, device)
        self.linear_head = model.relaxation is not None
        self.fits_residual = tcfg.coeff_residual_fit > 0
        self.residual_start = math.ceil(tcfg.residual_fit_start * total_iterations)
        self.residual: ResidualMoments | ResidualFrames | None = None
        self.coeff = {key: torch.tensor(float(getattr(tcfg, key)), device=device) for key in (
            "coeff_conservation", "coeff_residual_fit", "coeff_embedding_fusion", "coeff_residual_fusion")}
        n = conc.shape[1]
        self.fusion_pairs = torch.triu_indices(n, n, offset=1, device=device)

    def in_residual_phase(self, iteration: int) -> bool:
        """Whether the head fits the residual at `iteration` (and its learning rate may restart)."""
        return self.fits_residual and iteration >= self.residual_start

    def conservation_frames(self, sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(c, dc/dt) of the frames the sampled conservation loss visits (`sampled`, drawn by the trainer,
        `Config.sampled_conservation_frames` of them), or None where there is no sampled conservation loss."""
        if self.tcfg.coeff_conservation == 0 or self.moments is not None:
            return None
        return self.conc[sampled], self.deriv[sampled]

    def terms(self, iteration: int, sampled: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """The active terms at `iteration`. `sampled` is (h, dc/dt) at the conservation frames that
        `conservation_frames` gave (None with moments or without the loss)."""
        fit_residual = self.in_residual_phase(iteration)
        # (λ_i, b_i) once for the moment losses
        coefficients = (self.model.relaxation.coefficients(self.model.embedding)
                        if self.linear_head and (self.moments is not None or fit_residual) else None)
        out: dict[str, torch.Tensor] = {}
        if self.moments is not None:
            out["conservation"] = self.coeff["coeff_conservation"] * self.moments.loss(*coefficients)
        elif sampled is not None:
            out["conservation"] = self.coeff["coeff_conservation"] * self.sampled_conservation_loss(*sampled)
        if fit_residual:
            self.refresh_residual(iteration)
            fit = self.residual.loss(*coefficients) if self.linear_head else self.sampled_residual_loss(iteration)
            out["residual_fit"] = self.coeff["coeff_residual_fit"] * fit
        fusion = self.fusion(fit_residual, coefficients)
        if fusion is not None:
            out["embedding_fusion"] = fusion
        return out

    def sampled_residual_loss(self, iteration: int) -> torch.Tensor:
        """Σ_i mean_t (h(c_i, a_i) − r_i)² over `residual_fit_frames` frames drawn for `iteration` (a pure
        function of the seed and the iteration, so that a resumed run draws what an uninterrupted one would)."""
        generator = torch.Generator().manual_seed((self.tcfg.seed + 1) * 7_919_003 + iteration)
        frames = torch.randint(self.residual.residual.shape[0], (self.tcfg.residual_fit_frames,),
                               generator=generator).to(self.conc.device)
        head = self.model.homeostasis(self.residual.concentrations[frames])
        return (head - self.residual.residual[frames]).square().sum(-1).mean()

    def sampled_conservation_loss(self, homeostasis: torch.Tensor, derivatives: torch.Tensor) -> torch.Tensor:
        """Left-null-space projection of the residual: S's part cancels exactly, only the homeostasis remains."""
        resid = (homeostasis - derivatives) @ self.null_space
        return resid.square().sum(-1).mean()

    def refresh_residual(self, iteration: int) -> None:
        """Recompute the residual with the current reactions at the phase's start and every
        `residual_refresh_every` iterations after it."""
        if (iteration - self.residual_start) % self.tcfg.residual_refresh_every == 0 or self.residual is None:
            self.residual = self.residual_moments()

    @torch.no_grad()
    def current_residual(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(c, dc/dt − reactions(c)) over every frame (or window) with the current reactions, in chunks."""
        # 256 frames (25 000 MLP rows here) a chunk: its activations stay in cache, 25 % faster than 512
        reactions = torch.cat([self.reactions(chunk) for chunk in torch.split(self.conc, 256)])
        return self.windows_within_runs(*window_means(self.conc, self.deriv - reactions, self.window,
                                                      self.tcfg.moment_window_shape))

    def windows_within_runs(self, *rows: ArrayT) -> tuple[ArrayT, ...]:
        """window_means' rows whose frames lie in one run of the trajectory."""
        return tuple(self.trajectory.within_runs(values, self.window_span) for values in rows)

    @torch.no_grad()
    def residual_moments(self) -> ResidualMoments | ResidualFrames:
        """Per-metabolite moments of c and of the residual; for the MLP head the frames themselves and the
        fusion's neighbours."""
        windows = self.current_residual()
        if self.linear_head:
            return ResidualMoments.of(*windows, self.clear)
        concentrations, residual = (values.float() for values in windows)
        return ResidualFrames(concentrations, residual, self.head_neighbours(concentrations, residual))

    @torch.no_grad()
    def centre_fit(self, centres: np.ndarray) -> np.ndarray:
        """[n, m]: mean over every frame (or window) of (h(c_i, centre_j) − r_i)², each metabolite's residual under
        the current reactions fitted by the head at each candidate embedding (type_groups.CrossFit)."""
        concentrations, residual = (values.float() for values in self.current_residual())
        embedding = torch.as_tensor(centres, dtype=self.model.embedding.dtype, device=self.conc.device)
        return self.cross_fit(concentrations, residual, embedding, self.clear).double().cpu().numpy()

    def cross_fit(self, concentrations: torch.Tensor, residual: torch.Tensor, embedding: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
        """[n, m]: mean over the given frames (those `weight` keeps for each metabolite) of (h(c_i, e_j) − r_i)²,
        metabolite i's residual fitted by the head at each of the m embeddings e_j; metabolites in blocks of at most
        _CROSS_FIT_ROWS head evaluations."""
        n, m = residual.shape[1], embedding.shape[0]
        block = max(1, _CROSS_FIT_ROWS // (residual.shape[0] * m))
        fits = []
        for start in range(0, n, block):  # [frames, i, j]: h(c_i, e_j), i in this block, then the mean over frames
            rows = concentrations[:, start:start + block]
            cross = self.model.head(rows.unsqueeze(-1).expand(-1, -1, m), embedding)
            squares = (cross - residual[:, start:start + block].unsqueeze(-1)).square()
            if weight is None:
                fits.append(squares.mean(0))
            else:
                kept = weight[:, start:start + block].unsqueeze(-1).to(squares.dtype)
                fits.append((squares * kept).sum(0) / kept.sum(0).clamp(min=1.0))
        return torch.cat(fits)

    def head_neighbours(self, concentrations: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """[n, k]: for each metabolite i the k others j whose h(·, a_j) fits i's residual best, over
        `residual_fit_frames` frames spread evenly over the data (empty without the neighbour fusion)."""
        n = residual.shape[1]
        k = min(self.tcfg.residual_fusion_neighbours, n - 1)
        if self.tcfg.coeff_residual_fusion == 0 or k < 1:
            return torch.zeros((n, 0), dtype=torch.long, device=residual.device)
        frames = torch.linspace(0, residual.shape[0] - 1, min(self.tcfg.residual_fit_frames, residual.shape[0]),
                                device=residual.device).long()
        fit = self.cross_fit(concentrations[frames], residual[frames], self.model.embedding)
        fit.fill_diagonal_(float("inf"))
        return fit.topk(k, largest=False).indices

    def fusion(self, fit_residual: bool, coefficients: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor | None:
        """The all-pairs fusion plus, in the residual phase, the neighbour fusion (the linear head's neighbours from
        its current `coefficients`, the MLP head's from the last refresh)."""
        fusion = None
        if self.tcfg.coeff_embedding_fusion > 0:
            embedding = self.model.embedding
            diff = embedding[self.fusion_pairs[0]] - embedding[self.fusion_pairs[1]]
            fusion = self.coeff["coeff_embedding_fusion"] * sum_of_norms(diff)
        if fit_residual and self.tcfg.coeff_residual_fusion > 0:
            neighbours = self.residual.neighbours if coefficients is None else self.relaxation_neighbours(*coefficients)
            neighbour_term = self.coeff["coeff_residual_fusion"] * self.neighbour_fusion(neighbours)
            fusion = neighbour_term if fusion is None else fusion + neighbour_term
        return fusion

    @torch.no_grad()
    def relaxation_neighbours(self, rate: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
        """[n, k]: for each metabolite the k others whose (λ_j, b_j) fit its own residual best."""
        fit = self.residual.ranking_fit(rate, baseline)
        fit.fill_diagonal_(float("inf"))
        k = min(self.tcfg.residual_fusion_neighbours, rate.shape[0] - 1)
        return fit.topk(k, largest=False).indices

    def neighbour_fusion(self, neighbours: torch.Tensor) -> torch.Tensor:
        """Σ_i Σ_(j ∈ N(i)) ||a_i − a_j||, a_j held fixed: each metabolite pulled towards the k metabolites
        whose head fits its own residual best. Neighbours by that fit rather than by embedding
        distance: a metabolite that sits nearer the other type's embeddings still draws its pull from its
        own type, and a clump that the head's maps cannot tell from its group (the maps may leave a
        direction of the embedding unused) still finds the group."""
        embedding = self.model.embedding
        return sum_of_norms(embedding.unsqueeze(1) - embedding.detach()[neighbours])

    # -- checkpoints: the residual is the only state kept between iterations ------------------

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        return None if self.residual is None else asdict(self.residual)

    def load_state_dict(self, state: dict[str, torch.Tensor] | None) -> None:
        device = self.conc.device
        kind = ResidualMoments if self.linear_head else ResidualFrames
        self.residual = None if state is None else kind(**{name: value.to(device) for name, value in state.items()})
