from __future__ import annotations

import json
import math
import re

import pytest

from metabo_tune.tree import FULL, SCREEN, Effect, Tree, changed_parameters, promotions_due, trial_origin

LR = "training.learning_rate_node"
L1 = "training.coeff_MLP_node_L1"
REC = "training.recurrent_training"
BASE = {LR: 1e-4, L1: 1.0, REC: False}


def grow(tree: Tree, node_id: str, parent_id: str | None, rewards: list[float | None], *,
         changes: dict | None = None, metrics: dict | None = None, mutation: str = "m") -> None:
    """A node whose config is its parent's (or BASE) with `changes`; one trial per reward, None = running."""
    parent_config = BASE if parent_id is None else tree.nodes[parent_id].config
    tree.add_node(node_id, parent_id, {**parent_config, **(changes or {})}, mutation, "exploit")
    for k, reward in enumerate(rewards):
        trial_id = f"{node_id}-{k}"
        tree.add_trial(node_id, trial_id, seed=k)
        if reward is not None:
            tree.complete_trial(trial_id, "completed", reward, metrics or {})


@pytest.fixture
def tree() -> Tree:
    """A: 0.5 ── B: 0.7 ── D: 0.9
                      └─ E: running
          └─ C: 0.1, 0.3 (two replicates)
       F: 0.4 (another root)"""
    t = Tree()
    grow(t, "A", None, [0.5])
    grow(t, "B", "A", [0.7], changes={LR: 2e-4})
    grow(t, "C", "A", [0.1, 0.3], changes={L1: 0.5})
    grow(t, "D", "B", [0.9], changes={L1: 2.0})
    grow(t, "E", "B", [None], changes={REC: True})
    grow(t, "F", None, [0.4], changes={LR: 5e-4})
    return t


def test_visits_and_subtree_rewards_by_hand(tree: Tree) -> None:
    assert tree.total_visits() == 7  # A, B, C×2, D, E (running), F
    assert [tree.visits(n) for n in "ABCDEF"] == [6, 3, 2, 1, 1, 1]
    assert tree.subtree_reward("A") == pytest.approx((0.5 + 0.7 + 0.2 + 0.9) / 4, abs=1e-12)
    assert tree.subtree_reward("B") == pytest.approx((0.7 + 0.9) / 2, abs=1e-12)
    assert tree.subtree_reward("C") == pytest.approx(0.2, abs=1e-12)
    assert tree.subtree_reward("E") is None
    assert [n.node_id for n in tree.subtree("B")] == ["B", "D", "E"]
    assert [n.node_id for n in tree.children("A")] == ["B", "C"]


def test_ucb_by_hand(tree: Tree) -> None:
    c, log_n = 0.5, math.log(7)
    expected = {
        "A": 2.3 / 4 + c * math.sqrt(log_n / 6),
        "B": 0.8 + c * math.sqrt(log_n / 3),
        "C": 0.2 + c * math.sqrt(log_n / 2),
        "D": 0.9 + c * math.sqrt(log_n / 1),
        "F": 0.4 + c * math.sqrt(log_n / 1),
    }
    for node_id, value in expected.items():
        assert tree.ucb(node_id, c) == pytest.approx(value, abs=1e-12)
    assert tree.ucb("E", c) is None
    ranked = tree.ranked(c)
    assert [n.node_id for n, _ in ranked] == sorted(expected, key=lambda k: -expected[k])
    assert all(score == pytest.approx(expected[n.node_id], abs=1e-12) for n, score in ranked)


def test_running_trial_is_a_virtual_visit(tree: Tree) -> None:
    before = {node_id: tree.ucb(node_id, 0.5) for node_id in "BF"}
    grow(tree, "G", "B", [None], changes={LR: 3e-4})  # suggested, not reported yet
    assert tree.ucb("B", 0.5) == pytest.approx(0.8 + 0.5 * math.sqrt(math.log(8) / 4), abs=1e-12)
    assert tree.ucb("B", 0.5) < before["B"]  # V grows faster than ln N
    assert tree.ucb("F", 0.5) > before["F"]  # the rest of the tree gains
    assert tree.ranked(0.5)[0][0].node_id == "D"


