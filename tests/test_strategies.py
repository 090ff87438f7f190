from __future__ import annotations

import dataclasses
import math
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from metabo_tune.config import load_config
from metabo_tune.labels import classify
from metabo_tune.space import Parameter, SearchSpace, load_space
from metabo_tune.strategies import (
    FUSION,
    LR_EMBEDDING,
    LR_NODE,
    NODE_L1,
    RECURRENT,
    RESIDUAL_FIT,
    RESIDUAL_FUSION,
    TIME_STEP,
    Proposal,
    edge,
    fit,
    mutation_text,
    neighbours,
    propose,
    sample,
    shift,
    step_towards,
)
from metabo_tune.tree import Tree, changed_parameters

HOMEO = Path(__file__).parents[1] / "search_spaces" / "homeo_rank_50.yaml"
LR_K = "training.learning_rate_k"
PAIR_STRATEGIES = ("homeo-kick", "k-protect", "degeneracy-break")
STRATEGIES = ("exploit", "exploit-2", "explore", "principle-test", "boundary-probe", "homeo-kick", "embedding-focus",
              "k-protect", "degeneracy-break", "replicate", "initial")
MUTATION = re.compile(r"^[\w.]+: \S+ -> \S+(; [\w.]+: \S+ -> \S+)*$")
# Metrics that trigger no override: R² fine, slopes moving, types found, no degeneracy.
NEUTRAL = {"rate_constants_R2": 0.6, "avg_slope_ratio": 0.6, "embedding_cluster_acc": 1.0, "test_pearson": 0.7,
           "degeneracy_gap": 0.1, "classification": "partial"}


def _parameters() -> dict[str, Parameter]:
    specs = [
        (LR_K, "log_float", 1e-4, 1e-2), (LR_NODE, "log_float", 1e-5, 1e-3),
        ("training.learning_rate_sub", "log_float", 1e-4, 1e-2), (LR_EMBEDDING, "log_float", 1e-5, 1e-3),
        ("training.batch_size", "int", 4, 32), ("training.coeff_MLP_sub_diff", "float", 0.0, 500.0),
        (NODE_L1, "float", 0.0, 10.0), ("training.coeff_MLP_sub_norm", "float", 0.0, 10.0),
        ("training.k_floor_threshold", "float", -3.0, -1.0), (RECURRENT, "bool", None, None),
        (TIME_STEP, "int", 1, 16), ("graph_model.hidden_dim_node", "int", 16, 64),
        ("graph_model.n_layers_node", "int", 2, 4),
    ]
    return {name: Parameter(name, kind, low, high) for name, kind, low, high in specs}


SPREAD = ({}, {LR_NODE: 5e-4}, {NODE_L1: 0.1}, {RECURRENT: True, TIME_STEP: 4, LR_K: 2e-3})


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace(source="test", base=load_config(HOMEO), frozen=("simulation",), parameters=_parameters(),
                       initial_spread=SPREAD, ucb_c=0.3, replicates=2)


def record(tree: Tree, proposal: Proposal, rewards: list[float | None], metrics: dict | None = None) -> str:
    """Add the proposal the way the searcher does (a node, or a trial of the replicated node) and
    finish its trials with these rewards (None: still running). Returns the node id."""
    if proposal.replicate_of is not None:
        node_id = proposal.replicate_of
    else:
        node_id = str(len(tree.nodes))
        tree.add_node(node_id, proposal.parent_id, proposal.config, proposal.mutation, proposal.strategy)
    for reward in rewards:
        trial_id = f"{node_id}-{len(tree.nodes[node_id].trials)}"
        tree.add_trial(node_id, trial_id, seed=len(tree.nodes[node_id].trials))
        if reward is not None:
            tree.complete_trial(trial_id, "completed", reward, metrics or NEUTRAL)
    return node_id


def child(tree: Tree, parent_id: str, changes: dict[str, Any], rewards: list[float | None],
          metrics: dict | None = None) -> str:
    parent = tree.nodes[parent_id]
    config = {**parent.config, **changes}
    return record(tree, Proposal(parent_id, config, mutation_text(parent.config, config), "exploit"), rewards, metrics)


