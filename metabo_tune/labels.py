"""The labels of a trial from its metric values: the mission's classification, the degeneracy
diagnosis and the homeostasis assessment. Pure Python (no torch), so the search's tree, strategies
and reward can use them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

Metrics = dict[str, float | int | str]


@dataclass(frozen=True)
class Thresholds:
    """slope_ratio_min/max bound every type's MLP_node_slope_at_zero_ratio_t, baseline_rel_tol every type's
    MLP_node_zero_rel_err_t; failed_slope_ratio is a floor on avg_slope_ratio (homeostasis inactive)."""

    converged_r2: float = 0.9
    slope_ratio_min: float = 0.5
    slope_ratio_max: float = 2.0
    converged_cluster_acc: float = 1.0
    failed_r2: float = 0.5
    failed_slope_ratio: float = 0.1
    baseline_rel_tol: float = 0.1


LABELS = ("converged", "partial-k", "partial-homeo", "partial", "failed", "unknown")


_SLOPE_AT_ZERO = re.compile(r"MLP_node_slope_at_zero_ratio_(\d+)")
_ZERO_ERROR = re.compile(r"MLP_node_zero_rel_err_(\d+)")


def _per_type(metrics: Metrics, pattern: re.Pattern) -> dict[int, float]:
    return {int(match[1]): float(value) for key, value in metrics.items() if (match := pattern.fullmatch(key))}


def homeostasis_ok(metrics: Metrics, thresholds: Thresholds | None = None) -> bool:
    """Every type on its own: its slope at its zero within [slope_ratio_min, slope_ratio_max] of the true
    slope, and its zero within baseline_rel_tol of the true baseline. No type, or a type with a missing
    value, fails."""
    th = thresholds or Thresholds()
    ratios, errors = _per_type(metrics, _SLOPE_AT_ZERO), _per_type(metrics, _ZERO_ERROR)
    return bool(ratios) and ratios.keys() == errors.keys() and all(
        th.slope_ratio_min <= ratios[t] <= th.slope_ratio_max and errors[t] <= th.baseline_rel_tol for t in ratios)


def classify(metrics: Metrics, status: str, thresholds: Thresholds | None = None) -> str:
    """The mission's joint-recovery label: converged needs rate_constants_R2 > converged_r2, every type's
    homeostasis right (homeostasis_ok) and embedding_cluster_acc >= converged_cluster_acc; failed is R² below
    failed_r2 or avg_slope_ratio below failed_slope_ratio. Missing or nan values never pass a threshold."""
    th = thresholds or Thresholds()
    if status in ("diverged", "error"):
        return "failed"
    if "rate_constants_R2" not in metrics:
        return "unknown"
    r2 = float(metrics["rate_constants_R2"])
    ratio = float(metrics.get("avg_slope_ratio", math.nan))
    acc = float(metrics.get("embedding_cluster_acc", math.nan))
    if not (r2 >= th.failed_r2 and ratio >= th.failed_slope_ratio):
        return "failed"
    k_ok = r2 > th.converged_r2
    homeo_ok = homeostasis_ok(metrics, th)
    if k_ok and homeo_ok and acc >= th.converged_cluster_acc:
        return "converged"
    if k_ok:
        return "partial-k"
    if homeo_ok:
        return "partial-homeo"
    return "partial"


def degeneracy(test_pearson: float, r2: float) -> tuple[float, str]:
    """(gap, diagnosis) with gap = test_pearson − rate_constants_R2 and the bands of the reference's
    strategy rules (exploration.md §3.1), checked in this order:

    healthy              pearson > 0.95, R² > 0.9, gap < 0.1
    degenerate           pearson > 0.95, 0.3 ≤ R² ≤ 0.9 (dynamics right, parameters wrong)
    severely degenerate  R² < 0.3 and gap > 0.7
    failed               pearson < 0.5 and R² < 0.5
    mixed                none of the above (e.g. pearson 0.5–0.95 with a middling R²)
    unknown              either input is nan (no held-out trajectory, or no truth)
    """
    gap = test_pearson - r2
    if not (math.isfinite(test_pearson) and math.isfinite(r2)):
        return gap, "unknown"
    if test_pearson > 0.95 and r2 > 0.9 and gap < 0.1:
        return gap, "healthy"
    if test_pearson > 0.95 and 0.3 <= r2 <= 0.9:
        return gap, "degenerate"
    if r2 < 0.3 and gap > 0.7:
        return gap, "severely degenerate"
    if test_pearson < 0.5 and r2 < 0.5:
        return gap, "failed"
    return gap, "mixed"


def _slope_band(ratio: float) -> int:
    if 0.8 <= ratio <= 1.2:
        return 0
    if 0.3 <= ratio <= 3.0:
        return 1
    return 2


def homeostasis_assessment(slope_ratios: list[float]) -> str:
    """'inactive' when every type's slope ratio is ~0, else the band of the worst type:
    correct 0.8–1.2, partial 0.3–0.8 or 1.2–3, wrong otherwise (exploration.md §3.1)."""
    if not slope_ratios or not all(math.isfinite(r) for r in slope_ratios):
        return "unknown"
    if all(abs(r) < 0.05 for r in slope_ratios):
        return "inactive"
    return ("correct", "partial", "wrong")[max(_slope_band(r) for r in slope_ratios)]
