from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.signal import savgol_filter

from metabo_tune import simulate as simulate_module
from metabo_tune.config import Config, GraphModelConfig, SimulationConfig, TrainingConfig
from metabo_tune.simulate import (
    DataError,
    Dataset,
    Network,
    add_measurement_noise,
    analyse_identifiability,
    generate_network,
    generate_truth,
    left_null_space,
    load_npy_dataset,
    load_or_simulate,
    rate_law_rhs,
    save_npy_dataset,
    simulate,
    simulation_key,
)

SMALL = SimulationConfig(n_metabolites=20, n_reactions=30, n_frames=300)
SHARED_SAME = [(11, 189), (22, 115), (23, 128), (44, 193), (68, 163), (169, 184)]
SHARED_OPPOSITE = [(70, 217), (116, 120)]


@pytest.fixture(scope="module")
def reference() -> Dataset:
    """The default SimulationConfig(): the reference's 100-metabolite, 256-reaction network (≈2 s)."""
    return simulate(SimulationConfig())


@pytest.fixture(scope="module")
def small() -> Dataset:
    return simulate(SMALL)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("METABO_TUNE_CACHE", str(path))
    return path


def edges(network) -> set[tuple[int, int, int]]:
    triples = zip(network.substrate_metabolite, network.substrate_reaction, network.substrate_order, strict=True)
    return {(int(m), int(r), int(s)) for m, r, s in triples}


def one_line_data_error(*args) -> str:
    with pytest.raises(DataError) as info:
        load_npy_dataset(*args)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --------------------------------------------------------------------------------------------
# The reference network (seed 42)


def test_reference_has_85_cycles_of_order_one_substrate_edges(reference):
    net = reference.observed.network
    assert len(net.substrate_metabolite) == len(net.substrate_reaction) == len(net.substrate_order) == 510
    assert set(net.substrate_order.tolist()) == {1}
    counts = np.bincount(net.substrate_reaction, minlength=256)
    assert (counts[:255] == 2).all()
    assert counts[255] == 0


def test_reference_reaction_255_is_empty(reference):
    net = reference.observed.network
    assert net.stoichiometry.shape == (100, 256)
    assert not net.stoichiometry[:, 255].any()
    assert 255 not in net.substrate_reaction
    assert np.flatnonzero(~net.stoichiometry.any(axis=0)).tolist() == [255]


def test_reference_metabolite_49_is_in_no_reaction(reference):
    net = reference.observed.network
    assert np.flatnonzero(~net.stoichiometry.any(axis=1)).tolist() == [49]
    assert 49 not in net.substrate_metabolite


def test_reference_columns_hold_one_minus_one_and_one_plus_one(reference):
    stoich = reference.observed.network.stoichiometry[:, :255]
    assert ((stoich == -1).sum(axis=0) == 1).all()
    assert ((stoich == 1).sum(axis=0) == 1).all()
    assert ((stoich != 0).sum(axis=0) == 2).all()


def test_reference_substrates_are_food_and_catalyst_of_each_column(reference):
    net = reference.observed.network
    stoich = net.stoichiometry
    for rxn in (0, 100, 254):
        subs = set(net.substrate_metabolite[net.substrate_reaction == rxn].tolist())
        assert subs == set(np.flatnonzero(stoich[:, rxn]).tolist())


def test_reference_rank_is_98(reference):
    assert np.linalg.matrix_rank(reference.observed.network.stoichiometry) == 98


def test_reference_left_null_space_is_ones_and_e49(reference):
    stoich = reference.observed.network.stoichiometry
    basis = left_null_space(stoich)
    assert basis.shape == (100, 2)
    np.testing.assert_allclose(basis.T @ stoich, 0, atol=1e-12)
    projector = basis @ basis.T
    ones, e49 = np.ones(100), np.eye(100)[49]
    np.testing.assert_allclose(projector @ ones, ones, atol=1e-12)
    np.testing.assert_allclose(projector @ e49, e49, atol=1e-12)


def test_reference_has_239_identifiable_reactions(reference):
    ident = reference.identifiability
    assert ident.n_identifiable == 239
    expected = {255} | {r for pair in SHARED_SAME + SHARED_OPPOSITE for r in pair}
    assert set(np.flatnonzero(~ident.identifiable).tolist()) == expected
    assert set(ident.reasons) == expected


def test_reference_reasons_say_sum_for_same_and_difference_for_opposite(reference):
    reasons = reference.identifiability.reasons
    assert "column of S is zero" in reasons[255]
    for a, b in SHARED_SAME:
        assert "sum" in reasons[a] and "sum" in reasons[b]
        assert f"reaction {b}" in reasons[a]
    for a, b in SHARED_OPPOSITE:
        assert "difference" in reasons[a] and "difference" in reasons[b]
        assert f"reaction {a}" in reasons[b]


def test_reference_combinations_give_sum_and_difference(reference):
    combos = reference.identifiability.combinations
    assert ((11, 189), (1.0, 1.0)) in combos
    assert ((70, 217), (1.0, -1.0)) in combos
    assert len(combos) == 8
    assert {pair for pair, _ in combos} == set(SHARED_SAME + SHARED_OPPOSITE)


def test_identifiability_is_a_function_of_the_network_alone(reference):
    again = analyse_identifiability(generate_network(SimulationConfig()))
    assert np.array_equal(again.identifiable, reference.identifiability.identifiable)
    assert again.combinations == reference.identifiability.combinations


# --------------------------------------------------------------------------------------------
# The trajectory


def test_reference_trajectory_has_n_frames_plus_one_frames(reference):
    traj = reference.observed.trajectory
    assert traj.concentrations.shape == traj.derivatives.shape == (2881, 100)
    assert traj.n_frames == 2881
    assert traj.delta_t == 0.1


def test_derivatives_are_the_ode_right_hand_side(reference):
    net, truth = reference.observed.network, reference.truth
    c, y = reference.observed.trajectory.concentrations, reference.observed.trajectory.derivatives
    assert np.abs(rate_law_rhs(c, net, truth.log_k, truth.homeostasis(c)) - y).max() < 1e-12


