from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from metabo_tune import metrics as m
from metabo_tune.config import GraphModelConfig, SimulationConfig
from metabo_tune.model import MetabolicGNN, build_model
from metabo_tune.simulate import Dataset, Network, Trajectory, simulate

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------
# Fixtures: a small simulated dataset and models whose MLPs are replaced by known functions


class PowerLaw(nn.Module):
    """MLP_sub replaced by the true rate law c^|s| (the model feeds [c/input_scale, |s|])."""

    def __init__(self, input_scale: float) -> None:
        super().__init__()
        self.input_scale = input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x[..., 0] * self.input_scale) ** x[..., 1]).unsqueeze(-1)


class Elementwise(nn.Module):
    """MLP_sub or MLP_node replaced by f(c) of the raw concentration, ignoring the other inputs."""

    def __init__(self, input_scale: float, f) -> None:
        super().__init__()
        self.input_scale, self.f = input_scale, f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x[..., 0] * self.input_scale).unsqueeze(-1)


class Relaxation(nn.Module):
    """MLP_node replaced by the true h = −λ(a)·(c − b(a)) when a_i[0] holds metabolite i's type (0/1), or
    by −λ(a)·w·tanh((c − b(a))/w) with a width w."""

    def __init__(self, input_scale: float, lam: np.ndarray, base: np.ndarray, width: float = math.inf) -> None:
        super().__init__()
        self.input_scale, self.width = input_scale, width
        self.lam, self.base = tuple(lam.tolist()), tuple(base.tolist())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, a = x[..., 0] * self.input_scale, x[..., 1]
        lam = self.lam[0] + (self.lam[1] - self.lam[0]) * a
        base = self.base[0] + (self.base[1] - self.base[0]) * a
        if math.isinf(self.width):
            return (-lam * (c - base)).unsqueeze(-1)
        return (-lam * self.width * torch.tanh((c - base) / self.width)).unsqueeze(-1)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return simulate(SimulationConfig(n_metabolites=20, n_reactions=30, n_frames=300))


def input_scale(dataset: Dataset) -> float:
    return float(1.5 * dataset.observed.trajectory.concentrations.std())


def untrained(dataset: Dataset) -> MetabolicGNN:
    return build_model(dataset.observed.network, GraphModelConfig(), input_scale(dataset), 0, (-2.0, 1.0))


def set_embedding_to_types(model: MetabolicGNN, types: np.ndarray) -> None:
    embedding = torch.zeros_like(model.embedding)
    embedding[:, 0] = torch.tensor(types, dtype=embedding.dtype)
    with torch.no_grad():
        model.embedding.copy_(embedding)


def exact(dataset: Dataset) -> MetabolicGNN:
    """A model whose forward pass is the simulator's dc/dt."""
    model, truth, scale = untrained(dataset), dataset.truth, input_scale(dataset)
    model.sub_mlp = PowerLaw(scale)
    model.node_mlp = Relaxation(scale, truth.lambda_per_type, truth.baseline_per_type)
    with torch.no_grad():
        model.log_k.copy_(torch.tensor(truth.log_k))
    set_embedding_to_types(model, truth.types)
    return model


HISTORY = {"prediction": np.linspace(2.0, 1.0, 200), "total": np.linspace(3.0, 1.5, 200)}


def run_metrics(model: MetabolicGNN, dataset: Dataset, status: str = "completed") -> dict:
    return m.compute_metrics(model, dataset, status=status, loss_history=HISTORY, training_time_s=120.0,
                             iterations=600)


# --------------------------------------------------------------------------------------------
# Rate constants


def test_r2_counts_identifiable_reactions_only():
    true = np.linspace(-2.0, -1.0, 20)
    learned = true.copy()
    learned[15:] = [1.0, -5.0, 3.0, -4.0, 2.0]  # wild values where the data cannot pin k
    identifiable = np.arange(20) < 15
    out = m.rate_constant_metrics(learned, true, np.full(20, 2), 0.0, identifiable)
    assert out["rate_constants_R2"] == pytest.approx(1.0, abs=1e-12)
    assert out["rate_constants_R2_all"] < 0.2
    assert out["n_identifiable"] == 15
    assert out["n_outliers"] == 0
    assert out["log_k_rmse"] == pytest.approx(0.0, abs=1e-12)
    assert "alpha_ls" not in out


@pytest.mark.parametrize(("true", "learned"), [
    (np.linspace(-2, -1, 10), np.full(10, -1.5)),  # constant learned values
    (np.full(10, -1.5), np.linspace(-2, -1, 10)),  # constant truth
    (np.array([-1.5]), np.array([-1.2])),  # a single point
])
def test_r2_of_degenerate_inputs_is_zero(true, learned):
    out = m.rate_constant_metrics(learned, true, np.ones(len(true)), 0.0, np.ones(len(true), dtype=bool))
    assert out["rate_constants_R2"] == 0.0
    assert out["rate_constants_R2_all"] == 0.0


