"""Why the free forms' embeddings leave a few metabolites off their type, and what grouping them does (a
diagnostic: it reads the truth, as metrics do; training never does).

For a finished run without type grouping it takes the embeddings' density clusters (the metric's), each cluster's
median embedding as its centre, and asks for every metabolite outside its type's cluster which centre's head fits
its residual dc/dt − reactions(c) best over every frame: the question `type_groups.group_types` asks. It prints
those metabolites and the share of all metabolites whose best centre is their own type's.

    python docs/results/type_grouping_probe.py RUN_DIR [RUN_DIR ...] [--csv OUT.csv]

docs/results/type_grouping_probe.csv: the attached free-form runs of docs/results/free_forms_development/runs.csv
without grouping (network 42, training seed 77; the checkpoints are kept outside git).
"""

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diagnostic_cli import main_over_runs

from metabo_tune.config import load_config
from metabo_tune.simulate import load_or_simulate
from metabo_tune.train import Trainer
from metabo_tune.type_groups import density_clusters


def probe(run: Path) -> pd.DataFrame:
    cfg = load_config(run / "config.yaml")
    dataset = load_or_simulate(cfg.simulation, measurement_noise_level=cfg.training.measurement_noise_level)
    trainer = Trainer(cfg, dataset.observed, device="cpu")
    trainer.model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=False)["model"])
    types = dataset.truth.types
    embeddings = trainer.model.embedding.detach().numpy().astype(np.float64)
    clusters = density_clusters(embeddings)
    centres = np.stack([np.median(embeddings[clusters == g], axis=0) for g in range(clusters.max() + 1)])
    fit = trainer.homeostasis_losses.centre_fit(centres)  # [metabolite, cluster]
    majority = {t: np.bincount(clusters[(types == t) & (clusters >= 0)]).argmax() for t in np.unique(types)}
    own_cluster = np.array([majority[t] for t in types])
    best = fit.argmin(1)
    others = fit.copy()
    others[np.arange(len(types)), own_cluster] = np.inf
    off = np.flatnonzero(clusters != own_cluster)
    conc = dataset.observed.trajectory.concentrations
    return pd.DataFrame({
        "run": run.name, "metabolite": off, "type": types[off], "cluster": clusters[off],
        "c_mean": conc[:, off].mean(0), "c_sd": conc[:, off].std(0),
        "fit_own_type_centre": fit[off, own_cluster[off]],
        "fit_best_other_centre": others[off].min(1),
        "best_centre_is_own_type": best[off] == own_cluster[off],
        "run_share_best_centre_own_type": float(np.mean(best == own_cluster)),
    })


if __name__ == "__main__":
    main_over_runs(__doc__, probe)
