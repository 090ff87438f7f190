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
    LR_K,
    LR_NODE,
    LR_SUB,
    NODE_L1,
    RECURRENT,
    RESIDUAL_FIT,
    RESIDUAL_FUSION,
    TIME_STEP,
    Proposal,
    edge,
    fit,
    further,
    gates,
    improvements,
    merge_into,
    mutation_text,
    neighbours,
    propose,
    sample,
    shift,
    step_further,
    step_towards,
    structure,
    switches,
)
from metabo_tune.tree import FULL, SCREEN, Node, Tree, changed_parameters

HOMEO = Path(__file__).parents[1] / "search_spaces" / "homeo_rank_50.yaml"
PAIR_STRATEGIES = ("homeo-kick", "k-protect", "degeneracy-break")
STRATEGIES = ("exploit", "exploit-2", "explore", "principle-test", "boundary-probe", "homeo-kick", "embedding-focus",
              "k-protect", "degeneracy-break", "replicate", "initial", "merge", "direction", "switch-test", "settle",
              "floor-retest")
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


def test_a_failed_best_is_not_replicated(space: SearchSpace) -> None:
    failed = metrics(rate_constants_R2=0.0, avg_slope_ratio=0.0, classification="failed")
    tree = screened_tree(space, {})
    tree.add_trial("4", "4-f", seed=77, fidelity=FULL)
    tree.complete_trial("4-f", "completed", 0.1, failed)
    assert tree.best().node_id == "4" and len(tree.nodes["4"].trials_at(FULL)) == 1
    assert propose(tree, space, random.Random(0), slot=0).strategy != "replicate"
    tree.add_trial("1", "1-f", seed=77, fidelity=FULL)
    tree.complete_trial("1-f", "completed", 0.3, NEUTRAL)  # a partial full result beats it: that one is re-run
    assert propose(tree, space, random.Random(0), slot=0).replicate_of == "1"


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
    proposal = propose(tree, space, random.Random(0), slot=0)  # no override: slot 1's lr_node 5e-4 beat
    assert (proposal.strategy, proposal.mutation) == ("direction", f"{LR_NODE}: 0.0005 -> 0.001")  # the base
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


FIT_START = "training.residual_fit_start"
SUBSTRATE = "graph_model.substrate_form"


def with_gates(space: SearchSpace) -> SearchSpace:
    """The test space plus the residual fit (a gate: its start and the residual fusion require it), the
    residual fusion (a gate too) and the substrate form (a structural choice)."""
    extra = {RESIDUAL_FIT: Parameter(RESIDUAL_FIT, "float", 0.0, 1e5),
             FIT_START: Parameter(FIT_START, "float", 0.5, 0.95, requires=RESIDUAL_FIT),
             RESIDUAL_FUSION: Parameter(RESIDUAL_FUSION, "float", 0.0, 0.1, requires=RESIDUAL_FIT),
             "training.residual_fusion_neighbours": Parameter("training.residual_fusion_neighbours", "int", 5, 45,
                                                              requires=RESIDUAL_FUSION),
             SUBSTRATE: Parameter(SUBSTRATE, "choice", values=("mlp", "power"))}
    return dataclasses.replace(space, parameters={**space.parameters, **extra})


def test_gates_are_the_numeric_switches_other_parameters_require(space: SearchSpace) -> None:
    assert gates(with_gates(space)) == [RESIDUAL_FIT, RESIDUAL_FUSION]  # recurrent_training: a bool, flipped
    assert gates(load_space(HOMEO.with_name("homeo_rank_50_open.yaml"))) == [
        "training.coeff_conservation", RESIDUAL_FIT, RESIDUAL_FUSION]


def test_switches_are_the_gates_and_the_choices_that_can_be_null() -> None:
    free = load_space(HOMEO.with_name("free_forms.yaml"))
    assert switches(free) == ["training.coeff_MLP_sub_norm", "training.coeff_conservation", RESIDUAL_FIT,
                              RESIDUAL_FUSION, "training.type_grouping_at", "training.group_solve_moves"]