def test_replicates_are_averaged() -> None:
    t = Tree()
    grow(t, "A", None, [0.2, 0.6])
    node = t.nodes["A"]
    assert node.reward == pytest.approx(0.4, abs=1e-12)
    assert node.reward_sd == pytest.approx(math.sqrt(0.08), abs=1e-12)  # sample sd of 0.2, 0.6
    assert t.visits("A") == 2
    t.add_trial("A", "A-2", seed=9)
    assert node.status == "running"
    assert node.reward == pytest.approx(0.4, abs=1e-12)  # a running replicate does not count
    t.complete_trial("A-2", "error", None, {})
    assert node.status == "error"
    assert node.reward == pytest.approx(0.4, abs=1e-12)  # nor an error without a reward
    assert len(node.finished_trials) == 3


def test_node_status_metrics_and_classification() -> None:
    t = Tree()
    grow(t, "A", None, [0.3], metrics={"classification": "partial-k", "rate_constants_R2": 0.95})
    node = t.nodes["A"]
    assert (node.status, node.classification, node.reward_sd) == ("completed", "partial-k", None)
    t.add_trial("A", "A-1", seed=1)
    t.complete_trial("A-1", "diverged", 0.0, {"classification": "failed"})
    assert (node.status, node.classification) == ("diverged", "failed")
    t.complete_trial("A-1", "completed", 0.5, {"classification": "converged"})  # completing twice: last wins
    assert (node.status, node.classification, node.reward) == ("completed", "converged", 0.4)
    assert t.add_node("B", "A", BASE, "m", "s").status == "pending"


def test_ranked_ties_go_to_the_older_node() -> None:
    t = Tree()
    grow(t, "X", None, [0.5])
    grow(t, "Y", None, [0.5], changes={LR: 2e-4})
    grow(t, "Z", None, [0.6], changes={LR: 3e-4})
    assert [n.node_id for n, _ in t.ranked(0.3)] == ["Z", "X", "Y"]


def test_best_prefers_more_replicates_then_older() -> None:
    t = Tree()
    assert t.best() is None
    grow(t, "X", None, [0.5])
    grow(t, "Y", None, [0.4, 0.6], changes={LR: 2e-4})
    grow(t, "Z", None, [0.5], changes={LR: 3e-4})
    assert t.best().node_id == "Y"
    grow(t, "W", None, [0.7], changes={LR: 4e-4})
    assert t.best().node_id == "W"


def test_parameter_effects_by_hand() -> None:
    t = Tree()
    grow(t, "P", None, [0.5])
    grow(t, "up1", "P", [0.7], changes={LR: 2e-4})
    grow(t, "up2", "P", [0.6], changes={LR: 1.5e-4})
    grow(t, "on", "P", [0.3], changes={REC: True})
    grow(t, "pair", "P", [0.45], changes={LR: 5e-5, L1: 0.5})
    grow(t, "running", "P", [None], changes={L1: 2.0})
    grow(t, "grand", "running", [0.9], changes={LR: 3e-4})  # its parent has no reward yet
    effects = t.parameter_effects()
    assert [(e.parameter, e.direction) for e in effects] == [(REC, "on"), (LR, "up"), (L1, "down"), (LR, "down")]
    on, up, l1_down, lr_down = effects
    assert on.mean_delta == pytest.approx(-0.2, abs=1e-12)
    assert (on.count, on.stderr, on.evidence) == (1, None, ("on",))
    assert up.mean_delta == pytest.approx(0.15, abs=1e-12)
    assert up.stderr == pytest.approx(math.sqrt(0.005) / math.sqrt(2), abs=1e-12)  # sd of 0.2, 0.1
    assert (up.count, up.evidence) == (2, ("up1", "up2"))
    assert l1_down == Effect(L1, "down", pytest.approx(-0.05, abs=1e-12), None, 1, ("pair",))
    assert lr_down.evidence == ("pair",)


def test_changed_parameters() -> None:
    assert changed_parameters(BASE, {**BASE, LR: 2e-4, REC: True}) == [LR, REC]
    assert changed_parameters(BASE, dict(BASE)) == []


def test_has_config(tree: Tree) -> None:
    assert tree.has_config(BASE)
    assert tree.has_config({**BASE, LR: 2e-4, L1: 2.0})  # D
    assert not tree.has_config({**BASE, LR: 7e-4})
    assert not tree.has_config({LR: 1e-4, L1: 1.0})  # a missing key is another config


