import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metabo_tune.config import config_from_dict, load_config
from metabo_tune.metrics import matched_accuracy, parse_analysis_log
from metabo_tune.regress import (
    KnownFormModel,
    NoiseMoments,
    fit_known_forms,
    main,
    monomials,
    normal_equations,
    regression_trial,
    relaxation_from,
    row_noise_variance,
    rows_clear_of_zero,
    solve_rate_constants,
    solve_reduced,
    weak_form_rows,
)
from metabo_tune.simulate import (
    DataError,
    Observed,
    Trajectory,
    load_or_simulate,
    rate_law_rhs,
    save_npy_dataset,
    simulate,
)

SMALL = {"n_metabolites": 30, "n_reactions": 60, "n_frames": 600}
THREE_TYPES = {"n_metabolite_types": 3, "homeostatic_lambda_per_type": [0.01, 0.02, 0.04],
               "homeostatic_baseline_per_type": [3.0, 5.0, 7.0]}


def config(simulation=None, **training):
    return config_from_dict({"simulation": SMALL | (simulation or {}), "training": training})


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METABO_TUNE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def exact():
    return simulate(config().simulation)


def test_exact_data_give_every_determined_rate_constant_and_the_relaxations_exactly(exact):
    fit = fit_known_forms(exact.observed)
    truth, identifiable = exact.truth, exact.identifiability.identifiable
    assert fit.window == 1  # no noise in the data: the strong form
    # the data's null space leaves exactly the rate constants the structure of S leaves
    np.testing.assert_array_equal(fit.determined, identifiable)
    assert np.abs(fit.log_k - truth.log_k)[identifiable].max() < 1e-9
    np.testing.assert_allclose(fit.relaxation_rate, truth.lambda_per_type[truth.types], rtol=1e-8)
    np.testing.assert_allclose(fit.baselines, truth.baseline_per_type[truth.types], rtol=1e-8)
    assert len(fit.type_rate) == 2 and matched_accuracy(fit.types, truth.types) == 1.0
    np.testing.assert_allclose(np.sort(fit.type_rate), np.sort(truth.lambda_per_type), rtol=1e-8)


def test_the_weak_form_is_exact_on_euler_steps(exact):
    """Left Riemann sums over W Euler steps reproduce c[t+W] − c[t] exactly: a window of 10 recovers as much."""
    fit = fit_known_forms(exact.observed, window=10)
    identifiable = exact.identifiability.identifiable
    assert np.abs(fit.log_k - exact.truth.log_k)[identifiable].max() < 1e-6


def test_the_weak_form_stays_exact_on_several_runs_because_no_window_spans_two():
    runs = simulate(config({"n_runs": 3, "n_frames": 200}).simulation)
    trajectory = runs.observed.trajectory
    fit = fit_known_forms(runs.observed, window=10)
    identifiable = runs.identifiability.identifiable
    assert np.abs(fit.log_k - runs.truth.log_k)[identifiable].max() < 1e-6
    rows = weak_form_rows(trajectory, runs.observed.network, 10)
    alone = [weak_form_rows(Trajectory(c, y, 0.1), runs.observed.network, 10)
             for c, y in zip(trajectory.runs(), trajectory.runs(trajectory.derivatives), strict=True)]
    for stacked, per_run in zip(rows, zip(*alone, strict=True), strict=True):
        np.testing.assert_allclose(stacked, np.concatenate(per_run), rtol=1e-9)  # cumulative sums round apart


def test_the_number_of_types_is_chosen_from_the_data():
    dataset = simulate(config(THREE_TYPES).simulation)
    fit = fit_known_forms(dataset.observed, n_types="auto")
    assert len(fit.type_rate) == 3 and min(fit.type_scores, key=fit.type_scores.get) == 3
    assert matched_accuracy(fit.types, dataset.truth.types) == 1.0
    assert len(fit_known_forms(dataset.observed, n_types=2).type_rate) == 2  # a given number is kept


def test_noisy_measurements_are_fitted_in_the_weak_form_with_the_window_read_from_the_noise():
    dataset = load_or_simulate(config(THREE_TYPES).simulation, measurement_noise_level=0.01)
    strong = fit_known_forms(dataset.observed, window=1)
    fit = fit_known_forms(dataset.observed)
    assert fit.window == 10 and fit.noise_estimate == pytest.approx(0.01, rel=0.2)
    identifiable, truth = dataset.identifiability.identifiable, dataset.truth

    def rmse(f):
        return np.sqrt(np.mean((f.log_k - truth.log_k)[identifiable] ** 2))

    assert rmse(fit) < 0.8 * rmse(strong)  # forward differences of noisy c are what the weak form avoids
    assert rmse(fit) < 0.005
    assert matched_accuracy(fit.types, truth.types) == 1.0