def test_switch_test_follows_a_switch_through_the_switches_it_opens() -> None:
    """The free-form space's plateau (docs/results.md, "Where the tree breaks on this space"): the residual fit,
    the type grouping it opens and the group solve the grouping opens are each worth nothing alone, so no
    switched-on node becomes the best. Each is still turned on where the one it requires was turned on."""
    free = load_space(HOMEO.with_name("free_forms.yaml"))
    stuck = metrics(rate_constants_R2=0.999, avg_slope_ratio=0.9, embedding_cluster_acc=0.6,
                    classification="partial-k")
    tree = spread_tree(free, rewards=(0.64, 0.63, 0.62, 0.61, 0.60), metrics=(stuck,) * 5)
    steps = []
    for _ in range(5):
        proposal = propose(tree, free, random.Random(0), slot=0)
        steps.append((proposal.strategy, proposal.parent_id, proposal.mutation))
        record(tree, proposal, [0.6, 0.6], stuck)  # every switch alone: worse than the best
    assert steps == [("switch-test", "0", "training.coeff_conservation: 0 -> 1e+03"),
                     ("switch-test", "0", f"{RESIDUAL_FIT}: 0 -> 1e+03"),
                     ("switch-test", "6", f"{RESIDUAL_FUSION}: 0 -> 0.001"),
                     ("switch-test", "6", "training.type_grouping_at: None -> 0.95"),
                     ("switch-test", "8", "training.group_solve_moves: None -> 100")]
    solved = tree.nodes["9"].config
    assert (solved[RESIDUAL_FIT], solved["training.type_grouping_at"], solved[RESIDUAL_FUSION]) == (1e3, 0.95, 0)
    assert propose(tree, free, random.Random(0), slot=0).strategy != "switch-test"  # each once per structure


def test_structure_ignores_tuning_and_what_is_switched_off(space: SearchSpace) -> None:
    gated = with_gates(space)
    base = gated.base_values()
    assert structure(gated, base) == ((RECURRENT, False), (RESIDUAL_FIT, False), (SUBSTRATE, "mlp"))
    assert structure(gated, base | {LR_K: 5e-3, FIT_START: 0.5}) == structure(gated, base)
    assert structure(gated, base | {RESIDUAL_FIT: 1e3}) == structure(gated, base | {RESIDUAL_FIT: 1e4}) == (
        (RECURRENT, False), (RESIDUAL_FIT, True), (RESIDUAL_FUSION, False), (SUBSTRATE, "mlp"))
    assert structure(gated, base | {SUBSTRATE: "power"}) != structure(gated, base)


def test_switch_test_switches_a_loss_term_on_once_per_structure(space: SearchSpace) -> None:
    gated = with_gates(space)
    stuck = metrics(rate_constants_R2=1.0, avg_slope_ratio=1.0, embedding_cluster_acc=0.97,
                    classification="partial-k")
    tree = spread_tree(gated, rewards=(0.5, 0.74, 0.3, 0.2), metrics=(stuck,) * 4)
    proposal = propose(tree, gated, random.Random(0), slot=0)
    assert (proposal.strategy, proposal.parent_id, proposal.mutation) == (
        "switch-test", "1", f"{RESIDUAL_FIT}: 0 -> 1e+03")  # 1 % of its range
    assert proposal.config[FIT_START] == tree.nodes["1"].config[FIT_START]  # the companions as they were
    opened = record(tree, proposal, [0.7, 0.7], stuck)  # worse: node 1 stays the best
    # followed through: the gate the fit opens (the residual fusion) on the node that switched the fit on
    proposal = propose(tree, gated, random.Random(0), slot=0)
    assert (proposal.strategy, proposal.parent_id, proposal.mutation) == (
        "switch-test", opened, f"{RESIDUAL_FUSION}: 0 -> 0.001")
    record(tree, proposal, [0.6, 0.6], stuck)
    assert propose(tree, gated, random.Random(0), slot=0).strategy != "switch-test"  # tested in this structure
    # the same structure tuned differently: still tested
    tuned = child(tree, "1", {LR_K: 5e-3}, [0.8, 0.8], stuck)
    assert propose(tree, gated, random.Random(0), slot=0).strategy != "switch-test"
    # another structure (the power form): the residual fit gets its trial there too
    power = child(tree, tuned, {SUBSTRATE: "power"}, [0.85, 0.85], stuck)
    proposal = propose(tree, gated, random.Random(0), slot=0)
    assert (proposal.strategy, proposal.parent_id, proposal.config[RESIDUAL_FIT]) == ("switch-test", power, 1e3)
    # once the fit is on in the best node, the gate it opens (the residual fusion) is next
    fitting = record(tree, proposal, [0.9, 0.9], stuck)
    proposal = propose(tree, gated, random.Random(0), slot=0)
    assert (proposal.strategy, proposal.parent_id, proposal.mutation) == (
        "switch-test", fitting, f"{RESIDUAL_FUSION}: 0 -> 0.001")


