"""Where a free-form run's fit stops, and what its error is made of. (A diagnostic: it reads the truth, as metrics
do; training never does.)

For a finished run it reports the fit error dc/dt − model(c) over every frame and metabolite, the homeostasis
error h − h_true over the same entries (when it exceeds the fit error, k and h have traded: each one wrong, their
sum right), the relative error of the learned rate law f̂ against the truth's, in bands of concentration, and the
error in dc/dt that f̂'s error alone makes (true k, true h). With `--polish N` it then runs N full-batch L-BFGS
steps in float64 on the prediction error (every 4th frame; k, f, h and the embeddings free, |f(1)| = 1 held) and
reports the same: if the fit stops where it was, the run sits in a minimum of the model, not short of its optimiser's
precision. With `--oracle-types` every embedding is first set to the median embedding of its true type's members
and held there while the rest is polished: the types given, does h follow? Every row also has the h R² per type
and the k R² of the metrics. Order-1 substrates only (the random networks' cycle_fraction 1.0).

    python docs/results/fit_floor.py RUN_DIR [RUN_DIR ...] [--polish 40 [--oracle-types]] [--csv OUT.csv]

docs/results/fit_floor.csv (written before the R² columns were added): the Michaelis–Menten development runs on
network 5004 (K 3, w 2, training seed 2026,
docs/results/free_forms_development/michaelis_menten.csv), the prediction-only run (v5_predonly) with `--polish 40`;
for contrast the shipped configuration on mass-action network 6001 (converged, free_forms_no_conservation_gnn.csv).
docs/results/fit_floor_oracle_types.csv: the prediction-only run with `--polish 40 --oracle-types`. The rate
constants adapt to f̂'s error, so `dcdt_error_from_f_rms` (true k) overstates what f̂ costs a fitted run.
"""

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from metabo_tune.config import load_config
from metabo_tune.metrics import compute_metrics
from metabo_tune.simulate import RateLaw, load_or_simulate, substrate_function
from metabo_tune.train import Trainer

BANDS = (0.0, 0.03, 0.3, 3.0, 30.0, np.inf)


def measure(model: torch.nn.Module, dataset, label: str) -> dict:
    truth, network = dataset.truth, dataset.observed.network
    conc = dataset.observed.trajectory.concentrations.astype(np.float64)
    deriv = dataset.observed.trajectory.derivatives.astype(np.float64)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        inputs = torch.tensor(conc, dtype=dtype)
        fitted = model(inputs).double().numpy()
        homeostasis = model.homeostasis(inputs).double().numpy()
        unit = torch.ones(1, dtype=dtype)
        learned_f = (model.substrate(inputs, unit).abs() / model.substrate(unit, unit).abs()).double().numpy()
    true_f = substrate_function(conc, truth.michaelis_K)
    relative = np.abs(learned_f / np.where(true_f > 0, true_f, np.nan) - 1)
    no_homeostasis = np.zeros_like(conc)
    true_reactions = RateLaw(network, truth.log_k, truth.michaelis_K)(conc, no_homeostasis)
    with_learned_f = RateLaw(network, truth.log_k)(learned_f, no_homeostasis)  # mass action on f̂: v_j = k_j·Π f̂^|s|
    scores = compute_metrics(model.float(), dataset, status="completed", loss_history={"loss": np.zeros(1)},
                             training_time_s=0.0, iterations=1)
    model.to(dtype)
    row = {"run": label, "rate_constants_R2_gauge": scores["rate_constants_R2_gauge"],
           **{key: scores[key] for key in sorted(scores) if key.startswith("MLP_node_R2_")},
           "fit_rms": _rms(fitted - deriv), "h_error_rms": _rms(homeostasis - truth.homeostasis(conc)),
           "h_true_rms": _rms(truth.homeostasis(conc)), "dcdt_error_from_f_rms": _rms(with_learned_f - true_reactions)}
    for low, high in itertools.pairwise(BANDS):
        band = (conc >= low) & (conc < high)
        row[f"f_rel_error_median_c{low:g}_{high:g}"] = float(np.nanmedian(relative[band]))
        row[f"share_of_samples_c{low:g}_{high:g}"] = float(band.mean())
    return row


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values ** 2)))


def polish(model: torch.nn.Module, dataset, steps: int, oracle_types: bool = False) -> torch.nn.Module:
    model = model.double()
    free = list(model.parameters())
    if oracle_types:
        types = torch.as_tensor(dataset.truth.types)
        with torch.no_grad():
            centres = torch.stack([model.embedding[types == t].median(0).values for t in range(int(types.max()) + 1)])
            model.embedding.copy_(centres[types])
        free = [p for p in free if p is not model.embedding]
    conc = torch.tensor(dataset.observed.trajectory.concentrations[::4], dtype=torch.float64)
    deriv = torch.tensor(dataset.observed.trajectory.derivatives[::4], dtype=torch.float64)
    scale, unit = float(deriv.square().mean()), torch.ones(1, dtype=torch.float64)
    optimiser = torch.optim.LBFGS(free, lr=1, max_iter=20, history_size=50,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-14, tolerance_change=1e-18)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = (model(conc) - deriv).square().mean() / scale + (model.substrate(unit, unit).abs() - 1).square().sum()
        loss.backward()
        return loss

    for _ in range(steps):
        optimiser.step(closure)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--polish", type=int, default=0, help="full-batch float64 L-BFGS steps after (0: none)")
    parser.add_argument("--oracle-types", action="store_true",
                        help="polish with each embedding at its true type's median, held there")
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for run in args.runs:
        cfg = load_config(run / "config.yaml")
        dataset = load_or_simulate(cfg.simulation, measurement_noise_level=cfg.training.measurement_noise_level)
        trainer = Trainer(cfg, dataset.observed, device="cpu")
        trainer.model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=False)["model"])
        rows.append(measure(trainer.model, dataset, run.name))
        if args.polish:
            polished = polish(trainer.model, dataset, args.polish, args.oracle_types)
            given = ", true types given" if args.oracle_types else ""
            rows.append(measure(polished, dataset, f"{run.name} +{args.polish} L-BFGS{given}"))
    table = pd.DataFrame(rows)
    if args.csv:
        table.to_csv(args.csv, index=False, float_format="%.4g")
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))


if __name__ == "__main__":
    main()