def test_outliers_are_counted_against_the_identity_line_on_identifiable_reactions():
    true = np.linspace(-2.0, -1.0, 12)
    learned = true + 0.1
    learned[[0, 1, 2]] = true[[0, 1, 2]] + [0.5, -0.4, 0.31]
    learned[11] = true[11] + 5.0  # not identifiable: never an outlier
    identifiable = np.arange(12) < 11
    out = m.rate_constant_metrics(learned, true, np.ones(12), 0.0, identifiable)
    assert out["n_outliers"] == 3
    assert out["trimmed_R2"] == pytest.approx(1.0)
    assert out["slope"] == pytest.approx(1.0)
    errors = np.array([0.5, -0.4, 0.31] + [0.1] * 8)
    assert out["log_k_rmse"] == pytest.approx(np.sqrt(np.mean(errors**2)))


def test_trimmed_fit_keeps_every_point_when_most_are_outliers():
    true = np.linspace(-2.0, -1.0, 10)
    out = m.rate_constant_metrics(2.0 * true + 5.0, true, np.ones(10), 0.0, np.ones(10, dtype=bool))
    assert out["n_outliers"] == 10
    assert out["slope"] == pytest.approx(2.0)
    assert out["trimmed_R2"] == pytest.approx(1.0)


def test_alpha_correction_recovers_the_truth_exactly():
    true = np.linspace(-2.0, -1.0, 9)
    n_sub = np.array([1, 2, 3] * 3)
    alpha = 0.25
    learned = true - n_sub * np.log10(alpha)
    log_alpha_ls = np.log10(alpha) + 0.2  # off by 0.2 per substrate
    out = m.rate_constant_metrics(learned, true, n_sub, np.log10(alpha), np.ones(9, dtype=bool), log_alpha_ls)
    assert out["log_k_rmse"] == pytest.approx(0.0, abs=1e-12)
    assert out["n_outliers"] == 0
    assert out["rate_constants_R2"] == pytest.approx(1.0)
    assert out["slope"] == pytest.approx(1.0)
    assert out["alpha"] == pytest.approx(0.25)
    assert out["alpha_ls"] == pytest.approx(0.25 * 10**0.2)
    assert out["n_outliers_ls"] == 6  # errors 0.2·n_sub: 0.2 (in), 0.4 and 0.6 (out)
    assert out["log_k_rmse_ls"] == pytest.approx(0.2 * np.sqrt(np.mean(n_sub**2)))


def test_n_substrates_counts_edges_and_clamps_empty_reactions():
    network = Network(np.zeros((3, 3)), np.array([0, 1, 2]), np.array([0, 0, 2]), np.array([1, 1, 2]))
    assert m.n_substrates(network).tolist() == [2, 1, 1]


# --------------------------------------------------------------------------------------------
# α and MLP_sub


def test_alpha_estimates_on_known_substrate_functions(dataset):
    model, scale = untrained(dataset), input_scale(dataset)
    conc = dataset.observed.trajectory.concentrations
    model.sub_mlp = Elementwise(scale, lambda c: 3.0 * c)
    assert m.alpha_point(model) == pytest.approx(3.0, rel=1e-5)
    assert m.alpha_least_squares(model, conc) == pytest.approx(3.0, rel=1e-5)
    model.sub_mlp = Elementwise(scale, lambda c: 2.0 * c + 1.0)  # not ∝ c: the two estimates differ
    assert m.alpha_point(model) == pytest.approx(3.0, rel=1e-5)
    assert m.alpha_least_squares(model, np.full((5, 3), 4.0)) == pytest.approx(2.25, rel=1e-5)


def test_substrate_metrics_compare_the_scaled_mlp_with_c(dataset):
    model, scale = untrained(dataset), input_scale(dataset)
    conc = dataset.observed.trajectory.concentrations
    model.sub_mlp = Elementwise(scale, lambda c: 3.0 * c)
    out = m.substrate_metrics(model, conc, m.alpha_least_squares(model, conc))
    assert out["MLP_sub_R2"] == pytest.approx(1.0, abs=1e-6)
    assert out["MLP_sub_corr"] == pytest.approx(1.0, abs=1e-6)
    model.sub_mlp = Elementwise(scale, lambda c: c**2)
    out = m.substrate_metrics(model, conc, m.alpha_least_squares(model, conc))
    assert out["MLP_sub_R2"] < 0.9


# --------------------------------------------------------------------------------------------
# Homeostasis