def test_switch_test_counts_a_switch_made_by_any_rule_and_leaves_a_converged_best_alone(space: SearchSpace) -> None:
    gated = with_gates(space)
    tree = spread_tree(gated, rewards=(0.5, 0.74, 0.3, 0.2))
    exploited = child(tree, "0", {RESIDUAL_FIT: 181.0}, [0.2, 0.2])  # an exploit of the baseline's structure
    proposal = propose(tree, gated, random.Random(0), slot=0)  # switched it on: not again on node 1, which
    assert (proposal.strategy, proposal.parent_id, proposal.mutation) == (  # has that structure; followed through
        "switch-test", exploited, f"{RESIDUAL_FUSION}: 0 -> 0.001")
    done = metrics(rate_constants_R2=1.0, avg_slope_ratio=1.0, classification="converged")
    tree = spread_tree(gated, rewards=(0.5, 0.99, 0.3, 0.2), metrics=(NEUTRAL, done, NEUTRAL, NEUTRAL))
    assert propose(tree, gated, random.Random(0), slot=0).strategy != "switch-test"


def test_switch_test_goes_on_the_best_node_whose_screen_ended_in_its_full_budget_class(space: SearchSpace) -> None:
    """9202 (docs/results.md): the grouping and the solve went on the best full node, whose screen was partial,
    and screened partial under it; on a node 0.01 below it whose screen was partial-k already they converged."""
    gated = with_gates(space)
    stuck = metrics(rate_constants_R2=0.999, avg_slope_ratio=0.9, embedding_cluster_acc=0.5,
                    classification="partial-k")

    def tree_with(screen_of_1: dict[str, Any]) -> Tree:
        tree = Tree()
        screens = ((0.32, NEUTRAL), (0.62, screen_of_1), (0.2, NEUTRAL), (0.1, NEUTRAL))
        for k, (reward, screen_metrics) in enumerate(screens):
            proposal = propose(tree, gated, random.Random(0), k)
            tree.add_node(str(k), proposal.parent_id, proposal.config, proposal.mutation, proposal.strategy)
            tree.add_trial(str(k), f"{k}-s", seed=77, fidelity=SCREEN)
            tree.complete_trial(f"{k}-s", "completed", reward, screen_metrics)
        for node_id, reward in (("0", 0.64), ("1", 0.63)):
            for seed in (77, 78):
                tree.add_trial(node_id, f"{node_id}-f{seed}", seed=seed, fidelity=FULL)
                tree.complete_trial(f"{node_id}-f{seed}", "completed", reward, stuck)
        return tree

    tree = tree_with(stuck)
    assert tree.best().node_id == "0" and tree.nodes["0"].classification == "partial"
    proposal = propose(tree, gated, random.Random(0), slot=0)
    assert (proposal.strategy, proposal.parent_id, proposal.mutation) == (
        "switch-test", "1", f"{RESIDUAL_FIT}: 0 -> 1e+03")
    proposal = propose(tree_with(NEUTRAL), gated, random.Random(0), slot=0)  # no screen agrees: the best node
    assert (proposal.strategy, proposal.parent_id) == ("switch-test", "0")
    # a second node of the class, its screen in it too, and of another structure: its switches come next
    other = tree.nodes["1"].config | {RECURRENT: not tree.nodes["1"].config[RECURRENT]}
    tree.add_node("4", "1", other, mutation_text(tree.nodes["1"].config, other), "exploit")
    for fidelity, seed in ((SCREEN, 77), (FULL, 77), (FULL, 78)):
        tree.add_trial("4", f"4-{fidelity}{seed}", seed=seed, fidelity=fidelity)
        tree.complete_trial(f"4-{fidelity}{seed}", "completed", 0.62, stuck)
    opened = []
    for _ in range(4):
        proposal = propose(tree, gated, random.Random(0), slot=0)
        if proposal.strategy != "switch-test":
            break
        opened.append((proposal.parent_id, proposal.mutation))
        tree.add_node(str(len(tree.nodes)), proposal.parent_id, proposal.config, proposal.mutation, "switch-test")
    assert opened[:2] == [("1", f"{RESIDUAL_FIT}: 0 -> 1e+03"), ("4", f"{RESIDUAL_FIT}: 0 -> 1e+03")]


# floor-retest: a failed trial, and one off the floor that converged nowhere
FLOOR = metrics(rate_constants_R2=0.0, avg_slope_ratio=0.0, embedding_cluster_acc=0.5, classification="failed")
STUCK = metrics(rate_constants_R2=0.99, avg_slope_ratio=0.9, embedding_cluster_acc=0.5, classification="partial-k")