def spread_tree(space: SearchSpace, rewards: tuple[float, ...] = (0.5, 0.4, 0.3, 0.2),
                metrics: tuple[dict, ...] | None = None, trials: int = 2) -> Tree:
    """The initial spread, finished: node k has `trials` trials with reward rewards[k]."""
    tree = Tree()
    for k, reward in enumerate(rewards):
        record(tree, propose(tree, space, random.Random(0), k), [reward] * trials,
               metrics[k] if metrics else NEUTRAL)
    return tree


def in_range(space: SearchSpace, config: dict[str, Any]) -> None:
    for name, param in space.parameters.items():
        value = config[name]
        if param.kind == "bool":
            assert type(value) is bool, name
            continue
        if param.kind == "choice":
            assert value in param.values, (name, value)
            continue
        assert param.low <= value <= param.high, (name, value)
        if param.kind == "int":
            assert type(value) is int, (name, value)


# ------------------------------------------------------------------------------------------ moves


def test_moves_are_conservative(space: SearchSpace) -> None:
    p = space.parameters
    rng = random.Random(3)
    assert {shift(p[LR_NODE], 1e-4, True, rng) for _ in range(40)} == {1.5e-4, 2e-4}
    assert {shift(p[LR_NODE], 1e-4, False, rng) for _ in range(40)} == {6.67e-5, 5e-5}
    assert {shift(p[TIME_STEP], 4, up, rng) for up in (True, False)} == {3, 5}
    assert {shift(p["graph_model.hidden_dim_node"], 32, up, rng) for up in (True, False)} == {24, 40}
    assert shift(p["graph_model.hidden_dim_node"], 60, True, rng) == 64  # clipped
    assert {shift(p["training.batch_size"], 8, True, rng) for _ in range(40)} <= {9, 10}  # wide int: ±10–20 %
    ups = [shift(p[NODE_L1], 1.0, True, rng) for _ in range(40)]
    assert all(1.1 <= v <= 1.2 for v in ups)
    assert all(0.01 <= shift(p[NODE_L1], 0.0, True, rng) <= 0.02 for _ in range(40))  # 0: 1 % of the range
    assert shift(p[RECURRENT], False, True, rng) is True
    assert shift(p[LR_NODE], 1e-3, True, rng) == 1e-3


def test_fit_sample_edge(space: SearchSpace) -> None:
    p = space.parameters
    assert fit(p[TIME_STEP], 3.6) == 4 and type(fit(p[TIME_STEP], 3.6)) is int
    assert fit(p[TIME_STEP], 99) == 16
    assert fit(p[LR_NODE], 1.23456e-4) == 1.23e-4
    assert fit(p[NODE_L1], -1) == 0.0 and type(fit(p[NODE_L1], -1)) is float
    assert (edge(p[LR_K], True), edge(p[LR_K], False), edge(p[RECURRENT], False)) == (1e-2, 1e-4, False)
    rng = random.Random(5)
    for name, param in p.items():
        values = [sample(param, space.base_values()[name], rng) for _ in range(200)]
        in_range(space, {**space.base_values(), name: values[0]})
        assert all(param.kind == "bool" or param.low <= v <= param.high for v in values)
    lrs = [sample(p[LR_NODE], 1e-4, rng) for _ in range(400)]
    assert 0.35 < sum(v < 1e-4 for v in lrs) / 400 < 0.65  # log-uniform: half below the geometric middle


# ------------------------------------------------------------------------------------------ spread, replicate


def test_first_four_are_the_initial_spread(space: SearchSpace) -> None:
    tree, rng = Tree(), random.Random(1)
    base = space.base_values()
    for k, entry in enumerate(SPREAD):
        proposal = propose(tree, space, rng, slot=k)
        assert (proposal.parent_id, proposal.strategy, proposal.replicate_of) == (None, "initial", None)
        assert proposal.config == {**base, **entry}
        record(tree, proposal, [None])  # nothing finishes
    assert [n.mutation for n in tree.nodes.values()] == [
        "baseline", f"initial: {LR_NODE}=0.0005", f"initial: {NODE_L1}=0.1",
        f"initial: {RECURRENT}=True; {TIME_STEP}=4; {LR_K}=0.002"]
    fifth = propose(tree, space, rng, slot=0)  # still nothing finished: explore from any node
    assert fifth.strategy == "explore" and fifth.parent_id in tree.nodes
    assert len(changed_parameters(tree.nodes[fifth.parent_id].config, fifth.config)) == 1


