import math

import pytest

from metabo_tune import labels

# --------------------------------------------------------------------------------------------
# Labels

GOOD = {"rate_constants_R2": 0.95, "avg_slope_ratio": 1.0, "embedding_cluster_acc": 1.0}


@pytest.mark.parametrize(("changes", "status", "label"), [
    ({}, "completed", "converged"),
    ({}, "diverged", "failed"),
    ({}, "error", "failed"),
    ({"rate_constants_R2": 0.4}, "completed", "failed"),
    ({"avg_slope_ratio": 0.05}, "completed", "failed"),
    ({"rate_constants_R2": math.nan}, "completed", "failed"),
    ({"embedding_cluster_acc": 0.9}, "completed", "partial-k"),
    ({"avg_slope_ratio": 3.0}, "completed", "partial-k"),
    ({"rate_constants_R2": 0.8}, "completed", "partial-homeo"),
    ({"rate_constants_R2": 0.9}, "completed", "partial-homeo"),
    ({"rate_constants_R2": 0.8, "avg_slope_ratio": 0.3}, "completed", "partial"),
])
def test_classify(changes, status, label):
    assert labels.classify({**GOOD, **changes}, status) == label


def test_classify_thresholds_and_missing_truth():
    assert labels.classify({**GOOD, "embedding_cluster_acc": 0.9}, "completed",
                      labels.Thresholds(converged_cluster_acc=0.9)) == "converged"
    assert labels.classify({"test_R2": 0.9}, "completed") == "unknown"


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