def test_floor_retest_applies_each_spread_entry_judged_at_the_floor_to_the_first_best_off_it() -> None:
    """9202's first tree repetition (docs/results.md): the whole spread failed, so the priors entry's 0.103 beside
    the baseline's 0.104 was seed noise, and the line the tree built from the baseline never had the priors."""
    free = load_space(HOMEO.with_name("free_forms.yaml"))
    tree = spread_tree(free, rewards=(0.104, 0.103, 0.101, 0.100, 0.099), metrics=(FLOOR,) * 5)
    assert propose(tree, free, random.Random(0), slot=0).strategy != "floor-retest"  # nothing has left the floor
    fitting = child(tree, "0", {RESIDUAL_FIT: 1e3}, [0.63, 0.63], STUCK)
    retested = []
    for _ in range(5):
        proposal = propose(tree, free, random.Random(0), slot=0)
        if proposal.strategy != "floor-retest":
            break
        retested.append(proposal)
        record(tree, proposal, [0.6, 0.6], STUCK)  # each worse than the best, which stays the best
    assert [p.parent_id for p in retested] == [fitting] * 4
    for proposal, entry in zip(retested, free.initial_spread[1:], strict=True):
        assert proposal.config == {**tree.nodes[fitting].config, **entry}
    assert propose(tree, free, random.Random(0), slot=0).strategy != "floor-retest"  # each entry once


def test_floor_retest_skips_an_entry_the_best_node_has_changed_and_entries_judged_off_the_floor() -> None:
    free = load_space(HOMEO.with_name("free_forms.yaml"))
    tree = spread_tree(free, rewards=(0.104, 0.103, 0.101, 0.3, 0.31), metrics=(FLOOR, FLOOR, FLOOR, STUCK, STUCK))
    faster = child(tree, "0", {LR_K: 7e-3, RESIDUAL_FIT: 1e3}, [0.63, 0.63], STUCK)
    proposal = propose(tree, free, random.Random(0), slot=0)
    assert (proposal.strategy, proposal.parent_id) == ("floor-retest", faster)
    assert proposal.config == {**tree.nodes[faster].config, **free.initial_spread[1]}
    record(tree, proposal, [0.6, 0.6], STUCK)
    # entry 2 sets the k rate the best node changed; entries 3 and 4 were judged off the floor
    assert propose(tree, free, random.Random(0), slot=0).strategy != "floor-retest"
    # a baseline that did not fail: every entry was judged off the floor
    tree = spread_tree(free, rewards=(0.3, 0.103, 0.101, 0.100, 0.099), metrics=(STUCK, FLOOR, FLOOR, FLOOR, FLOOR))
    child(tree, "0", {RESIDUAL_FIT: 1e3}, [0.63, 0.63], STUCK)
    assert propose(tree, free, random.Random(0), slot=0).strategy != "floor-retest"


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
    proposal = propose(tree, space, random.Random(0), slot=0)  # no override: the exploit slot follows the
    assert (proposal.strategy, proposal.parent_id) == ("direction", better)  # improving lr_node × 2 once more
    assert proposal.mutation == f"{LR_NODE}: 0.0002 -> 0.0004"


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
    for t in (0, 1):  # a linear head with exact baselines: its slope at the zero is its line-fit slope
        values |= {f"MLP_node_slope_at_zero_ratio_{t}": slope, f"MLP_node_zero_rel_err_{t}": 0.0}
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
    if proposal.strategy == "merge":  # another node's improving mutation, whole, onto an improved parent
        brought = {name: proposal.config[name] for name in changed}
        assert gain(tree, parent) > 0
        assert any(gain(tree, node) > 0 and own_mutation(tree, node) == brought for node in tree.nodes.values())
    elif proposal.strategy == "direction":  # the parent's improving one-parameter move, once more
        assert gain(tree, parent) > 0 and changed == list(own_mutation(tree, parent))
        (name,) = changed
        before, after = origin(tree, parent).config[name], parent.config[name]
        assert (after > before) == (proposal.config[name] > after)
    elif proposal.strategy == "floor-retest":  # a spread entry, whole
        assert {name: proposal.config[name] for name in changed} in SPREAD[1:]
    else:
        assert 1 <= len(changed) <= (2 if proposal.strategy in PAIR_STRATEGIES else 1), proposal
    assert proposal.mutation == mutation_text(parent.config, proposal.config)
    assert MUTATION.match(proposal.mutation), proposal.mutation