def test_rate_law_is_mass_action_k_times_food_times_catalyst(reference):
    net, truth = reference.observed.network, reference.truth
    c = reference.observed.trajectory.concentrations[0]
    no_homeostasis = np.zeros(100)
    food, cat = np.flatnonzero(net.stoichiometry[:, 0] == -1)[0], np.flatnonzero(net.stoichiometry[:, 0] == 1)[0]
    single = Network(net.stoichiometry[:, :1], np.array([food, cat]), np.array([0, 0]), np.array([1, 1]))
    y = rate_law_rhs(c, single, truth.log_k[:1], no_homeostasis)
    v = 10 ** truth.log_k[0] * c[food] * c[cat]
    assert y[food] == pytest.approx(-v, rel=1e-12)
    assert y[cat] == pytest.approx(v, rel=1e-12)


def test_each_step_is_clamped_explicit_euler(reference):
    traj = reference.observed.trajectory
    c, y = traj.concentrations, traj.derivatives
    assert np.array_equal(c[1:], np.maximum(c[:-1] + 0.1 * y[:-1], 0.0))


def test_total_derivative_equals_total_homeostasis(reference):
    c, y = reference.observed.trajectory.concentrations, reference.observed.trajectory.derivatives
    h = reference.truth.homeostasis(c)
    assert np.abs(y.sum(axis=1) - h.sum(axis=1)).max() < 1e-10


def test_metabolite_49_follows_pure_homeostasis(reference):
    c, y = reference.observed.trajectory.concentrations, reference.observed.trajectory.derivatives
    h = reference.truth.homeostasis(c)
    assert np.array_equal(y[:, 49], h[:, 49])
    assert reference.truth.types[49] == 0
    np.testing.assert_allclose(y[:, 49], -0.001 * (c[:, 49] - 4.0), rtol=0, atol=1e-15)


def test_concentrations_are_never_negative(reference):
    assert reference.observed.trajectory.concentrations.min() >= 0.0
    assert reference.heldout.concentrations.min() >= 0.0


def test_heldout_starts_elsewhere_with_the_same_dynamics(reference):
    train, heldout = reference.observed.trajectory, reference.heldout
    assert heldout.concentrations.shape == (2881, 100)
    assert not np.allclose(heldout.concentrations[0], train.concentrations[0])
    net, truth = reference.observed.network, reference.truth
    c = heldout.concentrations
    assert np.abs(rate_law_rhs(c, net, truth.log_k, truth.homeostasis(c)) - heldout.derivatives).max() < 1e-12
    assert np.array_equal(c[1:], np.maximum(c[:-1] + 0.1 * heldout.derivatives[:-1], 0.0))


def test_reference_truth_follows_the_config(reference):
    truth = reference.truth
    assert truth.log_k.shape == (256,)
    assert truth.types.tolist() == [0] * 50 + [1] * 50
    assert truth.lambda_per_type.tolist() == [0.001, 0.002]
    assert truth.baseline_per_type.tolist() == [4.0, 6.0]
    assert reference.source == "simulated"


# --------------------------------------------------------------------------------------------
# Determinism and independence from the learner


def test_simulation_is_deterministic(small):
    again = simulate(SMALL)
    assert np.array_equal(again.observed.trajectory.concentrations, small.observed.trajectory.concentrations)
    assert np.array_equal(again.observed.trajectory.derivatives, small.observed.trajectory.derivatives)
    assert np.array_equal(again.heldout.concentrations, small.heldout.concentrations)
    assert np.array_equal(again.observed.network.stoichiometry, small.observed.network.stoichiometry)
    assert np.array_equal(again.truth.log_k, small.truth.log_k)


def test_learner_settings_do_not_change_the_simulation_key():
    a = Config(simulation=SMALL)
    b = Config(simulation=SMALL, graph_model=GraphModelConfig(hidden_dim_sub=128, n_layers_sub=3, hidden_dim_node=64),
               training=TrainingConfig(batch_size=32, seed=1, learning_rate_k=1e-2))
    assert simulation_key(a.simulation) == simulation_key(b.simulation)


@pytest.mark.parametrize("change", [{"data_dir": "/elsewhere"}, {"derivative_window": 11, "derivative_polyorder": 4}])
def test_user_data_keys_are_not_part_of_the_simulation_key(change):
    assert simulation_key(SMALL) == simulation_key(SMALL.model_copy(update=change))


def test_existing_cache_keys_are_unchanged():
    # Computed by the code before the noise options (commit 61bc0b4): old cache files stay valid.
    assert simulation_key(SimulationConfig()) == "35cdbd117bf1fb9b"
    assert simulation_key(SMALL) == "d80ae674d6e59381"


@pytest.mark.parametrize(
    "change", [{"seed": 43}, {"delta_t": 0.05}, {"n_frames": 301}, {"log_k_max": -0.5}, {"cycle_fraction": 0.5},
               {"noise_model_level": 0.01}, {"noise_model_level": 0.02}]
)
def test_simulation_key_changes_with_any_simulation_value(change):
    changed = SimulationConfig(**{**SMALL.model_dump(), **change})
    assert simulation_key(changed) != simulation_key(SMALL)


def test_another_seed_gives_other_data(small):
    other = simulate(SMALL.model_copy(update={"seed": 43}))
    assert not np.array_equal(other.observed.network.stoichiometry, small.observed.network.stoichiometry)
    assert not np.array_equal(other.truth.log_k, small.truth.log_k)
    assert not np.allclose(other.observed.trajectory.concentrations[0], small.observed.trajectory.concentrations[0])


def test_truth_draws_stay_within_the_configured_ranges():
    cfg = SimulationConfig(n_metabolites=50, n_reactions=300, n_frames=10, log_k_min=-3.0, log_k_max=0.5,
                           concentration_min=2.0, concentration_max=3.0)
    ds = simulate(cfg)
    log_k = ds.truth.log_k
    assert log_k.min() >= -3.0 and log_k.max() <= 0.5
    assert log_k.max() - log_k.min() > 2.5  # the draws actually span the range
    for c0 in (ds.observed.trajectory.concentrations[0], ds.heldout.concentrations[0]):
        assert c0.min() >= 2.0 and c0.max() <= 3.0


@pytest.mark.parametrize(("n", "n_types", "expected"), [
    (100, 2, [50, 50]),
    (10, 3, [3, 3, 4]),
    (7, 1, [7]),
])
def test_types_are_contiguous_blocks(n, n_types, expected):
    cfg = SimulationConfig(n_metabolites=n, n_metabolite_types=n_types,
                           homeostatic_lambda_per_type=[0.001] * n_types,
                           homeostatic_baseline_per_type=[5.0] * n_types)
    types = generate_truth(cfg).types
    assert (np.diff(types) >= 0).all()
    assert np.bincount(types).tolist() == expected


