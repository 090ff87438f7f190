"""benchmarks/bench_warm_start.py on the smoke space: every run and the regression end up in runs.csv with their
evaluations, and a rerun trains nothing again."""

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_warm_start", REPO / "benchmarks" / "bench_warm_start.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_warm_start"] = bench
_spec.loader.exec_module(bench)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METABO_TUNE_CACHE", str(tmp_path / "cache"))


def test_the_benchmark_records_every_run_and_resumes_without_training_again(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["--config", str(REPO / "search_spaces" / "smoke.yaml"), "--networks", "1", "--levels", "0.01",
            "--warm-levels", "0.01", "--evaluate-every", "0.5", "--jobs", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    runs = pd.read_csv(out / "runs.csv", float_precision="round_trip")
    assert sorted(runs["method"]) == ["gnn, init random", "gnn, init regression", "regression"]
    trained = runs[runs["method"] != "regression"]
    assert (trained["total_iterations"] == 75).all() and (trained["moment_window"] == 1).all()  # smoke: W 1
    evaluations = pd.read_csv(out / "evaluations.csv")
    assert sorted(evaluations["iteration"].unique()) == [38, 75]  # every half of the run
    warm = evaluations[evaluations["method"] == "gnn, init regression"]
    cold = evaluations[evaluations["method"] == "gnn, init random"]
    assert warm["rate_constants_R2"].iloc[0] > cold["rate_constants_R2"].iloc[0]  # it does start from the fit
    written = (out / "runs.csv").stat().st_mtime_ns
    capsys.readouterr()
    assert bench.main(argv) == 0
    assert "0 training runs" in capsys.readouterr().err
    assert pd.read_csv(out / "runs.csv", float_precision="round_trip").equals(runs)
    assert (out / "runs.csv").stat().st_mtime_ns >= written