def test_replicate_before_trust(space: SearchSpace) -> None:
    tree = spread_tree(space, trials=1)
    proposal = propose(tree, space, random.Random(0), slot=2)
    assert proposal == Proposal(None, tree.nodes["0"].config, "replicate of 0", "replicate", replicate_of="0")
    record(tree, proposal, [None])  # running counts: no second replicate of 0
    assert propose(tree, space, random.Random(0), slot=2).strategy != "replicate"
    tree.complete_trial("0-1", "completed", 0.0, NEUTRAL)  # 0 falls to 0.25: 1 is the best now, with one trial
    assert propose(tree, space, random.Random(0), slot=2).replicate_of == "1"


# ------------------------------------------------------------------------------------------ overrides


def metrics(**values: Any) -> dict[str, Any]:
    return {**NEUTRAL, **values}


def test_homeo_kick(space: SearchSpace) -> None:
    flat = metrics(rate_constants_R2=0.95, avg_slope_ratio=0.02, classification="partial-k")
    tree = spread_tree(space, metrics=(flat, NEUTRAL, NEUTRAL, NEUTRAL))
    proposal = propose(tree, space, random.Random(0), slot=2)
    assert (proposal.strategy, proposal.parent_id) == ("homeo-kick", "0")
    assert proposal.mutation == f"{NODE_L1}: 1 -> 0.5; {LR_NODE}: 0.0001 -> 0.0002"
    assert changed_parameters(tree.nodes["0"].config, proposal.config) == [NODE_L1, LR_NODE]
    record(tree, proposal, [None])
    assert propose(tree, space, random.Random(0), slot=2).strategy != "homeo-kick"  # once per best node


def test_homeo_kick_not_triggered(space: SearchSpace) -> None:
    moving = metrics(rate_constants_R2=0.95, avg_slope_ratio=0.5)
    tree = spread_tree(space, metrics=(moving, NEUTRAL, NEUTRAL, NEUTRAL))
    assert propose(tree, space, random.Random(0), slot=0).strategy == "exploit"
    no_l1 = dataclasses.replace(space, parameters={k: v for k, v in space.parameters.items() if k != NODE_L1},
                                initial_spread=({},))
    flat = metrics(rate_constants_R2=0.95, avg_slope_ratio=0.02, classification="partial-k")
    tree = spread_tree(no_l1, rewards=(0.5,), metrics=(flat,))
    assert propose(tree, no_l1, random.Random(0), slot=0).strategy == "exploit"  # a pair member is not tunable


def test_embedding_focus(space: SearchSpace) -> None:
    mixed = metrics(avg_slope_ratio=1.0, embedding_cluster_acc=0.5)
    tree = spread_tree(space, rewards=(0.4, 0.5, 0.3, 0.2), metrics=(NEUTRAL, mixed, NEUTRAL, NEUTRAL))
    proposal = propose(tree, space, random.Random(0), slot=0)
    assert (proposal.strategy, proposal.parent_id) == ("embedding-focus", "1")  # lr_node 5e-4 there
    assert proposal.mutation == f"{LR_EMBEDDING}: 0.0001 -> 0.0002"
    capped = child(tree, "0", {LR_NODE: 1.5e-4}, [0.9, 0.9], mixed)
    proposal = propose(tree, space, random.Random(0), slot=0)
    assert (proposal.strategy, proposal.parent_id) == ("embedding-focus", capped)
    assert proposal.config[LR_EMBEDDING] == 1.5e-4  # ≤ lr_node


def test_embedding_focus_not_triggered(space: SearchSpace) -> None:
    mixed = metrics(avg_slope_ratio=1.0, embedding_cluster_acc=0.5)
    found = metrics(avg_slope_ratio=1.0, embedding_cluster_acc=1.0)
    tree = spread_tree(space, rewards=(0.4, 0.5, 0.3, 0.2), metrics=(NEUTRAL, found, NEUTRAL, NEUTRAL))
    assert propose(tree, space, random.Random(0), slot=0).strategy == "exploit"
    tree = spread_tree(space, metrics=(mixed, NEUTRAL, NEUTRAL, NEUTRAL))  # lr_embedding already = lr_node
    assert propose(tree, space, random.Random(0), slot=0).strategy == "exploit"


