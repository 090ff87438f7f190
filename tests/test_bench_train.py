"""benchmarks/bench_train.py --scale on the mission-sized network, with two trainings at once: one row with every
column, the parallel ones included, and a clear error for an unknown network."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_train.py"


def test_the_scale_benchmark_times_a_network_alone_and_beside_itself(tmp_path):
    table = tmp_path / "scale.csv"
    done = subprocess.run([sys.executable, str(SCRIPT), "--scale", "--networks", "random_100", "--iterations", "5",
                           "--windows", "1", "--parallel", "2", "--csv", str(table)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    row = pd.read_csv(table).iloc[0]
    assert row["network"] == "random_100" and row["n_metabolites"] == 100 and row["vs_mission"] == 1.0
    for column in ("conservation_ms_per_it", "conservation_cpu_ms_per_it", "residual_ms_per_it", "refresh_s",
                   "parallel_ms_per_it", "parallel_throughput_x"):
        assert row[column] > 0, column
    assert "on cpu" in done.stdout


def test_an_unknown_network_is_refused_in_one_line():
    done = subprocess.run([sys.executable, str(SCRIPT), "--scale", "--networks", "random_7"],
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("error: unknown network random_7")


def test_a_table_or_figure_without_scale_is_refused_not_ignored(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--cases", "free_residual", "--csv", str(tmp_path / "t.csv")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "--csv, --figure and --from-csv apply with --scale only" in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "t.csv").exists()
