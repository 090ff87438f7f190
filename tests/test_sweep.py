import json

import pandas as pd
import pytest

from metabo_tune.config import ConfigError, config_from_dict
from metabo_tune.sweep import (
    grid_points,
    main,
    parse_vary,
    per_run_table,
    reported_columns,
    summary_markdown,
    summary_table,
    with_values,
)

TINY = {
    "simulation": {"n_metabolites": 20, "n_reactions": 30, "n_frames": 300},
    "graph_model": {"hidden_dim_sub": 16, "n_layers_sub": 3, "hidden_dim_node": 16},
    "training": {"data_augmentation_loop": 10, "learning_rate_k": 5e-3, "seed": 77},
}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METABO_TUNE_CACHE", str(tmp_path / "cache"))


def test_the_grid_is_the_product_with_the_last_key_fastest():
    grid = parse_vary(["simulation.seed=1,2", "training.seed=7, 8"])
    assert grid == {"simulation.seed": ["1", "2"], "training.seed": ["7", "8"]}
    assert [tuple(point.values()) for point in grid_points(grid)] == [("1", "7"), ("1", "8"), ("2", "7"), ("2", "8")]


@pytest.mark.parametrize(("items", "message"), [
    (["training.seed"], "expected section.key=v1,v2"),
    (["seed=1,2"], "expected section.key=v1,v2"),
    (["training.seed=1", "training.seed=2"], "varied twice"),
])
def test_bad_vary_items_are_refused(items, message):
    with pytest.raises(ConfigError, match=message):
        parse_vary(items)


def test_values_are_validated_like_a_set():
    cfg = config_from_dict(TINY)
    assert with_values(cfg, {"training.seed": "3", "simulation.seed": "9"}).training.seed == 3
    with pytest.raises(ConfigError, match="batch_size"):
        with_values(cfg, {"training.batch_size": "0"})
    with pytest.raises(ConfigError, match="learning_rate_nod"):
        with_values(cfg, {"training.learning_rate_nod": "1e-3"})


def test_reported_columns_expand_every_type_in_order():
    columns = ["MLP_node_slope_ratio_10", "MLP_node_slope_ratio_2", "rate_constants_R2", "unrelated",
               "MLP_node_baseline_0"]
    assert reported_columns(columns) == ["rate_constants_R2", "MLP_node_slope_ratio_2", "MLP_node_slope_ratio_10",
                                         "MLP_node_baseline_0"]


def test_summary_counts_classes_and_averages_over_the_other_key():
    per_run = per_run_table(
        [{"noise": "0", "seed": "1"}, {"noise": "0", "seed": "2"}, {"noise": "0.1", "seed": "1"},
         {"noise": "0.1", "seed": "2"}],
        [{"status": "completed", "classification": "converged", "rate_constants_R2": 1.0, "other": 5},
         {"status": "completed", "classification": "converged", "rate_constants_R2": 0.8},
         {"status": "completed", "classification": "failed", "rate_constants_R2": 0.2},
         {"status": "completed", "classification": "partial-k", "rate_constants_R2": 0.4}])
    assert per_run["noise"].tolist() == [0.0, 0.0, 0.1, 0.1] and "other" not in per_run
    summary = summary_table(per_run, ["noise"])
    assert summary.loc[0.0, "runs"] == 2 and summary.loc[0.0, "converged"] == 2 and summary.loc[0.0, "failed"] == 0
    assert summary.loc[0.1, "failed"] == 1 and summary.loc[0.1, "partial-k"] == 1
    assert summary.loc[0.0, "rate_constants_R2_mean"] == pytest.approx(0.9)
    assert summary.loc[0.1, "rate_constants_R2_sd"] == pytest.approx(pd.Series([0.2, 0.4]).std())
    overall = summary_table(per_run, [])
    assert overall["runs"].tolist() == [4] and overall["rate_constants_R2_mean"].iloc[0] == pytest.approx(0.6)
    assert "0.9 ± 0.14" in summary_markdown(summary)


def test_command_trains_the_grid_writes_the_tables_and_reuses_finished_runs(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "sweep"
    argv = [str(config), "--set", "training.learning_rate_node=5e-4", "--vary", "training.seed=1,2",
            "--out", str(out)]
    code = main(argv)
    per_run = pd.read_csv(out / "sweep.csv")
    assert per_run["training.seed"].tolist() == [1, 2]
    assert set(per_run["classification"]) <= {"converged", "partial-k", "partial-homeo", "partial", "failed"}
    assert code == (0 if (per_run["classification"] == "converged").all() else 1)
    assert per_run["rate_constants_R2"].nunique() == 2  # two seeds, two different runs
    run_metrics = json.loads((out / "runs" / "training.seed=2" / "metrics.json").read_text())
    assert run_metrics["rate_constants_R2"] == pytest.approx(per_run["rate_constants_R2"].iloc[1])
    summary = pd.read_csv(out / "summary.csv")
    assert summary["runs"].tolist() == [2]
    assert summary["rate_constants_R2_mean"].iloc[0] == pytest.approx(per_run["rate_constants_R2"].mean())
    assert "rate_constants_R2" in (out / "summary.md").read_text()
    checkpoint = out / "runs" / "training.seed=1" / "checkpoint.pt"
    written = checkpoint.stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == code
    assert checkpoint.stat().st_mtime_ns == written  # reused, not retrained
    assert pd.read_csv(out / "sweep.csv").equals(per_run)


@pytest.mark.parametrize(("extra", "message"), [
    (["--vary", "training.seed=1", "--over", "simulation.seed"], "--over simulation.seed: not one of"),
    (["--vary", "training.batch_size=0"], "batch_size"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))
    assert main([str(config), *extra, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