def test_embedding_focus_turns_to_fusion_when_lr_embedding_is_at_lr_node(space: SearchSpace) -> None:
    """The linear head's case: k and slopes recovered, one metabolite of 100 in the wrong place, lr_embedding
    = lr_node already. A cluster accuracy of 0.99 is below the converged bar (1.0), so the rule fires."""
    fusion = Parameter(FUSION, "float", 0.0, 1e-6)
    with_fusion = dataclasses.replace(space, parameters={**space.parameters, FUSION: fusion},
                                      initial_spread=({}, {LR_NODE: 5e-4}))
    almost = metrics(rate_constants_R2=1.0, avg_slope_ratio=1.05, embedding_cluster_acc=0.99,
                     classification="partial-k")
    tree = Tree()
    for _ in range(2):
        record(tree, propose(tree, with_fusion, random.Random(0), len(tree.nodes)), [0.5, 0.5], NEUTRAL)
    best = child(tree, "0", {LR_EMBEDDING: 1e-4}, [0.9, 0.9], almost)  # lr_embedding = lr_node = 1e-4
    proposal = propose(tree, with_fusion, random.Random(0), slot=0)
    assert (proposal.strategy, proposal.parent_id) == ("embedding-focus", best)
    assert proposal.mutation == f"{FUSION}: 0 -> 1e-08"
    record(tree, proposal, [0.95, 0.95], almost)
    again = propose(tree, with_fusion, random.Random(0), slot=0)
    assert again.strategy == "embedding-focus" and again.config[FUSION] == 2e-8


def test_embedding_focus_raises_the_residual_fusion_where_the_best_fits_the_residual(space: SearchSpace) -> None:
    residual_fit = Parameter(RESIDUAL_FIT, "float", 0.0, 1e5)
    residual_fusion = Parameter(RESIDUAL_FUSION, "float", 0.0, 0.1, requires=RESIDUAL_FIT)
    fusion = Parameter(FUSION, "float", 0.0, 1e-6)
    extended = dataclasses.replace(
        space, parameters={**space.parameters, FUSION: fusion, RESIDUAL_FIT: residual_fit,
                           RESIDUAL_FUSION: residual_fusion},
        initial_spread=({}, {LR_NODE: 5e-4}))
    almost = metrics(rate_constants_R2=1.0, avg_slope_ratio=1.0, embedding_cluster_acc=0.97,
                     classification="partial-k")
    tree = Tree()
    for _ in range(2):
        record(tree, propose(tree, extended, random.Random(0), len(tree.nodes)), [0.5, 0.5], NEUTRAL)
    best = child(tree, "0", {LR_EMBEDDING: 1e-4, RESIDUAL_FIT: 1e4, RESIDUAL_FUSION: 0.01}, [0.9, 0.9], almost)
    proposal = propose(tree, extended, random.Random(0), slot=0)
    assert (proposal.strategy, proposal.parent_id) == ("embedding-focus", best)
    assert proposal.config[RESIDUAL_FUSION] == 0.02 and proposal.config[FUSION] == 0


def test_k_protect(space: SearchSpace) -> None:
    k_only = metrics(rate_constants_R2=0.95, avg_slope_ratio=0.2, embedding_cluster_acc=0.5,
                     classification="partial-k")
    tree = spread_tree(space, metrics=(k_only,) * 4)
    proposal = propose(tree, space, random.Random(0), slot=1)
    assert (proposal.strategy, proposal.parent_id) == ("k-protect", "0")
    assert proposal.mutation == f"{LR_EMBEDDING}: 0.0001 -> 5e-05; {LR_NODE}: 0.0001 -> 5e-05"
    tree = spread_tree(space, metrics=(k_only, k_only, NEUTRAL, k_only))
    assert propose(tree, space, random.Random(0), slot=1).strategy == "exploit-2"


def test_degeneracy_break(space: SearchSpace) -> None:
    gap = metrics(degeneracy_gap=0.5)
    tree = spread_tree(space, metrics=(NEUTRAL, gap, gap, gap))
    proposal = propose(tree, space, random.Random(0), slot=0)
    assert (proposal.strategy, proposal.parent_id) == ("degeneracy-break", "0")
    assert proposal.mutation == f"{RECURRENT}: False -> True; {TIME_STEP}: 1 -> 2"
    tree = spread_tree(space, rewards=(0.2, 0.3, 0.4, 0.5), metrics=(NEUTRAL, gap, gap, gap))
    proposal = propose(tree, space, random.Random(0), slot=0)  # best: recurrent already, time_step 4
    assert (proposal.strategy, proposal.mutation) == ("degeneracy-break", f"{TIME_STEP}: 4 -> 8")
    tree = spread_tree(space, metrics=(gap, gap, NEUTRAL, gap))
    assert propose(tree, space, random.Random(0), slot=0).strategy == "exploit"


