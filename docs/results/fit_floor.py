"""Where a free-form run's fit stops, and what its error is made of. (A diagnostic: it reads the truth, as metrics
do; training never does.)

For a finished run it reports the fit error dc/dt − model(c) over every frame and metabolite, the homeostasis
error h − h_true over the same entries (when it exceeds the fit error, k and h have traded: each one wrong, their
sum right), the relative error of the learned rate law f̂ against the truth's, in bands of concentration, and the
error in dc/dt that f̂'s error alone makes (true k, true h). With `--polish N` it then runs N full-batch L-BFGS
steps in float64 on the prediction error (every 4th frame; k, f, h and the embeddings free, |f(1)| = 1 held) and
reports the same: if the fit stops where it was, the run sits in a minimum of the model, not short of its optimiser's
precision. With `--oracle-types` every embedding is first set to the median embedding of its true type's members
and held there while the rest is polished: the types given, does h follow? `--hold-embeddings` holds the run's own
embeddings instead (after type grouping they are its groups). `--oracle-start h` also sets MLP_node to the truth's
homeostasis (fitted to each true type's h over its members' observed concentrations) and keeps the run's k and f;
`--oracle-start all` sets k to the truth's and MLP_sub to the true f too. Its first row is the fit at that start,
the polish then starts there: is the truth a deeper minimum than the run's, and do the reactions find it? With
`--every N` a row is added every N polish steps. Every row also has the h R² per type and the k R² of the metrics.
Order-1 substrates only (the random networks' cycle_fraction 1.0).

    python docs/results/fit_floor.py RUN_DIR [RUN_DIR ...] [--polish 40 [--oracle-types | --hold-embeddings]
        [--oracle-start h|all] [--every N]] [--csv OUT.csv]

docs/results/fit_floor.csv (written before the R² columns were added): the Michaelis–Menten development runs on
network 5004 (K 3, w 2, training seed 2026,
docs/results/free_forms_development/michaelis_menten.csv), the prediction-only run (v5_predonly) with `--polish 40`;
for contrast the shipped configuration on mass-action network 6001 (converged, free_forms_no_conservation_gnn.csv).
docs/results/fit_floor_oracle_types.csv: the prediction-only run with `--polish 40 --oracle-types`. The rate
constants adapt to f̂'s error, so `dcdt_error_from_f_rms` (true k) overstates what f̂ costs a fitted run.
docs/results/fit_floor_oracle_start.csv: the K 3 development run on three trajectories (training seed 2027), polished
from where it ended (its groups held; the true types held), and from the truth (`--oracle-start all`) and from the
truth's h with the run's own reactions (`--oracle-start h`).
"""

import argparse
import copy
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from metabo_tune.config import load_config
from metabo_tune.metrics import compute_metrics
from metabo_tune.simulate import RateLaw, load_or_simulate, substrate_function
from metabo_tune.train import Trainer, minimise_lbfgs

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


def true_type_centres(model: torch.nn.Module, dataset) -> torch.Tensor:
    """Every embedding set to the median embedding of its true type's members; returns the centres."""
    types = torch.as_tensor(dataset.truth.types)
    with torch.no_grad():
        centres = torch.stack([model.embedding[types == t].median(0).values for t in range(int(types.max()) + 1)])
        model.embedding.copy_(centres[types])
    return centres


