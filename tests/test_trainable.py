"""The search trainable without a Ray instance: what it does before it trains."""

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from metabo_tune import trainable
from metabo_tune.space import Fidelity, load_space
from metabo_tune.tree import FULL, SCREEN

SMOKE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"


def test_a_finished_trial_started_again_reports_its_result_and_touches_nothing(tmp_path, monkeypatch):
    config = {"node_id": "a1", "seed": 78, "values": {}}
    out_dir = tmp_path / trainable.trial_dir_name(config)
    out_dir.mkdir()
    final = {"status": "completed", "reward": 0.61, "rate_constants_R2": float("nan"), "final": True,
             "iteration": 2250, "resumed_from": 0, "trial_dir": str(out_dir)}
    (out_dir / trainable.FINAL_REPORT_FILE).write_text(json.dumps(final))
    (out_dir / "metrics.json").write_text("{}")
    before = {f.name: f.stat().st_mtime_ns for f in out_dir.iterdir()}
    reported = []
    monkeypatch.setattr(trainable.tune, "report", lambda metrics, **kwargs: reported.append((metrics, kwargs)))
    trainable.run_search_trial(config, space=None, trials_dir=str(tmp_path))  # no space: it must not train
    [(metrics, kwargs)] = reported
    assert json.dumps(metrics) == json.dumps(final) and kwargs == {}
    assert {f.name: f.stat().st_mtime_ns for f in out_dir.iterdir()} == before


SCREENING = Fidelity({"training.data_augmentation_loop": 5.0, "training.learning_rate_node": 1e-3})


def test_a_screen_trial_trains_with_the_screening_overrides_and_a_full_one_without():
    space = dataclasses.replace(load_space(SMOKE), fidelity=SCREENING)
    values = space.base_values() | {"training.learning_rate_k": 2e-3, "training.learning_rate_node": 5e-4}
    screen = trainable.trial_config({"node_id": "a1", "seed": 3, "values": values, "fidelity": SCREEN}, space)
    full = trainable.trial_config({"node_id": "a1", "seed": 3, "values": values, "fidelity": FULL}, space)
    assert (screen.training.data_augmentation_loop, screen.training.learning_rate_node) == (5.0, 1e-3)
    assert (full.training.data_augmentation_loop, full.training.learning_rate_node) == (10.0, 5e-4)
    assert screen.training.learning_rate_k == full.training.learning_rate_k == 2e-3
    assert screen.training.seed == full.training.seed == 3
    a, b = screen.to_dict(), full.to_dict()
    differ = {(section, key) for section, values in a.items() if isinstance(values, dict)
              for key in values if values[key] != b[section][key]}
    assert differ == {("training", "data_augmentation_loop"), ("training", "learning_rate_node")}


class Trains(Exception):
    """Raised where the trainable would start training."""


def test_a_promotion_never_picks_up_the_screen_trial_of_its_node(tmp_path, monkeypatch):
    screen = {"node_id": "a1", "seed": 77, "values": {}, "fidelity": SCREEN}
    full = screen | {"fidelity": FULL}
    assert trainable.trial_dir_name(screen) != trainable.trial_dir_name(full)
    assert trainable.trial_dir_name({"node_id": "a1", "seed": 77, "values": {}}) == "node_a1_seed_77"  # no fidelity
    screened = tmp_path / trainable.trial_dir_name(screen)
    screened.mkdir()
    (screened / trainable.FINAL_REPORT_FILE).write_text(json.dumps({"status": "completed", "reward": 0.5}))
    reported = []
    monkeypatch.setattr(trainable.tune, "report", lambda metrics, **kwargs: reported.append(metrics))

    def train(*args, **kwargs):
        raise Trains

    monkeypatch.setattr(trainable.tune, "get_context", train)
    space = dataclasses.replace(load_space(SMOKE), fidelity=SCREENING)
    with pytest.raises(Trains):
        trainable.run_search_trial(full, space=space, trials_dir=str(tmp_path))
    assert reported == []
    trainable.run_search_trial(screen, space=space, trials_dir=str(tmp_path))  # the screen trial itself re-reports
    assert reported == [{"status": "completed", "reward": 0.5}]


def test_an_interrupted_trial_resumes_from_its_own_checkpoint_and_removes_it_when_done(tmp_path, monkeypatch):
    """Tune's checkpoint is never read back: after a SIGKILL its experiment state can name one that its
    rotation has deleted. The trial's own resume file is written before each interim report."""
    space = load_space(SMOKE)
    config = {"node_id": "a1", "seed": 77, "values": space.base_values()}
    out_dir = tmp_path / trainable.trial_dir_name(config)
    cfg = trainable.trial_config(config, space)
    trainer = trainable.Trainer(cfg, trainable.load_or_simulate(cfg.simulation).observed)
    trainer.run(until=trainer.total_iterations // 2)
    trainer.save_checkpoint(out_dir / trainable.RESUME_FILE)
    reported = []

    def report(metrics, checkpoint=None):
        if not metrics["final"]:
            state = trainable.torch.load(out_dir / trainable.RESUME_FILE, weights_only=False)
            assert state["iteration"] == metrics["iteration"], "the resume file lags the report"
        reported.append((metrics, checkpoint))

    def never(*args, **kwargs):
        raise AssertionError("Tune's checkpoint was consulted")

    monkeypatch.setattr(trainable.tune, "report", report)
    one_cpu = SimpleNamespace(get_trial_resources=lambda: SimpleNamespace(required_resources={"CPU": 1}))
    monkeypatch.setattr(trainable.tune, "get_context", lambda: one_cpu)
    monkeypatch.setattr(trainable.tune, "get_checkpoint", never)
    monkeypatch.setattr(trainable.ray, "get_gpu_ids", list)
    trainable.run_search_trial(config, space=space, trials_dir=str(tmp_path))
    assert {metrics["resumed_from"] for metrics, _ in reported} == {trainer.total_iterations // 2}
    assert [metrics["final"] for metrics, _ in reported][-1] and reported[-1][1] is not None
    assert all(checkpoint is None for _, checkpoint in reported[:-1])
    assert reported[-1][0]["iteration"] == trainer.total_iterations
    assert {"moment_window", "prediction_window", "measurement_noise_estimate"} <= reported[-1][0].keys()  # as train's
    assert not (out_dir / trainable.RESUME_FILE).exists()
    assert (out_dir / trainable.FINAL_REPORT_FILE).is_file()