# --------------------------------------------------------------------------------------------
# Noise (DESIGN.md §8: the predecessor's two options)

SIGMA = 0.05
NOISY = SMALL.model_copy(update={"noise_model_level": SIGMA})


def noise_std_within_sampling_error(samples: np.ndarray, sigma: float) -> None:
    """The sample std of zero-mean Gaussian draws is sigma within 5 of its standard errors."""
    n = samples.size
    assert n > 1000
    assert abs(samples.mean()) < 5 * sigma / np.sqrt(n)
    assert abs(samples.std() - sigma) < 5 * sigma / np.sqrt(2 * n)


@pytest.fixture(scope="module")
def process_noisy() -> Dataset:
    return simulate(NOISY)


def euler_increments(traj) -> tuple[np.ndarray, np.ndarray]:
    """What each step added after the clamped Euler update, and where that update stayed well above 0."""
    stepped = np.maximum(traj.concentrations[:-1] + traj.delta_t * traj.derivatives[:-1], 0.0)
    away = (stepped > 6 * SIGMA) & (traj.concentrations[1:] > 0)
    return traj.concentrations[1:] - stepped, away


def test_noise_comes_from_its_own_named_streams(process_noisy, measured, small):
    """Each noise is σ times the standard normals of its own stream of simulation.seed, so it shares
    no draws with the initial states, the rate constants or the other trajectory."""
    def draws(stream: int, shape: tuple[int, int]) -> np.ndarray:
        return SIGMA * np.random.default_rng([SMALL.seed, stream]).standard_normal(shape)

    for traj, stream in ((process_noisy.observed.trajectory, simulate_module._STREAM_PROCESS_NOISE),
                         (process_noisy.heldout, simulate_module._STREAM_HELDOUT_PROCESS_NOISE)):
        increments, away = euler_increments(traj)
        np.testing.assert_allclose(increments[away], draws(stream, increments.shape)[away], rtol=0, atol=1e-12)
    for noisy, clean, stream in (
            (measured.observed.trajectory, small.observed.trajectory, simulate_module._STREAM_MEASUREMENT_NOISE),
            (measured.heldout, small.heldout, simulate_module._STREAM_HELDOUT_MEASUREMENT_NOISE)):
        away = clean.concentrations > 6 * SIGMA
        np.testing.assert_allclose((noisy.concentrations - clean.concentrations)[away],
                                   draws(stream, clean.concentrations.shape)[away], rtol=0, atol=1e-12)
    streams = [getattr(simulate_module, name) for name in dir(simulate_module) if name.startswith("_STREAM_")]
    assert len(set(streams)) == len(streams) == 8
    assert max(set(streams) - {simulate_module._STREAM_FURTHER_RUNS}) < simulate_module._STREAM_FURTHER_RUNS + 2


def test_process_noise_increments_have_the_configured_std(process_noisy, small):
    for traj in (process_noisy.observed.trajectory, process_noisy.heldout):
        increments, away = euler_increments(traj)
        noise_std_within_sampling_error(increments[away], SIGMA)
        assert traj.concentrations.min() >= 0.0
    train, _ = euler_increments(process_noisy.observed.trajectory)
    heldout, _ = euler_increments(process_noisy.heldout)
    assert abs(np.corrcoef(train.ravel(), heldout.ravel())[0, 1]) < 0.1  # the held-out run has its own draws
    assert np.array_equal(process_noisy.observed.trajectory.concentrations[0],
                          small.observed.trajectory.concentrations[0])  # the noise starts after frame 0


def test_process_noise_derivatives_are_the_model_at_the_noisy_state(process_noisy):
    net, truth = process_noisy.observed.network, process_noisy.truth
    for traj in (process_noisy.observed.trajectory, process_noisy.heldout):
        c = traj.concentrations
        assert np.abs(traj.derivatives - rate_law_rhs(c, net, truth.log_k, truth.homeostasis(c))).max() < 1e-12


def test_process_noise_is_deterministic_and_differs_per_level(process_noisy, small):
    again = simulate(NOISY)
    other = simulate(SMALL.model_copy(update={"noise_model_level": 2 * SIGMA}))
    pairs = ((again.observed.trajectory, process_noisy.observed.trajectory), (again.heldout, process_noisy.heldout))
    for a, b in pairs:
        assert np.array_equal(a.concentrations, b.concentrations)
        assert np.array_equal(a.derivatives, b.derivatives)
    assert not np.allclose(other.observed.trajectory.concentrations, process_noisy.observed.trajectory.concentrations)
    assert not np.allclose(process_noisy.observed.trajectory.concentrations, small.observed.trajectory.concentrations)
    assert np.array_equal(process_noisy.truth.log_k, small.truth.log_k)


@pytest.fixture(scope="module")
def measured() -> Dataset:
    return load_or_simulate(SMALL, use_cache=False, measurement_noise_level=SIGMA)


def test_measurement_noise_has_the_configured_std(measured, small):
    for noisy, clean in ((measured.observed.trajectory, small.observed.trajectory), (measured.heldout, small.heldout)):
        away = clean.concentrations > 6 * SIGMA
        noise_std_within_sampling_error((noisy.concentrations - clean.concentrations)[away], SIGMA)
        assert noisy.concentrations.min() >= 0.0
    train = measured.observed.trajectory.concentrations - small.observed.trajectory.concentrations
    heldout = measured.heldout.concentrations - small.heldout.concentrations
    assert abs(np.corrcoef(train.ravel(), heldout.ravel())[0, 1]) < 0.1  # the held-out run has its own draws


def test_measurement_noise_clamps_at_zero():
    traj = simulate(SMALL).observed.trajectory
    low = dataclasses.replace(traj, concentrations=np.full_like(traj.concentrations, 0.01))
    noisy = add_measurement_noise(low, SIGMA, np.random.default_rng(0))
    assert noisy.concentrations.min() == 0.0
    assert 0.3 < (noisy.concentrations == 0).mean() < 0.5  # P(N(0.01, 0.05²) < 0) = 0.42