def test_boundary_probe(space: SearchSpace) -> None:
    done = metrics(rate_constants_R2=0.95, avg_slope_ratio=1.0, embedding_cluster_acc=1.0, classification="converged")
    tree = spread_tree(space, metrics=(NEUTRAL, done, done, done))
    assert propose(tree, space, random.Random(0), slot=0).strategy == "exploit"  # no positive effect yet
    better = child(tree, "0", {LR_NODE: 2e-4}, [0.8, 0.8], done)  # lr_node up: +0.3, and a new best
    proposal = propose(tree, space, random.Random(0), slot=0)
    assert (proposal.strategy, proposal.parent_id) == ("boundary-probe", better)
    assert proposal.mutation == f"{LR_NODE}: 0.0002 -> 0.001"
    tree.nodes[better].trials[0].metrics = NEUTRAL  # the last three are no longer all converged
    tree.nodes[better].trials[1].metrics = NEUTRAL
    assert propose(tree, space, random.Random(0), slot=0).strategy == "exploit"


# ------------------------------------------------------------------------------------------ slot roles


def test_slot_roles(space: SearchSpace) -> None:
    tree, rng = spread_tree(space), random.Random(2)
    expected_parent = tree.ranked(space.ucb_c)[0][0]
    first = propose(tree, space, rng, slot=0)
    assert (first.strategy, first.parent_id) == ("exploit", expected_parent.node_id)
    record(tree, first, [None])

    second_parent = tree.ranked(space.ucb_c)[1][0]
    second = propose(tree, space, rng, slot=1)
    assert (second.strategy, second.parent_id) == ("exploit-2", second_parent.node_id)
    record(tree, second, [None])

    visits = tree.visit_counts()
    fewest = min(visits[n.node_id] for n in tree.finished_nodes())
    counts = Counter(name for n in tree.nodes.values() if n.parent_id is not None
                     for name in changed_parameters(tree.nodes[n.parent_id].config, n.config))
    third = propose(tree, space, rng, slot=2)
    assert third.strategy == "explore"
    assert visits[third.parent_id] == fewest
    (changed,) = changed_parameters(tree.nodes[third.parent_id].config, third.config)
    assert counts[changed] == 0  # a parameter nobody has changed yet
    record(tree, third, [None])

    top = tree.ranked(space.ucb_c)[0][0]
    fourth = propose(tree, space, rng, slot=3)  # no effect seen twice: boundary-probe
    assert (fourth.strategy, fourth.parent_id) == ("boundary-probe", top.node_id)
    (changed,) = changed_parameters(top.config, fourth.config)
    param = space.parameters[changed]
    assert fourth.config[changed] in ((True, False) if param.kind == "bool" else (param.low, param.high))


def test_exploit_changes_an_untried_parameter_first(space: SearchSpace) -> None:
    single = dataclasses.replace(space, initial_spread=({},))
    tree = spread_tree(single, rewards=(0.9,))
    rng = random.Random(4)
    seen = []
    for _ in range(len(space.parameters)):
        proposal = propose(tree, single, rng, slot=0)
        assert (proposal.strategy, proposal.parent_id) == ("exploit", "0")
        seen += changed_parameters(tree.nodes["0"].config, proposal.config)
        record(tree, proposal, [None])
    assert sorted(seen) == sorted(space.parameters)


def test_principle_test(space: SearchSpace) -> None:
    tree = spread_tree(space)
    a = child(tree, "0", {LR_K: 1e-2}, [0.7, 0.7])  # lr_k up: +0.2 from 0 and +0.2 from 1
    b = child(tree, "1", {LR_K: 7.5e-3}, [0.6, 0.6])
    ranked = [n.node_id for n, _ in tree.ranked(space.ucb_c)]
    proposal = propose(tree, space, random.Random(0), slot=3)
    assert proposal.strategy == "principle-test"
    assert proposal.parent_id == next(n for n in ranked if n not in {a, b, "0", "1"})
    parent = tree.nodes[proposal.parent_id]
    assert changed_parameters(parent.config, proposal.config) == [LR_K]
    assert proposal.config[LR_K] / parent.config[LR_K] in (1.5, 2.0)


