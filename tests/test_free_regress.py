import numpy as np
import pytest

from metabo_tune.config import config_from_dict
from metabo_tune.free_regress import fit_free_forms, log_log_interpolation
from metabo_tune.simulate import DataError, simulate


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METABO_TUNE_CACHE", str(tmp_path / "cache"))


def log_k_r2(fit, dataset) -> float:
    usable = dataset.identifiability.identifiable & (fit.rate_constants > 0)
    truth = dataset.truth.log_k[usable]
    return 1.0 - np.sum((fit.log_k[usable] - truth) ** 2) / np.sum((truth - truth.mean()) ** 2)


def substrate_error(fit, dataset) -> float:
    """The largest relative error of the fitted f against the true one over the 1st–99th percentiles of the
    positive concentrations."""
    conc = dataset.observed.trajectory.concentrations
    points = np.quantile(conc[conc > 0], np.linspace(0.01, 0.99, 50))
    return float(np.abs(fit.substrate(points) / dataset.truth.substrate(points) - 1.0).max())


def test_the_form_free_fit_finds_k_and_mass_action_on_e_coli_core():
    """The real network whose k a cold-started GNN misses (R² 0.42 with free forms): the orders 1–4 of its edges
    share the one f, the fit starts from a flat f. Measured: R² 0.99998, f within 0.4 % of c."""
    dataset = simulate(config_from_dict({"simulation": {"network": "e_coli_core", "n_frames": 600,
                                                        "n_runs": 4}}).simulation)
    assert set(dataset.observed.network.substrate_order) >= {1, 2}
    fit = fit_free_forms(dataset.observed)
    assert fit.determined.all() and (fit.rate_constants > 0).all()
    assert log_k_r2(fit, dataset) > 0.9999
    assert substrate_error(fit, dataset) < 0.02
    assert fit.substrate(np.array([1.0]))[0] == pytest.approx(1.0)  # the gauge


def test_the_form_free_fit_learns_michaelis_menten_beside_a_saturating_homeostasis():
    """Neither form is the fit's: f bends to the saturation, each h_i to the tanh. Measured: R² 0.9986, f within
    2.5 %; the known-form regression gets R² about 0.1 on such data."""
    sim = {"n_metabolites": 30, "n_reactions": 45, "n_frames": 1000, "n_runs": 3,
           "substrate_kinetics": "michaelis_menten", "michaelis_K": 3.0, "homeostasis_form": "saturating",
           "homeostasis_width": 2.0}
    dataset = simulate(config_from_dict({"simulation": sim}).simulation)
    fit = fit_free_forms(dataset.observed)
    assert log_k_r2(fit, dataset) > 0.99
    assert substrate_error(fit, dataset) < 0.05
    assert np.all(np.diff(fit.substrate_values) > 0)  # f does not decrease


def test_groups_share_one_homeostasis_which_follows_their_true_law():
    """groups: one h per group, solved from all its members (the trainer's free group solve passes the run's
    groups). With the true types on Michaelis–Menten data: measured k R² 0.9990, h R² 0.989 / 0.998 per group."""
    sim = {"n_metabolites": 30, "n_reactions": 45, "n_frames": 1000, "n_runs": 3,
           "substrate_kinetics": "michaelis_menten", "michaelis_K": 3.0, "homeostasis_form": "saturating",
           "homeostasis_width": 2.0}
    dataset = simulate(config_from_dict({"simulation": sim}).simulation)
    types = dataset.truth.types
    fit = fit_free_forms(dataset.observed, groups=types + 5, homeostasis_knots=24)  # labels kept as given
    assert sorted(fit.homeostasis_functions) == [5, 6]
    assert log_k_r2(fit, dataset) > 0.995
    conc = dataset.observed.trajectory.concentrations
    for t in (0, 1):
        member = np.flatnonzero(types == t)[0]
        where = np.quantile(conc[:, types == t], np.linspace(0.02, 0.98, 50))
        true = dataset.truth.homeostasis(np.tile(where[:, None], (1, len(types))))[:, member]
        fitted = fit.homeostasis(t + 5, where)
        assert 1.0 - np.sum((fitted - true) ** 2) / np.sum((true - true.mean()) ** 2) > 0.97


def test_log_log_interpolation_is_a_power_law_beyond_its_knots_and_zero_at_zero():
    knots, values = np.array([0.5, 1.0, 4.0]), np.array([0.25, 1.0, 4.0])  # slope 2, then slope 1
    conc = np.array([0.0, -0.1, 0.25, 0.5, 2.0, 8.0])
    np.testing.assert_allclose(log_log_interpolation(conc, knots, values), [0.0, 0.0, 0.0625, 0.25, 2.0, 8.0])


def test_a_window_longer_than_the_data_is_a_data_error():
    dataset = simulate(config_from_dict({"simulation": {"n_metabolites": 20, "n_reactions": 30,
                                                        "n_frames": 40}}).simulation)
    with pytest.raises(DataError, match="window 60 leaves fewer than 2 rows"):
        fit_free_forms(dataset.observed, window=60)
