import math

import pytest

from metabo_tune import labels

# --------------------------------------------------------------------------------------------
# Labels

GOOD = {"rate_constants_R2": 0.95, "avg_slope_ratio": 1.0, "embedding_cluster_acc": 1.0,
        "MLP_node_slope_at_zero_ratio_0": 1.0, "MLP_node_slope_at_zero_ratio_1": 1.0,
        "MLP_node_zero_rel_err_0": 0.0, "MLP_node_zero_rel_err_1": 0.0}


@pytest.mark.parametrize(("changes", "status", "label"), [
    ({}, "completed", "converged"),
    ({}, "diverged", "failed"),
    ({}, "error", "failed"),
    ({"rate_constants_R2": 0.4}, "completed", "failed"),
    ({"avg_slope_ratio": 0.05}, "completed", "failed"),
    ({"rate_constants_R2": math.nan}, "completed", "failed"),
    ({"embedding_cluster_acc": 0.9}, "completed", "partial-k"),
    ({"MLP_node_slope_at_zero_ratio_1": 3.0}, "completed", "partial-k"),
    # each type on its own: 0.3 and 1.7 average to 1.0, but type 0 is out of [0.5, 2]
    ({"MLP_node_slope_at_zero_ratio_0": 0.3, "MLP_node_slope_at_zero_ratio_1": 1.7}, "completed", "partial-k"),
    ({"MLP_node_slope_at_zero_ratio_0": 0.5, "MLP_node_slope_at_zero_ratio_1": 2.0}, "completed", "converged"),
    ({"MLP_node_zero_rel_err_1": 0.11}, "completed", "partial-k"),
    ({"MLP_node_zero_rel_err_1": 0.1}, "completed", "converged"),
    ({"MLP_node_zero_rel_err_0": math.nan}, "completed", "partial-k"),
    ({"avg_slope_ratio": 3.0}, "completed", "converged"),  # the line-fit average no longer decides
    ({"rate_constants_R2": 0.8}, "completed", "partial-homeo"),
    ({"rate_constants_R2": 0.9}, "completed", "partial-homeo"),
    ({"rate_constants_R2": 0.8, "MLP_node_slope_at_zero_ratio_0": 0.3}, "completed", "partial"),
])
def test_classify(changes, status, label):
    assert labels.classify({**GOOD, **changes}, status) == label


def test_classify_thresholds_and_missing_truth():
    assert labels.classify({**GOOD, "embedding_cluster_acc": 0.9}, "completed",
                      labels.Thresholds(converged_cluster_acc=0.9)) == "converged"
    assert labels.classify({**GOOD, "MLP_node_zero_rel_err_0": 0.15}, "completed",
                           labels.Thresholds(baseline_rel_tol=0.2)) == "converged"
    assert labels.classify({"test_R2": 0.9}, "completed") == "unknown"


def test_homeostasis_needs_every_type_with_both_values():
    assert labels.homeostasis_ok(GOOD)
    without_zero = {key: value for key, value in GOOD.items() if key != "MLP_node_zero_rel_err_1"}
    assert not labels.homeostasis_ok(without_zero)
    old_style = {key: value for key, value in GOOD.items() if "zero" not in key}  # metrics of an earlier version
    assert not labels.homeostasis_ok(old_style)
    assert labels.classify(old_style, "completed") == "partial-k"


@pytest.mark.parametrize(("pearson", "r2", "diagnosis"), [
    (0.99, 0.95, "healthy"),
    (0.99, 0.6, "degenerate"),
    (0.96, 0.3, "degenerate"),
    (0.9, 0.1, "severely degenerate"),
    (0.3, 0.2, "failed"),
    (0.8, 0.6, "mixed"),
    (0.6, 0.2, "mixed"),
    (math.nan, 0.9, "unknown"),
])
def test_degeneracy(pearson, r2, diagnosis):
    gap, label = labels.degeneracy(pearson, r2)
    assert label == diagnosis
    if math.isfinite(pearson):
        assert gap == pytest.approx(pearson - r2)


@pytest.mark.parametrize(("ratios", "assessment"), [
    ([0.01, -0.02], "inactive"),
    ([0.9, 1.1], "correct"),
    ([0.9, 0.5], "partial"),
    ([1.5, 1.0], "partial"),
    ([1.0, 0.1], "wrong"),
    ([1.0, -1.0], "wrong"),
    ([4.0, 1.0], "wrong"),
    ([math.nan, 1.0], "unknown"),
])
def test_homeostasis_assessment(ratios, assessment):
    assert labels.homeostasis_assessment(ratios) == assessment
