"""The Ray searcher's contract without a Ray instance: Tune only calls these methods."""

import dataclasses
import random
from pathlib import Path

from metabo_tune.searcher import TreeSearcher
from metabo_tune.space import load_space

SMOKE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"


def finished(reward: float) -> dict:
    return {"status": "completed", "reward": reward, "rate_constants_R2": reward, "avg_slope_ratio": 1.0,
            "embedding_cluster_acc": 0.5, "classification": "partial", "config/node_id": "ignored"}


def test_first_wave_is_the_initial_spread_and_concurrency_is_owned(tmp_path):
    space = load_space(SMOKE)
    searcher = TreeSearcher(space, tmp_path, seed=0)
    assert searcher.set_max_concurrency(4) is True
    suggestions = [searcher.suggest(f"t{i}") for i in range(4)]
    assert searcher.suggest("t4") is None  # full: Tune asks again later
    base = space.base_values()
    for suggestion, spread in zip(suggestions, space.initial_spread, strict=True):
        assert suggestion["values"] == base | spread
        assert suggestion["parent_id"] is None and suggestion["strategy"] == "initial"
        assert suggestion["seed"] == space.base.training.seed
    searcher.on_trial_complete("t0", finished(0.4))
    fifth = searcher.suggest("t4")
    assert fifth is not None and fifth["node_id"] in {"t4", "t0"}
    assert (tmp_path / "ucb_scores.txt").is_file() and (tmp_path / "tree.jsonl").is_file()


def test_an_error_uses_the_last_interim_result_and_scores_zero(tmp_path):
    searcher = TreeSearcher(load_space(SMOKE), tmp_path, seed=0)
    searcher.suggest("t0")
    searcher.on_trial_result("t0", {"status": "running", "reward": 0.3, "rate_constants_R2": 0.7})
    searcher.on_trial_complete("t0", result=None, error=True)
    trial = searcher.tree.nodes["t0"].trials[0]
    assert trial.status == "error" and trial.reward == 0.0
    assert trial.metrics["rate_constants_R2"] == 0.7
    assert "t0" not in searcher.live
    searcher.on_trial_complete("unknown", result=finished(0.9))  # a trial it never suggested: ignored
    assert searcher.tree.node_of_trial("unknown") is None


def test_save_and_restore_continue_exactly_where_it_stopped(tmp_path):
    space = load_space(SMOKE)
    original = TreeSearcher(space, tmp_path, seed=5)
    rewards = random.Random(1)
    for i in range(6):
        original.suggest(f"t{i}")
        if i >= 2:
            original.on_trial_complete(f"t{i - 2}", finished(rewards.random()))
    original.save(str(tmp_path / "state.pkl"))
    restored = TreeSearcher.__new__(TreeSearcher)  # Tune unpickles a bare object, then calls restore
    restored.restore(str(tmp_path / "state.pkl"))
    assert restored.live == original.live and restored.metric == "reward" and restored.mode == "max"
    for i in range(6, 12):
        for searcher in (original, restored):
            searcher.on_trial_complete(f"t{i - 2}", finished(0.1 * (i % 5)))
        assert original.suggest(f"t{i}") == restored.suggest(f"t{i}")
    assert original.tree.to_json() == restored.tree.to_json()


def test_a_replicate_gets_a_seed_its_node_never_used_and_a_new_node_the_base_seed(tmp_path):
    space = dataclasses.replace(load_space(SMOKE), replicates=3)  # the best node is replicated twice
    base_seed = space.base.training.seed
    searcher = TreeSearcher(space, tmp_path, seed=0)
    searcher.set_max_concurrency(1)  # one at a time: each replicate sees the seeds of all earlier trials
    replicated = []
    for i in range(10):
        suggestion = searcher.suggest(f"t{i}")
        node = searcher.tree.nodes[suggestion["node_id"]]
        if suggestion["strategy"] == "replicate":
            earlier = [trial.seed for trial in node.trials if trial.trial_id != f"t{i}"]
            assert earlier and suggestion["seed"] not in earlier, (suggestion["seed"], earlier)
            replicated.append(node.node_id)
        else:
            assert node.node_id == f"t{i}" and suggestion["seed"] == base_seed
        searcher.on_trial_complete(f"t{i}", finished(0.9 if node.node_id == "t0" else 0.1))
    assert replicated == ["t0", "t0"]  # the rule fired for both missing replicates of the best node
    seeds = [trial.seed for trial in searcher.tree.nodes["t0"].trials]
    assert seeds[0] == base_seed and len(set(seeds)) == 3
