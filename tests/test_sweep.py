import json
import subprocess
import sys
import time
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.container import ErrorbarContainer
from matplotlib.image import imread
from test_confirm import TINY, private_cache  # noqa: F401  (private_cache: autouse fixture)

from metabo_tune import sweep
from metabo_tune.config import ConfigError, config_from_dict
from metabo_tune.plots import curve_figure
from metabo_tune.sweep import (
    combined_table,
    curve_panels,
    curve_table,
    grid_points,
    main,
    parse_vary,
    per_run_table,
    reported_columns,
    summary_markdown,
    summary_table,
    true_baselines,
    with_values,
)


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


def test_summary_md_heads_each_column_with_the_values_of_its_keys():
    per_run = per_run_table([{"noise": "0", "seed": "1"}, {"noise": "0.1", "seed": "1"}],
                            [{"status": "completed", "classification": "converged", "rate_constants_R2": 1.0}] * 2)

    def header(by):
        return [cell.strip() for cell in summary_markdown(summary_table(per_run, by)).splitlines()[0].split("|")[2:-1]]

    assert header(["noise"]) == ["noise=0.0", "noise=0.1"]
    assert header(["noise", "seed"]) == ["noise=0.0,seed=1", "noise=0.1,seed=1"]
    assert header([]) == ["all"]


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
    assert ": 2 finished before (reused), 0 to train\n" in capsys.readouterr().err
    assert checkpoint.stat().st_mtime_ns == written  # reused, not retrained
    assert pd.read_csv(out / "sweep.csv").equals(per_run)


def test_a_rerun_says_how_many_runs_finished_before(tmp_path, capsys, monkeypatch):
    """A run whose metrics.json and config.yaml (of the same config) are there is only evaluated again."""
    def fake_train(cfg, out_dir, method):
        metrics = {"status": "completed", "classification": "converged", "rate_constants_R2": 1.0}
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        (out_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(sweep, "_train", fake_train)
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "sweep"
    argv = [str(config), "--vary", "training.seed=1,2,3", "--out", str(out)]
    assert main(argv) == 0
    start = f"[metabo_tune] 3 runs in {out / 'runs'}, 1 at a time"
    assert capsys.readouterr().err.splitlines()[0] == start
    (out / "runs" / "training.seed=3" / "metrics.json").unlink()
    assert main(argv) == 0
    assert capsys.readouterr().err.splitlines()[0] == f"{start}: 2 finished before (reused), 1 to train"
    assert main([*argv, "--set", "training.learning_rate_node=5e-4"]) == 0  # another config: trained anew
    assert capsys.readouterr().err.splitlines()[0] == start


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


def test_an_out_that_is_a_file_is_refused_before_any_run(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))
    for argv in ([str(config), "--vary", "training.seed=1"], ["--compare", str(tmp_path), str(tmp_path)]):
        assert main([*argv, "--out", str(config)]) == 2
        assert capsys.readouterr().err == f"error: --out {config}: is a file, not a folder; choose another --out\n"


