"""Why a trained run leaves a few metabolites outside their type's cluster (a diagnostic: it reads the
truth, as metrics do; training never does).

For each metabolite it fits one relaxation −λ(c − b) by least squares to the residual the residual fit
sees, dc/dt − reactions(c), over the run's windows (`moment_window`, `moment_window_shape`), twice: with
the trained model's reactions and with the true ones. It then asks which type's true (λ, b) explains
that residual better. A metabolite whose true-reaction residual points to its own type but whose trained
residual points to the other was misled by the error of the trained reactions, not by the data: the
weak form cannot separate it until the reaction fit improves there.

    python docs/results/residual_contamination.py RUN_DIR [RUN_DIR ...] [--csv OUT.csv]

docs/results/residual_contamination.csv: the weak-form runs of the noise curve that missed "converged"
by their embeddings (docs/results/noise_curve/weak_form/runs/, with the checkpoints kept outside git).

RUN_DIR is a trial's output directory (config.yaml and checkpoint.pt). One row per metabolite that is
outside its type's cluster or whose trained residual fits the wrong type.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diagnostic_cli import main_over_runs

from metabo_tune.config import load_config
from metabo_tune.homeostasis_losses import window_means
from metabo_tune.simulate import load_or_simulate, rate_law_rhs
from metabo_tune.train import Trainer
from metabo_tune.type_groups import density_clusters


def relaxation_fits(conc: np.ndarray, residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per metabolite (λ, b) of residual ≈ −λ(c − b), least squares over the rows."""
    c_mean, r_mean = conc.mean(0), residual.mean(0)
    lam = -((conc - c_mean) * (residual - r_mean)).mean(0) / (conc - c_mean).var(0)
    return lam, c_mean + r_mean / lam


def type_losses(conc: np.ndarray, residual: np.ndarray, lam: np.ndarray, base: np.ndarray) -> np.ndarray:
    """[metabolites, types]: mean square of residual + λ_t(c − b_t) for each type's true (λ_t, b_t)."""
    return np.stack([np.mean((residual + rate * (conc - b)) ** 2, axis=0)
                     for rate, b in zip(lam, base, strict=True)], 1)


def diagnose(run: Path) -> pd.DataFrame:
    cfg = load_config(run / "config.yaml")
    dataset = load_or_simulate(cfg.simulation, measurement_noise_level=cfg.training.measurement_noise_level)
    trainer = Trainer(cfg, dataset.observed, device="cpu")
    trainer.model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=False)["model"])
    trajectory, truth = dataset.observed.trajectory, dataset.truth
    conc = trajectory.concentrations
    with torch.no_grad():
        chunks = torch.split(torch.as_tensor(conc, dtype=torch.float32), 256)
        trained = torch.cat([trainer.model.reaction_part(chunk) for chunk in chunks]).double().numpy()
    exact = rate_law_rhs(conc, dataset.observed.network, truth.log_k, np.zeros_like(conc))
    window, shape = cfg.training.moment_window, cfg.training.moment_window_shape
    labels = density_clusters(trainer.model.embedding.detach().numpy())
    majority = {t: np.bincount(labels[(truth.types == t) & (labels >= 0)]).argmax() for t in np.unique(truth.types)}
    outside = np.array([labels[i] != majority[t] for i, t in enumerate(truth.types)])
    rows = {}
    for name, reactions in (("trained", trained), ("true", exact)):
        c, residual = window_means(conc, trajectory.derivatives - reactions, window, shape)
        lam, base = relaxation_fits(c, residual)
        losses = type_losses(c, residual, truth.lambda_per_type, truth.baseline_per_type)
        rows[name] = (lam, base, losses.argmin(1), losses[np.arange(len(lam)), truth.types])
    wrong = rows["trained"][2] != truth.types
    picked = np.flatnonzero(outside | wrong)
    return pd.DataFrame({
        "run": run.name, "metabolite": picked, "type": truth.types[picked], "outside_cluster": outside[picked],
        "c_mean": conc[:, picked].mean(0), "c_sd": conc[:, picked].std(0),
        "lambda_trained": rows["trained"][0][picked], "b_trained": rows["trained"][1][picked],
        "fits_type_trained": rows["trained"][2][picked], "own_type_loss_trained": rows["trained"][3][picked],
        "lambda_true_reactions": rows["true"][0][picked], "b_true_reactions": rows["true"][1][picked],
        "fits_type_true_reactions": rows["true"][2][picked], "own_type_loss_true_reactions": rows["true"][3][picked],
    })


if __name__ == "__main__":
    main_over_runs(__doc__, diagnose)
