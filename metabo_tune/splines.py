"""B-spline bases for the laws the solves fit without a form: the homeostasis h(c) of a group or a metabolite, and
the log–log slope of the form-free rate law. Clamped at the end breakpoints and held constant beyond them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.interpolate

Breakpoints = Callable[[np.ndarray, int], np.ndarray]  # (values, count) → increasing breakpoints over the values


def clamped_knots(breakpoints: np.ndarray, degree: int) -> np.ndarray:
    """A B-spline's knot vector on increasing `breakpoints`, the ends repeated so that it starts and ends there."""
    return np.concatenate([np.repeat(breakpoints[0], degree), breakpoints, np.repeat(breakpoints[-1], degree)])


def spline_basis(points: np.ndarray, breakpoints: np.ndarray, degree: int) -> np.ndarray:
    """[len(points), len(breakpoints) + degree − 1]: the B-splines of `degree` on `breakpoints` at `points`, each
    point held at the nearer end beyond them (the spline constant there). Degree 1: the hat functions of linear
    interpolation."""
    inside = np.clip(points, breakpoints[0], breakpoints[-1])
    return scipy.interpolate.BSpline.design_matrix(inside, clamped_knots(breakpoints, degree), degree).toarray()


def spread_breakpoints(values: np.ndarray, count: int) -> np.ndarray:
    """`count` quantiles of `values`, distinct; two a unit apart where the values do not spread."""
    breakpoints = np.unique(np.quantile(values, np.linspace(0.0, 1.0, count)))
    return breakpoints if len(breakpoints) > 1 else np.array([breakpoints[0], breakpoints[0] + 1.0])


def even_breakpoints(values: np.ndarray, count: int) -> np.ndarray:
    """`count` breakpoints evenly spaced from the least to the greatest of `values`; two a unit apart where the values
    do not spread."""
    low, high = float(np.min(values)), float(np.max(values))
    return np.linspace(low, high, count) if high > low else np.array([low, low + 1.0])


def mixed_breakpoints(values: np.ndarray, count: int) -> np.ndarray:
    """About `count` breakpoints: half at quantiles of `values` (where most data are), half evenly spaced over their
    range (the tails, where quantiles leave one span), distinct."""
    return np.unique(np.concatenate([spread_breakpoints(values, count // 2),
                                     even_breakpoints(values, count - count // 2)]))
