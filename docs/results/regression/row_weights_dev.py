"""The regression with and without `regression.row_weights: noise` on development networks (docs/results.md, "Rows
weighted by their noise"). Writes row_weights_dev.csv beside it: per network and σ_m, the mixture's type accuracy and
number of types, and per true type the median of the per-metabolite relaxation rate over λ and of the zeros.

    python docs/results/regression/row_weights_dev.py
"""

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from metabo_tune import metrics
from metabo_tune import simulate as sim
from metabo_tune.config import config_from_dict, load_config
from metabo_tune.regress import fit_config

ROOT = Path(__file__).resolve().parents[3]
NETWORKS = (8901, 8903, 8904, 8905, 8906, 8907, 8908, 8909, 8910, 8911, 8912, 8913, 8914, 8915, 8916)


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for network in NETWORKS:
        for level in (0.01, 0.05):
            raw = load_config(ROOT / "search_spaces/noisy_rank_50.yaml").to_dict()
            raw["simulation"]["seed"], raw["training"]["measurement_noise_level"] = network, level
            dataset = sim.load_or_simulate(config_from_dict(raw).simulation, measurement_noise_level=level)
            truth = dataset.truth
            for weights in ("none", "noise"):
                raw["regression"]["row_weights"] = weights
                fit = fit_config(config_from_dict(raw), dataset.observed)
                rows.append({"network": network, "sigma_m": level, "row_weights": weights,
                             "types": metrics.matched_accuracy(fit.types, truth.types), "n_types": len(fit.type_rate),
                             "solve_s": fit.solve_time_s}
                            | {f"rate_ratio_{t}": np.median(fit.relaxation_rate[truth.types == t])
                               / truth.lambda_per_type[t] for t in range(2)}
                            | {f"zero_{t}": np.median(fit.baselines[truth.types == t]) for t in range(2)})
    table = pd.DataFrame(rows)
    table.to_csv(Path(__file__).with_name("row_weights_dev.csv"), index=False)
    print(table.pivot_table(index=["sigma_m", "network"], columns="row_weights",
                            values=["types", "n_types", "rate_ratio_0"]).round(3).to_string())


if __name__ == "__main__":
    main()