def origin(tree: Tree, node: Node) -> Node | None:
    """The parent; for a root, the baseline root "0" (every tree here starts with the spread)."""
    if node.parent_id is not None:
        return tree.nodes[node.parent_id]
    return None if node.node_id == "0" else tree.nodes["0"]


def gain(tree: Tree, node: Node) -> float:
    start = origin(tree, node)
    if start is None or node.reward is None or start.reward is None:
        return math.nan
    return node.reward - start.reward


def own_mutation(tree: Tree, node: Node) -> dict[str, Any]:
    start = origin(tree, node)
    return {} if start is None else {name: node.config[name] for name in changed_parameters(start.config, node.config)}


def test_constraints_over_200_proposals(space: SearchSpace) -> None:
    tree, proposals = simulate(space, seed=40)  # a seed whose path meets every rule below (homeo-kick is rare)
    assert len(proposals) == 200
    configs = [tuple(sorted(n.config.items())) for n in tree.nodes.values()]
    assert len(configs) == len(set(configs))  # no config twice
    strategies = Counter(p.strategy for p in proposals)
    assert strategies["initial"] == 4
    assert {"exploit", "exploit-2", "explore", "principle-test", "boundary-probe", "replicate", "homeo-kick",
            "degeneracy-break", "merge", "direction", "floor-retest"} <= set(strategies)
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


def test_a_switch_at_null_is_moved_on():
    """A choice with null among its values (type_grouping_at) starts off, at null; the rules must still move it
    (until 2026-12-06 a null value counted as none, so the tree never switched such a choice on)."""
    grouping = "training.type_grouping_at"
    base_space = load_space(HOMEO.with_name("smoke.yaml"))
    switch = Parameter(grouping, "choice", values=(None, 0.95, 0.98))
    tiny = dataclasses.replace(base_space, parameters={grouping: switch}, initial_spread=({},))
    tree, rng = Tree(), random.Random(0)
    record(tree, propose(tree, tiny, rng, 0), [0.5])
    assert tree.nodes["0"].config[grouping] is None
    moves = set()
    for slot in range(1, 4):
        proposal = propose(tree, tiny, rng, slot)
        if proposal.replicate_of is None:
            moves.add(proposal.config[grouping])
        record(tree, proposal, [0.4])
    assert moves == {0.95, 0.98}


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


# ------------------------------------------------------------------------------------------ merge, direction

SUB_NORM = "training.coeff_MLP_sub_norm"
BATCH = "training.batch_size"


def test_merge_brings_a_siblings_improving_mutation_largest_gain_first(space: SearchSpace) -> None:
    tree = spread_tree(space)  # roots 1–3 are worse than the baseline: no spread mutation improved
    a = child(tree, "0", {LR_K: 7.5e-3}, [0.7, 0.7])  # +0.2
    child(tree, "0", {SUB_NORM: 2.0}, [0.55, 0.55])  # +0.05
    child(tree, "0", {NODE_L1: 0.5}, [0.6, 0.6])  # +0.1
    child(tree, "0", {LR_NODE: 2e-4}, [0.45, 0.45])  # −0.05: did not improve
    proposal = merge_into(tree, space, tree.nodes[a])
    assert (proposal.parent_id, proposal.strategy) == (a, "merge")
    assert proposal.config == {**tree.nodes["0"].config, LR_K: 7.5e-3, NODE_L1: 0.5}  # the parent, both mutations
    assert proposal.mutation == f"{NODE_L1}: 1 -> 0.5"
    assert propose(tree, space, random.Random(0), slot=0) == proposal  # a is the top-UCB node
    record(tree, proposal, [None])
    assert merge_into(tree, space, tree.nodes[a]).config == {**tree.nodes["0"].config, LR_K: 7.5e-3, SUB_NORM: 2.0}
    record(tree, merge_into(tree, space, tree.nodes[a]), [None])
    assert merge_into(tree, space, tree.nodes[a]) is None  # the sibling that did not improve is never brought in
    assert merge_into(tree, space, tree.nodes["1"]) is None  # nor into a node whose own mutation did not improve