def test_a_point_whose_simulation_diverges_is_a_failed_row_and_the_others_go_on(tmp_path, capsys):
    """delta_t 5 makes the tiny network's Euler steps blow up: that point is recorded with its error, in the
    worker pool as well, while the other point trains; when every point fails it is bad input."""
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "sweep"
    code = main([str(config), "--vary", "simulation.delta_t=0.1,5", "--jobs", "2", "--out", str(out)])
    assert code == 1
    per_run = pd.read_csv(out / "sweep.csv")
    assert per_run["status"].tolist() == ["completed", "error"]
    assert per_run["classification"].iloc[1] == "failed"
    assert "diverged" in per_run["error"].iloc[1] and pd.isna(per_run["error"].iloc[0])
    assert per_run["rate_constants_R2"].iloc[0] > 0 and pd.isna(per_run["rate_constants_R2"].iloc[1])
    assert (out / "runs" / "simulation.delta_t=0.1" / "metrics.json").is_file()
    assert "simulation.delta_t=5: error, failed: simulation seed 42" in capsys.readouterr().err
    assert main([str(config), "--vary", "simulation.delta_t=5,20", "--out", str(tmp_path / "all")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: simulation seed 42: the training trajectory diverged")


NOISE = "training.measurement_noise_level"


def run_row(level, seed, classification, r2, **extra):
    return {NOISE: level, "simulation.seed": seed, "status": "completed", "classification": classification,
            "rate_constants_R2": r2, "log_k_rmse": 1 - r2, "MLP_node_slope_ratio_0": 1.0,
            "MLP_node_baseline_0": 4.0 + level, "embedding_cluster_acc": 1.0, **extra}


# Two hand-built sweeps over the noise level and network seeds; `noisy` also has level 0.1, with 3 seeds.
JOINT = [run_row(0, 1, "converged", 1.0), run_row(0, 2, "converged", 0.8),
         run_row(0.01, 1, "partial-k", 0.5), run_row(0.01, 2, "failed", 0.3)]
NOISY = [run_row(0, 1, "converged", 0.9), run_row(0, 2, "partial", 0.7),
         run_row(0.01, 1, "converged", 0.95), run_row(0.01, 2, "converged", 0.85),
         run_row(0.1, 1, "failed", 0.1), run_row(0.1, 2, "failed", 0.2), run_row(0.1, 3, "converged", 0.95)]


def training_seeds(rows):
    """The rows with the network seed renamed to a training seed: a sweep over other keys."""
    return [{("training.seed" if key == "simulation.seed" else key): value for key, value in row.items()}
            for row in rows]


def write_sweep(directory, rows, baselines=(4.0, 6.0)):
    (directory / "runs" / "a").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(directory / "sweep.csv", index=False)
    (directory / "runs" / "a" / "config.yaml").write_text(
        json.dumps({"simulation": {"homeostatic_baseline_per_type": list(baselines)}}))
    return directory


def test_the_combined_table_has_a_row_per_level_and_sweep_with_counts_and_means():
    table = combined_table({"joint": pd.DataFrame(JOINT), "noisy": pd.DataFrame(NOISY)}, NOISE)
    assert list(zip(table[NOISE], table["configuration"], strict=True)) == [
        (0, "joint"), (0, "noisy"), (0.01, "joint"), (0.01, "noisy"), (0.1, "noisy")]
    assert table["runs"].tolist() == [2, 2, 2, 2, 3]
    assert table["converged"].tolist() == [2, 1, 0, 2, 1]
    assert table["failed"].tolist() == [0, 0, 1, 0, 2]
    assert table["partial-k"].tolist() == [0, 0, 1, 0, 0]  # a class one sweep never saw counts 0 there
    assert table["converged_fraction"].tolist() == pytest.approx([1.0, 0.5, 0.0, 1.0, 1 / 3])
    assert table["rate_constants_R2_mean"].tolist() == pytest.approx([0.9, 0.8, 0.4, 0.9, 1.25 / 3])
    assert table["rate_constants_R2_sd"].iloc[2] == pytest.approx(pd.Series([0.5, 0.3]).std())
    assert table["MLP_node_baseline_0_mean"].tolist() == pytest.approx([4.0, 4.0, 4.01, 4.01, 4.1])


def test_true_baselines_only_when_every_simulated_run_agrees():
    assert true_baselines([{"homeostatic_baseline_per_type": [4.0, 6.0]}] * 2) == {
        "MLP_node_baseline_0": 4.0, "MLP_node_baseline_1": 6.0}
    assert true_baselines([{"homeostatic_baseline_per_type": [4.0, 6.0]},
                           {"homeostatic_baseline_per_type": [4.0, 5.0]}]) == {}
    assert true_baselines([{"homeostatic_baseline_per_type": [4.0, 6.0], "data_dir": "mine"}]) == {}
    assert true_baselines([]) == {}


def errorbars(ax):
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


@pytest.mark.parametrize(("levels", "scale"), [((0, 0.01), "symlog"), ((0.001, 0.01), "log")])
def test_the_curve_has_one_errorbar_line_per_sweep_in_every_panel(levels, scale):
    joint, noisy = (pd.DataFrame(rows) for rows in (JOINT, NOISY))
    joint[NOISE] = joint[NOISE].map(dict(zip((0, 0.01), levels, strict=True)))
    noisy = noisy[noisy[NOISE] < 0.1].assign(**{NOISE: joint[NOISE].to_numpy()})
    panels = curve_panels(joint.columns)
    assert panels == ["rate_constants_R2", "log_k_rmse", "MLP_node_slope_ratio_0", "MLP_node_baseline_0",
                      "embedding_cluster_acc", "converged_fraction"]
    fig = curve_figure({"joint": curve_table(joint, NOISE), "noisy": curve_table(noisy, NOISE)}, NOISE, panels,
                       {"MLP_node_baseline_0": 4.0})
    assert [ax.get_title() for ax in fig.axes] == panels
    for ax in fig.axes:
        assert [c.get_label() for c in errorbars(ax)] == ["joint", "noisy"]
        assert ax.get_xscale() == scale
        assert ax.get_xlim()[0] <= min(levels)
    r2 = errorbars(fig.axes[0])[0]
    assert r2.lines[0].get_xdata().tolist() == list(levels)
    assert r2.lines[0].get_ydata().tolist() == pytest.approx([0.9, 0.4])
    converged = errorbars(fig.axes[-1])[1].lines[0].get_ydata().tolist()
    assert converged == [0.5, 1.0]
    dashed = {line.axes.get_title(): list(line.get_ydata())
              for ax in fig.axes for line in ax.get_lines() if line.get_linestyle() == "--"}
    assert dashed == {"MLP_node_baseline_0": [4.0, 4.0], "MLP_node_slope_ratio_0": [1.0, 1.0]}
    assert [ax.get_yscale() for ax in fig.axes] == ["linear", "linear", "log", "linear", "linear", "linear"]


def test_a_slope_ratio_panel_with_values_at_or_below_0_is_symlog_and_shows_them():
    table = pd.DataFrame(JOINT).assign(MLP_node_slope_ratio_0=[-0.5, -0.4, -0.3, -0.2], MLP_node_slope_ratio_1=2.0)
    panels = ["MLP_node_slope_ratio_0", "MLP_node_slope_ratio_1"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = curve_figure({"joint": curve_table(table, NOISE)}, NOISE, panels)
        fig.savefig(BytesIO())
    negative, positive = fig.axes
    assert negative.get_yscale() == "symlog" and positive.get_yscale() == "log"
    assert negative.get_ylim()[0] <= -0.45 and negative.get_ylim()[1] >= 1.0  # the means and the line at 1


def test_compare_writes_the_table_and_the_noise_curve(tmp_path, capsys):
    joint, noisy = write_sweep(tmp_path / "joint", JOINT), write_sweep(tmp_path / "noisy", NOISY)
    out = tmp_path / "out"
    assert main(["--compare", str(joint), str(noisy), "--labels", "final", "noise-ready", "--out", str(out)]) == 0
    table = pd.read_csv(out / "compare.csv")
    assert table["configuration"].tolist() == ["final", "noise-ready", "final", "noise-ready", "noise-ready"]
    assert table["converged"].tolist() == [2, 1, 0, 2, 1]
    markdown = (out / "compare.md").read_text()
    assert markdown == capsys.readouterr().out
    assert "| noise-ready" in markdown and "0.9 ± 0.14" in markdown and "training_time_min" not in markdown
    assert imread(out / "noise_curve.png").shape[2] == 4
    assert not (out / "curve.png").exists()


def test_compare_over_another_key_draws_curve_png(tmp_path):
    write_sweep(tmp_path / "a", training_seeds(JOINT))
    write_sweep(tmp_path / "b", training_seeds(NOISY))
    assert main(["--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--key", "training.seed",
                 "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "curve.png").is_file()
    table = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert table["training.seed"].tolist() == [1, 1, 2, 2, 3] and table["runs"].tolist() == [2, 3, 2, 3, 1]


@pytest.mark.parametrize(("second", "extra", "message"), [
    ("empty", [], "empty: no sweep.csv"),
    ("seeds", [], "the sweeps vary different keys: joint varies training.measurement_noise_level, simulation.seed; "
                  "seeds varies training.measurement_noise_level, training.seed"),
    ("noisy", ["--labels", "one"], "--labels: 1 labels for 2 sweeps"),
    ("noisy", ["--key", "training.seed"], "--key training.seed: not a varied key"),
])
def test_compare_refuses_bad_input_in_one_line(tmp_path, capsys, second, extra, message):
    write_sweep(tmp_path / "joint", JOINT)
    write_sweep(tmp_path / "noisy", NOISY)
    write_sweep(tmp_path / "seeds", training_seeds(NOISY))
    (tmp_path / "empty").mkdir()
    assert main(["--compare", str(tmp_path / "joint"), str(tmp_path / second), *extra,
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "out").exists()


def test_a_run_that_raises_is_a_failed_row_with_its_traceback_and_the_others_go_on(tmp_path, capsys, monkeypatch):
    """A numerical failure inside one run (here a LinAlgError, as numpy's eigensolver once raised in the form-free
    fit) must not end the sweep and lose the other runs."""
    def train_or_raise(cfg, out_dir, method):
        if cfg.simulation.seed == 2:
            raise np.linalg.LinAlgError("Eigenvalues did not converge")
        return {"status": "completed", "classification": "converged", "rate_constants_R2": 1.0}

    monkeypatch.setattr(sweep, "_train", train_or_raise)
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "sweep"
    assert main([str(config), "--vary", "simulation.seed=1,2,3", "--out", str(out)]) == 1
    per_run = pd.read_csv(out / "sweep.csv")
    assert per_run["status"].tolist() == ["completed", "error", "completed"]
    assert per_run["error"].iloc[1].startswith("LinAlgError: Eigenvalues did not converge")
    traceback_text = (out / "runs" / "simulation.seed=2" / sweep.ERROR_FILE).read_text()
    assert "train_or_raise" in traceback_text and "LinAlgError" in traceback_text
    assert "simulation.seed=2: error, failed: LinAlgError" in capsys.readouterr().err


def test_a_noise_by_seed_sweep_draws_its_curve_with_the_simulated_baselines(tmp_path, monkeypatch):
    def fake_train(cfg, out_dir, method):
        level, seed = cfg.training.measurement_noise_level, cfg.simulation.seed
        r2 = 1.0 - 10 * level - 0.01 * seed
        return {"status": "completed", "classification": "converged" if r2 > 0.9 else "partial-k",
                "rate_constants_R2": r2, "MLP_node_baseline_0": 4.0 + level, "MLP_node_baseline_1": 6.0}

    figures = []

    def recording_curve_figure(*args, **kwargs):
        figures.append(curve_figure(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(sweep, "_train", fake_train)
    monkeypatch.setattr(sweep, "curve_figure", recording_curve_figure)
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "sweep"
    assert main([str(config), "--vary", f"{NOISE}=0,0.01", "--vary", "simulation.seed=1,2", "--out", str(out)]) == 1
    assert imread(out / "curve.png").shape[2] == 4
    (fig,) = figures
    assert [ax.get_title() for ax in fig.axes] == ["rate_constants_R2", "MLP_node_baseline_0", "MLP_node_baseline_1",
                                                   "converged_fraction"]
    assert fig.axes[0].get_xscale() == "symlog"
    assert errorbars(fig.axes[0])[0].lines[0].get_ydata().tolist() == pytest.approx([0.985, 0.885])
    assert errorbars(fig.axes[3])[0].lines[0].get_ydata().tolist() == [1.0, 0.0]
    truths = [[line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"] for ax in fig.axes]
    assert truths == [[], [4.0], [6.0], []]  # TINY simulates the default baselines 4 and 6

    assert main([str(config), "--vary", "simulation.seed=1,2", "--out", str(tmp_path / "seeds")]) == 0
    assert len(figures) == 1 and not (tmp_path / "seeds" / "curve.png").exists()  # averaged over the only key


def test_a_regression_sweep_is_one_more_method_to_compare(tmp_path, capsys):
    """`--method regression` fits every point by the known-form regression; --compare puts it beside a
    trained sweep over the same keys, each row marked with its method."""
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))
    vary = ["--vary", "training.measurement_noise_level=0,0.01"]
    assert main([str(config), *vary, "--out", str(tmp_path / "gnn")]) in (0, 1)
    assert main([str(config), *vary, "--method", "regression", "--out", str(tmp_path / "regression")]) in (0, 1)
    fitted = pd.read_csv(tmp_path / "regression" / "sweep.csv")
    assert fitted["method"].tolist() == ["regression", "regression"]
    assert fitted["rate_constants_R2"].iloc[0] > 0.9999  # exact data: the regression is exact
    assert not (tmp_path / "regression" / "runs" / "training.measurement_noise_level=0" / "checkpoint.pt").exists()
    assert pd.read_csv(tmp_path / "gnn" / "sweep.csv")["method"].tolist() == ["gnn", "gnn"]
    capsys.readouterr()
    assert main(["--compare", str(tmp_path / "gnn"), str(tmp_path / "regression"), "--out", str(tmp_path / "cmp")]) == 0
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert table["configuration"].tolist() == ["gnn", "regression", "gnn", "regression"]


def _workers_of(parent: int) -> set[int]:
    """The pool workers (spawned processes) whose parent is `parent`, from /proc."""
    workers = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent and b"multiprocessing-fork" in command:
            workers.add(int(stat.parent.name))
    return workers


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_sweep_stopped_by_sigterm_takes_its_workers_with_it(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))
    command = [sys.executable, "-m", "metabo_tune.sweep", str(config), "--vary", "training.seed=1,2", "--jobs", "2",
               "--set", "training.data_augmentation_loop=100000", "--out", str(tmp_path / "sweep")]
    sweep_process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(workers := _workers_of(sweep_process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(workers) == 2
    sweep_process.terminate()
    sweep_process.wait(timeout=30)
    deadline = time.monotonic() + 60 * sweep.PARENT_POLL_S  # generous: a loaded machine schedules the workers late
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
