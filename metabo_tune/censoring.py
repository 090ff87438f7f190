"""Measurements clamped at zero, read back as concentrations (`training.decensor_zeros`).

A measurement max(c + ε, 0) of a concentration near zero is biased upward: at c = 0 its mean is σ/√(2π). The
losses' and the solves' entries near zero are left out (the zero margin), but a metabolite near zero still
enters every reaction it is a substrate of, so the bias reaches the rows of the metabolites those reactions
make and consume. Measured on development network 8912 at σ_m 0.05, with the true k and the true types held
(docs/results.md, "Measurements clamped at zero"): the weak-form solve's homeostasis zeros came out 3.18 / 5.43
(truth 4 / 6); the same noise without the clamp gave 3.79 / 5.97.

Each clamped entry, and each entry below DECENSOR_CEILING·σ with a clamped one among its neighbours, is replaced by
the local censored (Tobit) estimate of c over the DECENSOR_HALF_WIDTH frames either side: the c ≥ 0 maximising
n₀·log Φ(−c/σ) + Σ log φ((y − c)/σ) over the window's n₀ zeros and its measurements y in (0, DECENSOR_CEILING·σ),
σ the noise read from the data. It assumes c about constant over the window, so the window is short (three frames:
the development networks' near-zero metabolites move within ten), and a measurement several σ above zero is
neither replaced nor averaged in: beside a zero it means that c moved fast there. Averaging it in, as the first
version did, read a metabolite that crashes from 5.8 to zero in one step (the simulator's clamp) as about 2 in the
frame before: with the true k and the true homeostasis laws, that misassigned one or two such metabolites on
development networks 8903, 8905 and 8909 at σ_m 0.01, and none without it (docs/results.md, "Decensoring beside
fast moves"). Nothing of the truth is used: the clamp at zero is a property of the measurement, the noise is read
from the data.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.special import log_ndtr

from metabo_tune.noise_estimate import estimate_measurement_noise
from metabo_tune.simulate import Observed

DECENSOR_HALF_WIDTH = 1
DECENSOR_CEILING = 3.0  # in σ: entries at or above it are measurements of c > 0, left as they are
_NEWTON_STEPS = 30  # the Tobit log-likelihood is concave in c: Newton from the window mean converges in a few
_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)

DecensorSetting = bool | Literal["auto"]


def _local_sums(values: np.ndarray, half_width: int, run_starts: tuple[int, ...]) -> np.ndarray:
    """Σ of values over the frames t − half_width … t + half_width of each frame's own run (edges repeated)."""
    size = 2 * half_width + 1
    return np.concatenate([uniform_filter1d(run, size, axis=0, mode="nearest") * size
                           for run in np.split(values, run_starts[1:])])


def decensored(concentrations: np.ndarray, noise: float, run_starts: tuple[int, ...] = (0,),
               half_width: int = DECENSOR_HALF_WIDTH) -> np.ndarray:
    """c [frames, metabolites] with every entry below DECENSOR_CEILING·noise that has a zero within half_width frames
    (in its run) replaced by the local censored estimate over the window's entries below that ceiling (module
    docstring); the others, and everything when noise is 0, unchanged."""
    if noise <= 0:
        return concentrations.copy()
    zero = concentrations <= 0
    low = concentrations < DECENSOR_CEILING * noise
    n_zero = _local_sums(zero.astype(np.float64), half_width, run_starts)
    near = (n_zero > 0.5) & low
    out = concentrations.astype(np.float64, copy=True)
    if not near.any():
        return out
    n_low = _local_sums(low.astype(np.float64), half_width, run_starts)[near]
    zeros, variance = n_zero[near], noise * noise
    n_positive = n_low - zeros
    positive_sum = _local_sums(np.where(low & ~zero, concentrations, 0.0), half_width, run_starts)[near]
    estimate = positive_sum / n_low
    for _ in range(_NEWTON_STEPS):
        z = -estimate / noise
        hazard = np.exp(-0.5 * z * z - _LOG_SQRT_2PI - log_ndtr(z))  # φ(z) / Φ(z)
        gradient = (positive_sum - n_positive * estimate) / variance - zeros * hazard / noise
        curvature = -(n_positive + zeros * hazard * (hazard + z)) / variance
        estimate = np.maximum(estimate - gradient / curvature, 0.0)
    out[near] = estimate
    return out.astype(concentrations.dtype, copy=False)


def decensored_observed(observed: Observed, setting: DecensorSetting) -> tuple[Observed, float]:
    """The observed data as training and the regression read them, and the fraction of entries decensored:
    false leaves them as measured; true decensors; 'auto' decensors where the data hold zeros and the noise read
    from them is above 0 (the derivatives are left as given)."""
    trajectory = observed.trajectory
    conc = trajectory.concentrations
    if setting is False or (setting == "auto" and not (conc <= 0).any()):
        return observed, 0.0
    noise = estimate_measurement_noise(conc, trajectory.run_starts)
    values = decensored(conc, noise, trajectory.run_starts)
    changed = float(np.mean(values != conc))
    return Observed(observed.network, dataclasses.replace(trajectory, concentrations=values)), changed
