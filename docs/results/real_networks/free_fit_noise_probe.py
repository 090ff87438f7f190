"""The form-free fit alone (metabo_tune.free_regress, the warm start of configs/e_coli_core_free_forms.yaml) on
E. coli core under measurement noise (a diagnostic: it reads the truth, as metrics do): k R² over the k it determines
and finds positive, and the shape R² of log10 f against the Michaelis–Menten truth at 200 quantiles of the positive
concentrations (offsets removed). Michaelis–Menten K 3, saturating homeostasis w 2. WINDOWS sets `regression.window`
(the fit's weak-form window; default auto, the known-form regression's rule). Writes free_fit_noise_probe.csv beside it.

    python docs/results/real_networks/free_fit_noise_probe.py SEED LEVELS [WINDOWS]   # e.g. 8104 0,0.001,0.01 auto,100
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from metabo_tune.config import load_config
from metabo_tune.free_regress import fit_free_config
from metabo_tune.simulate import load_or_simulate

CONFIG = Path(__file__).parents[3] / "configs" / "e_coli_core_free_forms.yaml"
POINT = ["simulation.substrate_kinetics=michaelis_menten", "simulation.homeostasis_form=saturating",
         "simulation.michaelis_K=3", "simulation.homeostasis_width=2"]


def r_squared(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(1.0 - np.square(estimate - truth).sum() / np.square(truth - truth.mean()).sum())


def probe(seed: int, level: float, window: str) -> dict:
    cfg = load_config(CONFIG, [*POINT, f"simulation.seed={seed}", f"training.measurement_noise_level={level}",
                               f"regression.window={window}"])
    dataset = load_or_simulate(cfg.simulation, measurement_noise_level=level)
    fit = fit_free_config(cfg, dataset.observed)
    kept = fit.determined & (fit.rate_constants > 0)
    conc = dataset.observed.trajectory.concentrations
    points = np.quantile(conc[conc > 0], np.linspace(0.01, 0.99, 200))
    michaelis_k = cfg.simulation.michaelis_K
    learned, true = np.log10(fit.substrate(points)), np.log10(points * (1 + michaelis_k) / (michaelis_k + points))
    return {"network": seed, "measurement_noise_level": level, "window": fit.window,
            "determined": int(fit.determined.sum()), "positive": int(kept.sum()),
            "rate_constants_R2": r_squared(fit.log_k[kept], dataset.truth.log_k[kept]),
            "f_shape_R2": r_squared(learned - learned.mean(), true - true.mean()),
            "residual_rms": fit.residual_rms, "evaluations": fit.evaluations, "solve_time_s": fit.solve_time_s}


if __name__ == "__main__":
    windows = sys.argv[3].split(",") if len(sys.argv) > 3 else ["auto"]
    table = pd.DataFrame([probe(int(sys.argv[1]), float(level), window)
                          for level in sys.argv[2].split(",") for window in windows])
    table.to_csv(Path(__file__).with_name("free_fit_noise_probe.csv"), index=False)
    print(table.to_string(index=False))
