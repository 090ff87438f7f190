"""The Ray Tune function trainable: one trial of the search, i.e. `train.Trainer` on the config the
searcher suggested, reporting every 10 % of its iterations and checkpointing in its own trial dir so an
interrupted trial resumes mid-way, and writing the trial's analysis.log, metrics.json and plots when it ends.

The resume checkpoint is the trial's own file, not the one handed to Tune: after a SIGKILL, Tune's
experiment state can name a checkpoint its `num_to_keep` rotation has already deleted, while ours is
replaced atomically and written before each report. Tune gets the final trainer as the result's checkpoint.

The suggested config carries `node_id`, `parent_id`, `strategy`, `mutation`, `seed` and `values`
(the tunable 'section.key' values), and `fidelity` when the space screens; everything else comes from the
search space's base config, with the space's screening overrides on top for a screen trial.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from metabo_tune import metrics
from metabo_tune.atomic_file import write_atomically
from metabo_tune.config import Config
from metabo_tune.simulate import load_or_simulate
from metabo_tune.space import SearchSpace, reward, reward_inputs
from metabo_tune.train import Trainer, run_report, write_trial_inputs, write_trial_outputs
from metabo_tune.tree import FULL

REPORTS_PER_TRIAL = 10
CHECKPOINT_FILE = "trainer.pt"
# The latest interim state of an unfinished trial, in its trial dir; removed once the trial has finished.
RESUME_FILE = "resume.pt"
# The final report, written after every other file of the trial: a trial dir holding it has finished.
FINAL_REPORT_FILE = "final_report.json"


def trial_dir_name(config: dict[str, Any]) -> str:
    """node_<id>_seed_<s>, and _<fidelity> when the space screens: a promotion trains the screened node's
    config and seed again, and must find neither the screen trial's final report nor its files."""
    name = f"node_{config['node_id']}_seed_{config['seed']}"
    return f"{name}_{config['fidelity']}" if "fidelity" in config else name


def trial_config(config: dict[str, Any], space: SearchSpace) -> Config:
    """The run config of a suggested trial: its values and seed, at its fidelity."""
    return space.config_for(config["values"], seed=config["seed"], fidelity=config.get("fidelity", FULL))


def run_search_trial(config: dict[str, Any], space: SearchSpace, trials_dir: str) -> None:
    out_dir = Path(trials_dir) / trial_dir_name(config)
    if (out_dir / FINAL_REPORT_FILE).is_file():
        # Finished, but a driver killed before its next experiment snapshot left Tune believing it still
        # ran, so a resume starts it again: report its result again, retrain and rewrite nothing.
        tune.report(json.loads((out_dir / FINAL_REPORT_FILE).read_text()))
        return
    cfg = trial_config(config, space)
    resources = tune.get_context().get_trial_resources().required_resources
    cfg.training.n_threads = max(1, int(resources.get("CPU", 1)))
    torch.set_num_threads(cfg.training.n_threads)
    device = "cuda" if ray.get_gpu_ids() else "cpu"  # Ray's assignment, not torch.cuda.is_available()
    dataset = load_or_simulate(cfg.simulation, measurement_noise_level=cfg.training.measurement_noise_level)
    trainer = Trainer(cfg, dataset.observed, device=device, resume_from=out_dir / RESUME_FILE)
    resumed_from = trainer.iteration
    write_trial_inputs(out_dir, cfg, dataset)
    every = max(1, trainer.total_iterations // REPORTS_PER_TRIAL)
    progress_data = dataclasses.replace(dataset, heldout=None)  # interim reports skip the slow rollout
    while not trainer.done:
        trainer.run(until=(trainer.iteration // every + 1) * every)
        if trainer.done:
            break
        interim = _metrics(trainer, progress_data, space)
        inputs = {key: interim[key] for key in reward_inputs(space.base.simulation.n_metabolite_types)
                  if key in interim}
        _report(trainer, inputs | {"reward": interim["reward"], "status": "running", "resumed_from": resumed_from},
                final=False, out_dir=out_dir)
    final = _metrics(trainer, dataset, space)
    write_trial_outputs(out_dir, dataset, trainer.result(), final)
    _report(trainer, final | {"resumed_from": resumed_from}, final=True, out_dir=out_dir)


def _metrics(trainer: Trainer, dataset, space: SearchSpace) -> dict[str, Any]:
    result = trainer.result()
    status = result.status if trainer.done else "completed"
    values = metrics.compute_metrics(result.model, dataset, status=status, loss_history=result.loss_history,
                                     training_time_s=result.training_time_s, iterations=result.iterations,
                                     thresholds=space.thresholds)
    values |= run_report(trainer.cfg, dataset, result)
    values["status"] = result.status
    values["reward"] = reward(values | {"status": status}, space.reward, space.thresholds)
    return values


def _report(trainer: Trainer, values: dict[str, Any], *, final: bool, out_dir: Path) -> None:
    values = values | {"iteration": trainer.iteration, "total_iterations": trainer.total_iterations,
                       "trial_dir": str(out_dir), "final": final}
    if not final:
        trainer.save_checkpoint(out_dir / RESUME_FILE)
        tune.report(values)
        return
    write_atomically(out_dir / FINAL_REPORT_FILE, json.dumps(values, indent=1))
    (out_dir / RESUME_FILE).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as directory:
        trainer.save_checkpoint(Path(directory) / CHECKPOINT_FILE)
        tune.report(values, checkpoint=tune.Checkpoint.from_directory(directory))
