"""benchmarks/bench_search.py: the screening wrapper of random search and TPE against the tree's own
promotion rule (no Ray training), a run's figures from a hand-built completion log, and one tiny
benchmark end to end in its own process and Ray instance."""

import dataclasses
import importlib.util
import json
import math
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from conftest import kill_ray_of
from ray.tune.search import Searcher
from test_search import derived_space, environment, screening, trial_files

from metabo_tune.searcher import METRIC, TreeSearcher
from metabo_tune.space import Fidelity, load_space
from metabo_tune.tree import FULL, SCREEN

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "search_spaces" / "smoke.yaml"
SCREENING = Fidelity({"training.data_augmentation_loop": 5.0}, promote_eta=3)
LR = "training.learning_rate_k"

_spec = importlib.util.spec_from_file_location("bench_search", REPO / "benchmarks" / "bench_search.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


class StubSampler:
    """An inner searcher: proposes a new learning rate each time, records what it is told."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.results: list[str] = []
        self.completed: list[tuple[str, dict | None, bool]] = []
        self.evaluated: list[tuple[dict, float, bool]] = []

    def suggest(self, trial_id: str) -> dict:
        self.asked.append(trial_id)
        return {LR: 1e-3 * len(self.asked)}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.results.append(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.completed.append((trial_id, result, error))

    def add_evaluated_point(self, parameters: dict, value: float, error: bool = False) -> None:
        self.evaluated.append((parameters, value, error))


def finished(reward: float, classification: str = "partial", status: str = "completed") -> dict:
    return {"status": status, "reward": reward, "classification": classification, "final": True}


def screening_searcher(fidelity: Fidelity | None = SCREENING, concurrency: int = 8):
    space = dataclasses.replace(load_space(SMOKE), fidelity=fidelity)
    searcher = bench.ScreeningSearcher(StubSampler(), space)
    assert searcher.set_max_concurrency(concurrency) is True
    return searcher, space


def test_screened_configs_are_promoted_once_at_full_with_their_values_and_seed_served_first():
    searcher, space = screening_searcher()
    screens = {f"t{i}": searcher.suggest(f"t{i}") for i in range(6)}
    for trial_id, suggestion in screens.items():
        assert suggestion == {"node_id": trial_id, "seed": space.base.training.seed, "fidelity": SCREEN,
                              "values": {LR: suggestion["values"][LR]}}
    # the top floor(n / 3) of n screened, checked at every completion: 1, 2 → none; 3–5 → top 1; 6 → top 2
    for trial_id, reward, queued in (("t0", 0.4, []), ("t1", 0.3, []), ("t2", 0.5, ["t2"]),
                                     ("t3", 0.45, ["t2"]), ("t4", 0.42, ["t2"])):
        searcher.on_trial_complete(trial_id, finished(reward))
        assert searcher.promotions == queued, trial_id
    searcher.on_trial_complete("t5", finished(0.1, "converged"))  # the lowest, but converged at screen
    assert searcher.promotions == ["t2", "t3", "t5"]  # at n = 6 the second, t3, is due too; best first
    asked = len(searcher.inner.asked)
    served = [searcher.suggest(f"p{i}") for i in range(3)]
    assert len(searcher.inner.asked) == asked  # promotions first: the sampler was not asked
    assert [s["node_id"] for s in served] == ["t2", "t3", "t5"] and searcher.promotions == []
    for promotion in served:
        screen = screens[promotion["node_id"]]
        assert promotion == screen | {"fidelity": FULL}
    # a full result is never ranked, never promoted, and never reaches the sampler
    searcher.on_trial_complete("p0", finished(0.99, "converged"))
    assert searcher.promotions == [] and len(searcher.screen_rewards) == 6
    assert [trial_id for trial_id, _, _ in searcher.inner.completed] == ["t0", "t1", "t2", "t3", "t4", "t5"]
    assert searcher.suggest("n0")["fidelity"] == SCREEN and searcher.inner.asked[-1] == "n0"


def test_the_wrapper_promotes_exactly_the_nodes_the_tree_promotes(tmp_path):
    space = dataclasses.replace(load_space(SMOKE), fidelity=SCREENING)
    tree = TreeSearcher(space, tmp_path, seed=0)
    tree.set_max_concurrency(12)
    wrapper, _ = screening_searcher(concurrency=12)
    rewards = random.Random(3)
    for i in range(12):
        assert tree.suggest(f"t{i}")["node_id"] == wrapper.suggest(f"t{i}")["node_id"] == f"t{i}"  # new nodes
    for i in rewards.sample(range(12), 12):
        kind = rewards.random()
        if kind < 0.15:
            result, error = None, True
        else:
            label = "converged" if kind > 0.85 else "partial"
            result, error = finished(rewards.random(), label, "diverged" if kind < 0.25 else "completed"), False
        tree.on_trial_complete(f"t{i}", result, error=error)
        wrapper.on_trial_complete(f"t{i}", result, error=error)
        assert wrapper.promotions == tree.promotions
    assert 2 <= len(tree.promotions) < 12, tree.promotions


def test_repetitions_per_method_and_the_runs_left_to_do():
    assert bench.parse_args(["--reps", "2"]).reps == {"tree": 2, "random": 2, "tpe": 2}
    args = bench.parse_args(["--reps", "tree=3, random=2,tpe=2"])
    assert args.reps == {"tree": 3, "random": 2, "tpe": 2} and args.methods == ["tree", "random", "tpe"]
    assert bench.parse_args(["--reps", "tpe=1,tree=2"]).methods == ["tpe", "tree"]
    assert bench.parse_args(["--reps", "tree=2,tpe=1", "--methods", "tpe,tree"]).methods == ["tpe", "tree"]
    assert bench.pending_runs({"tree": 3, "random": 2, "tpe": 2}, done={("tree", 0), ("random", 1)}) == [
        (0, "random"), (0, "tpe"), (1, "tree"), (1, "tpe"), (2, "tree")]


@pytest.mark.parametrize(("argv", "message"), [
    (["--reps", "0"], "--reps 0: repetitions must be >= 1"),
    (["--reps", "tree=two"], "--reps tree=two: 'two' is not a whole number; give N or METHOD=N,..."),
    (["--reps", "tree=2,tree=3"], "--reps tree=2,tree=3: tree is named twice"),
    (["--reps", "tree=2", "--methods", "tree,tpe"], "--reps tree=2 and --methods tree,tpe name different methods"),
    (["--reps", "grid=2"], "error: --reps: unknown grid; choose from"),
    (["--methods", "tree,grid"], "error: --methods: unknown grid; choose from"),
])
def test_bad_repetitions_are_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and message in err


def test_concurrency_errors_and_a_space_without_fidelity():
    searcher, _ = screening_searcher(concurrency=2)
    assert searcher.suggest("t0") and searcher.suggest("t1")
    assert searcher.suggest("t2") is None and searcher.inner.asked == ["t0", "t1"]  # full: Tune asks later
    searcher.on_trial_result("t0", {"status": "running", "reward": 0.9})
    searcher.on_trial_complete("t0", None, error=True)  # counts as screened with reward 0, never promoted
    assert searcher.inner.completed == [("t0", None, True)] and searcher.inner.results == ["t0"]
    assert searcher.screen_rewards == {"t0": 0.0} and searcher.promotions == []
    assert searcher.suggest("t2")["node_id"] == "t2"
    searcher.on_trial_complete("t1", finished(0.9, "converged", status="diverged"))  # ranked, never promoted
    assert searcher.screen_rewards == {"t0": 0.0, "t1": 0.9} and searcher.promotions == []
    searcher.on_trial_complete("t2", finished(0.5))  # n = 3: the top 1 only, and 0.9 is above it
    assert searcher.promotions == []

    plain, _ = screening_searcher(fidelity=None)
    suggestion = plain.suggest("t0")
    assert "fidelity" not in suggestion  # trial dirs and the completion log read it as full
    plain.on_trial_complete("t0", finished(0.9, "converged"))
    assert plain.promotions == [] and plain.inner.completed[0][0] == "t0"


# ------------------------------------------------------------------------------------- equal footing

def test_random_and_tpe_start_where_the_tree_starts_then_sample():
    space = load_space(SMOKE)
    starts = bench.start_points(space)
    assert starts[0] == space.base_values() and len(starts) == len(space.initial_spread) == 4
    assert starts[3] == space.base_values() | space.initial_spread[3]
    for method in ("random", "tpe"):
        sampler = bench.sampler_searcher(method, space, seed=0, concurrency=2)
        proposals = [sampler.suggest(f"t{i}") for i in range(6)]
        assert proposals[:4] == starts, method
        assert all(proposal not in starts for proposal in proposals[4:]), method
    # a replayed TPE is told the recorded screens, so it does not propose the recorded start points again
    logged_starts = {json.dumps(point, sort_keys=True) for point in starts[:3]}
    resumed = bench.sampler_searcher("tpe", space, seed=0, concurrency=2, evaluated=logged_starts)
    assert resumed.suggest("t0") == starts[3]


def test_repetitions_train_at_their_own_base_seed(tmp_path):
    space = load_space(SMOKE)
    seeds = [bench.repetition_space(space, rep).base.training.seed for rep in range(3)]
    assert seeds == [77, 177, 277]
    assert bench.repetition_space(space, 2).base.to_dict() == space.config_for({}, seed=277).to_dict()
    tree = TreeSearcher(bench.repetition_space(space, 1), tmp_path, seed=1)
    tree.set_max_concurrency(1)
    assert tree.suggest("t0")["seed"] == 177


def test_the_budget_counts_every_trials_iterations_and_stops_the_proposals(tmp_path):
    """Screens cost their share (half the data augmentation), promotions a full trial; the trial that
    crosses the budget still trains, none after it. The state survives save and restore."""
    space = dataclasses.replace(load_space(SMOKE), fidelity=Fidelity({"training.data_augmentation_loop": 5.0}))
    full, screen = space.base.total_iterations(), bench.trial_iterations(space, {}, SCREEN)
    assert (full, screen) == (75, 37)
    assert bench.trial_iterations(space, {"training.batch_size": space.base.training.batch_size * 2}) * 2 == \
        pytest.approx(full, abs=1)

    def budgeted():
        inner = bench.ScreeningSearcher(StubSampler(), space)
        searcher = bench.BudgetedSearcher(inner, space, budget_iterations=2 * full)
        assert searcher.set_max_concurrency(8) is True
        return searcher

    searcher = budgeted()
    screens = [searcher.suggest(f"t{i}") for i in range(3)]
    assert searcher.spent == 3 * screen < 2 * full
    searcher.on_trial_complete("t0", finished(0.9, "converged"))  # promoted: converged at screen
    assert searcher.suggest("p0")["fidelity"] == FULL and searcher.spent == 3 * screen + full
    assert searcher.suggest("x") == Searcher.FINISHED and searcher.inner.inner.asked == ["t0", "t1", "t2"]

    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = budgeted()
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.spent == searcher.spent and restored.inner.promoted == {"t0"}
    assert restored.suggest("y") == Searcher.FINISHED

    log = pd.DataFrame([logged(budgeted(), "t1", screens[1], finished(0.2), 1.0)])
    assert bench.iterations_spent(space, log) == screen
    args = SimpleNamespace(num_trials=50, budget=2.0)
    assert not bench.run_complete(pd.concat([log] * 4), args, space)
    assert bench.run_complete(pd.concat([log] * 5), args, space)
    assert bench.run_complete(log, SimpleNamespace(num_trials=1, budget=None), space)


def test_shared_trials_count_the_same_values_seed_and_fidelity_across_repetitions():
    log = screened_log()
    other = log.assign(seed=177)
    other.loc[0, "seed"] = 77  # one trial trained alike in both
    third = log.copy()  # the same path run again
    assert bench.shared_trials({("tree", 0): log, ("tree", 1): other}) == {"tree": 1}
    assert bench.shared_trials({("tree", 0): log, ("tree", 1): other, ("tree", 2): third, ("tpe", 0): log}) == \
        {"tree": len(log), "tpe": 0}


# ------------------------------------------------------------------------------------- replay from a log

def logged(searcher, trial_id: str, suggestion: dict, result: dict | None, time_s: float) -> dict:
    """Complete `trial_id` on `searcher` and return its completion-log row, as CompletionLog writes it."""
    searcher.on_trial_complete(trial_id, result, error=result is None)
    return {"trial_id": trial_id, "node_id": suggestion["node_id"], "seed": suggestion["seed"],
            "fidelity": suggestion["fidelity"], "reward": 0.0 if result is None else result["reward"],
            "classification": "error" if result is None else result["classification"],
            "status": "error" if result is None else result["status"], "time_s": time_s,
            "values": json.dumps(suggestion["values"], sort_keys=True)}


def cut_run():
    """A searcher cut off mid-run, and its completion log: six screens proposed, five finished (one errored,
    one diverged), two of them promoted (the leader once three were screened, and one converged at screen), the
    first served and finished; t4 in flight."""
    searcher, _ = screening_searcher()
    screens = {f"t{i}": searcher.suggest(f"t{i}") for i in range(6)}
    rows = [logged(searcher, "t1", screens["t1"], finished(0.3), 10.0),
            logged(searcher, "t0", screens["t0"], finished(0.4), 20.0),
            logged(searcher, "t2", screens["t2"], None, 30.0)]
    promotion = searcher.suggest("p0")
    rows += [logged(searcher, "t3", screens["t3"], finished(0.0, "failed", "diverged"), 40.0),
             logged(searcher, "t5", screens["t5"], finished(0.2, "converged"), 45.0),
             logged(searcher, "p0", promotion, finished(0.8, "partial-k"), 50.0)]
    assert (searcher.promotions, searcher.promoted, promotion["node_id"]) == (["t5"], {"t0"}, "t0")
    return searcher, pd.DataFrame(rows)


def test_a_replayed_log_restores_the_rank_and_the_promotions_and_the_sampler_goes_on():
    uninterrupted, log = cut_run()
    replayed, _ = screening_searcher()
    replayed.replay(log, results_steer_proposals=False)
    assert replayed.screen_rewards == uninterrupted.screen_rewards == {"t1": 0.3, "t0": 0.4, "t2": 0.0, "t3": 0.0,
                                                                      "t5": 0.2}
    assert (replayed.promotions, replayed.promoted) == (["t5"], {"t0"})
    assert replayed.inner.asked == [f"replay_{i}" for i in range(6)]  # up to the last recorded screen, t5
    assert [entry[0] for entry in replayed.inner.completed] == [f"replay_{i}" for i in (1, 0, 2, 3, 5)]
    assert [entry[2] for entry in replayed.inner.completed] == [False, False, True, False, False]

    # the waiting promotion first, then what was in flight again (t4), then the sequence goes on
    assert replayed.suggest("n0") == uninterrupted.suggest("n0") == {
        "node_id": "t5", "seed": 77, "fidelity": FULL, "values": {LR: 6e-3}}
    assert replayed.suggest("n1")["values"] == {LR: 5e-3} and replayed.inner_ids == {"n1": "replay_4"}
    assert replayed.suggest("n2")["values"] == uninterrupted.suggest("u0")["values"] == {LR: 7e-3}
    replayed.on_trial_result("n1", {"status": "running", "reward": 0.5})
    replayed.on_trial_complete("n1", finished(0.2))
    assert replayed.inner.results == ["replay_4"] and replayed.inner.completed[-1][0] == "replay_4"
    assert replayed.proposed["n1"] == {LR: 5e-3} and replayed.inner_ids == {} and replayed.inner.asked[-1] == "n2"


def test_a_log_without_the_status_column_replays_alike_and_tpe_is_told_the_screens():
    uninterrupted, log = cut_run()
    rows = log.drop(columns="status").to_dict("records")
    assert [bench.recorded_status(row) for row in rows] == ["completed", "completed", "error", "diverged",
                                                            "completed", "completed"]
    old, _ = screening_searcher()
    old.replay(pd.DataFrame(rows), results_steer_proposals=False)
    assert (old.screen_rewards, old.promotions, old.promoted) == (uninterrupted.screen_rewards, ["t5"], {"t0"})

    tpe, _ = screening_searcher()
    tpe.replay(log, results_steer_proposals=True)
    assert tpe.inner.asked == [] and tpe.reproposals == []
    assert tpe.inner.evaluated == [({LR: 2e-3}, 0.3, False), ({LR: 1e-3}, 0.4, False), ({LR: 3e-3}, 0.0, True),
                                   ({LR: 4e-3}, 0.0, False), ({LR: 6e-3}, 0.2, False)]
    assert tpe.suggest("n0")["node_id"] == "t5"
    assert tpe.suggest("n1")["values"] == {LR: 1e-3}  # the sampler's own next proposal (the stub starts over)


def test_a_log_this_space_and_sampler_cannot_have_written_is_refused():
    _, log = cut_run()
    unpromoted = log.copy()
    unpromoted.loc[unpromoted["trial_id"] == "p0", "node_id"] = "t2"  # errored: never promoted
    with pytest.raises(bench.ReplayError, match="p0 at full budget promotes node t2"):
        screening_searcher()[0].replay(unpromoted, results_steer_proposals=False)
    foreign = log.copy()
    foreign.loc[foreign["trial_id"] == "t3", "values"] = json.dumps({LR: 0.5})
    with pytest.raises(bench.ReplayError, match="1 recorded screens are not among the sampler's first 69"):
        screening_searcher()[0].replay(foreign, results_steer_proposals=False)


def test_random_search_replayed_proposes_what_the_uninterrupted_run_proposes():
    """Optuna's seeded RandomSampler behind Ray's OptunaSearch: asked again, it repeats itself exactly."""
    space = dataclasses.replace(load_space(SMOKE), fidelity=SCREENING)

    def searcher():
        wrapper = bench.ScreeningSearcher(bench.sampler_searcher("random", space, seed=3, concurrency=4), space)
        wrapper.set_max_concurrency(4)
        return wrapper

    uninterrupted = searcher()
    screens = {f"t{i}": uninterrupted.suggest(f"t{i}") for i in range(4)}
    log = pd.DataFrame([logged(uninterrupted, "t2", screens["t2"], finished(0.1, "converged"), 1.0),
                        logged(uninterrupted, "t0", screens["t0"], finished(0.05), 2.0)])
    ahead = [uninterrupted.suggest(f"u{i}") for i in range(2)]  # t2's promotion (converged at screen), a new one
    assert (ahead[0]["node_id"], ahead[0]["fidelity"], ahead[1]["fidelity"]) == ("t2", FULL, SCREEN)
    replayed = searcher()
    replayed.replay(log, results_steer_proposals=False)
    served = [replayed.suggest(f"n{i}") for i in range(4)]
    assert served[0] == ahead[0]  # then t1 (proposed before t2, in flight), t3 and the sampler's next
    assert [s["values"] for s in served[1:]] == [screens["t1"]["values"], screens["t3"]["values"], ahead[1]["values"]]


# ------------------------------------------------------------------------------------- a run's figures

def completion(trial_id: str, fidelity: str, reward: float, classification: str, time_s: float,
               node_id: str | None = None) -> dict:
    return {"trial_id": trial_id, "node_id": node_id or trial_id, "seed": 77, "fidelity": fidelity,
            "reward": reward, "classification": classification, "time_s": time_s,
            "values": json.dumps({LR: 0.001 * time_s})}


def screened_log() -> pd.DataFrame:
    """Screens that converge or score high (never a best), an errored full trial, two converged full ones."""
    return pd.DataFrame([completion("a", SCREEN, 0.9, "converged", 60.0),
                         completion("b", SCREEN, 0.95, "partial", 120.0),
                         completion("c", FULL, 0.5, "partial", 180.0, node_id="b"),
                         completion("d", FULL, 0.0, "error", 240.0, node_id="a"),
                         completion("e", FULL, 0.8, "converged", 300.0, node_id="a"),
                         completion("f", SCREEN, 0.99, "converged", 360.0),
                         completion("g", FULL, 0.7, "converged", 420.0, node_id="f")])


def test_run_figures_count_only_full_budget_trials():
    log = screened_log()
    figures = bench.run_figures(log, num_trials=8)
    assert (figures["first_converged"], figures["wall_s_first_converged"]) == (5, 300.0)
    best = [figures[f"best_after_{k}"] for k in range(1, 9)]
    assert best[2:7] == [0.5, 0.5, 0.8, 0.8, 0.8]
    assert all(math.isnan(b) for b in best[:2] + best[7:])  # no full trial yet / not run
    assert (figures["trials_done"], figures["screen_trials"], figures["full_trials"], figures["errors"]) == (7, 3, 4, 1)
    assert (figures["best_node"], figures["best_seed"], figures["best_reward"]) == ("a", 77, 0.8)
    assert json.loads(figures["best_values"]) == {LR: 0.3}

    space = dataclasses.replace(load_space(SMOKE), fidelity=SCREENING)
    spent = bench.run_figures(log, num_trials=8, space=space)
    share = bench.trial_iterations(space, {}, SCREEN) / space.base.total_iterations()
    assert spent["budget_used"] == pytest.approx(3 * share + 4)
    assert spent["budget_first_converged"] == pytest.approx(2 * share + 3)  # screens a, b; full c, d, e

    screens_only = bench.run_figures(log.iloc[:2], num_trials=2)
    assert math.isnan(screens_only["first_converged"]) and math.isnan(screens_only["best_after_2"])
    assert screens_only["best_node"] is None


def test_the_completion_log_is_on_disk_and_reported_after_every_trial(tmp_path, capsys):
    """A run killed between two trials keeps every finished one in completions.csv; each finishes with
    a progress line that names the trial and the run's full-budget figures so far."""
    log = bench.CompletionLog(tmp_path / "tpe_rep1" / "completions.csv")
    log.path.parent.mkdir()
    rows = screened_log().to_dict("records")
    for i, row in enumerate(rows):
        trial = SimpleNamespace(trial_id=row["trial_id"], config={
            "node_id": row["node_id"], "seed": row["seed"], "fidelity": row["fidelity"],
            "values": json.loads(row["values"])}, last_result={
            "final": True, METRIC: row["reward"], "classification": row["classification"], "status": "completed"})
        if row["classification"] == "error":
            log.on_trial_error(i, [], trial)
        else:
            log.on_trial_complete(i, [], trial)
        written = pd.read_csv(log.path, dtype=bench.ID_COLUMNS)
        assert written["trial_id"].tolist() == [r["trial_id"] for r in rows[:i + 1]]
    assert not list(log.path.parent.glob("*.tmp"))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(rows)
    assert lines[1].startswith("[bench] tpe_rep1 trial 2 at ") and lines[1].endswith(
        "node b screen partial 0.9500 | best full none yet, first converged none yet")
    assert "node a full error 0.0000 | best full 0.5000, first converged none yet" in lines[3]
    assert lines[6].endswith("node f full converged 0.7000 | best full 0.8000, first converged trial 5")


def test_progress_curves_follow_the_best_full_budget_reward_and_star_converged_full_trials():
    curve = bench.best_so_far(screened_log())
    assert curve["best_reward"].tolist()[2:] == [0.5, 0.5, 0.8, 0.8, 0.8]
    assert curve["best_reward"].iloc[:2].isna().all()
    assert curve["trial"].tolist() == list(range(1, 8)) and curve["minutes"].tolist() == list(range(1, 8))
    assert curve["converged"].tolist() == [False, False, False, False, True, False, True]

    tpe_log = screened_log().assign(reward=lambda log: log["reward"] / 2, classification="partial")
    figure = bench.progress_figure({("tree", 0): screened_log(), ("tpe", 1): tpe_log})
    by_trial, by_time = figure.axes
    steps = [line for line in by_trial.get_lines() if line.get_linestyle() != "None"]
    assert [line.get_label() for line in steps] == ["tree rep 0", "tpe rep 1"]
    assert steps[0].get_color() != steps[1].get_color()
    assert steps[1].get_ydata()[2:].tolist() == [0.25, 0.25, 0.4, 0.4, 0.4]
    stars = [line for line in by_time.get_lines() if line.get_marker() == "*"]
    assert [line.get_xdata().tolist() for line in stars] == [[5.0, 7.0], []]
    assert stars[0].get_ydata().tolist() == [0.8, 0.8]


def test_the_summary_counts_each_methods_own_repetitions():
    """Three tree runs beside two of a baseline (a later `--methods tree --reps 3`): each method's figures
    come from its own runs only, and the header names the repetitions of each."""
    runs = pd.DataFrame({"method": ["tree", "tpe", "tree", "tpe", "tree"], "rep": [0, 0, 1, 1, 2],
                         "first_converged": [10, math.nan, 20, 30, 40],
                         "wall_s_first_converged": [100.0, math.nan, 200.0, 300.0, 400.0],
                         "first_confirmed": [10, math.nan, math.nan, math.nan, 44],
                         "budget_first_confirmed": [3.0, math.nan, math.nan, math.nan, 9.5],
                         "best_after_1": [0.1, 0.2, 0.3, 0.4, 0.5], "best_after_2": [0.6, 0.7, 0.8, 0.9, 1.0],
                         "wall_s": [1.0, 2.0, 3.0, 4.0, 5.0], "base_ms_per_it": [1.2, 6.0, 1.3, math.nan, 5.9],
                         "budget_used": [20.0, 20.5, 21.0, 20.2, 20.9]})
    summary = bench.summary_table(runs, num_trials=2, shared={"tree": 3, "tpe": 0}).set_index("method")
    assert summary.loc["tree", ["runs", "runs_converged", "first_converged_median"]].tolist() == [3, 3, 20]
    assert summary.at["tree", "first_converged_per_run"] == "10 20 40"
    # one of two tpe runs converged: a median over its lucky run alone would say 30
    assert summary.loc["tpe", ["runs", "runs_converged", "first_converged_median"]].tolist() == [2, 1, math.inf]
    assert summary.at["tpe", "first_converged_per_run"] == "– 30"
    assert summary.at["tpe", "wall_s_first_converged_median"] == math.inf
    assert summary.loc["tree", ["runs_confirmed", "first_confirmed_median", "budget_first_confirmed_median"]
                       ].tolist() == [2, 44, 9.5]  # the run without one counts as beyond both
    assert summary.at["tree", "first_confirmed_per_run"] == "10 – 44"
    table = bench.summary_markdown(summary.reset_index(), num_trials=2)
    assert "| tree | 3 | 20 (10 20 40) | 44 (10 – 44) | 9.5 trials | 200 s |" in table
    assert "| tpe | 2 | none (– 30) | none (– –) | none | none |" in table
    assert "| 20.9 [20.0–21.0] | 3 | 1.30 [1.20–5.90] |" in table and "| 0 | 6.00 [6.00–6.00] |" in table
    unmeasured = bench.summary_table(runs.drop(columns=["base_ms_per_it", "first_confirmed",
                                                        "budget_first_confirmed"]), 2)  # a runs.csv from before
    assert bench.summary_markdown(unmeasured, num_trials=2).count(" | – | – |\n") == 2  # shared, ms/it
    assert "| tree | 3 | 20 (10 20 40) | – | – | 200 s |" in bench.summary_markdown(unmeasured, num_trials=2)
    three = bench.summary_table(pd.concat([runs, runs.iloc[[1]].assign(rep=2, first_converged=12.0)]), 2)
    assert three.set_index("method").at["tpe", "first_converged_median"] == 30  # two of three converged
    assert summary.at["tree", "best_after_2_max"] == 1.0 and summary.at["tpe", "wall_s_median"] == 3.0
    assert bench.repetitions(runs) == "repetitions: tree 0–2, tpe 0–1"
    assert bench.repetitions(runs[runs["rep"].eq(1)]) == "repetitions: tree 1, tpe 1"


class FakeTrainer:
    """Each iteration takes 2 ms of a fake clock; records where each run() began and ended."""

    def __init__(self, total_iterations: int, clock: list[float]) -> None:
        self.total_iterations, self.iteration, self.clock, self.segments = total_iterations, 0, clock, []

    def run(self, until: int) -> None:
        until = min(until, self.total_iterations)
        self.segments.append((self.iteration, until))
        self.clock[0] += 2e-3 * (until - self.iteration)
        self.iteration = until


@pytest.mark.parametrize(("total", "segments"), [(72000, [(0, 100), (100, 400), (400, 700), (700, 1000)]),
                                                 (200, [(0, 50), (50, 100), (100, 150), (150, 200)])])
def test_the_machine_speed_is_the_median_window_after_a_warm_up_that_fits_the_budget(monkeypatch, total, segments):
    clock, made = [0.0], []
    monkeypatch.setattr(bench, "Trainer", lambda cfg, observed, device: made.append(FakeTrainer(total, clock))
                        or made[-1])
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    threads = bench.torch.get_num_threads()
    assert bench.machine_ms_per_iteration(load_space(SMOKE), observed=None) == pytest.approx(2.0)
    assert made[0].segments == segments and bench.torch.get_num_threads() == threads


def test_the_machine_speed_of_a_real_training_is_a_few_milliseconds_per_iteration():
    space = load_space(SMOKE)
    speed = bench.machine_ms_per_iteration(space, bench.load_or_simulate(space.base.simulation).observed,
                                           iterations=20, windows=3)
    assert 0.01 < speed < 1000


CONVERGED = {"rate_constants_R2": 0.99, "avg_slope_ratio": 1.0, "embedding_cluster_acc": 1.0,
             "MLP_node_slope_at_zero_ratio_0": 1.0, "MLP_node_slope_at_zero_ratio_1": 1.0,
             "MLP_node_zero_rel_err_0": 0.0, "MLP_node_zero_rel_err_1": 0.0}


def test_each_runs_converged_trials_are_confirmed_in_order_on_fresh_seeds_and_networks(tmp_path, monkeypatch):
    """Round 1 tries each run's first converged full-budget trial on the two fresh seeds (0 and 1: the
    trials used 77 and 177), the first on network 9101, the second on 9102; a config two runs share (the
    base, a start point of every method) is trained once. A run whose candidate fails one seed tries its
    next in round 2. Resumed with an earlier confirmations.csv, its rows are kept and the rest trains."""
    space = dataclasses.replace(load_space(SMOKE), fidelity=SCREENING)
    shared, later, other = {LR: 1e-3}, {LR: 2e-3}, {LR: 3e-3}
    logs = {("tree", 0): [(FULL, "converged", shared, 77), (SCREEN, "converged", other, 77),
                          (FULL, "partial", other, 77), (FULL, "converged", later, 77)],
            ("tpe", 0): [(FULL, "converged", shared, 77)],
            ("random", 0): [(FULL, "partial", other, 77)],
            ("tree", 1): [(FULL, "partial", shared, 177), (FULL, "converged", other, 177)]}
    for (method, rep), rows in logs.items():
        bench.run_dir(tmp_path, method, rep).mkdir(parents=True)
        pd.DataFrame([completion(f"{method}{rep}{i}", fidelity, 0.5, label, 10.0 * i) | {
            "seed": seed, "values": json.dumps(values)} for i, (fidelity, label, values, seed) in enumerate(rows)]
        ).to_csv(bench.run_dir(tmp_path, method, rep) / "completions.csv", index=False)
    runs = pd.DataFrame({"method": [method for method, _ in logs], "rep": [rep for _, rep in logs]})
    read = {run: pd.read_csv(bench.run_dir(tmp_path, *run) / "completions.csv", dtype=bench.ID_COLUMNS)
            for run in logs}
    trained = []

    def train_runs(configs, dirs, jobs):
        trained.extend(zip(configs, dirs, strict=True))
        # the shared config fails on seed 1; every other converges
        return [{"status": "completed"} | CONVERGED | (
            {"rate_constants_R2": 0.6} if cfg.training.learning_rate_k == 1e-3 and cfg.training.seed == 1 else {})
            for cfg in configs]

    monkeypatch.setattr(bench, "train_runs", train_runs)
    args = SimpleNamespace(confirm_seeds=2, confirm_networks=[9101, 9102], confirm_candidates=3)
    table = bench.confirm_first_converged(read, space, tmp_path, args, jobs=2)

    def expected(values, seed, network):
        return bench.confirmation_config(space, values, seed, network).to_dict()

    assert [cfg.to_dict() for cfg, _ in trained] == [
        expected(shared, 0, 9101), expected(shared, 1, 9102), expected(other, 0, 9101), expected(other, 1, 9102),
        expected(later, 0, 9101), expected(later, 1, 9102)]
    assert trained[0][0].simulation.seed == 9101 and trained[0][0].training.data_augmentation_loop == 10
    assert trained[4][1].relative_to(tmp_path).as_posix() == "confirm/tree_rep0/node_tree03_seed_0_net_9101"
    assert table[["method", "rep", "trial", "seed", "network"]].values.tolist() == [
        ["tree", 0, 1, 0, 9101], ["tree", 0, 1, 1, 9102], ["tpe", 0, 1, 0, 9101], ["tpe", 0, 1, 1, 9102],
        ["tree", 1, 2, 0, 9101], ["tree", 1, 2, 1, 9102], ["tree", 0, 4, 0, 9101], ["tree", 0, 4, 1, 9102]]
    assert table["classification"].tolist() == ["converged", "partial-homeo"] * 2 + ["converged"] * 4

    firsts = bench.first_confirmed(runs, table, read, space).set_index(["method", "rep"])
    assert firsts["first_confirmed"].to_dict() == pytest.approx(
        {("tree", 0): 4, ("tpe", 0): math.nan, ("random", 0): math.nan, ("tree", 1): 2}, nan_ok=True)
    screen_share = bench.trial_iterations(space, {}, SCREEN) / space.base.total_iterations()
    assert firsts.at[("tree", 0), "budget_first_confirmed"] == pytest.approx(3 + screen_share)

    trained.clear()  # resumed from the committed confirmations.csv, one row of which is missing
    recorded = table.drop(index=table.index[(table["method"] == "tree") & (table["trial"] == 4)
                                            & (table["seed"] == 1)]).assign(reward=0.25)
    again = bench.confirm_first_converged(read, space, tmp_path, args, jobs=2, recorded=recorded)
    assert [cfg.to_dict() for cfg, _ in trained] == [expected(later, 1, 9102)]
    assert again["reward"].eq(0.25).tolist() == [True] * 7 + [False]


def test_another_network_changes_only_the_simulation_seed_and_a_resume_on_a_third_is_refused(tmp_path, capsys):
    space = load_space(SMOKE)
    moved = bench.on_network(space, 4243)
    assert moved.base.simulation.seed == 4243 != space.base.simulation.seed
    raw = moved.base.to_dict()
    raw["simulation"]["seed"] = space.base.simulation.seed
    assert raw == space.base.to_dict()
    assert bench.repetition_space(moved, 1).base.simulation.seed == 4243
    row = {"method": "tree", "rep": 0, "network": 4243} | {column: 0 for column in bench.RUN_COLUMNS}
    pd.DataFrame([row | {f"best_after_{k}": 0.1 for k in range(1, 5)}]).to_csv(tmp_path / "runs.csv", index=False)
    args = ["--space", str(SMOKE), "--methods", "tree", "--reps", "1", "--num-trials", "4", "--out", str(tmp_path),
            "--resume", "--network", "4244"]
    assert bench.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "network 4243, not 4244" in err and err.count("\n") == 1


def test_resume_refuses_runs_recorded_without_fidelities(tmp_path, capsys):
    columns = ["method", "rep", "seed", "trials_done", "errors", "first_converged", "wall_s"]
    old = pd.DataFrame([["tree", 0, 0, 4, 0, 3, 10.0, 0.1, 0.2, 0.3, 0.4]],
                       columns=columns + [f"best_after_{k}" for k in range(1, 5)])
    old.to_csv(tmp_path / "runs.csv", index=False)
    args = ["--space", str(SMOKE), "--methods", "tree", "--num-trials", "4", "--out", str(tmp_path), "--resume"]
    assert bench.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "before fidelities were recorded" in err and err.count("\n") == 1


@pytest.mark.parametrize(("runs_csv", "message"), [
    ("garbage\n", "is not a runs.csv of this benchmark (no method and rep columns); choose another --out"),
    ("", "is not a runs.csv of this benchmark"),
])
def test_resume_refuses_a_runs_file_it_did_not_write(tmp_path, capsys, runs_csv, message):
    (tmp_path / "runs.csv").write_text(runs_csv)
    args = ["--space", str(SMOKE), "--methods", "tree", "--num-trials", "4", "--out", str(tmp_path), "--resume"]
    assert bench.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("")
    assert bench.main(["--space", str(SMOKE), "--methods", "tree", "--out", str(tmp_path / "notes.txt")]) == 2
    assert "is a file, not a folder; choose another --out" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- end to end

def finished_trial_files(run_dir: Path) -> dict[str, dict[str, int]]:
    """trial_files of each trial directory holding a final report."""
    return {trial.name: trial_files(run_dir / "trials", trial.name)
            for trial in (run_dir / "trials").glob("node_*") if (trial / "final_report.json").exists()}


def test_a_baseline_killed_mid_run_resumes_then_screens_promotes_and_confirms(ray_tmp, tmp_path):
    """TPE only (random differs by its sampler alone, which the wrapper tests cover): 4 trials, 2 at once,
    the benchmark SIGKILLed once a trial has finished, then resumed with --resume."""
    def screened_from_seed_0(raw):
        screening(5)(raw)
        raw["base"]["training"]["seed"] = 0  # the trials' seed, so the first fresh seed is 1
        # every completed trial counts as converged, so that confirmations train for real
        raw["thresholds"] = {"converged_r2": -2.0, "failed_r2": -3.0, "failed_slope_ratio": -1.0e9,
                             "slope_ratio_min": -1.0e9, "slope_ratio_max": 1.0e9, "baseline_rel_tol": 1.0e9,
                             "converged_cluster_acc": 0.0}

    space_file = derived_space(tmp_path, "screened", screened_from_seed_0)
    out = tmp_path / "bench"
    command = [sys.executable, str(REPO / "benchmarks" / "bench_search.py"), "--space", str(space_file), "--methods",
               "tpe", "--reps", "1", "--num-trials", "4", "--concurrency", "2", "--cpus", "2",
               "--confirm-seeds", "1", "--confirm-networks", "4242", "--out", str(out)]
    driver = subprocess.Popen(command, env=environment(ray_tmp, tmp_path), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = out / "tpe_rep0"
    deadline = time.time() + 180
    while time.time() < deadline and driver.poll() is None and not (
            finished_trial_files(run_dir) and any(run_dir.glob("experiment_state-*.json"))):
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    kill_ray_of(ray_tmp, tmp_path)
    finished_before = finished_trial_files(run_dir)
    assert finished_before and not (out / "runs.csv").exists(), "the run ended before it could be killed"

    proc = subprocess.run([*command, "--resume"], env=environment(ray_tmp, tmp_path), capture_output=True,
                          text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tpe_rep0 was cut off; continuing it" in proc.stderr
    for name, files in finished_before.items():  # not trained again
        assert finished_trial_files(run_dir)[name] == files, name
    assert len(list((run_dir / "trials").iterdir())) == 4  # no trial repeated or lost
    runs = pd.read_csv(out / "runs.csv", dtype=bench.ID_COLUMNS).set_index("method")
    assert list(runs.index) == ["tpe"] and (runs["trials_done"] == 4).all()
    assert (runs["base_ms_per_it"] > 0).all()  # measured by the invocation that finished the run
    space = load_space(space_file)
    for method, run in runs.iterrows():
        log = pd.read_csv(out / f"{method}_rep0" / "completions.csv", dtype=bench.ID_COLUMNS)
        assert len(log) == 4 and set(log["fidelity"]) == {SCREEN, FULL} and (log["seed"] == 0).all(), method
        screens, fulls = log[log["fidelity"] == SCREEN], log[log["fidelity"] == FULL]
        assert (screens["node_id"] == screens["trial_id"]).all() and fulls["node_id"].is_unique
        paired = fulls.merge(screens, on="node_id", suffixes=("", "_screen"), validate="one_to_one")
        assert len(paired) == len(fulls)  # every full trial is a promotion of a screened one
        assert (paired["values"] == paired["values_screen"]).all() and (paired["seed"] == paired["seed_screen"]).all()
        assert (paired["time_s"] > paired["time_s_screen"]).all()
        assert log["time_s"].is_monotonic_increasing and run["wall_s"] == log["time_s"].max()
        assert screens["values"].is_unique  # the restored sampler went on; a fresh one would repeat itself
        for row in log.itertuples():
            trial_dir = out / f"{method}_rep0" / "trials" / f"node_{row.node_id}_seed_{row.seed}_{row.fidelity}"
            cfg = yaml.safe_load((trial_dir / "config.yaml").read_text())
            assert cfg["training"]["data_augmentation_loop"] == (5 if row.fidelity == SCREEN else 10)
        assert (run["screen_trials"], run["full_trials"]) == (len(screens), len(fulls))
        assert run["best_after_4"] == pytest.approx(fulls["reward"].max())
        converged = log.index[(log["fidelity"] == FULL) & (log["classification"] == "converged")]
        assert (run["first_converged"] == converged[0] + 1) if len(converged) else math.isnan(run["first_converged"])

    confirmations = pd.read_csv(out / "confirmations.csv", dtype={"node": str})
    log = pd.read_csv(out / "tpe_rep0" / "completions.csv", dtype=bench.ID_COLUMNS)
    first_full = log.index[log["fidelity"] == FULL][0]
    assert confirmations[["method", "rep", "trial", "node", "seed", "network"]].values.tolist() == [
        ["tpe", 0, first_full + 1, log.at[first_full, "node_id"], 1, 4242]]  # seed 0 was used; confirmed at once
    confirmation = confirmations.iloc[0]
    directory = out / "confirm" / "tpe_rep0" / f"node_{confirmation['node']}_seed_1_net_4242"
    cfg = yaml.safe_load((directory / "config.yaml").read_text())
    values = json.loads(log.at[first_full, "values"])
    assert cfg == bench.confirmation_config(space, values, 1, 4242).to_dict()  # full budget, fresh seed and network
    assert cfg["simulation"]["seed"] == 4242 and cfg["training"]["data_augmentation_loop"] == 10
    assert confirmation["classification"] == "converged" and "rate_constants_R2" in confirmation

    summary = pd.read_csv(out / "summary.csv").set_index("method")
    assert list(summary.index) == ["tpe"] and (summary["runs"] == 1).all()
    assert summary.at["tpe", "best_after_4_median"] == pytest.approx(runs.at["tpe", "best_after_4"])
    assert summary.at["tpe", "best_after_2_median"] == pytest.approx(runs.at["tpe", "best_after_2"], nan_ok=True)
    assert summary.at["tpe", "first_confirmed_median"] == first_full + 1 and summary.at["tpe", "shared_trials"] == 0
    assert (out / "summary.md").read_text().endswith(proc.stdout) and "| tpe | 1 |" in proc.stdout
    assert (out / "progress.png").is_file()


def test_a_random_run_whose_tune_state_is_gone_goes_on_from_its_completion_log(ray_tmp, tmp_path):
    """A new machine where only the committed completions.csv of a cut-off run was put back: two screens
    of the seeded sampler's proposals are recorded, the first converged at screen; --resume trains its
    promotion and the sampler's third proposal, nothing else, and keeps the recorded rows and clock."""
    space_file = derived_space(tmp_path, "screened", screening(5))
    space = load_space(space_file)
    proposals = bench.sampler_searcher("random", space, seed=0, concurrency=2)
    values = [json.dumps(proposals.suggest(f"p{i}"), sort_keys=True) for i in range(3)]
    recorded = pd.DataFrame([
        {"trial_id": trial_id, "node_id": trial_id, "seed": space.base.training.seed, "fidelity": SCREEN,
         "reward": reward, "classification": label, "status": "completed", "time_s": time_s, "values": logged}
        for trial_id, reward, label, time_s, logged in (("0000aaaa", 0.3, "converged", 10.0, values[0]),
                                                        ("0000bbbb", 0.2, "partial", 20.0, values[1]))])
    run_dir = tmp_path / "bench" / "random_rep0"
    run_dir.mkdir(parents=True)
    recorded.to_csv(run_dir / "completions.csv", index=False)

    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_search.py"), "--space", str(space_file), "--methods",
         "random", "--reps", "1", "--num-trials", "10", "--budget", "2.3", "--concurrency", "2", "--cpus", "2",
         "--confirm-seeds", "0",
         "--out", str(tmp_path / "bench"), "--resume"],
        env=environment(ray_tmp, tmp_path), capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "random_rep0: Tune's snapshot is gone; replaying the 2 trials of its completions.csv" in proc.stderr
    log = pd.read_csv(run_dir / "completions.csv", dtype=bench.ID_COLUMNS)
    pd.testing.assert_frame_equal(log.head(2), recorded, check_dtype=False)
    new = log.iloc[2:].set_index("fidelity")
    assert sorted(new.index) == [FULL, SCREEN] and (new["time_s"] > 20.0).all()
    assert new.at[FULL, "node_id"] == "0000aaaa" and new.at[FULL, "values"] == values[0]  # the promotion
    assert new.at[SCREEN, "values"] == values[2]  # the sampler went on where it was
    assert sorted(trial.name for trial in (run_dir / "trials").iterdir()) == sorted(
        f"node_{row.node_id}_seed_{row.seed}_{row.Index}" for row in new.itertuples())  # nothing else trained
    run = pd.read_csv(tmp_path / "bench" / "runs.csv").iloc[0]
    assert (run["trials_done"], run["screen_trials"], run["full_trials"]) == (4, 3, 1)
    # the budget (2.3 full trials) was crossed by the fourth trial: 3 screens of 37 iterations and 1 of 75
    assert run["budget_used"] == pytest.approx((3 * 37 + 75) / 75)


def test_a_tree_run_whose_tune_state_is_gone_goes_on_from_its_log_and_state_file(ray_tmp, tmp_path):
    """A new machine where only the committed completions.csv and tree_state.jsonl were put back. Two screens had
    finished, the first promoted (converged at screen), but the log's last line (the second screen) was lost:
    --resume trains that screen again under its node, seed and fidelity, the promotion, and one more, and
    nothing else. A finished tree run needs its log only."""
    space_file = derived_space(tmp_path, "screened", screening(5))
    run_dir = tmp_path / "bench" / "tree_rep0"
    searcher = TreeSearcher(bench.repetition_space(load_space(space_file), 0), run_dir, seed=0)
    searcher.set_max_concurrency(2)
    screens = [searcher.suggest(trial_id) for trial_id in ("0000aaaa", "0000bbbb")]
    rows = [logged(searcher, trial_id, suggestion, finished(reward, label), time_s)
            for trial_id, suggestion, reward, label, time_s in (("0000aaaa", screens[0], 0.3, "converged", 10.0),
                                                                  ("0000bbbb", screens[1], 0.2, "partial", 20.0))]
    assert searcher.promotions == ["0000aaaa"]
    recorded = pd.DataFrame(rows[:1])
    recorded.to_csv(run_dir / "completions.csv", index=False)

    command = [sys.executable, str(REPO / "benchmarks" / "bench_search.py"), "--space", str(space_file), "--methods",
               "tree", "--reps", "1", "--num-trials", "4", "--concurrency", "2", "--cpus", "2", "--confirm-seeds", "0",
               "--out", str(tmp_path / "bench"), "--resume"]
    proc = subprocess.run(command, env=environment(ray_tmp, tmp_path), capture_output=True, text=True, timeout=240,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("tree_rep0: Tune's snapshot is gone; replaying the 1 trials of its completions.csv and "
            "tree_state.jsonl and going on") in proc.stderr
    log = pd.read_csv(run_dir / "completions.csv", dtype=bench.ID_COLUMNS)
    pd.testing.assert_frame_equal(log.head(1), recorded, check_dtype=False)
    new = log.iloc[1:]
    assert len(new) == 3 and (new["time_s"] > 10.0).all()
    keys = set(zip(new["node_id"], new["fidelity"], new["values"], strict=True))
    assert {("0000bbbb", SCREEN, rows[1]["values"]), ("0000aaaa", FULL, rows[0]["values"])} <= keys
    assert (new["seed"] == searcher.space.base.training.seed).all()
    assert sorted(trial.name for trial in (run_dir / "trials").iterdir()) == sorted(
        f"node_{row.node_id}_seed_{row.seed}_{row.fidelity}" for row in new.itertuples())  # nothing else trained
    tree = [json.loads(line) for line in (run_dir / "tree.jsonl").read_text().splitlines()]
    assert [node["node_id"] for node in tree][:2] == ["0000aaaa", "0000bbbb"] and len(tree) == 3
    runs = pd.read_csv(tmp_path / "bench" / "runs.csv")
    assert runs.iloc[0]["trials_done"] == 4

    # put back once finished, without runs.csv or the state file: the row comes from the log, nothing trains
    for path in tmp_path.joinpath("bench").iterdir():
        if path != run_dir:
            path.unlink() if path.is_file() else shutil.rmtree(path)
    for path in run_dir.iterdir():
        if path.name != "completions.csv":
            path.unlink() if path.is_file() else shutil.rmtree(path)
    again = subprocess.run(command, env=environment(ray_tmp, tmp_path), capture_output=True, text=True, timeout=240,
                           cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "tree_rep0 had finished; its row comes from its completions.csv" in again.stderr
    assert not (run_dir / "trials").exists()
    rebuilt = pd.read_csv(tmp_path / "bench" / "runs.csv")
    pd.testing.assert_frame_equal(rebuilt.drop(columns="base_ms_per_it"), runs.drop(columns="base_ms_per_it"))