def test_measurement_noise_derivatives_are_forward_differences_with_exact_end_frames(measured, small):
    for noisy, clean in ((measured.observed.trajectory, small.observed.trajectory), (measured.heldout, small.heldout)):
        c = noisy.concentrations
        assert np.array_equal(noisy.derivatives[1:-1], (c[2:] - c[1:-1]) / 0.1)
        assert np.array_equal(noisy.derivatives[[0, -1]], clean.derivatives[[0, -1]])
        assert noisy.delta_t == clean.delta_t


def test_measurement_noise_leaves_network_and_truth_alone(measured, small):
    assert np.array_equal(measured.observed.network.stoichiometry, small.observed.network.stoichiometry)
    assert np.array_equal(measured.truth.log_k, small.truth.log_k)
    assert measured.identifiability.combinations == small.identifiability.combinations
    assert "measurement noise 0.05" in measured.source


def test_measurement_noise_is_deterministic_through_the_cache_and_differs_per_level(cache, measured):
    fresh = load_or_simulate(SMALL, measurement_noise_level=SIGMA)  # simulates and writes the cache
    cached = load_or_simulate(SMALL, measurement_noise_level=SIGMA)
    assert cached.source.startswith("cache:")
    other = load_or_simulate(SMALL, measurement_noise_level=2 * SIGMA)
    for ds in (fresh, cached):
        assert np.array_equal(ds.observed.trajectory.concentrations, measured.observed.trajectory.concentrations)
        assert np.array_equal(ds.observed.trajectory.derivatives, measured.observed.trajectory.derivatives)
        assert np.array_equal(ds.heldout.concentrations, measured.heldout.concentrations)
    assert not np.allclose(other.observed.trajectory.concentrations, measured.observed.trajectory.concentrations)
    assert len(list(cache.iterdir())) == 1  # one noise-free simulation serves every measurement level


def test_noise_levels_zero_give_the_noise_free_arrays(cache, small):
    explicit = SMALL.model_copy(update={"noise_model_level": 0.0})
    for ds in (simulate(explicit), load_or_simulate(explicit, measurement_noise_level=0.0),
               load_or_simulate(explicit, measurement_noise_level=0.0)):
        for a, b in ((ds.observed.trajectory, small.observed.trajectory), (ds.heldout, small.heldout)):
            assert np.array_equal(a.concentrations, b.concentrations)
            assert np.array_equal(a.derivatives, b.derivatives)


def test_both_noises_together(cache):
    both = load_or_simulate(NOISY, measurement_noise_level=SIGMA)
    process_only = simulate(NOISY)
    noise = both.observed.trajectory.concentrations - process_only.observed.trajectory.concentrations
    noise_std_within_sampling_error(noise[process_only.observed.trajectory.concentrations > 6 * SIGMA], SIGMA)
    c = both.observed.trajectory.concentrations
    assert np.array_equal(both.observed.trajectory.derivatives[1:-1], (c[2:] - c[1:-1]) / 0.1)


# --------------------------------------------------------------------------------------------
# Random (non-cycle) reactions


@pytest.mark.parametrize(("n_met", "n_rxn", "fraction"), [(12, 10, 0.5), (12, 40, 0.25), (8, 20, 0.0)])
def test_random_reactions_conserve_mass_and_have_orders_one_or_two(n_met, n_rxn, fraction):
    cfg = SimulationConfig(n_metabolites=n_met, n_reactions=n_rxn, cycle_fraction=fraction)
    net = generate_network(cfg)
    assert net.stoichiometry.shape == (n_met, n_rxn)
    np.testing.assert_array_equal(net.stoichiometry.sum(axis=0), 0)
    assert set(net.substrate_order.tolist()) <= {1, 2}
    first_random = int(n_rxn * fraction)
    counts = np.bincount(net.substrate_reaction, minlength=n_rxn)[first_random:]
    assert counts.min() >= 1 and counts.max() <= 3


def test_random_reaction_substrates_are_consumed_by_their_order():
    net = generate_network(SimulationConfig(n_metabolites=12, n_reactions=40, cycle_fraction=0.25))
    random = net.substrate_reaction >= 10
    assert set(net.substrate_order[random].tolist()) == {1, 2}  # both orders occur for this seed
    consumed = net.stoichiometry[net.substrate_metabolite[random], net.substrate_reaction[random]]
    np.testing.assert_array_equal(consumed, -net.substrate_order[random])
    assert (net.stoichiometry[:, 10:] != 0).sum(axis=0).max() <= 4  # max_metabolites_per_reaction


def test_reactions_between_cycles_and_random_block_are_empty():
    # int(10 · 0.5) = 5 cycle slots hold one 3-cycle (reactions 0–2); 3 and 4 stay empty as in the reference.
    net = generate_network(SimulationConfig(n_metabolites=12, n_reactions=10, cycle_fraction=0.5))
    assert np.flatnonzero(~net.stoichiometry.any(axis=0)).tolist() == [3, 4]


def test_random_reaction_dynamics_match_mass_action():
    ds = simulate(SimulationConfig(n_metabolites=12, n_reactions=10, cycle_fraction=0.5, n_frames=50))
    c, y = ds.observed.trajectory.concentrations, ds.observed.trajectory.derivatives
    rhs = rate_law_rhs(c, ds.observed.network, ds.truth.log_k, ds.truth.homeostasis(c))
    assert np.abs(rhs - y).max() < 1e-12
    assert np.abs(y.sum(axis=1) - ds.truth.homeostasis(c).sum(axis=1)).max() < 1e-10


# --------------------------------------------------------------------------------------------
# The on-disk cache


def test_load_or_simulate_writes_one_cache_file_and_reloads_it(cache, small):
    first = load_or_simulate(SMALL)
    files = list(cache.iterdir())
    assert [f.name for f in files] == [f"simulation-{simulation_key(SMALL)}.npz"]
    assert first.source == "simulated"
    second = load_or_simulate(SMALL)
    assert second.source == f"cache:{files[0].name}"
    assert list(cache.iterdir()) == files
    for ds in (first, second):
        assert np.array_equal(ds.observed.trajectory.concentrations, small.observed.trajectory.concentrations)
        assert np.array_equal(ds.observed.trajectory.derivatives, small.observed.trajectory.derivatives)
        assert np.array_equal(ds.heldout.concentrations, small.heldout.concentrations)
        assert np.array_equal(ds.observed.network.stoichiometry, small.observed.network.stoichiometry)
        assert np.array_equal(ds.observed.network.substrate_order, small.observed.network.substrate_order)
        assert np.array_equal(ds.truth.log_k, small.truth.log_k)
        assert np.array_equal(ds.truth.types, small.truth.types)
        assert np.array_equal(ds.identifiability.identifiable, small.identifiability.identifiable)
        assert ds.identifiability.combinations == small.identifiability.combinations