def test_merge_combines_spread_entries_as_mutations_of_the_baseline(space: SearchSpace) -> None:
    """The open space's case: two spread entries each beat the baseline; the merge holds both, which no
    entry does."""
    tree = spread_tree(space, rewards=(0.3, 0.5, 0.4, 0.2))
    assert [(i.node.node_id, round(i.delta, 6)) for i in improvements(tree, space)] == [("1", 0.2), ("2", 0.1)]
    proposal = merge_into(tree, space, tree.nodes["1"])
    assert (proposal.parent_id, proposal.mutation) == ("1", f"{NODE_L1}: 1 -> 0.1")
    assert proposal.config == {**tree.nodes["0"].config, LR_NODE: 5e-4, NODE_L1: 0.1}
    assert merge_into(tree, space, tree.nodes["2"]).config == proposal.config  # the other way round: the same
    first = propose(tree, space, random.Random(0), slot=0)  # the exploit slot prefers the merge
    assert (first.strategy, first.parent_id, first.config) == ("merge", "1", proposal.config)
    record(tree, first, [None])
    second = propose(tree, space, random.Random(0), slot=1)  # on root 2 that merge is taken: a direction step
    assert (second.strategy, second.parent_id, second.mutation) == ("direction", "2", f"{NODE_L1}: 0.1 -> 0")


def test_merge_skips_conflicts_descendants_and_parameters_switched_off(space: SearchSpace) -> None:
    space = dataclasses.replace(space, parameters={
        **space.parameters, TIME_STEP: Parameter(TIME_STEP, "int", 1, 16, requires=RECURRENT)})
    tree = spread_tree(space, rewards=(0.3, 0.2, 0.25, 0.4))  # root 3 (recurrent, time_step 4, lr_k 2e-3): +0.1
    a = child(tree, "0", {LR_K: 7.5e-3}, [0.6, 0.6])  # +0.3
    child(tree, "0", {LR_K: 1e-2}, [0.5, 0.5])  # +0.2, but a moved lr_k already: a conflict
    recurrent = child(tree, "0", {RECURRENT: True}, [0.35, 0.35])  # +0.05
    child(tree, recurrent, {TIME_STEP: 2}, [0.5, 0.5])  # +0.15, but a does not train recurrently
    deeper = child(tree, a, {SUB_NORM: 2.0}, [0.7, 0.7])  # +0.1, built on a
    child(tree, deeper, {NODE_L1: 0.5}, [0.8, 0.8])  # +0.1, built on a: a plus this alone is no merge
    assert [i.delta > 0 for i in improvements(tree, space)] == [True] * 7
    proposal = merge_into(tree, space, tree.nodes[a])  # root 3's entry conflicts on lr_k too
    assert (proposal.parent_id, proposal.mutation) == (a, f"{RECURRENT}: False -> True")
    record(tree, proposal, [None])
    assert merge_into(tree, space, tree.nodes[a]) is None
    # Into deeper, the sibling's lr_k 1e-2 would undo a's 7.5e-3 in a config not yet tried: still a conflict.
    assert merge_into(tree, space, tree.nodes[deeper]).mutation == f"{RECURRENT}: False -> True"


def test_merge_stays_in_range(space: SearchSpace) -> None:
    tree = spread_tree(space)
    a = child(tree, "0", {NODE_L1: 0.5}, [0.7])
    child(tree, "0", {LR_K: 1e-2}, [0.6])
    narrower = dataclasses.replace(space, parameters={**space.parameters,
                                                      LR_K: Parameter(LR_K, "log_float", 1e-4, 8e-3)})
    assert merge_into(tree, narrower, tree.nodes[a]).config[LR_K] == 8e-3


def test_further_repeats_the_move_once() -> None:
    p = _parameters()
    frames = choice_space().parameters[FRAMES]
    assert further(p[LR_NODE], 1e-4, 2e-4) == 4e-4  # log_float: the same factor
    assert further(p[LR_NODE], 1e-4, 6.67e-5) == 4.45e-5
    assert further(p[NODE_L1], 1.0, 0.8) == 0.6  # float: the same difference
    assert further(p[NODE_L1], 1.0, 0.5) == 0.0  # clipped at low
    assert further(p[BATCH], 8, 10) == 12 and type(further(p[BATCH], 8, 10)) is int
    assert (further(frames, 64, 256), further(frames, 256, 64), further(frames, "all", 256)) == ("all", None, 64)
    assert further(frames, 256, "all") is None  # the last value
    assert further(p[LR_K], 5e-3, 1e-2) is None  # at the range's edge already
    assert further(p[RECURRENT], False, True) is None


