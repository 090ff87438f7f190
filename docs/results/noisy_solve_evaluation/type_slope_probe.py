"""Where the GNN's type-0 slope at σ_m 0.05 comes from (docs/results.md, "Decensoring beside fast moves"; a
diagnostic: it reads the truth, as metrics do). For finished runs of search_spaces/noisy_rank_50.yaml, each
metabolite's own linear relaxation at the run's final k and with the model's own rates
(GroupSolve.relaxation_estimates over the group solve's rows), then each type's shared relaxation pooled over:
the run's group holding most of the type (as its head is fitted), the true members of the type (the types given),
and the median of the members' own rates. Writes type_slope_probe.csv beside it. The runs' networks are development
networks from then on.

    python docs/results/noisy_solve_evaluation/type_slope_probe.py RUN_DIR [RUN_DIR ...]
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from metabo_tune import simulate as sim
from metabo_tune.config import config_from_dict
from metabo_tune.group_solve import GroupSolve
from metabo_tune.train import LINEAR_HEAD_KNOTS, Trainer


def finished_run(run: Path) -> tuple[dict, sim.Dataset, Trainer]:
    """A finished run's config as written, its data as it trained on them, and its trainer at its last checkpoint."""
    raw = yaml.safe_load((run / "config.yaml").read_text())
    dataset = sim.load_or_simulate(config_from_dict(raw).simulation,
                                   measurement_noise_level=raw["training"]["measurement_noise_level"])
    trainer = Trainer(config_from_dict(raw), dataset.observed)
    trainer.load_checkpoint(run / "checkpoint.pt")
    return raw, dataset, trainer


def probe(run: Path) -> list[dict]:
    raw, dataset, trainer = finished_run(run)
    target, frame_mean, kept = trainer._weak_form_rows()
    with torch.no_grad():
        rates_per_k = (trainer.model.rates(trainer.conc) / torch.pow(10.0, trainer.model.log_k)).double().numpy()
        rate_constants = torch.pow(10.0, trainer.model.log_k.double()).numpy()
    groups, truth = trainer.type_groups.labels, dataset.truth
    solve = GroupSolve(rates_per_k, trainer.stoichiometry.astype(np.float64), trainer.conc.double().numpy(),
                       target.astype(np.float64), groups, LINEAR_HEAD_KNOTS, frame_mean, kept=kept)
    estimates, blocks = solve.relaxation_estimates(rate_constants)

    def pooled(members: np.ndarray) -> tuple[float, float]:
        rate, offset = np.linalg.solve(blocks[members].sum(0), np.einsum("nab,nb->a", blocks[members],
                                                                         estimates[members]))
        return rate, offset / rate

    rows = []
    for t, lam in enumerate(truth.lambda_per_type):
        group = np.bincount(groups[truth.types == t]).argmax()
        (group_rate, group_zero), (type_rate, type_zero) = pooled(groups == group), pooled(truth.types == t)
        rows.append({"network": raw["simulation"]["seed"], "type": t,
                     "others_in_group": int(((groups == group) & (truth.types != t)).sum()),
                     "group_rate_ratio": group_rate / lam, "group_zero": group_zero,
                     "true_members_rate_ratio": type_rate / lam, "true_members_zero": type_zero,
                     "median_own_rate_ratio": float(np.median(estimates[truth.types == t, 0])) / lam})
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)
    table = pd.DataFrame([row for run in sys.argv[1:] for row in probe(Path(run))])
    table.to_csv(Path(__file__).with_name("type_slope_probe.csv"), index=False)
    print(table.round(3).to_string(index=False))
