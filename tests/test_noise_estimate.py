import numpy as np
import pytest

from metabo_tune.config import config_from_dict
from metabo_tune.noise_estimate import (
    differences_within_runs,
    estimate_measurement_noise,
    moment_window,
    noise_ratio,
    prediction_window,
    regression_window,
    resolved_moment_window,
    resolved_prediction_window,
    window_signal_to_noise,
)
from metabo_tune.simulate import load_or_simulate

SIM = {"n_metabolites": 30, "n_reactions": 60, "n_frames": 600}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METABO_TUNE_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("level", [0.001, 0.01, 0.05])
def test_the_noise_of_simulated_measurements_is_read_to_within_20_percent(level):
    cfg = config_from_dict({"simulation": SIM})
    dataset = load_or_simulate(cfg.simulation, measurement_noise_level=level)
    assert estimate_measurement_noise(dataset.observed.trajectory.concentrations) == pytest.approx(level, rel=0.2)


def test_exact_trajectories_read_as_nearly_noise_free():
    cfg = config_from_dict({"simulation": SIM})
    conc = load_or_simulate(cfg.simulation).observed.trajectory.concentrations
    noise = estimate_measurement_noise(conc)
    assert noise < 1e-4
    assert regression_window(conc, noise) == 1 and resolved_moment_window("auto", conc) == 1


def drifting(per_frame: float, noise: float, frames: int = 4000, seed: int = 0) -> np.ndarray:
    """Six metabolites drifting at `per_frame`, measured with Gaussian noise."""
    rng = np.random.default_rng(seed)
    return 5.0 + per_frame * np.arange(frames)[:, None] * np.ones(6) + rng.normal(0, noise, (frames, 6))


def test_the_regression_window_grows_until_the_motion_stands_out_of_the_noise():
    """A drift of 0.001 per frame under noise 0.01: W frames move by 0.001·W against the noise's 0.014, so 6× needs
    W ≥ 85, which the doubling from 10 reaches at 160; a fast drift keeps 10."""
    slow = drifting(0.001, 0.01)
    noise = estimate_measurement_noise(slow)
    assert noise == pytest.approx(0.01, rel=0.1)
    assert window_signal_to_noise(slow, 80, noise) < 6.0 <= window_signal_to_noise(slow, 160, noise)
    assert regression_window(slow, noise) == 160
    assert regression_window(drifting(0.1, 0.01), noise) == 10
    assert regression_window(slow, 0.0) == 1


def test_the_regression_window_stays_within_an_eighth_of_the_shortest_run():
    slow = drifting(0.001, 0.01)
    starts = (0, 800, 2400)
    noise = estimate_measurement_noise(slow, starts)
    assert regression_window(slow, noise, starts) == 100
    assert regression_window(slow[:40], noise) == 10  # never shorter than the rule's first weak-form window


def test_the_training_windows_grow_with_the_noise_relative_to_the_motion():
    assert [moment_window(r) for r in (0.001, 0.05, 1.0)] == [1, 30, 100]
    assert [prediction_window(r) for r in (0.001, 0.05, 1.0)] == [1, 10, 10]
    assert resolved_moment_window(7, np.zeros((3, 2))) == 7  # a number is kept as it is
    assert resolved_prediction_window(4, np.zeros((3, 2))) == 4


def test_the_ratio_does_not_depend_on_units():
    rng = np.random.default_rng(0)
    conc = np.cumsum(rng.normal(0, 0.1, (500, 4)), axis=0) + 10 + rng.normal(0, 0.01, (500, 4))
    ratio = noise_ratio(estimate_measurement_noise(conc), conc)
    assert noise_ratio(estimate_measurement_noise(1000 * conc), 1000 * conc) == pytest.approx(ratio)
    assert noise_ratio(0.0, np.ones((5, 2))) == 0.0 and noise_ratio(0.1, np.ones((5, 2))) == np.inf


def test_differences_never_span_two_runs():
    """Runs of 6 smooth frames at levels far apart: most 4th differences of the stacked frames would cross a jump."""
    frames = np.arange(6)[:, None] * 0.01
    conc = np.concatenate([level + frames + np.zeros((6, 3)) for level in (1.0, 6.0, 2.0, 9.0, 4.0)])
    starts = (0, 6, 12, 18, 24)
    assert differences_within_runs(conc, 4, starts).shape == (5 * 2, 3)
    assert estimate_measurement_noise(conc, starts) == pytest.approx(0.0, abs=1e-12)
    assert estimate_measurement_noise(conc) > 0.1  # the same frames read as one run
    assert noise_ratio(0.001, conc, starts) == pytest.approx(0.1)
