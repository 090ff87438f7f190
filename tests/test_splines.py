import numpy as np
import pytest

from metabo_tune.group_solve import _hat_basis
from metabo_tune.splines import even_breakpoints, mixed_breakpoints, spline_basis, spread_breakpoints


def test_the_homeostasis_basis_holds_cubics_and_is_constant_beyond_its_ends():
    breakpoints = np.array([1.0, 2.0, 4.0, 5.0, 9.0])
    inside = np.linspace(1.0, 9.0, 40)
    basis = spline_basis(inside, breakpoints, 3)
    cubic = 0.3 - 0.2 * inside + 0.05 * inside ** 3
    coefficients = np.linalg.lstsq(basis, cubic, rcond=None)[0]
    np.testing.assert_allclose(basis @ coefficients, cubic, atol=1e-10)
    ends = spline_basis(np.array([-3.0, 1.0, 9.0, 20.0]), breakpoints, 3) @ coefficients
    assert ends[0] == pytest.approx(ends[1]) and ends[2] == pytest.approx(ends[3])


def test_degree_one_is_linear_interpolation():
    breakpoints = np.array([1.0, 2.5, 3.0, 7.0])
    points = np.array([0.0, 1.0, 1.7, 2.9, 5.0, 7.0, 9.0])
    np.testing.assert_allclose(spline_basis(points, breakpoints, 1), _hat_basis(points, breakpoints), atol=1e-14)


def test_breakpoints_are_distinct_quantiles_and_two_where_the_values_do_not_spread():
    np.testing.assert_array_equal(spread_breakpoints(np.array([1.0, 1.0, 2.0, 3.0]), 3), [1.0, 1.5, 3.0])
    np.testing.assert_array_equal(spread_breakpoints(np.full(5, 2.0), 4), [2.0, 3.0])


def test_even_breakpoints_span_the_values_and_two_where_they_do_not_spread():
    np.testing.assert_allclose(even_breakpoints(np.array([3.0, -1.0, 0.5, 2.0]), 5), [-1.0, 0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(even_breakpoints(np.full(5, 2.0), 4), [2.0, 3.0])


def test_mixed_breakpoints_cover_the_bulk_by_quantiles_and_the_tail_evenly():
    values = np.concatenate([np.linspace(0.0, 1.0, 99), [10.0]])  # one far excursion
    breakpoints = mixed_breakpoints(values, 8)
    np.testing.assert_allclose(breakpoints[breakpoints > 1.0], [10 / 3, 20 / 3, 10.0])  # the tail: evenly spaced
    np.testing.assert_allclose(breakpoints[breakpoints <= 1.0], np.quantile(values, [0, 1 / 3, 2 / 3]))  # the bulk
    assert len(spread_breakpoints(values, 8)[spread_breakpoints(values, 8) > 1.0]) == 1  # quantiles alone: one span
