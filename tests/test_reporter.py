import math
from types import SimpleNamespace

import pandas as pd

from metabo_tune.reporter import TrialTable, render_analysis, visual_line

FINAL = {"final": True, "status": "completed", "classification": "partial-k", "reward": 0.61,
         "rate_constants_R2": 0.93, "test_pearson": 0.5, "n_outliers": 4, "n_identifiable": 239, "log_k_rmse": 0.12,
         "MLP_sub_R2": 0.995, "MLP_node_slope_ratio_0": 3.3, "MLP_node_slope_ratio_1": 1.5,
         "homeostasis_assessment": "wrong", "embedding_n_clusters": 1, "embedding_cluster_acc": 0.51,
         "trial_dir": "/x/trials/node_a_seed_77", "config/values": {}}


def fake_trial(trial_id, result, node_id="a", parent_id=None):
    config = {"node_id": node_id, "parent_id": parent_id, "strategy": "exploit", "mutation": "training.x: 1 -> 2",
              "seed": 77, "values": {"training.learning_rate_k": 0.005, "training.recurrent_training": False}}
    return SimpleNamespace(trial_id=trial_id, config=config, last_result=result, path=f"/ray/{trial_id}")


def test_rows_are_written_deduplicated_and_reloaded_after_a_restart(tmp_path):
    table = TrialTable(tmp_path, num_trials=3, echo=False)
    table.on_trial_complete(0, [], fake_trial("t1", FINAL | {"trial_dir": str(tmp_path / "trials" / "node_a_seed_77")}))
    table.on_trial_error(0, [], fake_trial("t2", {"status": "running", "reward": 0.2}, node_id="b", parent_id="a"))
    table.on_trial_complete(0, [], fake_trial("t2", FINAL | {"reward": 0.7}, node_id="b", parent_id="a"))
    rows = pd.read_csv(tmp_path / "trials.csv")
    assert list(rows["trial_id"]) == ["t1", "t2"]  # the revived trial replaced its error row
    assert list(rows.columns[:6]) == ["trial_id", "node_id", "parent_id", "strategy", "mutation", "seed"]
    assert rows.loc[1, "reward"] == 0.7 and rows.loc[1, "parent_id"] == "a"
    assert rows.loc[0, "diagnosis"] == "mixed" and math.isclose(rows.loc[0, "degeneracy_gap"], 0.5 - 0.93)
    assert rows.loc[0, "training.learning_rate_k"] == 0.005
    assert rows.loc[0, "trial_dir"] == "trials/node_a_seed_77"  # relative: the experiment can move
    restarted = TrialTable(tmp_path, num_trials=3, echo=False)  # as unpickled by Tune on resume
    restarted.setup()
    restarted.on_trial_complete(0, [], fake_trial("t3", FINAL, node_id="c"))
    assert list(pd.read_csv(tmp_path / "trials.csv")["trial_id"]) == ["t1", "t2", "t3"]


def test_an_errored_trial_is_a_failed_row(tmp_path):
    table = TrialTable(tmp_path, num_trials=1, echo=False)
    table.on_trial_error(0, [], fake_trial("t1", {"status": "running", "reward": 0.4, "rate_constants_R2": 0.8}))
    row = pd.read_csv(tmp_path / "trials.csv").iloc[0]
    assert (row["status"], row["classification"], row["reward"]) == ("error", "failed", 0.0)


def test_analysis_entries_follow_the_log_form():
    text = render_analysis([{"trial_id": "t1", "node_id": "a", "parent_id": None, "seed": 77} | FINAL
                            | {"strategy": "initial", "mutation": "baseline", "training.learning_rate_k": 0.005}])
    lines = text.splitlines()
    start = lines.index("## Iter 1: partial-k")
    fields = [line.split(":")[0] for line in lines[start + 1:start + 9]]
    assert fields == ["Node", "Mode/Strategy", "Config", "Metrics", "Visual", "Mutation", "Parent rule", "Observation"]
    assert "Node: id=a, parent=root" in text and "learning_rate_k=0.0050" in text
    assert "rate_constants_R2=0.9300" in text and "n_outliers=4," in text


def test_visual_line_reads_the_plot_measurements():
    line = visual_line(FINAL)
    assert "MLP_sub=linear in c" in line and "slope ratios 3.30 / 1.50" in line
    assert "4 outliers of 239 identifiable" in line and "1 clusters, accuracy 0.51" in line
    assert visual_line({}) == "no plots (trial did not finish)"


def test_a_finished_row_is_final_even_when_a_resume_runs_the_trial_again(tmp_path):
    table = TrialTable(tmp_path, num_trials=2, echo=False)
    table.on_trial_complete(0, [], fake_trial("t1", FINAL | {"time_total_s": 30.0}))
    table.on_trial_error(0, [], fake_trial("t2", {"status": "running", "reward": 0.2}, node_id="b"))
    written = (tmp_path / "trials.csv").read_text()
    restarted = TrialTable(tmp_path, num_trials=2, echo=False)  # the driver was killed; Tune resumes
    restarted.setup()
    restarted.on_trial_complete(0, [], fake_trial("t1", FINAL | {"time_total_s": 2.0, "reward": 0.1}))
    assert (tmp_path / "trials.csv").read_text() == written
    restarted.on_trial_complete(0, [], fake_trial("t2", FINAL | {"reward": 0.7}, node_id="b"))  # errored: rerun
    rows = pd.read_csv(tmp_path / "trials.csv").set_index("trial_id")
    assert rows.at["t1", "reward"] == 0.61 and rows.at["t1", "time_total_s"] == 30.0
    assert rows.at["t2", "reward"] == 0.7 and rows.at["t2", "status"] == "completed"


def test_the_fidelity_goes_into_the_table_the_log_and_the_progress_line(tmp_path, capsys):
    table = TrialTable(tmp_path, num_trials=3, echo=True)
    screen = fake_trial("t1", FINAL | {"reward": 0.9, "classification": "converged"})
    screen.config["fidelity"] = "screen"
    table.on_trial_complete(0, [], screen)
    assert "best reward at screen 0.900 (node a, converged" in capsys.readouterr().err
    full = fake_trial("t2", FINAL | {"reward": 0.6}, node_id="a")
    full.config |= {"fidelity": "full", "strategy": "promotion", "mutation": "promotion of a"}
    table.on_trial_complete(0, [], full)
    assert "best reward 0.600 (node a, partial-k" in capsys.readouterr().err  # full budget first
    table.on_trial_complete(0, [], fake_trial("t3", FINAL | {"reward": 0.1}, node_id="b"))  # a space without one
    rows = pd.read_csv(tmp_path / "trials.csv")
    assert list(rows["fidelity"]) == ["screen", "full", "full"] and rows.columns[6] == "fidelity"
    log = (tmp_path / "analysis.md").read_text()
    assert log.count("Config: seed=77, fidelity=screen, learning_rate_k=") == 1
    assert log.count("Config: seed=77, fidelity=full, ") == 2