def test_errors(tree: Tree) -> None:
    with pytest.raises(ValueError, match="parent"):
        tree.add_node("G", "nope", BASE, "m", "s")
    with pytest.raises(ValueError, match="already exists"):
        tree.add_node("A", None, BASE, "m", "s")
    with pytest.raises(KeyError, match="unknown trial"):
        tree.complete_trial("nope", "completed", 0.1, {})
    with pytest.raises(ValueError, match="status"):
        tree.complete_trial("A-0", "running", 0.1, {})
    with pytest.raises(ValueError, match="already exists"):
        tree.add_trial("B", "A-0", seed=3)
    with pytest.raises(KeyError, match="unknown node"):
        tree.add_trial("nope", "x", seed=3)
    assert tree.node_of_trial("nope") is None
    assert tree.node_of_trial("C-1").node_id == "C"


def test_json_round_trip(tree: Tree) -> None:
    tree.complete_trial("A-0", "completed", 0.1 + 0.2, {"classification": "partial", "nested": {"a": [1, 2.5e-17]},
                                                        "flag": True, "missing": None})
    copy = Tree.from_json(tree.to_json())
    assert copy == tree
    assert copy.nodes["A"].trials[0].reward == 0.1 + 0.2
    assert copy.nodes["E"].trials[0].status == "running"
    assert isinstance(copy.nodes["A"].config[REC], bool)
    assert [n.index for n in copy.nodes.values()] == list(range(6))
    for node_id in "ABCDEF":
        assert copy.ucb(node_id, 0.7) == tree.ucb(node_id, 0.7)
    copy.add_trial("F", "F-1", seed=4)  # the trial index came back too
    assert copy.node_of_trial("C-1").node_id == "C"
    nan_tree = Tree()
    grow(nan_tree, "A", None, [0.2], metrics={"test_pearson": math.nan})
    assert math.isnan(Tree.from_json(nan_tree.to_json()).nodes["A"].metrics["test_pearson"])


def test_render_ucb_scores(tree: Tree) -> None:
    tree.complete_trial("D-0", "completed", 0.9, {"rate_constants_R2": 0.91, "test_pearson": 0.5,
                                                  "embedding_cluster_acc": 1.0})
    text = tree.render_ucb_scores(0.5, block_size=4)
    lines = text.splitlines()
    assert lines[0] == "=== UCB Scores (N_total=7, c=0.5, block 2 of 4 trials) ==="  # 6 finished trials
    assert lines[1] == ""
    assert len(lines) == 7  # five finished nodes
    pattern = re.compile(r"Node (\w+): UCB=(-?\d+\.\d{3}), parent=(\w+), visits=(\d+), R2=(\S+), Pearson=(\S+), "
                         r"Cluster=(\S+), Reward=(\d\.\d{3}), Mutation=(.*)$")
    rows = [pattern.match(line) for line in lines[2:]]
    assert all(rows)
    assert [row.group(1) for row in rows] == [n.node_id for n, _ in tree.ranked(0.5)]
    d = next(row for row in rows if row.group(1) == "D")
    assert d.groups()[2:] == ("B", "1", "0.910", "0.500", "1.000", "0.900", "m")
    a = next(row for row in rows if row.group(1) == "A")
    assert (a.group(3), a.group(4), a.group(5)) == ("root", "6", "nan")
    assert Tree().render_ucb_scores(1.0, 12).startswith("=== UCB Scores (N_total=0, c=1.0, block 1 of 12 trials)")


def test_render_memory_effects_and_blocks() -> None:
    t = Tree()
    good = {"classification": "partial-k", "rate_constants_R2": 0.93, "avg_slope_ratio": 0.05,
            "embedding_cluster_acc": 0.5}
    grow(t, "0", None, [0.4], metrics=good)
    grow(t, "1", "0", [0.6], changes={LR: 2e-4}, metrics=good, mutation="lr: 0.0001 -> 0.0002")
    grow(t, "2", "0", [0.2], changes={L1: 0.5}, metrics={"classification": "failed"})
    text = t.render_memory(block_size=4)
    assert "| parameter | direction | mean Δreward ± stderr | n | evidence (nodes) |" in text
    assert f"| {LR} | up | +0.200 | 1 | 1 |" in text
    assert "No block completed yet." in text
    grow(t, "3", "1", [0.7, None], changes={REC: True}, metrics=good)  # the 4th finished trial, a replicate runs
    t.complete_trial("3-1", "completed", 0.9, good)  # finishes 5th, but sits with its node in index order
    text = t.render_memory(block_size=4)
    blocks = [line for line in text.splitlines() if line.startswith("- Block")]
    assert len(blocks) == 1
    assert blocks[0].startswith("- Block 1: 4 trials; partial-k 3, failed 1; ")
    assert "best node 3 reward 0.800 (R2 0.930, avg_slope_ratio 0.050, cluster_acc 0.500)" in blocks[0]
    assert blocks[0].endswith("improved on parent: 1 `lr: 0.0001 -> 0.0002` (+0.200), 3 `m` (+0.200)")