def test_cache_is_read_not_recomputed(cache):
    load_or_simulate(SMALL)
    path = next(cache.iterdir())
    with np.load(path) as stored:
        arrays = {k: stored[k] for k in stored.files}
    arrays["log_k"] = arrays["log_k"] + 1.0  # a marker only a cache read can return
    np.savez(path, **arrays)
    assert np.array_equal(load_or_simulate(SMALL).truth.log_k, arrays["log_k"])


def test_use_cache_false_writes_nothing(cache):
    ds = load_or_simulate(SMALL, use_cache=False)
    assert ds.source == "simulated"
    assert not cache.exists()


def test_changed_simulation_value_gets_its_own_cache_file(cache):
    load_or_simulate(SMALL)
    load_or_simulate(SMALL.model_copy(update={"seed": 7}))
    assert len(list(cache.iterdir())) == 2


# --------------------------------------------------------------------------------------------
# User data in the NPY layout


@pytest.fixture
def npy_dir(tmp_path, small):
    directory = tmp_path / "data"
    save_npy_dataset(small, directory)
    return directory


def test_npy_round_trip_keeps_arrays_truth_and_identifiability(npy_dir, small):
    loaded = load_npy_dataset(npy_dir, 0.1)
    assert loaded.source == f"npy:{npy_dir}"
    assert np.array_equal(loaded.observed.trajectory.concentrations, small.observed.trajectory.concentrations)
    assert np.array_equal(loaded.observed.trajectory.derivatives, small.observed.trajectory.derivatives)
    assert np.array_equal(loaded.observed.network.stoichiometry, small.observed.network.stoichiometry)
    assert edges(loaded.observed.network) == edges(small.observed.network)
    assert np.array_equal(loaded.heldout.concentrations, small.heldout.concentrations)
    assert np.array_equal(loaded.heldout.derivatives, small.heldout.derivatives)
    assert loaded.truth is not None
    assert np.array_equal(loaded.truth.log_k, small.truth.log_k)
    assert np.array_equal(loaded.truth.types, small.truth.types)
    assert np.array_equal(loaded.truth.lambda_per_type, small.truth.lambda_per_type)
    assert np.array_equal(loaded.truth.baseline_per_type, small.truth.baseline_per_type)
    assert np.array_equal(loaded.identifiability.identifiable, small.identifiability.identifiable)
    assert loaded.identifiability.combinations == small.identifiability.combinations
    assert loaded.identifiability.n_identifiable == 28  # (5, 29) share substrates in opposite directions


def test_npy_loaded_network_gives_the_same_dynamics(npy_dir, small):
    loaded = load_npy_dataset(npy_dir, 0.1)
    c = small.observed.trajectory.concentrations
    rhs = rate_law_rhs(c, loaded.observed.network, small.truth.log_k, small.truth.homeostasis(c))
    assert np.abs(rhs - small.observed.trajectory.derivatives).max() < 1e-12


def test_npy_without_truth_files_has_no_truth(npy_dir):
    for path in npy_dir.glob("truth_*.npy"):
        path.unlink()
    loaded = load_npy_dataset(npy_dir, 0.1)
    assert loaded.truth is None
    assert loaded.observed.trajectory.concentrations.shape == (301, 20)


def test_npy_without_heldout_files_has_no_heldout(npy_dir):
    for path in npy_dir.glob("heldout_*.npy"):
        path.unlink()
    assert load_npy_dataset(npy_dir, 0.1).heldout is None


def test_load_or_simulate_uses_user_data(cache, npy_dir, small):
    ds = load_or_simulate(SimulationConfig(data_dir=str(npy_dir), delta_t=0.25))
    assert ds.source == f"npy:{npy_dir}"
    assert ds.observed.trajectory.delta_t == 0.25
    assert np.array_equal(ds.observed.trajectory.concentrations, small.observed.trajectory.concentrations)
    assert not cache.exists()


def test_missing_required_file_is_a_data_error(npy_dir):
    (npy_dir / "stoichiometry.npy").unlink()
    message = one_line_data_error(npy_dir, 0.1)
    assert str(npy_dir / "stoichiometry.npy") in message
    assert "missing" in message


def test_a_file_that_is_not_npy_is_a_data_error_that_says_what_to_check(npy_dir):
    (npy_dir / "concentrations.npy").write_text("1, 2, 3\n")
    message = one_line_data_error(npy_dir, 0.1)
    assert message == (f"{npy_dir / 'concentrations.npy'}: not a whole .npy array "
                       "(cut short, or not written by numpy.save)")


def test_wrong_ndim_is_a_data_error(npy_dir):
    np.save(npy_dir / "concentrations.npy", np.ones(5))
    message = one_line_data_error(npy_dir, 0.1)
    assert str(npy_dir / "concentrations.npy") in message
    assert "expected 2-D" in message and "(5,)" in message


def test_derivatives_of_another_shape_are_a_data_error(npy_dir):
    np.save(npy_dir / "derivatives.npy", np.ones((5, 20)))
    message = one_line_data_error(npy_dir, 0.1)
    assert str(npy_dir / "derivatives.npy") in message
    assert "(5, 20)" in message and "(301, 20)" in message


def test_stoichiometry_rows_not_matching_metabolites_is_a_data_error(npy_dir):
    np.save(npy_dir / "stoichiometry.npy", np.zeros((19, 30)))
    message = one_line_data_error(npy_dir, 0.1)
    assert str(npy_dir / "stoichiometry.npy") in message
    assert "19 rows, expected 20" in message


def test_substrate_orders_of_another_shape_are_a_data_error(npy_dir):
    np.save(npy_dir / "substrate_orders.npy", np.zeros((20, 29), dtype=np.int64))
    assert str(npy_dir / "substrate_orders.npy") in one_line_data_error(npy_dir, 0.1)


