"""The bias measurement noise puts into the linear head's start: the shared relaxation fit (one λ and b
for all metabolites, least squares on the left-null-space projections of dc/dt, as the trainer starts
the head) on the mission network's training trajectory, measured with noise σ_m as the predecessor
defines it, fitted on single frames and on sliding W-frame means (the weak form, training.moment_window).

    python docs/results/noise_bias.py   # writes docs/results/noise_bias.csv
"""

from pathlib import Path

import numpy as np
import pandas as pd

from metabo_tune.config import load_config
from metabo_tune.homeostasis_losses import shared_relaxation_fit, sliding_mean
from metabo_tune.simulate import add_measurement_noise, left_null_space, load_or_simulate

LEVELS = (0.0, 0.001, 0.01, 0.05, 0.1)
WINDOWS = (1, 10, 30, 100, 300)


def main() -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "joint_recovery.yaml")
    dataset = load_or_simulate(config.simulation)
    trajectory = dataset.observed.trajectory
    null_space = left_null_space(dataset.observed.network.stoichiometry)
    rows = []
    for level in LEVELS:
        noisy = add_measurement_noise(trajectory, level, np.random.default_rng(1)) if level else trajectory
        for window in WINDOWS:
            rate, baseline = shared_relaxation_fit(sliding_mean(noisy.concentrations, window),
                                                   sliding_mean(noisy.derivatives, window), null_space)
            rows.append({"measurement_noise_level": level, "moment_window": window, "rate": rate,
                         "baseline": baseline})
    table = pd.DataFrame(rows)
    table.to_csv(Path(__file__).with_suffix(".csv"), index=False)
    print(table.pivot(index="measurement_noise_level", columns="moment_window", values="rate").to_string(
        float_format=lambda x: f"{x:.5f}"))


if __name__ == "__main__":
    main()