# ------------------------------------------------------------------------------------------ fidelity


def screen(tree: Tree, node_id: str, parent_id: str | None, reward: float | None, *, changes: dict | None = None,
           label: str = "partial") -> None:
    """A node whose first trial ran at screen (as the searcher starts every node when the space screens)."""
    parent_config = BASE if parent_id is None else tree.nodes[parent_id].config
    tree.add_node(node_id, parent_id, {**parent_config, **(changes or {})}, "m", "exploit")
    tree.add_trial(node_id, f"{node_id}-s", seed=77, fidelity=SCREEN)
    if reward is not None:
        tree.complete_trial(f"{node_id}-s", "completed", reward, {"classification": label})


def promote(tree: Tree, node_id: str, reward: float | None, label: str = "partial") -> None:
    tree.add_trial(node_id, f"{node_id}-f", seed=77, fidelity=FULL)
    if reward is not None:
        tree.complete_trial(f"{node_id}-f", "completed", reward, {"classification": label})


@pytest.fixture
def screened() -> Tree:
    """P: screen 0.5, full 0.9 ── Q: screen 0.7 (LR up), full 0.2
                               └─ R: screen 0.3 (L1 down), never promoted"""
    t = Tree()
    screen(t, "P", None, 0.5)
    screen(t, "Q", "P", 0.7, changes={LR: 2e-4})
    screen(t, "R", "P", 0.3, changes={L1: 0.5})
    promote(t, "P", 0.9)
    promote(t, "Q", 0.2)
    return t


def test_a_full_budget_reward_never_enters_the_search_signal(screened: Tree) -> None:
    p, q = screened.nodes["P"], screened.nodes["Q"]
    assert (p.fidelity, p.reward, p.full_reward, p.result_fidelity) == (SCREEN, 0.5, 0.9, FULL)
    assert (q.reward, q.full_reward, q.rewards) == (0.7, 0.2, [0.7])
    assert screened.nodes["R"].result_fidelity == SCREEN and screened.nodes["R"].full_reward is None
    # UCB by hand over the screen rewards only; the promotions are no visits either
    assert screened.total_visits() == 3 and screened.visits("P") == 3
    assert screened.ucb("P", 0.5) == pytest.approx((0.5 + 0.7 + 0.3) / 3 + 0.5 * math.sqrt(math.log(3) / 3))
    assert screened.ucb("Q", 0.5) == pytest.approx(0.7 + 0.5 * math.sqrt(math.log(3)))
    effects = {(e.parameter, e.direction): e.mean_delta for e in screened.parameter_effects()}
    assert effects == {(LR, "up"): pytest.approx(0.2), (L1, "down"): pytest.approx(-0.2)}
    running = Tree.from_json(screened.to_json())
    promote(running, "R", None)  # a promotion that still runs changes nothing either
    scores = [(node.node_id, score) for node, score in screened.ranked(0.5)]
    assert [(node.node_id, score) for node, score in running.ranked(0.5)] == scores
    assert running.total_visits() == 3


def test_best_prefers_full_budget_results_and_converged_counts_only_there() -> None:
    t = Tree()
    screen(t, "A", None, 0.95, label="converged")
    screen(t, "B", None, 0.6, changes={LR: 2e-4})
    assert t.best().node_id == "A"  # screened only: the best while no node has a full result
    promote(t, "B", None)
    assert t.best().node_id == "A"  # a running promotion is no result yet
    t.complete_trial("B-f", "completed", 0.55, {"classification": "partial"})
    assert t.best().node_id == "B" and t.best().result_fidelity == FULL
    a = t.nodes["A"]
    assert (a.classification, a.full_classification) == ("converged", None)
    promote(t, "A", 0.5, label="partial")
    assert (a.classification, a.full_classification) == ("converged", "partial")
    assert t.best().node_id == "B"  # 0.55 > 0.5 at full, although A's screen reward is higher
    blocks = [line for line in t.render_memory(block_size=4).splitlines() if line.startswith("- Block")]
    assert blocks == ["- Block 1: 4 trials; partial 2, converged at screen 1, partial at screen 1; "
                      "best node B full reward 0.550 (R2 nan, avg_slope_ratio nan, cluster_acc nan); "
                      "improved on parent: none"]


