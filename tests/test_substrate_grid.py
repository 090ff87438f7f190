import numpy as np
import pytest
import torch

from metabo_tune.substrate_grid import (
    AUTO_MIN_PAIRS,
    AUTO_MIN_SAVING,
    AUTO_POINTS,
    GridRule,
    SubstrateGrid,
    grid_points,
    grid_rule,
)


def test_grid_points_span_the_data_sorted_and_dense_where_the_data_are_and_at_small_c():
    seen = np.random.default_rng(0).lognormal(0.0, 1.0, size=(500, 20))
    points = grid_points(seen, 60)
    assert points[0] == seen.min() and points[-1] == seen.max()
    assert np.all(np.diff(points) > 0) and len(points) <= 62
    assert np.sum(points < np.median(seen)) >= 10  # half the quantiles' third lies below the median
    assert np.diff(points).max() <= (seen.max() - seen.min()) / 19 * (1 + 1e-9)  # the even third bounds every gap
    ratios = points[1:] / points[:-1]
    assert ratios.max() <= (seen.max() / seen.min()) ** (1 / 19) * (1 + 1e-9)  # the log third bounds every ratio


def test_a_constant_concentration_still_gives_an_interval():
    np.testing.assert_array_equal(grid_points(np.full((10, 3), 2.5), 16), [2.5, 3.5])
    with_zeros = grid_points(np.concatenate([np.zeros(5), np.linspace(0.01, 1.0, 50)]), 30)
    assert with_zeros[0] == 0.0 and with_zeros[1] == pytest.approx(0.01)  # log part from the smallest positive


def test_auto_grids_large_networks_only_and_a_number_of_points_any_order_it_saves_rows_on():
    assert grid_rule("auto") == GridRule(AUTO_POINTS, AUTO_MIN_SAVING, AUTO_MIN_PAIRS)
    assert grid_rule(40) == GridRule(40, 1, 1)
    conc, metabolite, order = many_pairs_of_order_one()
    # 36 pairs of order 1 with a batch of 1 000 frames would save rows 70-fold, but the network is small
    assert SubstrateGrid.from_data(conc, metabolite, order, False, grid_rule("auto"), batch_frames=1000) is None
    assert SubstrateGrid.from_data(conc, metabolite, order, False, grid_rule(0), batch_frames=1000) is None


def many_pairs_of_order_one():
    """30 metabolites over 200 frames; 40 pairs: 36 of order 1, 3 of order 2, 1 of order 3."""
    rng = np.random.default_rng(1)
    conc = rng.uniform(0.5, 9.0, size=(200, 30))
    metabolite = np.concatenate([np.arange(30), np.arange(6), np.arange(3), [7]])
    order = np.concatenate([np.ones(36), np.full(3, 2.0), [3.0]])
    return conc, metabolite, order


def test_only_the_orders_with_enough_pairs_are_gridded_and_the_rest_kept_exact():
    conc, metabolite, order = many_pairs_of_order_one()
    grid = SubstrateGrid.from_data(conc, metabolite, order, one_law=False, rule=GridRule(16, 4, 1), batch_frames=8)
    # order 1: 8 × 36 values ≥ 4 × 16; order 2: 8 × 3 < 64; order 3: 8 < 64
    assert sorted(grid.gridded.tolist()) == list(range(36))
    assert grid.exact.tolist() == [36, 37, 38, 39]
    assert set(grid.order.tolist()) == {1.0}
    columns = torch.cat([grid.gridded, grid.exact]).index_select(0, grid.restore)
    assert columns.tolist() == list(range(40))  # restore puts every pair back in its column
    assert SubstrateGrid.from_data(conc, metabolite, order, one_law=False, rule=GridRule(16, 4, 1),
                                   batch_frames=1) is None  # no order saves rows


def test_repeated_orders_share_one_grid_at_order_one():
    conc, metabolite, order = many_pairs_of_order_one()
    grid = SubstrateGrid.from_data(conc, metabolite, order, one_law=True, rule=GridRule(16, 1, 1), batch_frames=8)
    assert grid.exact.numel() == 0 and grid.gridded.numel() == 40
    assert set(grid.order.tolist()) == {1.0}


@pytest.mark.parametrize("function, tolerance", [(lambda c, s: 0.3 * c * s - 1.0, 1e-5),
                                                 (lambda c, s: np.log(c) * s, 5e-4)])
def test_interpolation_reproduces_each_orders_values(function, tolerance):
    """Linear in c: exact up to float32; smooth: within the grid's interpolation error. Every order has its own points:
    the same concentration reads a different value at order 2."""
    conc, metabolite, order = many_pairs_of_order_one()
    grid = SubstrateGrid.from_data(conc, metabolite, order, one_law=False, rule=GridRule(192, 1, 1), batch_frames=200)
    assert grid.exact.numel() == 0
    values = torch.tensor(function(grid.conc.double().numpy(), grid.order.double().numpy()), dtype=torch.float32)
    batch = torch.tensor(conc[[3, 50, 199]][:, metabolite], dtype=torch.float32)
    pair_order = order[grid.gridded.numpy()]
    gridded_conc = batch.index_select(1, grid.gridded)
    expected = function(gridded_conc.double().numpy(), pair_order[None, :])
    np.testing.assert_allclose(grid.interpolate(values, gridded_conc).numpy(), expected, rtol=0, atol=tolerance)


def test_outside_the_data_the_end_intervals_extend_linearly():
    conc, metabolite, order = many_pairs_of_order_one()
    grid = SubstrateGrid.from_data(conc, metabolite, order, one_law=True, rule=GridRule(32, 1, 1), batch_frames=8)
    values = 2.0 * grid.conc + 1.0
    outside = torch.full((1, 40), float(conc.max()) + 3.0)
    np.testing.assert_allclose(grid.interpolate(values, outside).numpy(), 2.0 * outside.numpy() + 1.0, rtol=1e-5)
    below = torch.zeros((1, 40))
    np.testing.assert_allclose(grid.interpolate(values, below).numpy(), 1.0, atol=1e-5)


def test_gradients_reach_the_two_points_around_each_value_by_their_weights():
    conc, metabolite, order = many_pairs_of_order_one()
    grid = SubstrateGrid.from_data(conc, metabolite, order, one_law=True, rule=GridRule(8, 1, 1), batch_frames=1)
    values = torch.zeros(len(grid), requires_grad=True)
    low, high = grid.conc[2].item(), grid.conc[3].item()
    point = torch.full((1, 40), 0.25 * low + 0.75 * high)
    grid.interpolate(values, point).sum().backward()
    expected = torch.zeros(len(grid))
    expected[2], expected[3] = 0.25 * 40, 0.75 * 40
    np.testing.assert_allclose(values.grad.numpy(), expected.numpy(), rtol=1e-4)