def test_the_noise_moments_remove_the_relaxation_rates_bias():
    """At σ_m 0.05 the window's mean c shares frame t's noise with the rate over the window: uncorrected,
    every λ comes out too large."""
    dataset = load_or_simulate(config(THREE_TYPES).simulation, measurement_noise_level=0.05)
    observed, truth = dataset.observed, dataset.truth
    rows = weak_form_rows(observed.trajectory, observed.network, 10)
    true_rate = truth.lambda_per_type[truth.types]

    def median_ratio(noise):
        from metabo_tune.regress import relaxation_from, solve_rate_constants

        equations = normal_equations(*rows, observed.network.stoichiometry, noise)
        rate, _ = relaxation_from(equations, solve_rate_constants(equations)[0])
        return float(np.median(rate / true_rate))

    sigma = fit_known_forms(observed).noise_estimate
    corrected, uncorrected = median_ratio(NoiseMoments.of(sigma, 10, 0.1)), median_ratio(NoiseMoments())
    assert abs(corrected - 1) < abs(uncorrected - 1)


def test_rows_left_out_give_the_least_squares_solution_of_the_kept_rows_alone():
    """normal_equations with `kept`: its (k, λ, μ) equal a dense least-squares fit of the kept rows (t, i) alone, the
    k block's all-row Gram matrix corrected by each left-out row's term."""
    rng = np.random.default_rng(0)
    rows, n, n_reactions = 80, 6, 9
    stoichiometry = rng.choice([-1.0, 0.0, 1.0], size=(n, n_reactions), p=[0.3, 0.4, 0.3])
    monomial_means, conc_means = rng.uniform(0.1, 2.0, (rows, n_reactions)), rng.uniform(1.0, 8.0, (rows, n))
    rates = rng.normal(0.0, 1.0, (rows, n))
    kept = rng.random((rows, n)) > 0.3
    equations = normal_equations(monomial_means, conc_means, rates, stoichiometry, NoiseMoments(), kept)
    rate_constants, determined = solve_rate_constants(equations)
    lam, mu = relaxation_from(equations, rate_constants)
    design, target = [], []
    for t, i in zip(*np.nonzero(kept), strict=True):
        row = np.zeros(n_reactions + 2 * n)
        row[:n_reactions] = stoichiometry[i] * monomial_means[t]
        row[n_reactions + i], row[n_reactions + n + i] = -conc_means[t, i], 1.0
        design.append(row)
        target.append(rates[t, i])
    dense = np.linalg.lstsq(np.array(design), np.array(target), rcond=None)[0]
    assert determined.all() and equations.n_rows == kept.sum()
    np.testing.assert_allclose(rate_constants, dense[:n_reactions], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(lam, dense[n_reactions:n_reactions + n], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(mu, dense[n_reactions + n:], rtol=1e-8, atol=1e-10)


def test_a_row_is_kept_where_its_window_stays_clear_of_zero(exact):
    trajectory = exact.observed.trajectory
    conc = trajectory.concentrations
    margin = float(np.quantile(conc, 0.05))
    kept = rows_clear_of_zero(trajectory, 5, margin)
    assert kept.shape == weak_form_rows(trajectory, exact.observed.network, 5)[1].shape
    for t, i in [(0, 0), (17, 3), (len(kept) - 1, conc.shape[1] - 1)]:
        assert kept[t, i] == (conc[t:t + 6, i].min() > margin)
    strong = rows_clear_of_zero(trajectory, 1, margin)  # a forward difference reads frame t + 1 too
    np.testing.assert_array_equal(strong[:-1], (conc[:-1] > margin) & (conc[1:] > margin))
    np.testing.assert_array_equal(strong[-1], conc[-1] > margin)
    assert (strong < (conc > margin)).any()  # the test's margin cuts some frame whose successor falls below it
    assert rows_clear_of_zero(trajectory, 5, None) is None


def test_rows_near_zero_concentration_left_out_recover_k_where_they_spoiled_it():
    """Development network 8703 (the mission's size) at σ_m 0.001: metabolites that deplete to the simulator's
    clamp at zero, where measurements are clipped too, give rows no rate law fits. Measured when written: k R² 0.9886
    with every row, 1.0000 with the rows within 3σ of zero left out (3.7 % of them)."""
    base = load_config(Path(__file__).parents[1] / "configs" / "joint_recovery.yaml")  # the mission's generator
    dataset = load_or_simulate(base.simulation.model_copy(update={"seed": 8703}), measurement_noise_level=0.001)
    truth = dataset.truth

    def r2(fit):
        error = (fit.log_k - truth.log_k)[fit.determined]
        spread = truth.log_k[fit.determined] - truth.log_k[fit.determined].mean()
        return 1.0 - (error**2).sum() / (spread**2).sum()

    every_row = fit_known_forms(dataset.observed, zero_margin=None)
    clear = fit_known_forms(dataset.observed)
    assert every_row.rows_kept == 1.0 and 0.9 < clear.rows_kept < 1.0
    assert clear.zero_margin == pytest.approx(3 * clear.noise_estimate)
    assert r2(every_row) < 0.995 and r2(clear) > 0.9999


def test_monomials_are_the_mass_action_products(exact):
    network, truth = exact.observed.network, exact.truth
    conc = exact.observed.trajectory.concentrations[:50]
    rates = (10.0 ** truth.log_k * monomials(conc, network)) @ network.stoichiometry.T
    np.testing.assert_allclose(rates, rate_law_rhs(conc, network, truth.log_k, np.zeros_like(conc)), rtol=1e-12)


def test_the_known_form_model_predicts_the_simulators_derivatives(exact):
    fit = fit_known_forms(exact.observed)
    model = KnownFormModel(exact.observed.network, fit)
    traj = exact.observed.trajectory
    predicted = model(torch.tensor(traj.concentrations)).numpy()
    np.testing.assert_allclose(predicted, traj.derivatives, atol=1e-9)


def test_a_regression_trial_writes_a_trials_files_and_metrics(exact, tmp_path):
    outcome = regression_trial(config(), tmp_path / "fit", dataset=exact)
    values = outcome.metrics
    assert values["method"] == "regression" and values["classification"] == "converged"
    assert values["rate_constants_R2"] > 0.9999 and values["log_k_rmse"] < 1e-5
    assert values["avg_slope_ratio"] == pytest.approx(1.0) and values["embedding_cluster_acc"] == 1.0
    assert values["measurement_noise_level"] == 0 and values["regression_window"] == 1
    logged = parse_analysis_log((tmp_path / "fit" / "analysis.log").read_text())
    assert logged["method"] == "regression" and "measurement_noise_estimate" in logged
    assert json.loads((tmp_path / "fit" / "metrics.json").read_text())["regression_n_types"] == 2
    for name in ("config.yaml", "identifiability.txt", "rate_constants.csv", "metabolites.csv", "mlp_node.png",
                 "rate_constants.png", "embeddings.png"):
        assert (tmp_path / "fit" / name).is_file(), name


def test_the_regression_never_reads_the_truth(exact, tmp_path):
    from tests.test_train import GuardedTruth

    guarded = GuardedTruth(exact.truth)
    outcome = regression_trial(config(), tmp_path / "fit", dataset=dataclasses.replace(exact, truth=guarded))
    assert outcome.metrics["classification"] == "converged"
    assert guarded.readers == {"metabo_tune.metrics", "metabo_tune.plots"}


def test_the_command_fits_your_own_data_and_reports_the_noise(exact, tmp_path, capsys):
    save_npy_dataset(exact, tmp_path / "data")
    run_config = tmp_path / "run.yaml"
    run_config.write_text(f"simulation: {{data_dir: {tmp_path / 'data'}, n_frames: 600}}\n")
    assert main([str(run_config), "--out", str(tmp_path / "out")]) == 0
    assert "regression, converged" in capsys.readouterr().out
    logged = parse_analysis_log((tmp_path / "out" / "analysis.log").read_text())
    assert "measurement_noise_level" not in logged  # not known for your own data
    assert logged["measurement_noise_estimate"] < 1e-4


@pytest.mark.parametrize(("overrides", "message"), [
    (["regression.window=600"], "regression.window 600"),
    (["regression.window=0"], "regression.window: expected an integer >= 1 or 'auto'"),
    (["regression.n_types=many"], "regression.n_types"),
])
def test_bad_input_is_one_error_line_naming_the_key(tmp_path, capsys, overrides, message):
    run_config = tmp_path / "run.yaml"
    run_config.write_text(f"simulation: {SMALL}\n")
    args = [str(run_config), "--out", str(tmp_path / "out")]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    run_config = tmp_path / "run.yaml"
    run_config.write_text("simulation: {n_metabolites: 20, n_reactions: 30, n_frames: 300}\n")
    assert main([str(run_config), "--out", str(run_config)]) == 2
    assert capsys.readouterr().err == f"error: --out {run_config}: is a file, not a folder; choose another --out\n"


def test_a_folder_of_a_trained_run_is_refused_not_mixed(tmp_path, capsys):
    run_config = tmp_path / "run.yaml"
    run_config.write_text("simulation: {n_metabolites: 20, n_reactions: 30, n_frames: 300}\n")
    out = tmp_path / "trained"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"a GNN's checkpoint")
    assert main([str(run_config), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"error: {out} holds another method's run (checkpoint.pt); write into "
                                       "another --out directory or delete it\n")
    assert sorted(path.name for path in out.iterdir()) == ["checkpoint.pt"]


def test_noise_on_your_own_data_is_refused(exact, tmp_path, capsys):
    save_npy_dataset(exact, tmp_path / "data")
    run_config = tmp_path / "run.yaml"
    run_config.write_text(f"simulation: {{data_dir: {tmp_path / 'data'}}}\n"
                          "training: {measurement_noise_level: 0.01}\n")
    assert main([str(run_config)]) == 2
    assert "training.measurement_noise_level must be 0 with simulation.data_dir" in capsys.readouterr().err


def test_a_design_without_moving_data_is_singular(exact):
    network = exact.observed.network
    frozen = np.zeros((5, network.n_metabolites))  # every substrate at zero: no reaction ever runs
    observed = Observed(network, Trajectory(frozen, np.zeros_like(frozen), 0.1))
    with pytest.raises(DataError, match="singular"):
        fit_known_forms(observed, window=1)


@pytest.mark.parametrize("window", [1, 10])
def test_the_rows_noise_variance_is_what_noise_draws_give_them(window):
    """Gaussian noise σ on every c (without the clamp at zero, which the variance does not model): each row's
    residual under the true k and relaxations scatters over 300 draws as row_noise_variance predicts, row by row."""
    fast = simulate(config({"log_k_min": -1.5, "log_k_max": -1.0}).simulation)  # reactions' noise beside the ends'
    trajectory, network, truth = fast.observed.trajectory, fast.observed.network, fast.truth
    sigma, k = 0.002, 10.0 ** truth.log_k
    lam, mu = truth.lambda_per_type[truth.types], (truth.lambda_per_type * truth.baseline_per_type)[truth.types]
    rng = np.random.default_rng(0)
    residuals = []
    for _ in range(300):
        conc = trajectory.concentrations + rng.normal(0.0, sigma, trajectory.concentrations.shape)
        deriv = trajectory.derivatives.copy()
        deriv[:-1] = (conc[1:] - conc[:-1]) / trajectory.delta_t  # what a measured dc/dt is: forward differences
        noisy = dataclasses.replace(trajectory, concentrations=conc, derivatives=deriv)
        monomial_means, conc_means, rates = weak_form_rows(noisy, network, window)
        residuals.append(rates - (monomial_means * k) @ network.stoichiometry.T + lam * conc_means - mu)
    measured = np.var(np.array(residuals)[:, :-1], axis=0)
    predicted = row_noise_variance(trajectory, network, k, window, sigma)[:-1]
    ratio = measured / predicted
    assert 0.85 < np.median(ratio) < 1.15
    assert np.quantile(ratio, 0.99) < 1.5 and np.quantile(ratio, 0.01) > 0.6  # 300 draws: ±0.16 at one sd
    # row by row the prediction is off by no more than 300 draws' own scatter (about 2 / 299 in log variance
    # squared), while one variance for every row would be off by several times that
    floor = 2 / (300 - 1)
    assert np.mean(np.log(ratio) ** 2) < 1.5 * floor
    assert np.mean(np.log(measured / np.median(measured)) ** 2) > 3 * floor


def test_a_null_space_solve_whose_eigensolver_fails_takes_the_other_driver(monkeypatch):
    """numpy's eigh (LAPACK syevd) once failed to converge on a finite, well-scaled reduced matrix of the form-free
    fit (E. coli core); the solve then takes scipy's evr driver and gets the same k and null space."""
    rng = np.random.default_rng(3)
    design = rng.normal(size=(40, 6))
    design[:, 5] = design[:, 4]  # one direction no data determine
    matrix, rhs = design.T @ design, design.T @ rng.normal(size=40)
    expected = solve_reduced(matrix, rhs)

    def fails(_matrix):
        raise np.linalg.LinAlgError("Eigenvalues did not converge")

    monkeypatch.setattr(np.linalg, "eigh", fails)
    rate_constants, determined = solve_reduced(matrix, rhs)
    np.testing.assert_allclose(rate_constants, expected[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(determined, expected[1])
    assert determined.tolist() == [True] * 4 + [False] * 2