# ------------------------------------------------------------------------------------------ constraints


def fake_run(config: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """A deterministic stand-in for training, smooth in the learning rates and node L1: the base finds
    some rate constants with a flat MLP_node, so the overrides get their chance."""
    r2 = 1 - abs(math.log10(config[LR_K] / 3e-3))
    slope = min(3.0, 0.05 * (config[LR_NODE] / 1e-4) / max(config[NODE_L1], 0.05))
    acc = 0.5 + 0.5 * min(1.0, config[LR_EMBEDDING] / 3e-4)
    values = {"rate_constants_R2": r2, "avg_slope_ratio": slope, "embedding_cluster_acc": acc,
              "test_pearson": 0.95, "degeneracy_gap": 0.95 - r2}
    values["classification"] = classify(values, "completed")
    reward = 0.4 * r2 + 0.3 * (1 - min(1.0, abs(math.log(slope)))) + 0.3 * acc
    return reward, values


def simulate(space: SearchSpace, seed: int, waves: int = 50) -> tuple[Tree, list[Proposal]]:
    """Waves of four suggestions, each added as running, then all four completed."""
    tree, rng, proposals = Tree(), random.Random(seed), []
    for _ in range(waves):
        running = []
        for slot in range(4):
            proposal = propose(tree, space, rng, slot)
            check(tree, space, proposal, len(proposals))
            proposals.append(proposal)
            node_id = record(tree, proposal, [None])
            running.append(tree.nodes[node_id].trials[-1].trial_id)
        for trial_id in running:
            tree.complete_trial(trial_id, "completed", *fake_run(tree.node_of_trial(trial_id).config))
    return tree, proposals


def check(tree: Tree, space: SearchSpace, proposal: Proposal, number: int) -> None:
    """The constraints every proposal must meet, checked before it enters the tree."""
    assert proposal.strategy in STRATEGIES
    assert set(proposal.config) == set(space.parameters)
    in_range(space, proposal.config)
    if proposal.strategy == "initial":
        assert number < len(SPREAD) and proposal.parent_id is None
        return
    if proposal.replicate_of is not None:
        assert proposal.strategy == "replicate"
        assert proposal.config == tree.nodes[proposal.replicate_of].config
        return
    assert not tree.has_config(proposal.config)
    parent = tree.nodes[proposal.parent_id]
    changed = changed_parameters(parent.config, proposal.config)
    assert 1 <= len(changed) <= (2 if proposal.strategy in PAIR_STRATEGIES else 1), proposal
    assert proposal.mutation == mutation_text(parent.config, proposal.config)
    assert MUTATION.match(proposal.mutation), proposal.mutation


def test_constraints_over_200_proposals(space: SearchSpace) -> None:
    tree, proposals = simulate(space, seed=11)
    assert len(proposals) == 200
    configs = [tuple(sorted(n.config.items())) for n in tree.nodes.values()]
    assert len(configs) == len(set(configs))  # no config twice
    strategies = Counter(p.strategy for p in proposals)
    assert strategies["initial"] == 4
    assert {"exploit", "exploit-2", "explore", "principle-test", "boundary-probe", "replicate", "homeo-kick",
            "degeneracy-break"} <= set(strategies)
    assert tree.best().reward > tree.nodes["0"].reward  # the rules do find something on a smooth landscape


def test_same_seed_same_proposals(space: SearchSpace) -> None:
    tree, proposals = simulate(space, seed=5, waves=15)
    again_tree, again = simulate(space, seed=5, waves=15)
    assert proposals == again
    assert tree.to_json() == again_tree.to_json()
    assert simulate(space, seed=6, waves=15)[1] != proposals


def test_propose_does_not_change_the_tree(space: SearchSpace) -> None:
    tree, _ = simulate(space, seed=3, waves=5)
    before = tree.to_json()
    for slot in range(4):
        propose(tree, space, random.Random(slot), slot)
    assert tree.to_json() == before


def test_exhausted_space_falls_back_to_a_replicate(space: SearchSpace) -> None:
    tiny = dataclasses.replace(space, parameters={RECURRENT: space.parameters[RECURRENT]}, initial_spread=({},))
    tree, rng = Tree(), random.Random(0)
    record(tree, propose(tree, tiny, rng, 0), [None])
    flipped = propose(tree, tiny, rng, 1)
    assert (flipped.strategy, flipped.mutation) == ("explore", f"{RECURRENT}: False -> True")
    record(tree, flipped, [None])
    assert propose(tree, tiny, rng, 2).strategy == "replicate"


def test_a_parameter_whose_requirement_is_off_is_never_moved():
    """time_step does nothing while recurrent_training is off, so no rule spends a trial on it."""
    space = load_space(HOMEO.with_name("smoke.yaml"))
    assert space.parameters["training.time_step"].requires == "training.recurrent_training"
    tree, rng = Tree(), random.Random(3)
    for i in range(60):
        proposal = propose(tree, space, rng, slot=i % 4)
        node_id = f"n{i}"
        if proposal.replicate_of is None:
            tree.add_node(node_id, proposal.parent_id, proposal.config, proposal.mutation, proposal.strategy)
        else:
            node_id = proposal.replicate_of
        trial_id = f"t{i}"
        tree.add_trial(node_id, trial_id, seed=i)
        tree.complete_trial(trial_id, "completed", (i * 37 % 11) / 11, {"rate_constants_R2": 0.5})
        parent = tree.nodes.get(proposal.parent_id) if proposal.parent_id else None
        if parent is None or proposal.replicate_of is not None:
            continue
        if set(changed_parameters(parent.config, proposal.config)) == {TIME_STEP}:
            assert parent.config[RECURRENT], proposal.mutation


# ------------------------------------------------------------------------------------------ choice


HEAD = "graph_model.homeostasis_head"
FRAMES = "training.conservation_frames"


def choice_space() -> SearchSpace:
    parameters = {LR_K: Parameter(LR_K, "log_float", 1e-4, 1e-2),
                  HEAD: Parameter(HEAD, "choice", values=("mlp", "linear")),
                  FRAMES: Parameter(FRAMES, "choice", values=(64, 256, "all"))}
    return SearchSpace(source="test", base=load_config(HOMEO), frozen=("simulation",), parameters=parameters,
                       initial_spread=({}, {HEAD: "linear"}), ucb_c=0.3, replicates=1)


def test_choice_moves_stay_among_its_values() -> None:
    frames, rng = choice_space().parameters[FRAMES], random.Random(0)
    assert (shift(frames, 64, True, rng), shift(frames, 256, True, rng), shift(frames, "all", True, rng)) == \
        (256, "all", "all")
    assert (shift(frames, 256, False, rng), shift(frames, 64, False, rng)) == (64, 64)
    assert sorted(map(str, neighbours(frames, 256, rng))) == ["64", "all"]
    assert {sample(frames, 64, rng) for _ in range(50)} == {256, "all"}
    assert (edge(frames, True), edge(frames, False), fit(frames, "all")) == ("all", 64, "all")


def test_an_effect_on_a_choice_is_tested_again_with_the_value_it_names() -> None:
    """Switching to the linear head helped twice: the principle-test and the boundary-probe both switch
    other nodes to it, not merely to the 'next' value."""
    space = choice_space()
    tree = Tree()
    for rewards in ([0.3], [0.2]):
        record(tree, propose(tree, space, random.Random(0), len(tree.nodes)), rewards)
    tree.nodes["1"].config[HEAD] = "mlp"  # make both roots use MLP_node with different lr_k
    tree.nodes["1"].config[LR_K] = 1e-3
    child(tree, "0", {HEAD: "linear"}, [0.6])
    child(tree, "1", {HEAD: "linear"}, [0.5])
    fresh = child(tree, "1", {LR_K: 2e-3}, [0.25])
    [effect] = [e for e in tree.parameter_effects() if e.parameter == HEAD]
    assert (effect.direction, effect.count) == ("to linear", 2)
    proposal = propose(tree, space, random.Random(0), slot=3)
    assert (proposal.strategy, proposal.parent_id) == ("principle-test", fresh)
    assert proposal.mutation == f"{HEAD}: mlp -> linear"
    assert step_towards(space.parameters[FRAMES], 64, "to all", random.Random(0)) == "all"
    assert step_towards(space.parameters[FRAMES], 64, "up", random.Random(0)) == 256
