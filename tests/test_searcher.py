"""The Ray searcher's contract without a Ray instance: Tune only calls these methods."""

import dataclasses
import json
import random
import shutil
from pathlib import Path

import pytest

from metabo_tune import searcher as searcher_module
from metabo_tune.searcher import STATE_FILE, SUGGESTIONS_FILE, TreeSearcher
from metabo_tune.space import Fidelity, load_space
from metabo_tune.strategies import SLOT_ROLES, propose
from metabo_tune.tree import FULL, SCREEN

SMOKE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"


def finished(reward: float) -> dict:
    return {"status": "completed", "reward": reward, "rate_constants_R2": reward, "avg_slope_ratio": 1.0,
            "embedding_cluster_acc": 0.5, "classification": "partial", "config/node_id": "ignored"}


def converged(reward: float) -> dict:
    """A screen classified converged: promoted whatever its rank, the first screened included."""
    return finished(reward) | {"classification": "converged"}


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


# ------------------------------------------------------------------------------------------ fidelity

SCREENING = Fidelity({"training.data_augmentation_loop": 5.0}, promote_eta=3)


def screening_searcher(tmp_path: Path, concurrency: int = 4) -> TreeSearcher:
    searcher = TreeSearcher(dataclasses.replace(load_space(SMOKE), fidelity=SCREENING), tmp_path, seed=0)
    searcher.set_max_concurrency(concurrency)
    return searcher


def test_promotion_rule_top_floor_n_over_eta_or_converged_at_screen(tmp_path):
    searcher = screening_searcher(tmp_path, concurrency=8)
    first = [searcher.suggest(f"t{i}") for i in range(6)]
    assert all(s["fidelity"] == SCREEN and s["strategy"] != "promotion" for s in first)
    assert [s["strategy"] for s in first[:4]] == ["initial"] * 4
    # the top floor(n / 3) of n screened, checked at every completion: 1, 2 → none; 3–5 → top 1; 6 → top 2
    for trial_id, reward, promoted in (("t0", 0.4, []), ("t1", 0.3, []), ("t2", 0.5, ["t2"]),
                                       ("t3", 0.45, ["t2"]), ("t4", 0.42, ["t2"])):
        searcher.on_trial_complete(trial_id, finished(reward))
        assert searcher.promotions == promoted, trial_id
    searcher.on_trial_complete("t5", converged(0.1))  # the lowest reward, but converged at screen
    assert searcher.promotions == ["t2", "t3", "t5"]  # at n = 6 the second, t3, is due too; best first
    # promotions are served first, oldest first, each as the same config and seed at full budget
    served = [searcher.suggest(f"p{i}") for i in range(3)]
    assert [s["node_id"] for s in served] == ["t2", "t3", "t5"] and searcher.promotions == []
    for suggestion in served:
        node = searcher.tree.nodes[suggestion["node_id"]]
        assert (suggestion["fidelity"], suggestion["strategy"]) == (FULL, "promotion")
        assert suggestion["values"] == node.config and suggestion["seed"] == node.trials[0].seed
    assert searcher.suggest("n0")["fidelity"] == SCREEN  # then the strategies again, at screen


def test_a_node_is_promoted_at_most_once_and_never_after_an_error(tmp_path):
    searcher = screening_searcher(tmp_path)
    for i in range(4):
        searcher.suggest(f"t{i}")
    searcher.on_trial_complete("t0", converged(0.5))  # promoted though it is the first screened
    searcher.on_trial_complete("t0", converged(0.5))  # a resumed Ray reports a finished trial again
    assert searcher.promotions == ["t0"]
    assert searcher.suggest("p0")["strategy"] == "promotion"
    searcher.on_trial_complete("p0", finished(0.9))
    searcher.on_trial_complete("t0", finished(0.9))
    assert searcher.promotions == []  # promoted already: it has a full-budget trial
    searcher.on_trial_complete("t1", None, error=True)  # reward 0 counts as screened, but is never promoted
    searcher.on_trial_complete("t2", finished(0.2) | {"status": "diverged"})
    assert searcher.promotions == []
    node = searcher.tree.nodes["t0"]
    assert [(t.trial_id, t.fidelity) for t in node.trials] == [("t0", SCREEN), ("p0", FULL)]
    assert (node.reward, node.full_reward) == (0.9, 0.9)


def test_a_replicate_runs_at_the_fidelity_of_the_result_it_re_tests(tmp_path):
    searcher = screening_searcher(tmp_path)
    for i in range(4):
        searcher.suggest(f"t{i}")
    for trial_id, reward in (("t0", 0.5), ("t3", 0.05), ("t2", 0.04), ("t1", 0.03)):
        searcher.on_trial_complete(trial_id, finished(reward))
    assert searcher.promotions == ["t0"]
    promotion = searcher.suggest("p0")
    assert (promotion["node_id"], promotion["fidelity"]) == ("t0", FULL)
    searcher.on_trial_complete("p0", finished(0.6))
    replicate = searcher.suggest("r0")  # t0 is the best, with one full-budget trial
    assert (replicate["strategy"], replicate["node_id"], replicate["fidelity"]) == ("replicate", "t0", FULL)
    assert replicate["seed"] not in {t.seed for t in searcher.tree.nodes["t0"].trials if t.trial_id != "r0"}


