"""How sharply do the data determine each metabolite's type, and how sharp is the learned fit? (A diagnostic: it
reads the truth, as metrics do; training never does.)

With the true forms known (the true f and each type's true h), dc/dt is linear in k. For every metabolite i this
switches i's homeostasis to the other type's, refits every k by least squares, and reports the smallest misfit the
data then allow (`flip_misfit_rms`, the RMS over every frame and metabolite; 0 for the true assignment on exact
data). Rate constants absorb part of the switched homeostasis (`absorbed`: the share of its RMS that the refit
removes). When a finished run's checkpoint is there, it adds the run's own fit error, dc/dt − model(c) over the same
entries (`learned_fit_rms`), and whether its type groups put i with its type's majority (`grouped_right`): a type
can only be read from the data where the learned fit is well below the flip's misfit.

    python docs/results/type_identifiability.py RUN_DIR [RUN_DIR ...] [--csv OUT.csv]

Two types only (the switch is to the other one).

docs/results/type_identifiability.csv: the free forms' evaluation runs on network 5004 (the five Michaelis–Menten
points, configs/free_forms.yaml with the conservation loss, training seed 2026) and on 5001 (mass action), from
docs/results/free_forms_evaluation/ (the checkpoints are kept outside git).
"""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diagnostic_cli import main_over_runs

from metabo_tune.config import load_config
from metabo_tune.simulate import load_or_simulate, substrate_function
from metabo_tune.train import Trainer


def probe(run: Path) -> pd.DataFrame:
    cfg = load_config(run / "config.yaml")
    dataset = load_or_simulate(cfg.simulation, measurement_noise_level=cfg.training.measurement_noise_level)
    truth, network = dataset.truth, dataset.observed.network
    conc = dataset.observed.trajectory.concentrations.astype(np.float64)
    deriv = dataset.observed.trajectory.derivatives.astype(np.float64)
    index, order = network.padded_substrates()
    padded = np.concatenate([substrate_function(conc, truth.michaelis_K), np.ones((len(conc), 1))], axis=1)
    per_k = np.prod(padded[:, index] ** order, axis=-1)  # [frames, reactions]: each rate divided by its k
    stoich = network.stoichiometry
    gram = (stoich.T @ stoich) * (per_k.T @ per_k)  # Σ over frames and metabolites of the design's column products

    def misfit(target: np.ndarray) -> float:
        k = np.linalg.lstsq(gram, np.sum(per_k * (target @ stoich), axis=0), rcond=1e-13)[0]
        return float(np.sqrt(np.mean(((per_k * k) @ stoich.T - target) ** 2)))

    true_h = truth.homeostasis(conc)
    rows = []
    for i in range(conc.shape[1]):
        switched = truth.types.copy()
        switched[i] = 1 - switched[i]
        change = dataclasses.replace(truth, types=switched).homeostasis(conc) - true_h
        flip = misfit(deriv - true_h - change)
        rows.append({"run": run.name, "metabolite": i, "type": int(truth.types[i]),
                     "c_median": float(np.median(conc[:, i])), "c_max": float(conc[:, i].max()),
                     "flip_misfit_rms": flip, "absorbed": 1 - flip / float(np.sqrt(np.mean(change ** 2))),
                     "true_fit_rms": misfit(deriv - true_h)})
    table = pd.DataFrame(rows).round({"c_median": 4, "c_max": 4})
    checkpoint = run / "checkpoint.pt"
    if checkpoint.exists():
        trainer = Trainer(cfg, dataset.observed, device="cpu")
        state = torch.load(checkpoint, weights_only=False)
        trainer.model.load_state_dict(state["model"])
        with torch.no_grad():
            model = trainer.model(torch.tensor(conc, dtype=torch.float32)).numpy().astype(np.float64)
        table["learned_fit_rms"] = float(np.sqrt(np.mean((model - deriv) ** 2)))
        table["learned_column_fit_rms"] = np.sqrt(np.mean((model - deriv) ** 2, axis=0))
        if state.get("type_groups") is not None:
            labels = np.asarray(state["type_groups"]["labels"])
            majority = {t: np.bincount(labels[truth.types == t]).argmax() for t in (0, 1)}
            table["grouped_right"] = [labels[i] == majority[t] for i, t in enumerate(truth.types)]
    return table.sort_values(["run", "flip_misfit_rms"])


if __name__ == "__main__":
    main_over_runs(__doc__, probe)