def test_homeostasis_type_summaries_from_known_fits():
    out = m.homeostasis_type_metrics(
        slopes=np.array([-0.001, -0.003, -0.002, -0.002]),
        intercepts=np.array([0.004, 0.004, 0.006, 0.006]),
        types=np.array([0, 0, 1, 1]),
        lambda_per_type=np.array([0.001, 0.002]),
        baseline_per_type=np.array([4.0, 6.0]),
    )
    assert out["MLP_node_slope_0"] == pytest.approx(-0.002)
    assert out["MLP_node_gt_slope_0"] == pytest.approx(-0.001)
    assert out["MLP_node_slope_ratio_0"] == pytest.approx(2.0)
    assert out["MLP_node_offset_ratio_0"] == pytest.approx(1.0)
    assert out["MLP_node_baseline_0"] == pytest.approx(2.0)
    assert out["MLP_node_slope_ratio_1"] == pytest.approx(1.0)
    assert out["MLP_node_gt_offset_1"] == pytest.approx(0.012)
    assert out["MLP_node_offset_ratio_1"] == pytest.approx(0.5)
    assert out["MLP_node_baseline_1"] == pytest.approx(3.0)
    assert out["MLP_node_slope_rel_err_0"] == pytest.approx(1.0)
    assert out["avg_slope_ratio"] == pytest.approx(1.5)
    assert out["worst_slope_rel_err"] == pytest.approx(1.0)


def test_homeostasis_ratio_is_zero_without_true_homeostasis_and_baseline_nan_for_flat_fits():
    out = m.homeostasis_type_metrics(np.zeros(2), np.zeros(2), np.array([0, 0]), np.array([0.0]),
                                     np.array([5.0]))
    assert out["MLP_node_slope_ratio_0"] == 0.0
    assert out["MLP_node_offset_ratio_0"] == 0.0
    assert math.isnan(out["MLP_node_baseline_0"])


def test_metabolite_ranges_widen_constant_metabolites():
    conc = np.stack([np.linspace(0.0, 10.0, 101), np.full(101, 0.2), np.full(101, 3.0)], axis=1)
    lo, hi = m.metabolite_ranges(conc)
    np.testing.assert_allclose(lo, [0.5, 0.0, 2.5])
    np.testing.assert_allclose(hi, [9.5, 0.7, 3.5])


def test_slopes_of_a_linear_node_mlp(dataset):
    model, scale, types = untrained(dataset), input_scale(dataset), dataset.truth.types
    linear = nn.Linear(3, 1)  # inputs: c / input_scale, a_i[0], a_i[1]
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[-0.0015 * scale, 0.002, 0.0]]))
        linear.bias.fill_(0.004)
    model.node_mlp = linear
    set_embedding_to_types(model, types)
    out = m.homeostasis_metrics(model, dataset)
    assert out["MLP_node_slope_0"] == pytest.approx(-0.0015, rel=1e-4)
    assert out["MLP_node_slope_1"] == pytest.approx(-0.0015, rel=1e-4)
    assert out["MLP_node_slope_ratio_0"] == pytest.approx(1.5, rel=1e-4)
    assert out["MLP_node_slope_ratio_1"] == pytest.approx(0.75, rel=1e-4)
    assert out["MLP_node_offset_0"] == pytest.approx(0.004, rel=1e-4)
    assert out["MLP_node_offset_1"] == pytest.approx(0.006, rel=1e-4)
    assert out["MLP_node_offset_ratio_1"] == pytest.approx(0.5, rel=1e-4)
    assert out["avg_slope_ratio"] == pytest.approx(1.125, rel=1e-4)
    assert out["homeostasis_R2"] < 0.99


def test_exact_homeostasis_recovers_slopes_baselines_and_r2(dataset):
    out = m.homeostasis_metrics(exact(dataset), dataset)
    for t, base in enumerate(dataset.truth.baseline_per_type):
        assert out[f"MLP_node_slope_ratio_{t}"] == pytest.approx(1.0, rel=1e-4)
        assert out[f"MLP_node_offset_ratio_{t}"] == pytest.approx(1.0, rel=1e-4)
        assert out[f"MLP_node_baseline_{t}"] == pytest.approx(base, rel=1e-4)
    assert out["homeostasis_R2"] == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------------------------
# Embeddings

TYPES = np.repeat([0, 1], 50)


