"""Which k of a finished iJO1366 run drifted (a diagnostic: it reads the truth, as metrics do). For every reaction, the
largest share of any of its metabolites' turnover (Σ_j |S_ij| v_j over time, true rates, every 10th frame) that it
carries, binned, with the fraction of the bin's reactions whose learned log10 k is more than half a decade off.
Writes ijo1366_drift_by_share.csv beside it.

    python docs/results/real_networks/ijo1366_drift_by_share.py RUN_DIR   # configs/e_coli_core.yaml on iJO1366
"""

import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from metabo_tune.config import load_config
from metabo_tune.simulate import load_or_simulate

CONFIG = Path(__file__).parents[3] / "configs" / "e_coli_core.yaml"
BINS = [1e-4, 1e-3, 1e-2, 1e-1, np.inf]  # a share of 1: the only reaction of some metabolite
OFF = 0.5  # decades


def main() -> None:
    cfg = load_config(CONFIG, ["simulation.network=iJO1366"])
    dataset = load_or_simulate(cfg.simulation)
    log_k = torch.load(Path(sys.argv[1]) / "checkpoint.pt", weights_only=False)["model"]["log_k"].double().numpy()
    net, truth = dataset.observed.network, dataset.truth.log_k
    conc = dataset.observed.trajectory.concentrations[::10]
    index, order = net.padded_substrates()
    padded = np.concatenate([conc, np.ones((len(conc), 1))], axis=1)  # index n: the padding's constant 1
    rates = 10.0 ** truth * np.where(order > 0, padded[:, np.minimum(index, conc.shape[1])] ** order, 1.0).prod(-1)
    stoichiometry = np.abs(net.stoichiometry)
    turnover = stoichiometry @ rates.T  # [metabolites, frames]
    share = np.array([(stoichiometry[np.flatnonzero(column), j][:, None] * rates[:, j][None]
                       / turnover[np.flatnonzero(column)]).mean(1).max() for j, column in enumerate(stoichiometry.T)])
    off = np.abs(log_k - truth) > OFF
    rows = [{"share_of_turnover_low": low, "share_of_turnover_high": high,
             "reactions": int(((share >= low) & (share < high)).sum()),
             "fraction_more_than_half_a_decade_off": float(off[(share >= low) & (share < high)].mean())}
            for low, high in itertools.pairwise(BINS) if ((share >= low) & (share < high)).any()]
    table = pd.DataFrame(rows).round({"fraction_more_than_half_a_decade_off": 3})
    table.to_csv(Path(__file__).with_name("ijo1366_drift_by_share.csv"), index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
