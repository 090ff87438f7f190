"""The measurement noise of observed concentrations, read from the data, and the weak-form windows it calls for.

The windows are chosen from the noise relative to the data's own motion, σ̂ / median |c[t+1] − c[t]|, so that
the rule does not depend on the units or the time step. Thresholds, measured on development networks (simulation
seeds 42 and 43, σ_m 0 … 0.05; docs/results.md, "The known-form regression"):
* regression: below 1 % the data's own dc/dt is used (the strong form); above, 10-frame windows, which
  beat 1, 3, 30 and 100 from σ_m 0.003 to 0.05 (the mission network moves by a median 0.023 per frame), or
  longer where 10 frames of the data's motion still drown in the noise: the shortest of 10, 20, 40, … frames
  whose differences carry WINDOW_SIGNAL_TO_NOISE times the noise's spread, at most an eighth of the shortest
  run (E. coli core moves by about 0.0035 in 10 frames, a quarter of the spread σ_m 0.01 gives a difference:
  the form-free fit at σ_m 0.01 gives k R² −4.96 at W 10 and 0.95 at W 400, and fails at W 800; development
  seed 8104, docs/results.md "Real networks");
* the GNN's moment losses: 1 below 1 %, 30 up to 20 %, 100 above (the windows chosen earlier by hand:
  30 at σ_m ≤ 0.003, 100 at σ_m 0.01; README, noisy measurements);
* the GNN's prediction loss: 1 below 1 %, else 10 (docs/results.md, "A weak-form prediction loss"); never the
  regression's longer windows, since an iteration costs about W×.

Smooth dynamics sampled finely leave almost nothing in high-order differences of c: the fourth difference of
a trajectory is dt⁴·c'''' (about 1e-6 here), while independent noise of standard deviation σ gives it the
standard deviation σ·√70 (70 = 1 + 4² + 6² + 4² + 1, the squared binomial weights). So σ is read from a
robust spread (the median absolute deviation) of the fourth differences, per metabolite, and the median over
metabolites: clamped metabolites (held at 0, where the noise is cut in half) and the rare kinks of a clamp do
not move it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

_DIFFERENCE_ORDER = 4
_NOISE_GAIN = math.sqrt(70.0)  # std of the 4th difference of unit white noise
_MAD_TO_SD = 1.4826  # MAD of a normal distribution × this = its standard deviation


def differences_within_runs(concentrations: np.ndarray, order: int, run_starts: tuple[int, ...] = (0,)) -> np.ndarray:
    """The order-th differences of c along the frames, none across a run boundary (runs: Trajectory.run_starts)."""
    runs = np.split(concentrations, run_starts[1:])
    return np.concatenate([np.diff(run, n=order, axis=0) for run in runs if run.shape[0] > order]
                          or [np.empty((0, *concentrations.shape[1:]))])


def estimate_measurement_noise(concentrations: np.ndarray, run_starts: tuple[int, ...] = (0,)) -> float:
    """σ_m of c [frames, metabolites] (0 for runs of fewer than five frames)."""
    differences = differences_within_runs(concentrations, _DIFFERENCE_ORDER, run_starts)
    if differences.shape[0] == 0:
        return 0.0
    deviation = np.median(np.abs(differences - np.median(differences, axis=0)), axis=0)
    return float(np.median(deviation) * _MAD_TO_SD / _NOISE_GAIN)


NEGLIGIBLE_NOISE_RATIO = 0.01
LOW_NOISE_RATIO = 0.2


def noise_ratio(noise: float, concentrations: np.ndarray, run_starts: tuple[int, ...] = (0,)) -> float:
    """σ̂ over the median absolute one-frame change of c (inf for data that never move)."""
    steps = differences_within_runs(concentrations, 1, run_starts)
    step = float(np.median(np.abs(steps))) if steps.shape[0] > 0 else 0.0
    return noise / step if step > 0 else (0.0 if noise == 0 else math.inf)


WINDOW_SIGNAL_TO_NOISE = 6.0
SHORTEST_WEAK_WINDOW = 10
LONGEST_WINDOW_SHARE_OF_RUN = 8  # the regression's window: at most the shortest run's frames / this


def window_signal_to_noise(concentrations: np.ndarray, window: int, noise: float,
                           run_starts: tuple[int, ...] = (0,)) -> float:
    """The median over metabolites of the rms motion of c over `window` frames, the noise's part (2σ²) removed,
    over the spread σ·√2 that the noise gives one such difference."""
    runs = [run for run in np.split(concentrations, run_starts[1:]) if run.shape[0] > window]
    if not runs or noise <= 0:
        return math.inf if noise <= 0 else 0.0
    square = (sum(np.square(run[window:] - run[:-window]).sum(axis=0) for run in runs)
              / sum(run.shape[0] - window for run in runs))
    motion = np.sqrt(np.maximum(square - 2.0 * noise**2, 0.0))
    return float(np.median(motion) / (noise * math.sqrt(2.0)))


def regression_window(concentrations: np.ndarray, noise: float, run_starts: tuple[int, ...] = (0,)) -> int:
    """`regression.window: auto` (the known-form regression and the form-free fit), from the noise σ̂ read from
    `concentrations`."""
    if noise_ratio(noise, concentrations, run_starts) < NEGLIGIBLE_NOISE_RATIO:
        return 1
    shortest_run = int(np.diff([*run_starts, concentrations.shape[0]]).min())
    longest = max(SHORTEST_WEAK_WINDOW, shortest_run // LONGEST_WINDOW_SHARE_OF_RUN)
    window = SHORTEST_WEAK_WINDOW
    while (window < longest
           and window_signal_to_noise(concentrations, window, noise, run_starts) < WINDOW_SIGNAL_TO_NOISE):
        window = min(2 * window, longest)
    return window


def moment_window(ratio: float) -> int:
    """`training.moment_window: auto`."""
    if ratio < NEGLIGIBLE_NOISE_RATIO:
        return 1
    return 30 if ratio < LOW_NOISE_RATIO else 100


def prediction_window(ratio: float) -> int:
    """`training.prediction_window: auto`."""
    return 1 if ratio < NEGLIGIBLE_NOISE_RATIO else SHORTEST_WEAK_WINDOW


def resolved_window(setting: int | str, concentrations: np.ndarray, rule: Callable[[float], int],
                    run_starts: tuple[int, ...] = (0,)) -> int:
    """A window setting as a number of frames: 'auto' applies `rule` to the noise read from `concentrations`."""
    if setting != "auto":
        return int(setting)
    return rule(noise_ratio(estimate_measurement_noise(concentrations, run_starts), concentrations, run_starts))


def resolved_moment_window(setting: int | str, concentrations: np.ndarray, run_starts: tuple[int, ...] = (0,)) -> int:
    """training.moment_window as a number of frames."""
    return resolved_window(setting, concentrations, moment_window, run_starts)


def resolved_prediction_window(setting: int | str, concentrations: np.ndarray,
                               run_starts: tuple[int, ...] = (0,)) -> int:
    """training.prediction_window as a number of frames."""
    return resolved_window(setting, concentrations, prediction_window, run_starts)


ZERO_MARGIN_NOISE = 3.0  # zero_margin 'auto': this many times the measurement noise read from the data


def resolved_zero_margin(setting: float | str | None, concentrations: np.ndarray,
                         run_starts: tuple[int, ...] = (0,)) -> float | None:
    """regression.zero_margin or training.zero_margin as a concentration: 'auto' from the noise read from the data
    (on exact data about 0: only windows that touch zero are left out); None leaves every entry in."""
    if setting == "auto":
        return ZERO_MARGIN_NOISE * estimate_measurement_noise(concentrations, run_starts)
    return None if setting is None else float(setting)


def noise_report(concentrations: np.ndarray, true_level: float | None,
                 run_starts: tuple[int, ...] = (0,)) -> dict[str, float]:
    """analysis.log's noise keys: the estimate, its ratio to the data's motion, and the truth where known."""
    estimate = estimate_measurement_noise(concentrations, run_starts)
    report = {"measurement_noise_estimate": estimate, "noise_ratio": noise_ratio(estimate, concentrations, run_starts)}
    if true_level is not None:
        report["measurement_noise_level"] = true_level
    return report