def test_files_say_that_rewards_are_screen_rewards(screened: Tree) -> None:
    ucb = screened.render_ucb_scores(0.5, block_size=4).splitlines()
    assert ucb[1].startswith("Rewards are screen-fidelity rewards")
    assert any(line.startswith("Node P:") and "Reward=0.500, Full=0.900, Mutation=m" in line for line in ucb)
    assert any(line.startswith("Node R:") and "Reward=0.300, Mutation=m" in line for line in ucb)
    assert "Rewards are screen-fidelity rewards" in screened.render_memory(block_size=4)
    plain = Tree()
    grow(plain, "A", None, [0.5])
    assert "screen" not in plain.render_ucb_scores(0.5, 4) + plain.render_memory(4)


def test_fidelity_survives_json_and_is_checked(screened: Tree) -> None:
    copy = Tree.from_json(screened.to_json())
    assert copy == screened
    assert [t.fidelity for t in copy.nodes["P"].trials] == [SCREEN, FULL]
    legacy = json.loads(screened.to_json())  # a tree.jsonl from before fidelities: every trial at full
    for node in legacy["nodes"]:
        for trial in node["trials"]:
            del trial["fidelity"]
    assert {t.fidelity for n in Tree.from_json(json.dumps(legacy)).nodes.values() for t in n.trials} == {FULL}
    with pytest.raises(ValueError, match="fidelity"):
        screened.add_trial("R", "R-x", seed=1, fidelity="half")


def test_promotions_due_are_the_top_floor_n_over_eta_ties_included_or_converged_at_screen() -> None:
    screened = {"a": 0.5, "b": 0.4, "c": 0.3, "d": 0.2, "e": 0.1}  # n = 5, eta 3: the top 1
    everyone = dict.fromkeys(screened, False)
    assert promotions_due(screened, everyone, 3) == ["a"]
    assert promotions_due(screened, everyone, 2) == ["a", "b"]  # the top 2
    assert promotions_due(screened | {"f": 0.0}, everyone, 3) == ["a", "b"]  # n = 6: the top 2, best first
    assert promotions_due(screened, {"b": False, "c": False}, 3) == []  # "a" was promoted before: its slot is taken
    assert promotions_due({"a": 0.5, "b": 0.4, "c": 0.4, "d": 0.2, "e": 0.3, "f": 0.1},
                          {"b": False, "c": False}, 3) == ["b", "c"]  # a tie for second place counts in its favour
    assert promotions_due(screened, {"e": True}, 3) == ["e"]  # converged at screen: promoted whatever its rank
    # fewer than eta screened: no rank is evidence of the top third yet, so only a converged screen is promoted
    assert promotions_due({"a": 0.7, "b": 0.1}, {"a": False, "b": False}, 3) == []
    assert promotions_due({"a": 0.7, "b": 0.1}, {"a": False, "b": True}, 3) == ["b"]
    # the leader left out at n = 2 is promoted when the third screen completes, whoever completed it
    assert promotions_due({"a": 0.7, "b": 0.1, "c": 0.2}, {"a": False, "b": False, "c": False}, 3) == ["a"]


def test_trial_origin_tells_the_node_own_trial_its_promotion_and_its_replicates() -> None:
    tree = Tree()
    tree.add_node("a", None, {"x": 1}, "initial: x=1", "initial")
    tree.add_trial("a", "t0", seed=77, fidelity=SCREEN)
    tree.add_trial("a", "t1", seed=78, fidelity=SCREEN)  # a replicate while the node is screened
    tree.add_trial("a", "t2", seed=77, fidelity=FULL)  # the promotion: the screen's seed at full
    tree.add_trial("a", "t3", seed=79, fidelity=FULL)  # a replicate after the promotion
    tree.add_node("b", "a", {"x": 2}, "x: 1 -> 2", "exploit")
    tree.add_trial("b", "t4", seed=77, fidelity=FULL)
    tree.add_trial("b", "t5", seed=77, fidelity=FULL)  # unscreened node: a later full trial is never a promotion
    nodes = {node["node_id"]: node for node in json.loads(tree.to_json())["nodes"]}
    assert [trial_origin(nodes["a"], position) for position in range(4)] == [
        ("initial", "initial: x=1"), ("replicate", "replicate of a"), ("promotion", "promotion of a"),
        ("replicate", "replicate of a")]
    assert [trial_origin(nodes["b"], position) for position in range(2)] == [
        ("exploit", "x: 1 -> 2"), ("replicate", "replicate of b")]