def oracle_start(model: torch.nn.Module, dataset, what: str) -> torch.nn.Module:
    """The model (float64) moved to the truth: the true types' embeddings and each type's true h (MLP_node fitted
    to it over its members' observed concentrations); with what == "all" also the true k and f (MLP_sub fitted to
    f_true by relative error over the observed concentrations' 0.05–99.95 % quantiles)."""
    truth, conc = dataset.truth, dataset.observed.trajectory.concentrations
    model = model.double()
    centres = true_type_centres(model, dataset)
    if what == "all":
        with torch.no_grad():
            model.log_k.copy_(torch.as_tensor(truth.log_k))
        where = torch.tensor(np.quantile(conc[conc > 0], np.linspace(0.0005, 0.9995, 2000)), dtype=torch.float64)
        true_f = torch.tensor(substrate_function(where.numpy(), truth.michaelis_K))
        unit = torch.ones(1, dtype=torch.float64)
        minimise_lbfgs(model.sub_mlp.parameters(),
                       lambda: ((model.substrate(where, unit).abs() / true_f - 1) ** 2).mean(), 6)
    true_h = truth.homeostasis(conc)
    points, values, embeddings = [], [], []
    for t, centre in enumerate(centres):
        members = truth.types == t
        c, h = conc[:, members].ravel(), true_h[:, members].ravel()
        pick = np.argsort(c)[np.linspace(0, c.size - 1, 3000).astype(int)]
        points.append(c[pick])
        values.append(h[pick])
        embeddings.append(centre.expand(len(pick), -1))
    points, values = torch.tensor(np.concatenate(points)), torch.tensor(np.concatenate(values))
    embeddings, scale = torch.cat(embeddings).detach(), float(values.square().mean())
    minimise_lbfgs(model.node_mlp.parameters(),
                   lambda: ((model.head(points, embeddings) - values) ** 2).mean() / scale, 6)
    return model


def polish(model: torch.nn.Module, dataset, steps: int, hold: str = "", every: int = 0,
           label: str = "") -> tuple[torch.nn.Module, list[dict]]:
    """N full-batch float64 L-BFGS steps on the prediction error; hold "oracle" sets the embeddings to the true
    types' medians and holds them, "own" holds the run's. Returns the model and a row every `every` steps."""
    model = model.double()
    free = list(model.parameters())
    if hold == "oracle":
        true_type_centres(model, dataset)
    if hold:
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

    rows = []
    for step in range(1, steps + 1):
        optimiser.step(closure)
        if every and step % every == 0 and step < steps:
            rows.append(measure(copy.deepcopy(model), dataset, f"{label} +{step} L-BFGS"))
            print(rows[-1]["run"], {k: f"{v:.4g}" for k, v in rows[-1].items() if "R2" in k or k == "fit_rms"},
                  flush=True)
    return model, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--polish", type=int, default=0, help="full-batch float64 L-BFGS steps after (0: none)")
    held = parser.add_mutually_exclusive_group()
    held.add_argument("--oracle-types", action="store_true",
                      help="polish with each embedding at its true type's median, held there")
    held.add_argument("--hold-embeddings", action="store_true", help="polish with the run's embeddings held")
    parser.add_argument("--oracle-start", choices=("h", "all"),
                        help="start at the truth's h (and with 'all' its k and f too), the true types held")
    parser.add_argument("--every", type=int, default=0, help="a row every N polish steps as well")
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    hold = "oracle" if args.oracle_types or args.oracle_start else "own" if args.hold_embeddings else ""
    rows = []
    for run in args.runs:
        cfg = load_config(run / "config.yaml")
        dataset = load_or_simulate(cfg.simulation, measurement_noise_level=cfg.training.measurement_noise_level)
        trainer = Trainer(cfg, dataset.observed, device="cpu")
        trainer.model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=False)["model"])
        model, label = trainer.model, run.name
        if args.oracle_start:
            model = oracle_start(model, dataset, args.oracle_start)
            label = f"{run.name} from the truth's {'h' if args.oracle_start == 'h' else 'k, f and h'}"
        rows.append(measure(copy.deepcopy(model), dataset, label))
        if args.polish:
            given = {"oracle": ", true types held", "own": ", its embeddings held", "": ""}[hold]
            model, steps = polish(model, dataset, args.polish, hold, args.every, label + given)
            rows += steps
            rows.append(measure(model, dataset, f"{label}{given} +{args.polish} L-BFGS"))
    table = pd.DataFrame(rows)
    if args.csv:
        table.to_csv(args.csv, index=False, float_format="%.4g")
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))


if __name__ == "__main__":
    main()
