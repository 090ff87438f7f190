"""The form-free fit alone (metabo_tune.free_regress, the GNN's warm start) on the evaluation's data: its k and f
against the truth, so the table can say what the GNN adds. Writes free_fit_alone_<seeds>.csv beside this script.

    python docs/results/real_networks/e_coli_core_free_forms_evaluation/free_fit_alone.py [SEED,SEED,...]
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from metabo_tune.config import load_config
from metabo_tune.free_regress import fit_free_config
from metabo_tune.simulate import load_or_simulate

ROOT = Path(__file__).resolve().parents[4]
POINTS = {"mass action": []} | {
    f"MM K {K}, w {w}": ["simulation.substrate_kinetics=michaelis_menten", f"simulation.michaelis_K={K}",
                         "simulation.homeostasis_form=saturating", f"simulation.homeostasis_width={w}"]
    for K, w in [(1, 2), (3, 2), (10, 2), (3, 1), (3, 4)]}

SEEDS = [int(seed) for seed in (sys.argv[1] if len(sys.argv) > 1 else "8104,8105,8106").split(",")]
rows = []
for point, overrides in POINTS.items():
    for seed in SEEDS:
        cfg = load_config(ROOT / "configs/e_coli_core_free_forms.yaml", [*overrides, f"simulation.seed={seed}"])
        dataset = load_or_simulate(cfg.simulation)
        fit = fit_free_config(cfg, dataset.observed)
        usable = dataset.identifiability.identifiable & (fit.rate_constants > 0)
        truth = dataset.truth.log_k[usable]
        r2 = 1.0 - np.sum((fit.log_k[usable] - truth) ** 2) / np.sum((truth - truth.mean()) ** 2)
        conc = dataset.observed.trajectory.concentrations
        where = np.quantile(conc[conc > 0], np.linspace(0.01, 0.99, 200))
        fitted, true = np.log10(fit.substrate(where)), np.log10(dataset.truth.substrate(where))
        fitted, true = fitted - fitted.mean(), true - true.mean()
        shape = 1.0 - np.sum((fitted - true) ** 2) / np.sum(true ** 2)
        rows.append({"point": point, "seed": seed, "k_positive": int(usable.sum()),
                     "identifiable": int(dataset.identifiability.identifiable.sum()), "rate_constants_R2": r2,
                     "f_shape_R2": shape, "residual_rms": fit.residual_rms, "evaluations": fit.evaluations,
                     "time_s": fit.solve_time_s})
        print(rows[-1], flush=True)
pd.DataFrame(rows).to_csv(Path(__file__).with_name(f"free_fit_alone_{'_'.join(map(str, SEEDS))}.csv"), index=False)
