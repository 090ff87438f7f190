import numpy as np
import pytest

from metabo_tune.censoring import decensored, decensored_observed
from metabo_tune.config import SimulationConfig, config_from_dict
from metabo_tune.regress import fit_config
from metabo_tune.simulate import Observed, Trajectory, load_or_simulate, simulate
from metabo_tune.train import data_report


def _clamped(true: np.ndarray, noise: float, seed: int = 0) -> np.ndarray:
    return np.maximum(true + np.random.default_rng(seed).normal(0.0, noise, true.shape), 0.0)


@pytest.mark.parametrize("level", [0.0, 0.01, 0.02, 0.04])
def test_a_concentration_near_zero_is_read_back_with_under_60_percent_of_the_clamps_bias(level: float) -> None:
    """Three frames leave the estimate at c = 0 with about half the bias (the c ≥ 0 bound), less above it."""
    true = np.full((6000, 1), level)
    measured = _clamped(true, 0.05)
    clamp_bias = measured.mean() - level
    assert clamp_bias > 0.005  # the clamp's bias: σ/√(2π) ≈ 0.02 at c = 0, 0.006 at c = 0.04
    assert abs(decensored(measured, 0.05).mean() - level) < 0.6 * clamp_bias


def test_entries_without_a_zero_among_their_neighbours_and_exact_data_are_left_as_measured() -> None:
    measured = np.array([[1.0, 0.03], [0.9, 0.0], [0.8, 0.02], [0.7, 0.04], [0.6, 0.05]])
    out = decensored(measured, 0.05)
    np.testing.assert_array_equal(out[:, 0], measured[:, 0])  # never near zero
    np.testing.assert_array_equal(out[3:, 1], measured[3:, 1])  # two frames or more from the zero
    assert not np.array_equal(out[:3, 1], measured[:3, 1])
    assert (out >= 0).all()
    np.testing.assert_array_equal(decensored(measured, 0.0), measured)


def test_a_measurement_well_above_zero_beside_a_zero_is_neither_replaced_nor_averaged_in() -> None:
    """A metabolite that crashes from 5.8 to the clamp in one step: the 5.8 is a measurement of c > 0 (116 σ),
    not a censored reading, and the zeros after it stay zeros (the local estimate of a stretch of zeros is 0)."""
    measured = np.array([[6.0], [5.8], [0.0], [0.0], [0.04], [0.08], [0.3]])
    out = decensored(measured, 0.05)
    np.testing.assert_array_equal(out[[0, 1, 5, 6]], measured[[0, 1, 5, 6]])
    assert (out[2:4] == 0).all()
    assert 0 < out[4, 0] < 0.04  # read from the zero before it and the 0.08 after it


def test_a_zero_in_one_run_leaves_the_next_runs_first_frame_alone() -> None:
    measured = np.array([[0.5], [0.04], [0.0], [0.06], [0.7]])
    out = decensored(measured, 0.05, run_starts=(0, 3))
    np.testing.assert_array_equal(out[3:], measured[3:])
    assert out[1, 0] != measured[1, 0]


def test_auto_decensors_only_data_that_hold_zeros() -> None:
    network_cfg = SimulationConfig(n_metabolites=20, n_reactions=40, n_frames=300, seed=5)
    clean = simulate(network_cfg).observed
    assert decensored_observed(clean, "auto") == (clean, 0.0)
    trajectory = clean.trajectory
    conc = trajectory.concentrations.copy()
    conc[10:20, 3] = 0.0
    conc[11:20:2, 3] = 1e-9  # readings far below the noise beside zeros: read back (to 0 here)
    zeros = Observed(clean.network, Trajectory(conc, trajectory.derivatives, trajectory.delta_t, trajectory.run_starts))
    read, fraction = decensored_observed(zeros, "auto")
    assert 0 < fraction < 0.01 and (read.trajectory.concentrations[10:20, 3] >= 0).all()
    assert decensored_observed(zeros, False) == (zeros, 0.0)


def test_a_simulated_network_measured_with_the_clamp_is_read_back_nearer_its_noise_free_concentrations() -> None:
    """Near zero (noise-free c below 2σ) the decensored entries are nearer the noise-free trajectory on average
    than the clamped measurements; the regression then reads them (its fit changes) and the report says how many."""
    raw = {"simulation": {"n_metabolites": 60, "n_reactions": 150, "n_frames": 1500, "seed": 8031},
           "training": {"measurement_noise_level": 0.05, "decensor_zeros": True},
           "regression": {"n_types": 2, "decensor_zeros": True}}
    cfg = config_from_dict(raw)
    measured = load_or_simulate(cfg.simulation, measurement_noise_level=0.05)
    noise_free = load_or_simulate(cfg.simulation).observed.trajectory.concentrations
    clamped = measured.observed.trajectory.concentrations
    near_zero = noise_free < 0.1
    assert near_zero.mean() > 0.02, "the test needs a network whose metabolites go near zero"
    read = decensored_observed(measured.observed, True)[0].trajectory.concentrations
    assert abs(np.mean(read[near_zero] - noise_free[near_zero])) < 0.6 * np.mean(clamped[near_zero] -
                                                                                  noise_free[near_zero])
    with_decensoring = fit_config(cfg, measured.observed)
    raw["regression"]["decensor_zeros"] = False
    without = fit_config(config_from_dict(raw), measured.observed)
    assert not np.allclose(with_decensoring.rate_constants, without.rate_constants)
    assert 0 < data_report(cfg, measured)["decensored_entries"] < 0.5


def test_training_reads_its_data_decensored_when_asked() -> None:
    from metabo_tune.train import Trainer

    raw = {"simulation": {"n_metabolites": 30, "n_reactions": 60, "n_frames": 400, "seed": 8031},
           "training": {"measurement_noise_level": 0.05}}
    measured = load_or_simulate(config_from_dict(raw).simulation, measurement_noise_level=0.05).observed
    zeros = measured.trajectory.concentrations <= 0
    assert zeros.any()
    for setting, changed in ((False, False), ("auto", True)):
        raw["training"]["decensor_zeros"] = setting
        conc = Trainer(config_from_dict(raw), measured).conc.numpy()
        assert (conc[zeros] > 0).any() == changed


def test_the_regression_warm_start_reads_the_data_as_measured_and_decensors_by_its_own_setting(monkeypatch) -> None:
    from metabo_tune import train as train_module

    raw = {"simulation": {"n_metabolites": 30, "n_reactions": 60, "n_frames": 400, "seed": 8031},
           "training": {"measurement_noise_level": 0.05, "decensor_zeros": True, "init": "regression"},
           "regression": {"decensor_zeros": True}}
    measured = load_or_simulate(config_from_dict(raw).simulation, measurement_noise_level=0.05).observed
    seen = []
    monkeypatch.setattr(train_module, "fit_config", lambda cfg, observed: seen.append(observed) or fit_config(
        cfg, observed))
    train_module.Trainer(config_from_dict(raw), measured)
    assert len(seen) == 1 and seen[0] is measured  # not the training's decensored copy: decensored once