def test_step_further_only_after_a_one_parameter_move_that_improved(space: SearchSpace) -> None:
    tree = spread_tree(space, rewards=(0.3, 0.2, 0.25, 0.4))  # root 3 improved, but moved three parameters
    up = child(tree, "0", {BATCH: 10}, [0.5])
    down = child(tree, "0", {NODE_L1: 0.8}, [0.2])
    proposal = step_further(tree, space, tree.nodes[up])
    assert (proposal.parent_id, proposal.strategy, proposal.mutation) == (up, "direction", f"{BATCH}: 10 -> 12")
    assert step_further(tree, space, tree.nodes[down]) is None  # did not improve
    assert step_further(tree, space, tree.nodes["3"]) is None
    assert step_further(tree, space, tree.nodes["0"]) is None  # the baseline has no mutation
    record(tree, proposal, [None])
    assert step_further(tree, space, tree.nodes[up]) is None  # once: the step is a node now


def test_open_space_merges_the_linear_head_and_the_power_form_once_both_beat_the_baseline() -> None:
    """The first step of discovery in search_spaces/homeo_rank_50_open.yaml: the spread holds the linear
    head and the power form apart; when both beat iter_116, the top slot proposes them together (once the
    best node's structure has had its switch-test)."""
    space = load_space(HOMEO.with_name("homeo_rank_50_open.yaml"))
    tree = spread_tree(space, rewards=(0.35, 0.74, 0.4, 0.3))  # base, linear head, power form, cosine
    first = propose(tree, space, random.Random(0), slot=0)
    assert (first.strategy, first.parent_id) == ("switch-test", "1")  # the best's own structure first
    fitted = record(tree, first, [0.5, 0.5])  # worse: node 1 stays on top
    follow = propose(tree, space, random.Random(0), slot=0)  # the gate the residual fit opens, on that node
    assert (follow.strategy, follow.parent_id, follow.mutation) == (
        "switch-test", fitted, f"{RESIDUAL_FUSION}: 0 -> 0.001")
    record(tree, follow, [None])  # still training: the top slot goes on
    proposal = propose(tree, space, random.Random(0), slot=0)
    assert (proposal.strategy, proposal.parent_id) == ("merge", "1")
    assert proposal.config == space.base_values() | space.initial_spread[1] | space.initial_spread[2]
    assert proposal.mutation == "graph_model.substrate_form: mlp -> power; training.log_k_init_max: 1 -> -1"


def test_open_space_switches_the_residual_fit_on_where_the_linear_head_meets_the_power_form() -> None:
    """The second step of discovery: the merged node (linear head and power form) is the best and short of
    converged, and its structure has not had the residual fit yet. The switch brings the space's
    companions along (start at 90 %, the head's rate restarted at 1e-3): at the screening budget on the
    mission network that config converges (docs/results.md, "The search that discovers")."""
    space = load_space(HOMEO.with_name("homeo_rank_50_open.yaml"))
    partial_k = metrics(rate_constants_R2=1.0, avg_slope_ratio=1.06, embedding_cluster_acc=0.98,
                        classification="partial-k")
    tree = spread_tree(space, rewards=(0.35, 0.74, 0.6, 0.63), metrics=(partial_k,) * 4)
    child(tree, "1", {RESIDUAL_FIT: 1e3}, [0.72, 0.72], partial_k)  # the linear head's own switch-test
    merged = child(tree, "1", {"graph_model.substrate_form": "power", "training.log_k_init_max": -1.0},
                   [0.745, 0.745], partial_k)
    proposal = propose(tree, space, random.Random(0), slot=0)
    assert (proposal.strategy, proposal.parent_id) == ("switch-test", merged)
    assert {name: proposal.config[name] for name in (RESIDUAL_FIT, FIT_START, "training.residual_fit_learning_rate",
                                                     "graph_model.homeostasis_head", "graph_model.substrate_form")} \
        == {RESIDUAL_FIT: 1e3, FIT_START: 0.9, "training.residual_fit_learning_rate": 1e-3,
            "graph_model.homeostasis_head": "linear", "graph_model.substrate_form": "power"}


# ------------------------------------------------------------------------------------------ fidelity


