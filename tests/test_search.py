"""The search end to end on Ray: each search runs as a user would, `python -m metabo_tune.search` in
its own process with its own Ray instance (and its own Ray temp dir, so a killed driver's orphans can be
found and stopped without touching any other Ray on the machine)."""

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import kill_ray_of

from metabo_tune.search import (
    SearchError,
    check_resumed_settings,
    main,
    parse_args,
    short_of,
    trial_resources,
    unreachable,
)
from metabo_tune.space import load_space
from metabo_tune.trainable import RESUME_FILE

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "search_spaces" / "smoke.yaml"


def search_command(*args: str) -> list[str]:
    """A local instance of 2 CPUs; a cluster given by --address has its own."""
    cpus = [] if "--address" in args else ["--cpus", "2"]
    return [sys.executable, "-m", "metabo_tune.search", *cpus, *args]


def environment(ray_tmp: Path, tmp_path: Path) -> dict[str, str]:
    """RAY_worker_niceness 0: Ray starts its workers at nice 15, where the trials of these searches, the suite's
    longest chain, would wait for every test running beside them on the other xdist worker."""
    return os.environ | {"RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "disabled", "RAY_worker_niceness": "0",
                         "METABO_TUNE_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}


def run_search(ray_tmp: Path, tmp_path: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(search_command(*args), env=environment(ray_tmp, tmp_path), capture_output=True,
                          text=True, timeout=timeout, cwd=tmp_path)


def derived_space(tmp_path: Path, name: str, change) -> Path:
    raw = yaml.safe_load(SMOKE.read_text())
    change(raw)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def read_tree(experiment: Path) -> list[dict]:
    return [json.loads(line) for line in (experiment / "tree.jsonl").read_text().splitlines()]


def parse_mutation(text: str) -> dict[str, str]:
    changes = {}
    for part in text.split("; "):
        name, _, move = part.partition(": ")
        changes[name] = move.split(" -> ")[1]
    return changes


def test_a_screened_smoke_search_runs_eight_trials_four_at_a_time_and_promotes_to_full(ray_tmp, tmp_path):
    """The smoke space as a user runs it, with a fidelity section: new nodes screen at half the budget and
    the best are promoted to the full budget (one search covers the tree, the tables and the fidelities)."""
    space_file = derived_space(tmp_path, "smoke", screening(5))
    proc = run_search(ray_tmp, tmp_path, "--space", str(space_file), "--num-trials", "8", "--name", "smoke",
                      "--storage", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    experiment = tmp_path / "results" / "smoke"
    table = pd.read_csv(experiment / "trials.csv", dtype={"trial_id": str, "node_id": str})
    assert len(table) == 8 and table["trial_id"].is_unique
    # the known-form regression on the same (frozen) data, once, for analysis' baseline row
    baseline = json.loads((experiment / "regression" / "metrics.json").read_text())
    assert baseline["method"] == "regression" and "known-form regression on the same data" in proc.stderr
    space = load_space(space_file)
    nodes = {node["node_id"]: node for node in read_tree(experiment)}
    first = sorted(nodes.values(), key=lambda n: n["index"])[:4]
    base = space.base_values()
    for node, spread in zip(first, space.initial_spread, strict=True):
        assert node["parent_id"] is None and node["strategy"] == "initial"
        assert node["config"] == base | spread
    for node in nodes.values():
        assert set(node["config"]) == set(space.parameters)  # only tunable values travel; nothing frozen
        if node["parent_id"] is None:
            continue
        parent = nodes[node["parent_id"]]
        changed = {k for k in node["config"] if node["config"][k] != parent["config"][k]}
        assert changed == set(parse_mutation(node["mutation"])), node["mutation"]
    for column in ("classification", "degeneracy_gap", "diagnosis", "reward", "strategy", "mutation"):
        assert table[column].notna().all(), column
    assert set(table["classification"]) <= {"converged", "partial-k", "partial-homeo", "partial", "failed"}
    assert (experiment / "ucb_scores.txt").read_text().startswith("=== UCB Scores")
    assert "## Iter 1:" in (experiment / "analysis.md").read_text()
    assert (experiment / "memory.md").is_file()
    trial_dirs = [experiment / p for p in table["trial_dir"]]
    assert all((d / name).is_file() for d in trial_dirs
               for name in ("analysis.log", "mlp_node.png", "config.yaml", "final_report.json"))
    assert "8/8 trials done" in proc.stderr
    # a trial writes config.yaml before it trains and metrics.json when it ends
    spans = sorted((file_time(d / "config.yaml"), file_time(d / "metrics.json")) for d in trial_dirs)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)), "no two trials ran at once"
    # the last trial to start ran in an actor an earlier trial had used (8 trials, at most 4 actors): its metrics are
    # those of its config trained in a fresh process
    last = max(trial_dirs, key=lambda d: file_time(d / "config.yaml"))
    fresh = subprocess.run([sys.executable, "-m", "metabo_tune.train", str(last / "config.yaml"), "--out",
                            str(tmp_path / "fresh")], capture_output=True, text=True, timeout=120,
                           env=environment(ray_tmp, tmp_path) | {"OMP_NUM_THREADS": "1"})
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    in_search, alone = (json.loads((d / "metrics.json").read_text()) for d in (last, tmp_path / "fresh"))
    shared = sorted((set(in_search) & set(alone)) - {"training_time_min", "iterations_per_s"})
    assert len(shared) > 50
    pd.testing.assert_series_equal(pd.Series(in_search)[shared], pd.Series(alone)[shared], check_exact=True)

    # fidelities: every node starts at screen; promotions (and their replicates) run at full budget
    assert set(table["fidelity"]) == {"screen", "full"}
    own = table[table["trial_id"] == table["node_id"]]
    assert (own["fidelity"] == "screen").all()
    promotions = table[table["strategy"] == "promotion"]
    assert len(promotions) >= 1 and promotions["node_id"].is_unique and promotions["node_id"].isin(own["node_id"]).all()
    assert (promotions["fidelity"] == "full").all() and set(table[table["fidelity"] == "full"]["strategy"]) <= {
        "promotion", "replicate"}
    for row in table.itertuples():
        assert row.trial_dir.endswith(f"_seed_{row.seed}_{row.fidelity}"), row.trial_dir
        budget = yaml.safe_load((experiment / row.trial_dir / "config.yaml").read_text())["training"]
        assert budget["data_augmentation_loop"] == (5 if row.fidelity == "screen" else 10), row.trial_dir
    assert table["trial_dir"].is_unique
    fidelities = {t["trial_id"]: t["fidelity"] for node in nodes.values() for t in node["trials"]}
    assert fidelities == dict(zip(table["trial_id"], table["fidelity"], strict=True))
    assert "Rewards are screen-fidelity rewards" in (experiment / "ucb_scores.txt").read_text()
    assert "fidelity=screen" in (experiment / "analysis.md").read_text()

    analysed = subprocess.run([sys.executable, "-m", "metabo_tune.analysis", str(experiment)], capture_output=True,
                              text=True, timeout=120, env=environment(ray_tmp, tmp_path))
    assert analysed.returncode == 0, analysed.stderr[-3000:]
    assert "smoke: 8 finished trials, 0 running" in (experiment / "report" / "report.md").read_text()


def file_time(path: Path) -> int:
    return path.stat().st_mtime_ns


def trial_files(experiment: Path, trial_dir: str) -> dict[str, int]:
    return {f.name: file_time(f) for f in sorted((experiment / trial_dir).iterdir()) if f.is_file()}


def screening(screen_budget: float, budget: float | None = None, replicates: int | None = None):
    """A change for `derived_space`: a fidelity section screening at `screen_budget`."""
    def change(raw):
        raw["fidelity"] = {"screen": {"training.data_augmentation_loop": screen_budget}, "promote_eta": 3}
        if budget is not None:
            raw["budget"]["data_augmentation_loop"] = budget
        if replicates is not None:
            raw["replicates"] = replicates
    return change


def test_a_killed_driver_resumes_its_promotion_from_its_checkpoint_and_loses_or_repeats_nothing(ray_tmp, tmp_path):
    # Two at a time, screens of 300 iterations and promotions of 1800, each checkpointed every 10 %: the
    # first screen to finish is promoted at once (the top 1 of 1), and the kill catches it mid-way.
    space = derived_space(tmp_path, "promoting", screening(40, budget=240, replicates=1))
    storage = tmp_path / "results"
    experiment = storage / "promoting"
    args = ["--space", str(space), "--num-trials", "6", "--concurrency", "2", "--name", "promoting",
            "--storage", str(storage)]
    driver = subprocess.Popen(search_command(*args), env=environment(ray_tmp, tmp_path), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    running = None  # (trial dir, Ray trial id) of a promotion that has checkpointed and not finished
    deadline = time.time() + 300
    while time.time() < deadline and running is None and driver.poll() is None:
        for trial_dir in (experiment / "trials").glob("node_*_full"):
            node_id = trial_dir.name.removeprefix("node_").split("_seed_")[0]
            for ray_dir in experiment.glob(f"trial_{node_id}_*"):
                trial_id = ray_dir.name.removeprefix(f"trial_{node_id}_")
                if (trial_id != node_id and (trial_dir / RESUME_FILE).exists()
                        and not (trial_dir / "final_report.json").exists()):
                    running = trial_dir, trial_id
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    kill_ray_of(ray_tmp, tmp_path)
    assert running is not None, "no promotion was caught running"
    killed, killed_id = running
    assert not (killed / "final_report.json").exists(), "the promotion finished before it could be killed"
    trials_csv = experiment / "trials.csv"
    before = pd.read_csv(trials_csv, dtype={"trial_id": str}).set_index("trial_id")
    files_before = {trial_id: trial_files(experiment, trial_dir) for trial_id, trial_dir in before["trial_dir"].items()}
    proc = run_search(ray_tmp, tmp_path, *args, "--resume", timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(trials_csv, dtype={"trial_id": str, "node_id": str})
    assert len(table) == 6 and table["trial_id"].is_unique and (table["status"] == "completed").all()
    assert table["trial_dir"].is_unique and len(list((experiment / "trials").iterdir())) == 6
    after = table.set_index("trial_id")
    pd.testing.assert_frame_equal(after.loc[before.index, before.columns], before, check_dtype=False)
    for trial_id, files in files_before.items():
        assert trial_files(experiment, before.at[trial_id, "trial_dir"]) == files, trial_id
    per_node = table.groupby(["node_id", "fidelity"]).size()
    assert (per_node == 1).all(), per_node  # one screen trial per node, one full trial per promoted node
    assert (table.loc[table["fidelity"] == "full", "strategy"] == "promotion").all()
    # the killed promotion went on as the same trial, from its checkpoint, into its own directory, and finished
    assert after.at[killed_id, "trial_dir"] == str(killed.relative_to(experiment))
    assert after.at[killed_id, "resumed_from"] > 0, "the killed promotion did not continue from its checkpoint"
    assert (killed / "final_report.json").is_file()
    trial_ids = [t["trial_id"] for node in read_tree(experiment) for t in node["trials"]]
    assert sorted(trial_ids) == sorted(table["trial_id"])


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(ray_tmp, tmp_path):
    space = derived_space(tmp_path, "slow", lambda raw: raw["budget"].update(data_augmentation_loop=100))
    args = ["--space", str(space), "--num-trials", "8", "--concurrency", "2", "--name", "stopped", "--storage",
            str(tmp_path / "results")]
    driver = subprocess.Popen(search_command(*args), env=environment(ray_tmp, tmp_path), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    trials = tmp_path / "results" / "stopped" / "trials"
    deadline = time.time() + 180
    while time.time() < deadline and not any(trials.glob("node_*/config.yaml")):  # a trial is training
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 130, stderr[-2000:]
    assert "run the same command with --resume" in stderr


def test_failing_and_diverging_trials_become_failed_nodes(ray_tmp, tmp_path):
    def spread(raw):
        raw["parameters"]["training.learning_rate_k"]["high"] = 100.0
        raw["parameters"]["training.time_step"] = {"type": "int", "low": 1, "high": 64}
        raw["base"]["simulation"]["n_frames"] = 10
        raw["initial_spread"] = [{}, {"training.learning_rate_k": 100.0},
                                 {"training.recurrent_training": True, "training.time_step": 40}]
    space = derived_space(tmp_path, "faulty", spread)
    proc = run_search(ray_tmp, tmp_path, "--space", str(space), "--num-trials", "5", "--concurrency", "2",
                      "--name", "faulty", "--storage", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results" / "faulty" / "trials.csv").set_index("node_id")
    assert len(table) == 5
    statuses = set(table["status"])
    assert {"diverged", "error"} <= statuses and "completed" in statuses
    failed = table[table["status"] != "completed"]
    assert (failed["classification"] == "failed").all() and (failed["reward"] == 0).all()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_address_auto_joins_a_running_cluster(ray_tmp, tmp_path):
    # No --temp-dir: `ray start` then records its address under $RAY_TMPDIR/ray, where the search's
    # ray.init(address="auto") looks first, so another Ray running on this machine is never chosen.
    env = environment(ray_tmp, tmp_path)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    start = subprocess.run([ray_bin, "start", "--head", "--num-cpus", "2", "--port", str(port),
                            "--include-dashboard", "false"], env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        proc = run_search(ray_tmp, tmp_path, "--address", "auto", "--space", str(SMOKE), "--num-trials", "2",
                          "--name", "joined", "--storage", str(tmp_path / "results"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        joined = re.search(r"Connecting to existing Ray cluster at address: (\S+?)\.\.\.", proc.stderr)
        assert joined and joined[1].endswith(f":{port}"), proc.stderr[-3000:]
        assert len(pd.read_csv(tmp_path / "results" / "joined" / "trials.csv")) == 2
    finally:
        kill_ray_of(ray_tmp, tmp_path)  # this cluster only: `ray stop` would stop every Ray here


def test_resume_of_a_missing_experiment_fails_fast(ray_tmp, tmp_path):
    proc = run_search(ray_tmp, tmp_path, "--space", str(SMOKE), "--name", "nothing", "--resume",
                      "--storage", str(tmp_path / "results"), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --resume: no experiment to resume")


def test_a_gpu_request_on_a_gpu_less_cluster_fails_fast(ray_tmp, tmp_path):
    started = time.time()
    proc = run_search(ray_tmp, tmp_path, "--space", str(SMOKE), "--gpus-per-trial", "1",
                      "--storage", str(tmp_path / "results"), timeout=120)
    assert proc.returncode == 2
    assert "the Ray cluster has 0 GPUs" in proc.stderr
    assert time.time() - started < 60


def test_an_invalid_space_file_is_one_line_and_exit_2(ray_tmp, tmp_path):
    bad = derived_space(tmp_path, "bad", lambda raw: raw["parameters"].update({"simulation.seed": {"type": "int"}}))
    proc = run_search(ray_tmp, tmp_path, "--space", str(bad), timeout=60)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "bad.yaml" in last and "simulation.seed" in last


@pytest.mark.parametrize(("argv", "message"), [
    (["--cpus", "-1"], "error: --cpus -1: must be > 0 (see python -m metabo_tune.search --help)"),
    (["--gpus-per-trial", "abc"], "error: --gpus-per-trial 'abc': expected 'auto' or a number (see"),
    (["--gpus-per-trial", "-0.5"], "error: --gpus-per-trial -0.5: must be >= 0 (see"),
    (["--storage", "notes.txt"], "is a file, not a folder; choose another --storage"),
    (["--cpus", "2", "--address", "auto"], "error: --cpus sizes a local Ray instance; the cluster at --address"),
])
def test_bad_arguments_are_refused_before_ray_or_the_regression_start(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("")
    try:
        code = main(["--space", str(SMOKE), *argv])
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]  # nothing written, no Ray started


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_address_that_takes_no_connection_is_refused_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    port = closed_port()
    started = time.time()
    code = main(["--space", str(SMOKE), "--address", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 2 and f"error: --address 127.0.0.1:{port}: cannot connect (Connection refused)" in err
    assert time.time() - started < 15  # Ray's own retries take about 20 s
    assert not (tmp_path / "results" / "smoke" / "regression").exists()


def test_unreachable_probes_host_and_port_only():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert unreachable(f"127.0.0.1:{port}") is None
        assert unreachable(f"ray://127.0.0.1:{port}") is None
    assert unreachable(f"127.0.0.1:{closed_port()}") == "Connection refused"
    assert unreachable("auto") is None and unreachable(None) is None


def test_a_resume_with_other_settings_than_the_experiment_is_refused(tmp_path):
    (tmp_path / "search.json").write_text(json.dumps({"num_trials": 2, "concurrency": 4, "seed": 0}))
    args = parse_args(["--space", str(SMOKE), "--num-trials", "2", "--resume"])
    check_resumed_settings(args, tmp_path)
    check_resumed_settings(parse_args(["--num-trials", "9", "--resume"]), tmp_path / "no_settings_kept")
    with pytest.raises(SearchError, match=r"was started with --num-trials 2, not 4; resume with --num-trials 2"):
        check_resumed_settings(parse_args(["--space", str(SMOKE), "--num-trials", "4", "--resume"]), tmp_path)
    with pytest.raises(SearchError, match=r"was started with --seed 0, not 3"):
        check_resumed_settings(parse_args(["--num-trials", "2", "--seed", "3", "--resume"]), tmp_path)


def test_short_of_names_what_a_trial_lacks_now():
    assert short_of({"cpu": 1.0}, {"CPU": 0.5, "memory": 1e9}) == ["CPU"]
    assert short_of({"cpu": 0.5, "gpu": 1.0}, {"CPU": 2.0, "GPU": 1.0}) == []
    assert short_of({"cpu": 1.0, "gpu": 0.25}, {}) == ["CPU", "GPU"]


def test_trial_resources():
    assert trial_resources({"CPU": 2.0}, "auto", 4) == {"cpu": 0.5}
    assert trial_resources({"CPU": 16.0, "GPU": 4.0}, "auto", 4) == {"cpu": 1.0, "gpu": 1.0}
    assert trial_resources({"CPU": 16.0, "GPU": 1.0}, "0.25", 4) == {"cpu": 1.0, "gpu": 0.25}
    assert trial_resources({"CPU": 2.0, "GPU": 1.0}, "0", 4) == {"cpu": 0.5}
    with pytest.raises(SearchError, match="has 0 GPUs"):
        trial_resources({"CPU": 2.0}, "1", 4)
    with pytest.raises(SearchError, match="expected 'auto' or a number"):
        trial_resources({"CPU": 2.0}, "many", 4)


def test_cluster_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["resources"]["GPU"] == 1 and workers["max_workers"] == 4
    assert "head" in config["available_node_types"] and "GPU" not in config["available_node_types"]["head"]["resources"]
    commands = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert commands.count("RAY_AUTH_MODE=token") == 2
    assert any("pip install" in c and "metabo_tune" in c for c in config["setup_commands"])