def two_blobs(scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    second = rng.normal(size=(50, 2)) + np.array([14.0, 14.0])  # 14·√2 ≈ 20 σ from the first, diagonally
    return scale * np.concatenate([rng.normal(size=(50, 2)), second])


def test_matched_accuracy_maps_groups_to_types_one_to_one():
    types = np.array([0, 0, 0, 1, 1, 1])
    assert m.matched_accuracy(np.array([1, 1, 1, 0, 0, 0]), types) == 1.0  # labels are arbitrary
    assert m.matched_accuracy(np.array([0, 0, 1, 1, 1, 1]), types) == pytest.approx(5 / 6)
    # A third group has no type left to map to: its member counts as wrong.
    assert m.matched_accuracy(np.array([0, 0, 2, 1, 1, 1]), types) == pytest.approx(5 / 6)
    assert m.matched_accuracy(np.zeros(6, dtype=np.int64), types) == 0.5


@pytest.mark.parametrize("scale", [1.0, 1e-3, 1e3])
def test_two_separated_blobs_are_two_clusters_at_any_scale(scale):
    out = m.embedding_metrics(two_blobs(scale), TYPES)
    assert out["embedding_n_clusters"] == 2
    assert out["embedding_cluster_acc"] == 1.0
    assert out["embedding_n_noise"] == 0
    assert out["embedding_ari"] == pytest.approx(1.0)
    assert out["embedding_silhouette"] > 0.8


def test_one_blob_is_one_cluster_at_chance_accuracy():
    embeddings = np.random.default_rng(1).normal(size=(100, 2))
    out = m.embedding_metrics(embeddings, TYPES)
    assert out["embedding_n_clusters"] == 1
    # The few noise points form one extra group that matches the second type.
    assert 0.5 <= out["embedding_cluster_acc"] <= 0.5 + out["embedding_n_noise"] / 100
    assert math.isnan(out["embedding_silhouette"])
    assert abs(out["embedding_ari"]) < 0.1


def test_eps_is_a_parameter():
    out = m.embedding_metrics(two_blobs(), TYPES, eps=10.0)
    assert out["embedding_n_clusters"] == 1
    assert out["embedding_cluster_acc"] == 0.5


def test_embeddings_with_a_constant_column_or_non_finite_values():
    embeddings = np.stack([TYPES.astype(float), np.zeros(100)], axis=1)
    out = m.embedding_metrics(embeddings, TYPES)
    assert out["embedding_n_clusters"] == 2
    assert out["embedding_cluster_acc"] == 1.0
    embeddings[0, 0] = np.nan
    out = m.embedding_metrics(embeddings, TYPES)
    assert math.isnan(out["embedding_cluster_acc"])
    assert out["embedding_n_clusters"] == 0


# --------------------------------------------------------------------------------------------
# Held-out test


def test_rollout_of_the_exact_model_matches_the_heldout_trajectory(dataset):
    model = exact(dataset)
    out = m.rollout_metrics(model, dataset.heldout)
    assert out["test_R2"] > 0.999
    assert out["test_pearson"] > 0.999
    assert out["test_rollout_diverged_at"] == -1
    assert m.onestep_r2(model, dataset.heldout) == pytest.approx(1.0, abs=1e-6)


def test_rollout_of_an_untrained_model_is_poor(dataset):
    out = m.rollout_metrics(untrained(dataset), dataset.heldout, n_steps=100)
    assert out["test_R2"] < 0.5
    assert m.onestep_r2(untrained(dataset), dataset.heldout) < 0.5


def test_rollout_stops_at_the_first_non_finite_step(dataset):
    model, scale = untrained(dataset), input_scale(dataset)
    model.sub_mlp = Elementwise(scale, torch.zeros_like)  # no reactions
    # Every concentration grows by 0.1 per step until one passes 20, where dc/dt becomes nan.
    model.node_mlp = Elementwise(scale, lambda c: torch.where(c > 20.0, torch.nan, 1.0))
    c0_max = dataset.heldout.concentrations[0].max()
    first_bad_state = math.floor((20.0 - c0_max) / 0.1) + 1
    out = m.rollout_metrics(model, dataset.heldout)
    assert abs(out["test_rollout_diverged_at"] - (first_bad_state + 1)) <= 1
    assert math.isfinite(out["test_R2"])
    assert out["test_pearson"] < 0.9


def test_rollout_that_diverges_at_once_has_no_scores(dataset):
    model, scale = untrained(dataset), input_scale(dataset)
    model.node_mlp = Elementwise(scale, lambda c: torch.full_like(c, torch.inf))
    out = m.rollout_metrics(model, dataset.heldout)
    assert out["test_rollout_diverged_at"] == 1
    assert math.isnan(out["test_R2"])
    assert math.isnan(out["test_pearson"])


def test_rollout_r2_skips_constant_metabolites():
    conc = np.stack([np.linspace(1.0, 2.0, 11), np.full(11, 3.0)], axis=1)
    deriv = np.stack([np.full(11, 1.0), np.zeros(11)], axis=1)

    class Constant(nn.Module):  # dc/dt = (1, 0): the rollout reproduces the trajectory exactly
        def __init__(self) -> None:
            super().__init__()
            self.log_k = nn.Parameter(torch.zeros(1))

        def forward(self, c: torch.Tensor) -> torch.Tensor:
            return torch.tensor([1.0, 0.0]).expand_as(c)

    out = m.rollout_metrics(Constant(), Trajectory(conc, deriv, 0.1))
    assert out["test_R2"] == pytest.approx(1.0, abs=1e-5)
    assert out["test_pearson"] == pytest.approx(1.0, abs=1e-5)


def test_final_loss_averages_the_last_five_percent():
    assert m.final_loss(np.arange(100.0)) == pytest.approx(97.0)
    assert m.final_loss(np.arange(10.0)) == pytest.approx(9.0)
    assert math.isnan(m.final_loss(np.array([])))


# --------------------------------------------------------------------------------------------
# compute_metrics

PER_TYPE = ("MLP_node_slope_{}", "MLP_node_gt_slope_{}", "MLP_node_slope_ratio_{}", "MLP_node_offset_{}",
            "MLP_node_gt_offset_{}", "MLP_node_offset_ratio_{}", "MLP_node_baseline_{}",
            "MLP_node_slope_rel_err_{}", "MLP_node_zero_{}", "MLP_node_gt_zero_{}", "MLP_node_zero_rel_err_{}",
            "MLP_node_slope_at_zero_{}", "MLP_node_slope_at_zero_ratio_{}", "MLP_node_members_in_band_{}",
            "MLP_node_R2_{}")
TRUTH_FREE_KEYS = {"status", "training_time_min", "iterations_per_s", "final_loss", "alpha", "alpha_ls",
                   "classification", "MLP_sub_exponent_s1"}
HELDOUT_KEYS = {"test_R2", "test_pearson", "test_rollout_diverged_at", "test_onestep_R2"}
ALL_KEYS = TRUTH_FREE_KEYS | HELDOUT_KEYS | {
    "rate_constants_R2", "rate_constants_R2_all", "n_identifiable", "n_outliers", "trimmed_R2", "slope",
    "log_k_rmse", "n_outliers_ls", "log_k_rmse_ls", "MLP_sub_R2", "MLP_sub_corr", "avg_slope_ratio",
    "worst_slope_rel_err", "homeostasis_R2", "embedding_cluster_acc", "embedding_n_clusters",
    "embedding_n_noise", "embedding_silhouette", "embedding_ari", "degeneracy_gap", "diagnosis",
    "homeostasis_assessment", *(name.format(t) for t in (0, 1) for name in PER_TYPE),
    "rate_constants_R2_gauge", "log_k_rmse_gauge", "MLP_sub_shape_R2_s1", "MLP_sub_gt_exponent_s1",
}


def assert_plain(metrics: dict) -> None:
    assert all(type(v) in (float, int, str) for v in metrics.values())
    json.loads(json.dumps(metrics))


def test_compute_metrics_of_an_untrained_model(dataset):
    out = run_metrics(untrained(dataset), dataset)
    assert set(out) == ALL_KEYS
    assert_plain(out)
    assert out["classification"] == "failed"  # MLP_node starts at exactly 0: slope ratio 0
    assert out["homeostasis_assessment"] == "inactive"
    assert out["n_identifiable"] == dataset.identifiability.n_identifiable
    assert out["training_time_min"] == pytest.approx(2.0)
    assert out["iterations_per_s"] == pytest.approx(5.0)
    assert out["final_loss"] == pytest.approx(HISTORY["prediction"][-10:].mean())
    assert out["status"] == "completed"


def test_compute_metrics_of_the_exact_model(dataset):
    model = exact(dataset)
    out = run_metrics(model, dataset)
    assert out["classification"] == "converged"
    assert out["diagnosis"] == "healthy"
    assert out["homeostasis_assessment"] == "correct"
    assert out["rate_constants_R2"] == pytest.approx(1.0)
    assert out["log_k_rmse"] < 1e-5
    assert out["MLP_sub_R2"] == pytest.approx(1.0, abs=1e-6)
    assert out["alpha"] == pytest.approx(1.0, rel=1e-6)
    assert m.progress_r2(model, dataset) == pytest.approx(out["rate_constants_R2"])
    assert run_metrics(model, dataset, status="diverged")["classification"] == "failed"


def test_compute_metrics_without_truth_or_heldout(dataset):
    out = run_metrics(untrained(dataset), dataclasses.replace(dataset, truth=None))
    assert set(out) == TRUTH_FREE_KEYS | HELDOUT_KEYS
    assert out["classification"] == "unknown"
    assert_plain(out)
    out = run_metrics(untrained(dataset), dataclasses.replace(dataset, truth=None, heldout=None))
    assert set(out) == TRUTH_FREE_KEYS
    assert math.isnan(m.progress_r2(untrained(dataset), dataclasses.replace(dataset, truth=None)))


def test_compute_metrics_does_not_change_the_model(dataset):
    model = untrained(dataset)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run_metrics(model, dataset)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training


# --------------------------------------------------------------------------------------------
# analysis.log

SAMPLE = {
    "status": "completed", "alpha": 0.987654321, "test_pearson": 0.91234, "zeta_extra": 3,
    "MLP_node_slope_ratio_1": 0.5, "MLP_node_slope_ratio_0": 1.25, "MLP_node_offset_ratio_0": 0.9,
    "MLP_node_offset_ratio_1": 0.8, "MLP_node_slope_0": -0.0012345678, "MLP_node_slope_1": -0.002,
    "MLP_node_gt_slope_0": -0.001, "MLP_node_gt_slope_1": -0.002, "MLP_node_offset_0": 0.0036,
    "MLP_node_offset_1": 0.0096, "MLP_node_gt_offset_0": 0.004, "MLP_node_gt_offset_1": 0.012,
    "training_time_min": 17.345, "final_loss": 12345.6789012, "rate_constants_R2": 0.86904,
    "trimmed_R2": 0.96, "n_outliers": 10, "slope": 0.98, "MLP_sub_R2": 0.5, "MLP_sub_corr": 0.7,
    "embedding_cluster_acc": 0.5, "embedding_n_clusters": 1, "embedding_silhouette": math.nan,
    "test_R2": -3.3e6, "diagnosis": "severely degenerate", "log_k_rmse": 2.5e-7, "avg_slope_ratio": -0.0,
}


def test_analysis_log_order_and_format():
    lines = m.format_analysis_log(SAMPLE).splitlines()
    assert lines[:8] == ["training_time_min: 17.3", "final_loss: 12345.678901", "rate_constants_R2: 0.8690",
                         "trimmed_R2: 0.9600", "n_outliers: 10", "slope: 0.9800", "MLP_sub_R2: 0.5000",
                         "MLP_sub_corr: 0.7000"]
    assert lines[8:20] == [
        "MLP_node_slope_ratio_0: 1.2500", "MLP_node_offset_ratio_0: 0.9000", "MLP_node_slope_0: -0.001235",
        "MLP_node_gt_slope_0: -0.001000", "MLP_node_offset_0: 0.003600", "MLP_node_gt_offset_0: 0.004000",
        "MLP_node_slope_ratio_1: 0.5000", "MLP_node_offset_ratio_1: 0.8000", "MLP_node_slope_1: -0.002000",
        "MLP_node_gt_slope_1: -0.002000", "MLP_node_offset_1: 0.009600", "MLP_node_gt_offset_1: 0.012000",
    ]
    assert lines[20:26] == ["embedding_cluster_acc: 0.5000", "embedding_n_clusters: 1",
                            "embedding_silhouette: nan", "test_R2: -3300000.0000", "test_pearson: 0.9123",
                            "alpha: 0.987654"]
    assert lines[26:] == ["avg_slope_ratio: 0.0000", "diagnosis: severely degenerate",
                          "log_k_rmse: 2.5000e-07", "status: completed", "zeta_extra: 3"]


def test_analysis_log_round_trip():
    text = m.format_analysis_log(SAMPLE)
    parsed = m.parse_analysis_log(text)
    assert set(parsed) == set(SAMPLE)
    assert m.format_analysis_log(parsed) == text
    assert parsed["n_outliers"] == 10 and type(parsed["n_outliers"]) is int
    assert parsed["final_loss"] == pytest.approx(12345.678901)
    assert parsed["log_k_rmse"] == pytest.approx(2.5e-7)
    assert math.isnan(parsed["embedding_silhouette"])
    assert parsed["diagnosis"] == "severely degenerate"


def test_analysis_log_of_real_metrics_round_trips(dataset):
    metrics = run_metrics(untrained(dataset), dataset)
    parsed = m.parse_analysis_log(m.format_analysis_log(metrics))
    assert set(parsed) == set(metrics)
    for key, value in metrics.items():
        if isinstance(value, (str, int)):
            assert parsed[key] == value
        elif math.isnan(value):
            assert math.isnan(parsed[key])
        else:
            assert parsed[key] == pytest.approx(value, rel=1e-3, abs=1e-4)


# --------------------------------------------------------------------------------------------
# The learned forms: k under the gauge, MLP_sub per order, MLP_node per type

K, WIDTH = 2.0, 1.5


@pytest.fixture(scope="module")
def forms_dataset() -> Dataset:
    """Michaelis–Menten kinetics (K 2) with saturating homeostasis (w 1.5) on the small network."""
    return simulate(SimulationConfig(n_metabolites=20, n_reactions=30, n_frames=300,
                                     substrate_kinetics="michaelis_menten", michaelis_K=K,
                                     homeostasis_form="saturating", homeostasis_width=WIDTH))


def michaelis_menten(c):
    return c * (1.0 + K) / (K + c)


def exact_forms(dataset: Dataset, scale_f: float = 1.0) -> MetabolicGNN:
    """The simulator's dc/dt for forms_dataset, with f̂ = scale_f·f and k divided by scale_f per edge."""
    model, truth, scale = untrained(dataset), dataset.truth, input_scale(dataset)
    model.sub_mlp = Elementwise(scale, lambda c: scale_f * michaelis_menten(c))
    model.node_mlp = Relaxation(scale, truth.lambda_per_type, truth.baseline_per_type, WIDTH)
    n_subs = m.n_substrates(dataset.observed.network)
    with torch.no_grad():
        model.log_k.copy_(torch.tensor(truth.log_k - n_subs * math.log10(scale_f)))
    set_embedding_to_types(model, truth.types)
    return model


def test_gauge_adds_log_f_at_one_per_substrate_edge():
    network = Network(np.zeros((3, 3)), np.array([0, 1, 2, 0]), np.array([0, 0, 1, 1]), np.array([1, 2, 1, 2]))
    gauged = m.gauge_log_k(np.array([-1.0, -2.0, -1.5]), network, {1: 0.3, 2: -0.1})
    np.testing.assert_allclose(gauged, [-1.0 + 0.2, -2.0 + 0.2, -1.5])  # reaction 2 has no substrate
    out = m.gauge_rate_constant_metrics(np.array([-1.0, -2.1, 0.0]), np.array([-1.0, -2.0, 5.0]),
                                        np.array([True, True, False]))
    assert out["rate_constants_R2_gauge"] == pytest.approx(1.0)
    assert out["log_k_rmse_gauge"] == pytest.approx(math.sqrt(0.01 / 2))


def test_forms_of_the_exact_model_on_michaelis_menten_and_saturating_data(forms_dataset):
    out = run_metrics(exact_forms(forms_dataset, scale_f=2.5), forms_dataset)
    assert out["rate_constants_R2_gauge"] == pytest.approx(1.0, abs=1e-9)
    assert out["log_k_rmse_gauge"] < 1e-6
    assert out["MLP_sub_shape_R2_s1"] == pytest.approx(1.0, abs=1e-9)  # the scale 2.5 is k's gauge
    assert out["MLP_sub_exponent_s1"] == pytest.approx(out["MLP_sub_gt_exponent_s1"], abs=1e-6)  # float32
    assert 0.2 < out["MLP_sub_gt_exponent_s1"] < 0.9  # saturating: flatter than c
    for t, (lam, base) in enumerate(zip(forms_dataset.truth.lambda_per_type,
                                        forms_dataset.truth.baseline_per_type, strict=True)):
        assert out[f"MLP_node_R2_{t}"] == pytest.approx(1.0, abs=1e-9)
        assert out[f"MLP_node_zero_{t}"] == pytest.approx(base, rel=1e-3)
        assert out[f"MLP_node_slope_at_zero_{t}"] == pytest.approx(-lam, rel=2e-3)  # central difference
        assert out[f"MLP_node_slope_at_zero_ratio_{t}"] == pytest.approx(1.0, rel=2e-3)
        assert out[f"MLP_node_members_in_band_{t}"] == 1.0
    assert out["homeostasis_R2"] == pytest.approx(1.0, abs=1e-9)
    assert out["classification"] == "converged"


def test_the_known_forms_on_michaelis_menten_and_saturating_data_show_in_the_form_metrics(forms_dataset):
    model = exact_forms(forms_dataset)
    truth, scale = forms_dataset.truth, input_scale(forms_dataset)
    model.sub_mlp = Elementwise(scale, lambda c: c)  # mass action
    model.node_mlp = Relaxation(scale, truth.lambda_per_type, truth.baseline_per_type)  # linear, slope λ at b
    out = run_metrics(model, forms_dataset)
    assert out["MLP_sub_exponent_s1"] == pytest.approx(1.0, abs=1e-6)
    assert out["MLP_sub_shape_R2_s1"] < 0.9
    for t in (0, 1):
        assert out[f"MLP_node_slope_at_zero_ratio_{t}"] == pytest.approx(1.0, rel=1e-3)  # the slope at b is right
        assert out[f"MLP_node_R2_{t}"] < 0.99  # the shape away from b is not


def test_mass_action_exponent_and_shape(dataset):
    model, scale = untrained(dataset), input_scale(dataset)
    points = m.order_shape_points(dataset.observed.network, dataset.observed.trajectory.concentrations)
    assert list(points) == [1] and len(points[1]) == 200
    model.sub_mlp = Elementwise(scale, lambda c: 3.0 * c)
    out = m.substrate_form_metrics(model, points, dataset.truth.substrate)
    assert out["MLP_sub_exponent_s1"] == pytest.approx(1.0, abs=1e-6)
    assert out["MLP_sub_gt_exponent_s1"] == pytest.approx(1.0, abs=1e-12)
    assert out["MLP_sub_shape_R2_s1"] == pytest.approx(1.0, abs=1e-9)
    model.sub_mlp = Elementwise(scale, lambda c: c**2)
    out = m.substrate_form_metrics(model, points, dataset.truth.substrate)
    assert out["MLP_sub_exponent_s1"] == pytest.approx(2.0, abs=1e-5)
    assert out["MLP_sub_shape_R2_s1"] < 0.0  # twice the true log-range: R² 1 − 1 about the identity


def test_shape_points_per_order_are_positive_quantiles_of_that_orders_substrates():
    network = Network(np.zeros((3, 2)), np.array([0, 1, 2]), np.array([0, 0, 1]), np.array([1, 1, 2]))
    conc = np.stack([np.linspace(0.0, 1.0, 101), np.linspace(1.0, 2.0, 101), np.linspace(5.0, 6.0, 101)], axis=1)
    points = m.order_shape_points(network, conc)
    assert sorted(points) == [1, 2]
    assert points[1].min() > 0.0 and points[1].max() < 2.0
    assert points[2].min() >= 5.0


def test_one_metabolite_off_its_type_moves_neither_zero_nor_slope_but_shows(dataset):
    model, truth = exact(dataset), dataset.truth
    conc = dataset.observed.trajectory.concentrations
    _, member_slopes = m.type_zero_and_slopes(model, conc, truth.types, 2)
    member_slopes = member_slopes.copy()
    zeros = np.array(truth.baseline_per_type, dtype=float)
    member_slopes[0] = -10 * truth.lambda_per_type[truth.types[0]]  # metabolite 0 (type 0) 10× too steep
    out = m.type_form_metrics(zeros, member_slopes, truth.types, truth.lambda_per_type, truth.baseline_per_type,
                              m.Thresholds())
    n_type_0 = int((truth.types == 0).sum())
    assert out["MLP_node_slope_at_zero_ratio_0"] == pytest.approx(1.0, rel=1e-3)
    assert out["MLP_node_members_in_band_0"] == pytest.approx(1 - 1 / n_type_0)
    assert out["MLP_node_members_in_band_1"] == 1.0
    assert out["MLP_node_zero_rel_err_0"] == 0.0


@pytest.mark.parametrize(("values", "zero"), [
    ([1.0, 0.5, -0.5, -1.0], 1.5),  # going down between 1 and 2
    ([-1.0, 1.0, -1.0, -2.0], 1.5),  # the first crossing going down, not the one going up
    ([-1.0, -0.5, 0.5, 1.0], 1.5),  # only going up
    ([0.0, 0.0, 0.0, 0.0], math.nan),
    ([1.0, 2.0, 3.0, 4.0], math.nan),
])
def test_decreasing_zero(values, zero):
    found = m._decreasing_zero(np.arange(4.0), np.array(values))
    assert (math.isnan(found) and math.isnan(zero)) or found == pytest.approx(zero)


def test_unknown_forms_leave_out_the_form_metrics(dataset):
    unknown = dataclasses.replace(dataset, truth=dataclasses.replace(dataset.truth, michaelis_K=None,
                                                                     homeostasis_width=None))
    out = run_metrics(exact(dataset), unknown)
    assert set(run_metrics(exact(dataset), dataset)) - set(out) == {
        "MLP_sub_shape_R2_s1", "MLP_sub_gt_exponent_s1", "homeostasis_R2", "MLP_node_R2_0", "MLP_node_R2_1"}
    assert out["classification"] == "converged"  # k, slopes at the zero and baselines need no form


def test_a_type_without_members_has_no_zero_and_no_slope(dataset):
    truth = dataset.truth
    three = dataclasses.replace(dataset, truth=dataclasses.replace(
        truth, lambda_per_type=np.array([0.001, 0.002, 0.003]), baseline_per_type=np.array([4.0, 6.0, 8.0])))
    out = m.homeostasis_metrics(exact(dataset), three)
    assert out["MLP_node_slope_at_zero_ratio_1"] == pytest.approx(1.0, rel=2e-3)
    assert math.isnan(out["MLP_node_zero_2"]) and math.isnan(out["MLP_node_slope_at_zero_2"])
    assert math.isnan(out["MLP_node_R2_2"]) and out["MLP_node_R2_1"] == pytest.approx(1.0, abs=1e-6)