def screened_tree(space: SearchSpace, full: dict[str, float]) -> Tree:
    """The spread and two children, every node screened once (rewards below), and the nodes in `full`
    promoted with these full-budget rewards."""
    tree = Tree()
    for k, reward in enumerate((0.5, 0.4, 0.3, 0.2)):
        proposal = propose(tree, space, random.Random(0), k)
        tree.add_node(str(k), proposal.parent_id, proposal.config, proposal.mutation, proposal.strategy)
        tree.add_trial(str(k), f"{k}-s", seed=77, fidelity=SCREEN)
        tree.complete_trial(f"{k}-s", "completed", reward, NEUTRAL)
    for node_id, (parent, changes, reward) in {"4": ("0", {LR_K: 1e-2}, 0.6), "5": ("1", {NODE_L1: 3.0}, 0.35)}.items():
        config = {**tree.nodes[parent].config, **changes}
        tree.add_node(node_id, parent, config, mutation_text(tree.nodes[parent].config, config), "exploit")
        tree.add_trial(node_id, f"{node_id}-s", seed=77, fidelity=SCREEN)
        tree.complete_trial(f"{node_id}-s", "completed", reward, NEUTRAL)
    for node_id, reward in full.items():
        tree.add_trial(node_id, f"{node_id}-f", seed=77, fidelity=FULL)
        tree.complete_trial(f"{node_id}-f", "completed", reward, NEUTRAL)
    return tree


def test_settle_halves_the_reaction_rates_where_the_screen_converged_and_the_full_budget_did_not(
        space: SearchSpace) -> None:
    converged = metrics(rate_constants_R2=1.0, avg_slope_ratio=1.0, classification="converged")
    broke = metrics(rate_constants_R2=0.8, avg_slope_ratio=1.0, embedding_cluster_acc=0.93,
                    classification="partial-homeo")
    tree = screened_tree(space, {})
    for node_id, reward in (("6", 0.99), ("7", 0.98)):  # two children of 4, converged at screen
        config = {**tree.nodes["4"].config, NODE_L1: 1.0 + int(node_id)}
        tree.add_node(node_id, "4", config, mutation_text(tree.nodes["4"].config, config), "exploit")
        tree.add_trial(node_id, f"{node_id}-s", seed=77, fidelity=SCREEN)
        tree.complete_trial(f"{node_id}-s", "completed", reward, converged)
        tree.add_trial(node_id, f"{node_id}-s2", seed=78, fidelity=SCREEN)
    assert propose(tree, space, random.Random(0), slot=0).strategy != "settle"  # no full result yet
    for node_id, result in (("6", converged), ("7", broke)):
        tree.add_trial(node_id, f"{node_id}-f", seed=77, fidelity=FULL)
        tree.complete_trial(f"{node_id}-f", "completed", 0.99 if result is converged else 0.66, result)
    tree.add_trial("6", "6-f2", seed=79, fidelity=FULL)  # the best's replicate, running
    proposal = propose(tree, space, random.Random(0), slot=0)
    assert (proposal.strategy, proposal.parent_id) == ("settle", "7")  # 6 converged at full too
    before = tree.nodes["7"].config
    assert (proposal.config[LR_K], proposal.config[LR_SUB]) == (before[LR_K] / 2, before[LR_SUB] / 2)
    assert changed_parameters(before, proposal.config) == sorted([LR_K, LR_SUB])
    tree.add_node("8", "7", proposal.config, proposal.mutation, proposal.strategy)
    assert propose(tree, space, random.Random(0), slot=0).strategy != "settle"  # once per node


def test_full_budget_rewards_never_steer_the_slot_roles(space: SearchSpace) -> None:
    one_seed = dataclasses.replace(space, replicates=1)  # replicate-before-trust is the only rule that reads them
    low_high = screened_tree(one_seed, {"0": 0.1, "4": 0.95})
    high_low = screened_tree(one_seed, {"0": 0.95, "4": 0.1})
    for slot in range(4):
        assert (propose(low_high, one_seed, random.Random(slot), slot)
                == propose(high_low, one_seed, random.Random(slot), slot)), slot


def test_a_replicate_re_tests_the_result_at_its_fidelity(space: SearchSpace) -> None:
    tree = screened_tree(space, {})
    first = propose(tree, space, random.Random(0), slot=0)
    assert first.replicate_of == "4"  # no full result yet: the best screen node, with one screen trial
    tree.add_trial("4", "4-s2", seed=78, fidelity=SCREEN)
    assert propose(tree, space, random.Random(0), slot=0).strategy != "replicate"
    tree.add_trial("1", "1-f", seed=77, fidelity=FULL)
    tree.complete_trial("1-f", "completed", 0.3, NEUTRAL)
    # 1 is the best now (the only full result) and has two trials, but one at full: replicate it there
    assert tree.best().node_id == "1" and len(tree.nodes["1"].trials) == 2
    assert propose(tree, space, random.Random(0), slot=0).replicate_of == "1"
    tree.add_trial("1", "1-f2", seed=79, fidelity=FULL)
    assert propose(tree, space, random.Random(0), slot=0).strategy != "replicate"