def test_without_a_fidelity_section_every_trial_is_full_and_the_config_has_no_fidelity(tmp_path):
    searcher = TreeSearcher(load_space(SMOKE), tmp_path, seed=0)
    suggestion = searcher.suggest("t0")
    assert "fidelity" not in suggestion
    searcher.on_trial_complete("t0", finished(0.9) | {"classification": "converged"})
    assert searcher.promotions == [] and searcher.tree.nodes["t0"].trials[0].fidelity == FULL


def test_save_and_restore_keep_a_queued_and_a_running_promotion(tmp_path):
    original = screening_searcher(tmp_path)
    for i in range(4):
        original.suggest(f"t{i}")
    original.on_trial_complete("t0", converged(0.5))
    assert original.suggest("p0")["strategy"] == "promotion"  # running
    original.on_trial_complete("t1", converged(0.7))
    assert original.promotions == ["t1"]  # queued
    original.save(str(tmp_path / "state.pkl"))
    restored = TreeSearcher.__new__(TreeSearcher)
    restored.restore(str(tmp_path / "state.pkl"))
    assert restored.promotions == ["t1"] and restored.live == original.live
    assert restored.space.fidelity == SCREENING
    suggestions = []
    for searcher in (original, restored):
        searcher.on_trial_complete("p0", finished(0.8))
        searcher.on_trial_complete("t2", finished(0.2))
        suggestions.append([searcher.suggest(f"x{i}") for i in range(2)])
    assert suggestions[0] == suggestions[1]
    promotion, replicate = suggestions[0]
    assert (promotion["node_id"], promotion["strategy"], promotion["fidelity"]) == ("t1", "promotion", FULL)
    assert (replicate["node_id"], replicate["strategy"], replicate["fidelity"]) == ("t0", "replicate", FULL)
    assert original.tree.to_json() == restored.tree.to_json()
    assert [t.fidelity for t in restored.tree.nodes["t0"].trials] == [SCREEN, FULL, FULL]


def test_suggestions_a_kill_loses_from_tunes_snapshot_are_reissued_once_each_in_order(tmp_path):
    # Tune snapshots the searcher with its trial list; a driver killed before the next snapshot loses the
    # trials suggested since. The resumed searcher must hand out exactly those again (same node, seed and
    # fidelity, hence the same trial directory), before anything new, and never twice.
    original = screening_searcher(tmp_path, concurrency=2)
    original.suggest("t0"), original.suggest("t1")
    original.on_trial_complete("t0", converged(0.5))  # promoted: queued
    original.save(str(tmp_path / "snapshot.pkl"))
    lost = [original.suggest("t2")]  # the promotion of t0
    original.on_trial_complete("t1", converged(0.7))
    lost.append(original.suggest("t3"))  # the promotion of t1
    original.on_trial_complete("t2", finished(0.9))
    lost.append(original.suggest("t4"))  # a new node
    assert [s["strategy"] for s in lost[:2]] == ["promotion", "promotion"] and lost[2]["node_id"] == "t4"

    restored = TreeSearcher.__new__(TreeSearcher)
    restored.restore(str(tmp_path / "snapshot.pkl"))
    assert restored.live == {"t1"} and restored.promotions == ["t0"]
    assert restored.suggest("r0") == lost[0] and restored.promotions == []
    restored.on_trial_complete("t1", converged(0.7))  # Tune restarts t1, which reports its result again
    restored.save(str(tmp_path / "second_snapshot.pkl"))
    assert restored.suggest("r1") == lost[1] and restored.promotions == []  # queued again, served once
    restored.on_trial_complete("r0", finished(0.9))
    assert restored.suggest("r2") == lost[2]
    assert restored.tree.node_of_trial("r2").node_id == "t4"

    def trial_keys(searcher: TreeSearcher) -> list[tuple]:
        return sorted((n.node_id, t.seed, t.fidelity) for n in searcher.tree.nodes.values() for t in n.trials)
    assert trial_keys(restored) == trial_keys(original)

    # killed again before the next snapshot: the journal's old and new ids of one trial count once
    again = TreeSearcher.__new__(TreeSearcher)
    again.restore(str(tmp_path / "second_snapshot.pkl"))
    assert [entry["trial_id"] for entry in again.reissues] == ["t3", "t4"]
    assert again.suggest("s0") == lost[1] and again.promotions == []


