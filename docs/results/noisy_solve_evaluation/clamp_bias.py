"""The bias of measurements clamped at zero at σ_m 0.05, and what reading them back by the censored estimate
(training.decensor_zeros, regression.decensor_zeros) recovers: docs/results.md, "Measurements clamped at zero".
Development networks only (8908–8913, each evaluated once before at σ_m 0.05). Writes clamp_bias.csv beside it.

    python docs/results/noisy_solve_evaluation/clamp_bias.py [GNN_RUN_DIR ...]

Three probes, each on the base of search_spaces/noisy_rank_50.yaml at σ_m 0.05, the measurements three ways:
`clamped` (the simulator's max(c + ε, 0)), `decensored` (those, read back by metabo_tune/censoring.py) and
`unclamped` (c + ε with the same draws: what the measurements would be without the clamp).
* heads (8912): the group solve's shared relaxation per type with the true k and the true types held: the bias
  that is left when neither k nor the types are learned;
* regression (8908–8913): the known-form regression as shipped (types by BIC);
* gnn_posthoc (the GNN_RUN_DIRs: finished σ_m 0.05 trials with checkpoint.pt): the trained model's final group
  solve and mixture redone on clamped or decensored measurements (the training itself as it ran).
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from metabo_tune import metrics
from metabo_tune import simulate as sim
from metabo_tune.censoring import decensored_observed
from metabo_tune.config import config_from_dict, load_config
from metabo_tune.group_solve import GroupSolve
from metabo_tune.regress import fit_config, monomials
from metabo_tune.train import LINEAR_HEAD_KNOTS, Trainer

ROOT = Path(__file__).resolve().parents[3]
NOISE = 0.05


def measured(cfg, how: str) -> sim.Dataset:
    clamped = sim.add_measurement_noise
    if how == "unclamped":
        def unclamped(trajectory: sim.Trajectory, level: float, rng: np.random.Generator) -> sim.Trajectory:
            conc = trajectory.concentrations
            return dataclasses.replace(trajectory, concentrations=conc + rng.normal(0.0, level, conc.shape))
        sim.add_measurement_noise = unclamped
    try:
        dataset = sim.load_or_simulate(cfg.simulation, measurement_noise_level=NOISE)
    finally:
        sim.add_measurement_noise = clamped
    if how == "decensored":
        dataset = dataclasses.replace(dataset, observed=decensored_observed(dataset.observed, True)[0])
    return dataset


def base_config(network: int, **training):
    raw = load_config(ROOT / "search_spaces/noisy_rank_50.yaml").to_dict()
    raw["simulation"]["seed"] = network
    raw["training"] |= {"measurement_noise_level": NOISE, "decensor_zeros": False} | training
    raw["regression"]["decensor_zeros"] = False
    return config_from_dict(raw)


def type_rows(lambdas, baselines, truth) -> dict:
    return {f"type{t}_{key}": value for t in range(2)
            for key, value in (("lambda_ratio", lambdas[t] / truth.lambda_per_type[t]), ("baseline", baselines[t]))}


def heads(network: int = 8912) -> list[dict]:
    rows = []
    cfg = base_config(network, prediction_window=10)
    for how in ("clamped", "decensored", "unclamped"):
        dataset = measured(cfg, how)
        trainer = Trainer(cfg, dataset.observed)
        target, frame_mean, kept = trainer._weak_form_rows()
        # mass action: the truth's form, so that only the measurements differ
        rates_per_k = monomials(trainer.conc.double().numpy(), dataset.observed.network)
        truth = dataset.truth
        solve = GroupSolve(rates_per_k, trainer.stoichiometry.astype(np.float64), trainer.conc.double().numpy(),
                           target, np.asarray(truth.types), LINEAR_HEAD_KNOTS, frame_mean, kept=kept)
        solution = solve.with_rate_constants(10.0 ** truth.log_k)
        lambdas, baselines = [], []
        for knots, values in zip(solution.knots, solution.values, strict=True):
            slope = (values[1] - values[0]) / (knots[1] - knots[0])
            lambdas.append(-slope)
            baselines.append(knots[0] - values[0] / slope)
        rows.append({"probe": "heads", "network": network, "measurements": how} | type_rows(lambdas, baselines, truth))
    return rows


def regression(networks=(8908, 8909, 8910, 8911, 8912, 8913)) -> list[dict]:
    rows = []
    for network in networks:
        cfg = base_config(network)
        for how in ("clamped", "decensored", "unclamped"):
            dataset = measured(cfg, how)
            fit, truth = fit_config(cfg, dataset.observed), dataset.truth
            # the types as the trial scores them: each true type's metabolites' mixture law, by majority
            laws = [np.bincount(fit.types[truth.types == t]).argmax() for t in range(2)]
            determined = fit.determined & (fit.rate_constants > 0)
            log_k, true_log_k = fit.log_k[determined], truth.log_k[determined]
            r2 = 1 - np.sum((log_k - true_log_k) ** 2) / np.sum((true_log_k - true_log_k.mean()) ** 2)
            rows.append({"probe": "regression", "network": network, "measurements": how,
                         "types": metrics.matched_accuracy(fit.types, truth.types), "n_types": len(fit.type_rate),
                         "log_k_R2": r2}
                        | type_rows(fit.type_rate[laws], fit.type_baselines[laws], truth))
    return rows


def gnn_posthoc(runs: list[Path]) -> list[dict]:
    rows = []
    for run in runs:
        raw = yaml.safe_load((run / "config.yaml").read_text())
        dataset = sim.load_or_simulate(config_from_dict(raw).simulation, measurement_noise_level=NOISE)
        for setting in (False, True):
            trained = Trainer(config_from_dict(raw), dataset.observed)
            trained.load_checkpoint(run / "checkpoint.pt")
            trainer = Trainer(config_from_dict(raw | {"training": raw["training"] | {
                "group_solve_mixture": True, "decensor_zeros": setting}}), dataset.observed)
            trainer.model.load_state_dict(trained.model.state_dict())
            trainer.type_groups = trained.type_groups
            trainer.finish_with_group_solve()
            result = trainer.result()
            values = metrics.compute_metrics(result.model, dataset, status="completed", training_time_s=1,
                                             loss_history=result.loss_history, iterations=1)
            rows.append({"probe": "gnn_posthoc", "network": raw["simulation"]["seed"],
                         "measurements": "decensored" if setting else "clamped",
                         "types": values["embedding_cluster_acc"], "log_k_R2": values["rate_constants_R2"]}
                        | {f"type{t}_{key}": values[f"MLP_node_{metric}_{t}"] for t in range(2)
                           for key, metric in (("lambda_ratio", "slope_at_zero_ratio"), ("baseline", "zero"))})
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)
    table = pd.DataFrame(heads() + regression() + gnn_posthoc([Path(p) for p in sys.argv[1:]]))
    table.to_csv(Path(__file__).with_name("clamp_bias.csv"), index=False)
    print(table.round(3).to_string(index=False))
