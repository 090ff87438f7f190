"""The decensoring's window (censoring.DECENSOR_HALF_WIDTH frames either side) on development networks, since its 3σ
ceiling (docs/results.md, "Decensoring beside fast moves"): the regression as shipped (rows weighted by noise) at each
half width, and the oracle of oracle_types.py. Writes decensor_width_dev.csv beside it.

    python docs/results/noisy_solve_evaluation/decensor_width_dev.py
"""

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from oracle_types import probe

from metabo_tune import censoring, metrics
from metabo_tune import simulate as sim
from metabo_tune.config import config_from_dict, load_config
from metabo_tune.regress import fit_config

ROOT = Path(__file__).resolve().parents[3]
NETWORKS = (8901, 8903, 8904, 8905, 8906, 8907, 8908, 8909, 8910, 8911, 8912, 8913, 8914, 8915, 8916)
HALF_WIDTHS = (1, 2, 3, 5)


def regression_row(network: int, level: float, half_width: int) -> dict:
    raw = load_config(ROOT / "search_spaces/noisy_rank_50.yaml").to_dict()
    raw["simulation"]["seed"], raw["training"]["measurement_noise_level"] = network, level
    dataset = sim.load_or_simulate(config_from_dict(raw).simulation, measurement_noise_level=level)
    fit, truth = fit_config(config_from_dict(raw), dataset.observed), dataset.truth
    laws = [np.bincount(fit.types[truth.types == t]).argmax() for t in range(2)]
    return {"probe": "regression", "half_width": half_width, "network": network, "sigma_m": level,
            "types": metrics.matched_accuracy(fit.types, truth.types), "n_types": len(fit.type_rate)} | {
        f"{key}_{t}": value for t in range(2) for key, value in (
            ("type_rate_ratio", fit.type_rate[laws[t]] / truth.lambda_per_type[t]),
            ("type_zero", fit.type_baselines[laws[t]]),
            ("median_rate_ratio", np.median(fit.relaxation_rate[truth.types == t]) / truth.lambda_per_type[t]))}


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for half_width in HALF_WIDTHS:
        censoring.decensored.__defaults__ = ((0,), half_width)
        for network in NETWORKS:
            for level in (0.01, 0.05):
                rows.append(regression_row(network, level, half_width))
                rows += [{"probe": "oracle", "half_width": half_width} | probe(network, level, draw, True)
                         for draw in range(2)]
    table = pd.DataFrame(rows)
    table.to_csv(Path(__file__).with_name("decensor_width_dev.csv"), index=False)
    print(table.groupby(["probe", "sigma_m", "half_width"])[["types", "type_rate_ratio_0", "type_zero_0",
                                                              "unweighted_misplaced", "weighted_misplaced"]]
          .mean().round(3).to_string())


if __name__ == "__main__":
    main()
