"""MLP_sub on a fixed grid of concentrations per order, interpolated to the batch.

The prediction loss needs the rate law at every (frame, metabolite-order pair) of the batch: on iJO1366 8 frames ×
1 778 pairs = 14 224 evaluations of a 64-wide MLP each iteration, three quarters of an iteration's time. The
batch's concentrations are measurements, so they lie in the data's range: MLP_sub evaluated at a few hundred
points per order spanning it, and interpolated linearly in c to each batch value, is the same law to interpolation
error at a fraction of the rows. Only MLP_sub's own output is interpolated; the law built on it (c^|s|·exp(g) in the
power form, the power |s| of repeated orders) is applied at the exact concentration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch

AUTO_POINTS = 512  # grid points per order under `graph_model.substrate_grid: auto`
AUTO_MIN_SAVING = 4  # auto grids an order only where the batch has at least this many times its points
AUTO_MIN_PAIRS = 1000  # ... and the order this many (metabolite, order) pairs: large networks only
_QUANTILE_SAMPLE = 1 << 20  # concentrations the quantiles are read from (evenly strided frames beyond that)


class GridRule(NamedTuple):
    """Which orders get a grid: `points` per order, for an order with at least `min_pairs` pairs whose batch values
    are at least `min_saving` × `points`."""

    points: int
    min_saving: int
    min_pairs: int


def grid_rule(setting: int | Literal["auto"]) -> GridRule:
    """The rule of `graph_model.substrate_grid`. `auto` grids only an order of a large network (AUTO_MIN_PAIRS) where
    that cuts its rows AUTO_MIN_SAVING-fold: the mission-sized networks keep the exact evaluation their results were
    measured with, even with a long prediction window or a large batch. A number of points grids every order where it
    cuts the rows at all; 0 none."""
    return GridRule(AUTO_POINTS, AUTO_MIN_SAVING, AUTO_MIN_PAIRS) if setting == "auto" else GridRule(setting, 1, 1)


def grid_points(seen: np.ndarray, points: int) -> np.ndarray:
    """A third of the points at the quantiles of `seen`, a third evenly spaced over its range and a third evenly
    spaced in log c from its smallest positive value (where a rate law bends most, and its data may be few),
    sorted, with points closer than 1e-6 of the range to their predecessor dropped."""
    low, high = float(seen.min()), float(seen.max())
    if high <= low:
        return np.array([low, low + 1.0])
    flat = seen.ravel()[::max(1, seen.size // _QUANTILE_SAMPLE)]
    smallest_positive = float(np.min(seen, where=seen > 0, initial=np.inf))  # no copy of the positive values
    even = points // 3
    logarithmic = (np.geomspace(smallest_positive, high, points // 3) if smallest_positive < high
                   else np.array([]))
    candidates = np.unique(np.concatenate([
        np.quantile(flat, np.linspace(0.0, 1.0, points - even - len(logarithmic))),
        np.linspace(low, high, even), logarithmic, [low, high]]))
    kept = candidates[np.concatenate([[True], np.diff(candidates) > 1e-6 * (high - low)])]
    kept[-1] = high
    return kept


@dataclass
class SubstrateGrid:
    """The gridded orders' points, concatenated (`conc`, `order`: MLP_sub's inputs), the pairs of those orders
    (`gridded`) and of the others (`exact`: too few pairs for a grid to save rows), and for each gridded pair where
    its order's points sit. `keys` are the points shifted by their order's offset, so that the points of all orders
    form one sorted sequence and one `searchsorted` places every batch value."""

    conc: torch.Tensor  # [R] float32
    order: torch.Tensor  # [R] float32
    keys: torch.Tensor  # [R] float64
    gridded: torch.Tensor  # [G] long: the pairs interpolated from the grid
    exact: torch.Tensor  # [E] long: the pairs MLP_sub evaluates itself
    restore: torch.Tensor  # [P] long: each pair's column in [gridded, exact]
    pair_offset: torch.Tensor  # [G] float64: the offset of each gridded pair's order
    pair_first: torch.Tensor  # [G] long: the first point of its order
    pair_last: torch.Tensor  # [G] long: the last point of its order that starts an interval

    @classmethod
    def from_data(cls, concentrations: np.ndarray, pair_metabolite: np.ndarray, pair_order: np.ndarray,
                  one_law: bool, rule: GridRule, batch_frames: int,
                  device: torch.device | str = "cpu") -> SubstrateGrid | None:
        """The grid over the concentrations each order's pairs take in the data ([frames, n]) for every order the
        `rule` grids, given `batch_frames` frames a batch; with `one_law` (repeated orders: MLP_sub(c, 1) serves
        every order) one grid at order 1 over all pairs. None where no order qualifies."""
        if rule.points < 1:
            return None
        laws = [(1.0, np.ones(len(pair_order), dtype=bool))] if one_law else [
            (float(value), pair_order == value) for value in np.unique(pair_order)]
        laws = [(value, pairs) for value, pairs in laws if pairs.sum() >= rule.min_pairs
                and batch_frames * pairs.sum() >= rule.min_saving * rule.points]
        if not laws:
            return None
        points = rule.points
        low = float(concentrations.min())
        span = float(concentrations.max()) - low + 1.0
        conc, order, keys, offsets, firsts, lasts, gridded = [], [], [], [], [], [], []
        for index, (value, pairs) in enumerate(laws):
            segment = grid_points(concentrations[:, pair_metabolite[pairs]], points)
            offset, first = index * span - low, sum(len(part) for part in conc)
            members = np.flatnonzero(pairs)
            gridded.append(members)
            offsets.append(np.full(len(members), offset))
            firsts.append(np.full(len(members), first))
            lasts.append(np.full(len(members), first + len(segment) - 2))
            conc.append(segment)
            order.append(np.full(len(segment), value))
            keys.append(segment + offset)
        gridded_pairs = np.concatenate(gridded)
        exact = np.setdiff1d(np.arange(len(pair_order)), gridded_pairs)
        restore = np.argsort(np.concatenate([gridded_pairs, exact]))

        def tensor(values: list[np.ndarray] | np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            array = np.concatenate(values) if isinstance(values, list) else values
            return torch.tensor(array, dtype=dtype, device=device)

        return cls(tensor(conc, torch.float32), tensor(order, torch.float32), tensor(keys, torch.float64),
                   tensor(gridded_pairs, torch.long), tensor(exact, torch.long), tensor(restore, torch.long),
                   tensor(offsets, torch.float64), tensor(firsts, torch.long), tensor(lasts, torch.long))

    def __len__(self) -> int:
        return self.conc.shape[0]

    def interpolate(self, values: torch.Tensor, conc: torch.Tensor) -> torch.Tensor:
        """`values` [R] at the grid's points, linearly interpolated in c to `conc` [..., G] (the gridded pairs' values,
        each at its pair's order; extrapolated from the end intervals outside the data's range)."""
        left = torch.searchsorted(self.keys, conc.double() + self.pair_offset, right=True) - 1
        left = torch.maximum(torch.minimum(left, self.pair_last), self.pair_first).flatten()
        low, high = self.conc.index_select(0, left), self.conc.index_select(0, left + 1)
        start = values.index_select(0, left)
        weight = (conc.flatten() - low) / (high - low)
        return (start + weight * (values.index_select(0, left + 1) - start)).view(conc.shape)
