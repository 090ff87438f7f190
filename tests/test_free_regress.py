import numpy as np
import pytest

from metabo_tune.config import config_from_dict
from metabo_tune.free_regress import SubstrateLaw, fit_free_forms
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
    share the one f, the fit starts from a flat f. Measured: R² 1 − 3e-12, f within 2e-6 of c."""
    dataset = simulate(config_from_dict({"simulation": {"network": "e_coli_core", "n_frames": 600,
                                                        "n_runs": 4}}).simulation)
    assert set(dataset.observed.network.substrate_order) >= {1, 2}
    fit = fit_free_forms(dataset.observed)
    assert fit.determined.all() and (fit.rate_constants > 0).all()
    assert log_k_r2(fit, dataset) > 0.999999
    assert substrate_error(fit, dataset) < 1e-4
    assert fit.substrate(np.array([1.0]))[0] == pytest.approx(1.0)  # the gauge


def test_the_form_free_fit_learns_michaelis_menten_beside_a_saturating_homeostasis():
    """Neither form is the fit's: f bends to the strongest saturation measured (K 1), each h_i to the tanh.
    Measured: R² 0.999999, f within 0.9 % over the whole range of the substrates' concentrations (breakpoints at
    quantiles instead of evenly spaced: 0.999988, 6.3 % at the lowest); with piecewise-linear laws, 0.9956 and 34 %.
    The known-form regression gets R² about 0.1 on such data."""
    sim = {"n_metabolites": 30, "n_reactions": 45, "n_frames": 1000, "n_runs": 3,
           "substrate_kinetics": "michaelis_menten", "michaelis_K": 1.0, "homeostasis_form": "saturating",
           "homeostasis_width": 2.0}
    dataset = simulate(config_from_dict({"simulation": sim}).simulation)
    fit = fit_free_forms(dataset.observed)
    assert log_k_r2(fit, dataset) > 0.99999
    assert substrate_error(fit, dataset) < 0.05
    network = dataset.observed.network
    seen = dataset.observed.trajectory.concentrations[:, np.unique(network.substrate_metabolite)]
    everywhere = np.geomspace(seen[seen > 0].min(), seen.max(), 200)  # the tails too, where few data are
    assert np.abs(fit.substrate(everywhere) / dataset.truth.substrate(everywhere) - 1.0).max() < 0.02
    grid = np.geomspace(0.01, 100.0, 400)
    assert np.all(np.diff(fit.substrate(grid)) >= 0)  # f does not decrease


def test_groups_share_one_homeostasis_which_follows_their_true_law():
    """groups: one h per group, solved from all its members (the trainer's free group solve passes the run's
    groups). With the true types on Michaelis–Menten data (K 3): measured k R² 0.9999999, h R² 0.999998 per group
    (piecewise linear: 0.9990, and 0.989 / 0.998)."""
    sim = {"n_metabolites": 30, "n_reactions": 45, "n_frames": 1000, "n_runs": 3,
           "substrate_kinetics": "michaelis_menten", "michaelis_K": 3.0, "homeostasis_form": "saturating",
           "homeostasis_width": 2.0}
    dataset = simulate(config_from_dict({"simulation": sim}).simulation)
    types = dataset.truth.types
    fit = fit_free_forms(dataset.observed, groups=types + 5, homeostasis_knots=24)  # labels kept as given
    assert sorted(fit.homeostasis_functions) == [5, 6]
    assert log_k_r2(fit, dataset) > 0.99999
    conc = dataset.observed.trajectory.concentrations
    for t in (0, 1):
        member = np.flatnonzero(types == t)[0]
        where = np.quantile(conc[:, types == t], np.linspace(0.02, 0.98, 50))
        true = dataset.truth.homeostasis(np.tile(where[:, None], (1, len(types))))[:, member]
        fitted = fit.homeostasis(t + 5, where)
        assert 1.0 - np.sum((fitted - true) ** 2) / np.sum((true - true.mean()) ** 2) > 0.9999


def test_the_substrate_law_is_a_power_law_beyond_its_breakpoints_one_at_one_and_zero_at_zero():
    """σ's coefficients 2, 2, 1, 1: log–log slope 2 below the first breakpoint and 1 above the last."""
    law = SubstrateLaw(np.log(np.array([0.5, 1.0, 4.0])), np.array([2.0, 2.0, 1.0, 1.0]))
    assert law(np.array([1.0]))[0] == pytest.approx(1.0)
    np.testing.assert_array_equal(law(np.array([0.0, -0.1])), [0.0, 0.0])
    below, above = np.array([0.1, 0.2]), np.array([8.0, 16.0])
    assert np.log(law(below)[1] / law(below)[0]) / np.log(2.0) == pytest.approx(2.0)  # the end slopes hold
    assert np.log(law(above)[1] / law(above)[0]) / np.log(2.0) == pytest.approx(1.0)
    grid = np.geomspace(0.05, 50.0, 200)
    assert np.all(np.diff(law(grid)) > 0)


def test_a_constant_slope_is_the_power_law_exactly():
    """Mass action lies in the family: every coefficient s gives c^s (so E. coli core's orders need no
    approximation)."""
    law = SubstrateLaw(np.log(np.geomspace(0.8, 13.0, 12)), np.full(13, 1.5))
    conc = np.geomspace(0.1, 40.0, 30)
    np.testing.assert_allclose(law(conc), conc ** 1.5, rtol=1e-12)


def test_a_window_longer_than_the_data_is_a_data_error():
    dataset = simulate(config_from_dict({"simulation": {"n_metabolites": 20, "n_reactions": 30,
                                                        "n_frames": 40}}).simulation)
    with pytest.raises(DataError, match="window 60 leaves fewer than 2 rows"):
        fit_free_forms(dataset.observed, window=60)