def test_nan_in_concentrations_is_counted_and_located(npy_dir, small):
    conc = small.observed.trajectory.concentrations.copy()
    conc[3, 4] = np.nan
    conc[7, 1] = np.inf
    np.save(npy_dir / "concentrations.npy", conc)
    message = one_line_data_error(npy_dir, 0.1)
    assert str(npy_dir / "concentrations.npy") in message
    assert "2 non-finite values" in message
    assert "(3, 4)" in message


@pytest.mark.parametrize("bad", [-1, 0.5])
def test_negative_or_fractional_substrate_orders_are_a_data_error(npy_dir, bad):
    orders = np.load(npy_dir / "substrate_orders.npy").astype(float)
    orders[0, 0] = bad
    np.save(npy_dir / "substrate_orders.npy", orders)
    message = one_line_data_error(npy_dir, 0.1)
    assert str(npy_dir / "substrate_orders.npy") in message
    assert "non-negative integers" in message


def test_partial_truth_files_are_a_data_error(npy_dir):
    for name in ("truth_types.npy", "truth_lambda.npy", "truth_baseline.npy"):
        (npy_dir / name).unlink()
    message = one_line_data_error(npy_dir, 0.1)
    assert str(npy_dir) in message
    assert "truth_baseline.npy, truth_lambda.npy, truth_types.npy" in message


def test_heldout_derivatives_of_another_shape_are_a_data_error(npy_dir, small):
    np.save(npy_dir / "heldout_derivatives.npy", small.heldout.derivatives[:-1])
    message = one_line_data_error(npy_dir, 0.1)
    assert str(npy_dir / "heldout_derivatives.npy") in message
    assert "(300, 20)" in message and "(301, 20)" in message


def test_heldout_of_another_width_is_a_data_error(npy_dir, small):
    np.save(npy_dir / "heldout_concentrations.npy", small.heldout.concentrations[:, :19])
    message = one_line_data_error(npy_dir, 0.1)
    assert str(npy_dir / "heldout_concentrations.npy") in message
    assert "[frames, 20]" in message


# A trajectory smooth on the scale of its frames (dt 0.01), so that its derivative can be estimated.
SMOOTH = SimulationConfig(n_metabolites=20, n_reactions=30, n_frames=300, delta_t=0.01)


@pytest.fixture(scope="module")
def smooth() -> Dataset:
    return simulate(SMOOTH)


@pytest.fixture
def smooth_dir_without_derivatives(tmp_path, smooth):
    directory = tmp_path / "smooth"
    save_npy_dataset(smooth, directory)
    (directory / "derivatives.npy").unlink()
    (directory / "heldout_derivatives.npy").unlink()
    return directory


def test_npy_without_derivatives_estimates_them_close_to_the_truth(smooth_dir_without_derivatives, smooth):
    loaded = load_npy_dataset(smooth_dir_without_derivatives, 0.01)
    pairs = ((loaded.observed.trajectory, smooth.observed.trajectory), (loaded.heldout, smooth.heldout))
    for estimated, exact in pairs:
        assert np.array_equal(estimated.concentrations, exact.concentrations)
        error = estimated.derivatives - exact.derivatives
        assert np.sqrt((error ** 2).mean()) < 0.01 * np.sqrt((exact.derivatives ** 2).mean())
        assert np.abs(error).max() < 0.01 * np.abs(exact.derivatives).max()


def test_derivative_fit_follows_the_config(smooth_dir_without_derivatives):
    cfg = SimulationConfig(data_dir=str(smooth_dir_without_derivatives), delta_t=0.01, derivative_window=11,
                           derivative_polyorder=2)
    loaded = load_or_simulate(cfg)
    c = loaded.observed.trajectory.concentrations
    np.testing.assert_allclose(loaded.observed.trajectory.derivatives,
                               savgol_filter(c, 11, 2, deriv=1, delta=0.01, axis=0), rtol=0, atol=1e-12)
    default = load_or_simulate(SimulationConfig(data_dir=str(smooth_dir_without_derivatives), delta_t=0.01))
    assert not np.allclose(default.observed.trajectory.derivatives, loaded.observed.trajectory.derivatives,
                           rtol=0, atol=1e-9)


def test_too_few_frames_for_the_derivative_fit_is_a_data_error(npy_dir, small):
    (npy_dir / "derivatives.npy").unlink()
    np.save(npy_dir / "concentrations.npy", small.observed.trajectory.concentrations[:5])
    message = one_line_data_error(npy_dir, 0.1, 7, 3)
    assert str(npy_dir / "derivatives.npy") in message
    assert "derivative_window = 7" in message and "got 5" in message


def test_measurement_noise_on_user_data(cache, npy_dir, small):
    ds = load_or_simulate(SimulationConfig(data_dir=str(npy_dir)), measurement_noise_level=SIGMA)
    assert ds.source == f"npy:{npy_dir} + measurement noise 0.05"
    for noisy, clean in ((ds.observed.trajectory, small.observed.trajectory), (ds.heldout, small.heldout)):
        c = noisy.concentrations
        noise_std_within_sampling_error((c - clean.concentrations)[clean.concentrations > 6 * SIGMA], SIGMA)
        assert np.array_equal(noisy.derivatives[1:-1], (c[2:] - c[1:-1]) / 0.1)
        assert np.array_equal(noisy.derivatives[[0, -1]], clean.derivatives[[0, -1]])
    assert not cache.exists()


def test_too_few_frames_is_a_data_error(npy_dir, small):
    np.save(npy_dir / "concentrations.npy", small.observed.trajectory.concentrations[:2])
    np.save(npy_dir / "derivatives.npy", small.observed.trajectory.derivatives[:2])
    assert "at least 3 frames" in one_line_data_error(npy_dir, 0.1)


def test_missing_directory_is_a_data_error(tmp_path):
    missing = tmp_path / "nowhere"
    message = one_line_data_error(missing, 0.1)
    assert str(missing) in message
    assert "does not exist" in message


