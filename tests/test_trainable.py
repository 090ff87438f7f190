"""The search trainable without a Ray instance: what it does before it trains."""

import json

from metabo_tune import trainable


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