@pytest.mark.parametrize("cut, in_flight", [(4, "promotion"), (6, "replicate"), (8, "explore")])
def test_a_tree_replayed_from_its_state_file_goes_on_as_the_uninterrupted_one(tmp_path, cut, in_flight):
    # A new machine gets back the committed completion log and tree_state.jsonl only. The trial running at
    # the state's last write (a promotion, a replicate, or a new node's screen) is served again first, as the
    # journal has it; the one suggested after that write is proposed again; and given the same results after
    # that, the replayed search proposes what the uninterrupted one proposes, its random mutations included.
    def fill(searcher: TreeSearcher, ids: list[str]) -> list[dict]:
        served = []
        while (suggestion := searcher.suggest(f"t{len(ids)}")) is not None:
            ids.append(f"t{len(ids)}")
            served.append(suggestion)
        return served

    def oldest(searcher: TreeSearcher) -> str:
        return min(searcher.live, key=lambda trial: int(trial[1:]))

    original, ids, done = screening_searcher(tmp_path / "original", concurrency=2), [], []
    rewards = random.Random(3)
    for _ in range(cut):
        fill(original, ids)
        done.append(oldest(original))
        original.on_trial_complete(done[-1], finished(rewards.random()))
    [running] = original.live
    last = fill(original, ids)  # after the state file's last write: only the journal knew of it
    (tmp_path / "new").mkdir()
    shutil.copy(tmp_path / "original" / STATE_FILE, tmp_path / "new" / STATE_FILE)

    replayed = screening_searcher(tmp_path / "new", concurrency=2)
    assert replayed.replay(set(done)) == set(done)
    [reissue] = replayed.reissues
    node = original.tree.node_of_trial(running)
    trial = next(trial for trial in node.trials if trial.trial_id == running)
    journal = [json.loads(line) for line in (tmp_path / "original" / SUGGESTIONS_FILE).read_text().splitlines()]
    assert reissue == next(entry for entry in journal if entry["trial_id"] == running)
    assert reissue["strategy"] == in_flight
    suggestion = replayed.suggest(running)  # Tune's ids are new; the original's keep the trees comparable
    assert (suggestion["node_id"], suggestion["seed"], suggestion["fidelity"]) == (node.node_id, trial.seed,
                                                                                   trial.fidelity)
    assert [replayed.suggest(f"t{len(ids) - len(last) + i}") for i in range(len(last))] == last
    assert replayed.tree.to_json() == original.tree.to_json()
    strategies = set()
    for _ in range(16):
        outcome = finished(rewards.random())
        served = []
        for searcher, searcher_ids in ((original, ids), (replayed, list(ids))):
            searcher.on_trial_complete(oldest(searcher), outcome)
            served.append(fill(searcher, searcher_ids))
        assert served[0] == served[1]
        strategies |= {suggestion["strategy"] for suggestion in served[0]}
    assert "promotion" in strategies and strategies & {"exploit", "exploit-2", "explore"}  # and random moves
    assert replayed.tree.to_json() == original.tree.to_json()
    assert (replayed.n_suggested, replayed.promotions) == (original.n_suggested, original.promotions)


def test_a_replay_trains_again_what_the_log_lacks_and_refuses_another_seed(tmp_path):
    original = screening_searcher(tmp_path, concurrency=4)
    for i in range(4):
        original.suggest(f"t{i}")
    original.on_trial_complete("t0", converged(0.9))  # promoted, then lost with the log's last line
    original.on_trial_complete("t1", finished(0.1))
    assert original.promotions == ["t0"]
    replayed = screening_searcher(tmp_path, concurrency=4)
    assert replayed.replay({"t1"}) == {"t1"}
    assert replayed.promotions == [] and [entry["node_id"] for entry in replayed.reissues] == ["t0", "t2", "t3"]
    assert replayed.suggest("r0")["node_id"] == "t0" and replayed.tree.nodes["t0"].trials[0].trial_id == "r0"
    other = TreeSearcher(replayed.space, tmp_path, seed=1)
    with pytest.raises(ValueError, match=r"tree_state\.jsonl holds the search of seed 0, not 1"):
        other.replay({"t1"})


def test_the_slot_roles_take_turns_at_any_concurrency(tmp_path, monkeypatch):
    """Two trials at once must still reach explore and principle-test: the role is the suggestion's number mod 4,
    not its place in a wave of `max_concurrent`."""
    slots: list[int] = []

    def recording_propose(tree, space, rng, slot):
        slots.append(slot % len(SLOT_ROLES))
        return propose(tree, space, rng, slot)

    monkeypatch.setattr(searcher_module, "propose", recording_propose)
    searcher = TreeSearcher(load_space(SMOKE), tmp_path, seed=0)
    searcher.set_max_concurrency(2)
    rewards = random.Random(3)
    searcher.suggest("t0")
    for i in range(1, 9):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i - 1}", finished(rewards.random()))
    assert slots == [0, 1, 2, 3, 0, 1, 2, 3, 0]