def test_load_or_simulate_with_missing_data_dir_is_a_data_error(cache, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_or_simulate(SimulationConfig(data_dir=str(tmp_path / "nowhere")))
    assert not cache.exists()


def diverging_on_call(monkeypatch, call: int) -> None:
    """Make the `call`-th trajectory of a simulation (1: training, 2: held-out) overflow, as explicit Euler
    does past its stability limit (seen with noise_model_level 0.05 on network 2003's held-out state)."""
    calls = []
    integrate = simulate_module.integrate

    def overflowing(*args, **kwargs):
        trajectory = integrate(*args, **kwargs)
        calls.append(trajectory)
        if len(calls) == call:
            trajectory.concentrations[-1, 0] = np.inf
        return trajectory

    monkeypatch.setattr(simulate_module, "integrate", overflowing)


def test_a_diverged_heldout_trajectory_is_left_out_with_a_warning_and_cached_so(cache, monkeypatch):
    diverging_on_call(monkeypatch, 2)
    with pytest.warns(UserWarning, match="held-out trajectory diverged"):
        dataset = load_or_simulate(SMALL)
    assert dataset.heldout is None and np.isfinite(dataset.observed.trajectory.concentrations).all()
    monkeypatch.undo()
    monkeypatch.setenv("METABO_TUNE_CACHE", str(cache))
    cached = load_or_simulate(SMALL)
    assert cached.source.startswith("cache:") and cached.heldout is None
    overflowed = simulate(SMALL)  # a cache written before the check held the overflowed trajectory
    overflowed.heldout.concentrations[-1, 0] = np.inf
    np.savez(next(cache.iterdir()), **simulate_module.cache_arrays(overflowed))
    with pytest.warns(UserWarning, match="held-out trajectory diverged"):
        assert load_or_simulate(SMALL).heldout is None
    np.testing.assert_array_equal(cached.observed.trajectory.concentrations, dataset.observed.trajectory.concentrations)


def test_a_diverged_training_trajectory_is_a_one_line_data_error(cache, monkeypatch):
    diverging_on_call(monkeypatch, 1)
    with pytest.raises(DataError, match="simulation seed 42: the training trajectory diverged"):
        load_or_simulate(SMALL)
    assert not cache.exists() or not any(cache.iterdir())


# --------------------------------------------------------------------------------------------
# Kinetics and homeostasis beyond mass action and the linear law

FORMS = {"substrate_kinetics": "michaelis_menten", "michaelis_K": 2.0,
         "homeostasis_form": "saturating", "homeostasis_width": 1.5}


@pytest.fixture(scope="module")
def small_forms() -> Dataset:
    return simulate(SimulationConfig(**{**SMALL.model_dump(exclude={"use_mass_action"}), **FORMS}))


def test_the_default_forms_are_mass_action_and_linear(small):
    assert (small.truth.substrate_kinetics, small.truth.homeostasis_form) == ("mass_action", "linear")
    c = np.linspace(0.0, 9.0, 7)
    assert np.array_equal(small.truth.substrate(c, 2), c**2)
    assert SMALL.use_mass_action is True


def test_michaelis_menten_and_saturating_dynamics_follow_their_formulas(small_forms):
    truth, traj, net = small_forms.truth, small_forms.observed.trajectory, small_forms.observed.network
    assert (truth.michaelis_K, truth.homeostasis_width) == (2.0, 1.5)
    assert (truth.substrate_kinetics, truth.homeostasis_form) == ("michaelis_menten", "saturating")
    c = traj.concentrations
    lam, base = truth.lambda_per_type[truth.types], truth.baseline_per_type[truth.types]
    np.testing.assert_allclose(truth.homeostasis(c), -lam * 1.5 * np.tanh((c - base) / 1.5), rtol=1e-12)
    f = c * 3.0 / (2.0 + c)
    rates = 10.0 ** truth.log_k * np.ones((len(c), net.n_reactions))
    for met, rxn, s in zip(net.substrate_metabolite, net.substrate_reaction, net.substrate_order, strict=True):
        rates[:, rxn] *= f[:, met] ** s
    np.testing.assert_allclose(traj.derivatives, rates @ net.stoichiometry.T + truth.homeostasis(c),
                               rtol=1e-10, atol=1e-14)
    assert not np.allclose(traj.concentrations, simulate(SMALL).observed.trajectory.concentrations)


def test_the_true_forms_have_the_gauge_and_the_slope_at_the_baseline(small_forms):
    truth = small_forms.truth
    assert truth.substrate(np.array([1.0]), 2)[0] == pytest.approx(1.0)
    base, lam = truth.baseline_per_type[truth.types], truth.lambda_per_type[truth.types]
    step = 1e-6
    slope = (truth.homeostasis(base + step) - truth.homeostasis(base - step)) / (2 * step)
    np.testing.assert_allclose(slope, -lam, rtol=1e-6)
    assert np.all(truth.homeostasis(base) == 0.0)


def test_form_keys_enter_the_simulation_key_only_when_their_form_is_chosen():
    assert simulation_key(SMALL.model_copy(update={"michaelis_K": 9.0, "homeostasis_width": 9.0})) == \
        simulation_key(SMALL)
    keys = {simulation_key(SMALL)}
    for update in ({"substrate_kinetics": "michaelis_menten"}, {"substrate_kinetics": "michaelis_menten",
                   "michaelis_K": 9.0}, {"homeostasis_form": "saturating"},
                   {"homeostasis_form": "saturating", "homeostasis_width": 9.0}):
        keys.add(simulation_key(SMALL.model_copy(update=update)))
    assert len(keys) == 5


def test_cached_forms_come_back_with_their_truth(cache):
    cfg = SimulationConfig(**{**SMALL.model_dump(exclude={"use_mass_action"}), **FORMS})
    first = load_or_simulate(cfg)
    again = load_or_simulate(cfg)
    assert again.source.startswith("cache:")
    assert (again.truth.michaelis_K, again.truth.homeostasis_width) == (2.0, 1.5)
    assert np.array_equal(again.observed.trajectory.concentrations, first.observed.trajectory.concentrations)


def test_npy_round_trip_keeps_the_true_forms(tmp_path, small_forms, small):
    save_npy_dataset(small_forms, tmp_path / "forms")
    loaded = load_npy_dataset(tmp_path / "forms", 0.1)
    assert (loaded.truth.michaelis_K, loaded.truth.homeostasis_width) == (2.0, 1.5)
    save_npy_dataset(small, tmp_path / "plain")
    loaded = load_npy_dataset(tmp_path / "plain", 0.1)
    assert (loaded.truth.substrate_kinetics, loaded.truth.homeostasis_form) == ("mass_action", "linear")


def test_npy_without_form_files_leaves_the_forms_unknown(npy_dir):
    for name in ("truth_michaelis_K.npy", "truth_homeostasis_width.npy"):
        (npy_dir / name).unlink()
    truth = load_npy_dataset(npy_dir, 0.1).truth
    assert truth.michaelis_K is None and truth.homeostasis_width is None
    assert truth.substrate_kinetics is None and truth.homeostasis_form is None
    with pytest.raises(DataError, match="truth_homeostasis_width"):
        truth.homeostasis(np.ones((2, 20)))
    with pytest.raises(DataError, match="truth_michaelis_K"):
        truth.substrate(np.ones(3))


@pytest.mark.parametrize(("value", "why"), [(np.float64(-1.0), "must be > 0"), (np.float64(np.nan), "must be > 0"),
                                            (np.ones(2), "expected one number")])
def test_a_bad_form_file_is_a_data_error(npy_dir, value, why):
    np.save(npy_dir / "truth_michaelis_K.npy", value)
    message = one_line_data_error(npy_dir, 0.1)
    assert str(npy_dir / "truth_michaelis_K.npy") in message and why in message


def test_a_form_file_without_the_other_truth_is_a_data_error(npy_dir):
    for name in ("truth_log_k.npy", "truth_types.npy", "truth_lambda.npy", "truth_baseline.npy"):
        (npy_dir / name).unlink()
    assert "needs the other truth files" in one_line_data_error(npy_dir, 0.1)


def test_the_sparse_rate_law_gives_the_dense_one(small, monkeypatch):
    """Large networks multiply by a sparse S; the trajectory is the dense one to rounding."""
    monkeypatch.setattr(simulate_module, "SPARSE_ABOVE", 0)
    sparse_run = simulate(SMALL)
    np.testing.assert_allclose(sparse_run.observed.trajectory.concentrations,
                               small.observed.trajectory.concentrations, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Several runs (simulation.n_runs)


@pytest.fixture(scope="module")
def three_runs() -> Dataset:
    return simulate(SMALL.model_copy(update={"n_runs": 3}))


def test_the_first_of_several_runs_is_the_single_run(three_runs, small):
    traj, single = three_runs.observed.trajectory, small.observed.trajectory
    assert traj.run_starts == (0, 301, 602) and traj.n_frames == 903 and traj.n_runs == 3
    assert np.array_equal(traj.runs()[0], single.concentrations)
    assert np.array_equal(traj.runs(traj.derivatives)[0], single.derivatives)
    assert np.array_equal(three_runs.heldout.concentrations, small.heldout.concentrations)
    assert np.array_equal(three_runs.truth.log_k, small.truth.log_k)


def test_each_run_is_its_own_euler_trajectory_from_its_own_start(three_runs):
    traj = three_runs.observed.trajectory
    starts = []
    for c, y in zip(traj.runs(), traj.runs(traj.derivatives), strict=True):
        assert np.array_equal(c[1:], np.maximum(c[:-1] + 0.1 * y[:-1], 0.0))
        assert SMALL.concentration_min <= c[0].min() and c[0].max() <= SMALL.concentration_max
        starts.append(c[0])
    assert not np.allclose(starts[1], starts[0]) and not np.allclose(starts[2], starts[1])
    c = traj.concentrations  # across a boundary the frames do not follow each other
    assert not np.allclose(c[301], np.maximum(c[300] + 0.1 * traj.derivatives[300], 0.0))


def test_window_starts_never_cross_a_run_boundary(three_runs):
    traj = three_runs.observed.trajectory
    starts = traj.window_starts(10)
    assert len(starts) == 3 * (301 - 10)
    run_of = np.searchsorted(traj.run_starts, np.arange(traj.n_frames), side="right")
    assert np.array_equal(run_of[starts], run_of[starts + 10])
    assert np.array_equal(traj.window_starts(0), np.arange(903))
    rows = np.arange(903 - 10)
    assert np.array_equal(traj.within_runs(rows, 10), starts)
    single = dataclasses.replace(traj, run_starts=(0,))
    assert single.within_runs(rows, 10) is rows


def test_measurement_noise_differences_stay_within_each_run(three_runs):
    traj = three_runs.observed.trajectory
    noisy = add_measurement_noise(traj, 0.05, np.random.default_rng(0))
    assert noisy.run_starts == traj.run_starts
    for c, y, exact in zip(noisy.runs(), noisy.runs(noisy.derivatives), traj.runs(traj.derivatives), strict=True):
        assert np.array_equal(y[1:-1], (c[2:] - c[1:-1]) / 0.1)
        assert np.array_equal(y[[0, -1]], exact[[0, -1]])


def test_several_runs_go_through_the_cache_and_the_npy_files(cache, tmp_path):
    cfg = SMALL.model_copy(update={"n_runs": 2})
    simulated = load_or_simulate(cfg)
    cached = load_or_simulate(cfg)
    assert cached.source.startswith("cache:") and cached.observed.trajectory.run_starts == (0, 301)
    save_npy_dataset(simulated, tmp_path / "runs")
    loaded = load_npy_dataset(tmp_path / "runs", 0.1)
    assert loaded.observed.trajectory.run_starts == (0, 301)
    assert np.array_equal(loaded.observed.trajectory.concentrations, simulated.observed.trajectory.concentrations)
    assert simulation_key(cfg) != simulation_key(SMALL)


def test_estimated_derivatives_are_fitted_run_by_run(three_runs, tmp_path):
    save_npy_dataset(three_runs, tmp_path / "runs")
    (tmp_path / "runs" / "derivatives.npy").unlink()
    loaded = load_npy_dataset(tmp_path / "runs", 0.1)
    traj = loaded.observed.trajectory
    expected = [savgol_filter(c, 7, 3, deriv=1, delta=0.1, axis=0) for c in three_runs.observed.trajectory.runs()]
    np.testing.assert_allclose(traj.derivatives, np.concatenate(expected), rtol=0, atol=1e-12)


@pytest.mark.parametrize("starts, expected", [([1, 300], "starting with 0"), ([0, 0.5], "whole frame numbers"),
                                              ([0, 200, 100], "at least 3 frames"), ([0, 300], "at least 3 frames")])
def test_bad_run_starts_are_a_data_error(npy_dir, starts, expected):
    np.save(npy_dir / "run_starts.npy", np.array(starts))
    message = one_line_data_error(npy_dir, 0.1)
    assert str(npy_dir / "run_starts.npy") in message and expected in message
