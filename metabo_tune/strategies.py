"""Deterministic proposal rules: which node to expand next and how to change its config.

`propose` walks an ordered table and returns the first rule's proposal:

1. initial spread: the search space's spread entries, in order, until there are that many nodes;
2. replicate-before-trust: the best node is re-run with a fresh seed until it has `space.replicates`
   trials (finished or running) at the fidelity its result comes from (full once it has a full-budget
   result: `Tree.best` ranks those first), unless its result there failed;
3. condition overrides, each triggered by the finished nodes and applied to the best node (settle: to
   the best node it names): settle, homeo-kick, floor-retest, switch-test, embedding-focus, k-protect,
   degeneracy-break, boundary-probe (thresholds below);
4. the slot's role, the four in turn (one each in every four suggestions, whatever the concurrency): exploit the
   top-UCB node; exploit the second; explore; principle-test, or boundary-probe when principle-test has nothing
   (no effect seen twice, or every move it has is already a node).
   An exploit slot builds on what worked before it perturbs: when the node's own mutation improved on its origin, it
   first merges another branch's improving mutation into the node (`merge_into`), else takes one more step
   along the node's own mutation (`step_further`, strategy "direction"), else changes one parameter
   conservatively;
5. explore (any role that found nothing), and last a replicate of the best node, when every move the
   rules know would repeat a config already in the tree.

A node's mutation is what changed from its origin: its parent, or, for a root of the initial spread,
the baseline root (the spread's `{}`), so that improvements found from different spread entries can be
combined too. It improved when the node's reward (replicate mean) is above its origin's.

Every rule is a pure function (tree, space, rng) -> Proposal | None; None means the rule does not
apply, its parameters are not tunable in this space, or each of its moves would repeat a config that
is already a node. A move therefore fires once: its child is in the tree the next time it is asked, so
an override fires once per node it acts on and per move it has (switch-test once per switch, embedding-focus its
rate and then its fusion), and so does each merge and direction step. `propose` relies on the caller adding
each proposal to the tree (a node, or a trial for a replicate) before the next call. The only
randomness is `rng`; merge and direction use none.

A proposal changes one parameter of its parent; settle, homeo-kick, k-protect and degeneracy-break change a named
pair, a merge the parameters of the mutation it brings in, and a floor-retest those of a spread entry. The
overrides read a node's class where its result comes from (full budget once it has one, else the screen):
switch-test stops once the best node is converged there (at screen too, before its promotion), and boundary-probe
counts nodes converged at their search fidelity. A switch-test turns on a switch: a loss term whose settings are
other parameters (a gate, off at 0), or a choice that can be null (off); the settings keep the values the node has
(for a term that is off: the space's base, where a space can give the companion settings that make the term work).
It tries the best node's switches, and follows a switch through: the switches that `require` one a node turned on
are turned on, one a trial, on that node. Values are clipped into [low, high], ints stay int and bools bool, and
floats are rounded to three significant digits so the mutation text ("param: old -> new", `%.3g`) shows the exact
value.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from metabo_tune.space import Parameter, SearchSpace, get_value
from metabo_tune.tree import FULL, REPLICATE, Effect, Node, Tree, changed_parameters, later_trial_mutation

LR_K = "training.learning_rate_k"
LR_SUB = "training.learning_rate_sub"
LR_NODE = "training.learning_rate_node"
LR_EMBEDDING = "training.learning_rate_embedding"
NODE_L1 = "training.coeff_MLP_node_L1"
RECURRENT = "training.recurrent_training"
TIME_STEP = "training.time_step"
FUSION = "training.coeff_embedding_fusion"
RESIDUAL_FIT = "training.coeff_residual_fit"
RESIDUAL_FUSION = "training.coeff_residual_fusion"

# homeo-kick: rate constants found (R² above this) while MLP_node stays flat (|avg_slope_ratio| below).
HOMEO_KICK_MIN_R2 = 0.9
HOMEO_KICK_MAX_SLOPE = 0.1
# embedding-focus: homeostasis moves (avg_slope_ratio in this band) but the types are not all separated
# (cluster accuracy below the space's converged bar).
EMBEDDING_FOCUS_SLOPES = (0.3, 3.0)
# k-protect: this many finished nodes in a row are partial-k.
K_PROTECT_RUN = 4
# degeneracy-break: this many finished nodes in a row have test_pearson − R² above the gap.
DEGENERACY_RUN = 3
DEGENERACY_MIN_GAP = 0.3
# boundary-probe: this many finished nodes in a row converged.
BOUNDARY_RUN = 3
# principle-test: an effect needs this many parent–child pairs before it is re-tested elsewhere.
PRINCIPLE_MIN_COUNT = 2

# Conservative steps (exploit, principle-test).
LOG_FACTORS = (1.5, 2.0)  # log_float: × or ÷ one of these
FLOAT_STEP = (0.1, 0.2)  # float, wide int: ± this fraction of the value ...
NEAR_ZERO_SCALE = 0.01  # ... or of this fraction of the range when the value is smaller (e.g. 0)
HIDDEN_DIM_STEP = 0.25  # int parameters named *hidden_dim*: ± this fraction
SMALL_INT_SPAN = 20  # int parameters with at most this span move by ±1
SIGNIFICANT_DIGITS = 3
EXPLORE_TRIES = 32  # random values tried before explore gives up

UP_DIRECTIONS = ("up", "on")


@dataclass(frozen=True)
class Proposal:
    parent_id: str | None
    config: dict[str, Any]  # the full tunable config of the trial to run
    mutation: str  # "param: old -> new" (pairs joined by "; "), "baseline", "initial: ...", "replicate of <id>"
    strategy: str
    replicate_of: str | None = None  # run that node's config again with a new seed


Rule = Callable[[Tree, "SearchSpace", random.Random], "Proposal | None"]


# ------------------------------------------------------------------------------------------ values


def format_value(value: Any) -> str:
    return f"{value:.{SIGNIFICANT_DIGITS}g}" if isinstance(value, float) else str(value)


def mutation_text(old: dict[str, Any], new: dict[str, Any]) -> str:
    return "; ".join(f"{name}: {format_value(old.get(name))} -> {format_value(new.get(name))}"
                     for name in changed_parameters(old, new))


def _bounds(param: Parameter) -> tuple[float, float]:
    if param.low is None or param.high is None:
        raise ValueError(f"{param.name}: a {param.kind} parameter needs low and high")
    return param.low, param.high


def fit(param: Parameter, value: Any) -> Any:
    """The value as the parameter's kind, clipped into [low, high]; floats to three significant digits."""
    if param.kind == "bool":
        return bool(value)
    if param.kind == "choice":
        return value
    low, high = _bounds(param)
    if param.kind == "int":
        return min(max(round(value), math.ceil(low)), math.floor(high))
    return float(min(max(float(f"{value:.{SIGNIFICANT_DIGITS}g}"), low), high))


def _additive_step(param: Parameter, value: float, rng: random.Random) -> float:
    low, high = _bounds(param)
    span = high - low
    if param.kind == "int" and "hidden_dim" in param.name:
        return max(1, round(HIDDEN_DIM_STEP * value))
    if param.kind == "int" and span <= SMALL_INT_SPAN:
        return 1
    step = rng.uniform(*FLOAT_STEP) * max(abs(value), NEAR_ZERO_SCALE * span)
    return max(1, round(step)) if param.kind == "int" else step


def shift(param: Parameter, value: Any, up: bool, rng: random.Random) -> Any:
    """One conservative step up or down: log_float × or ÷ 1.5 or 2, float ±10–20 % of the value,
    int ±1 (hidden dims ±25 %, wide ranges like a float), bool set on (up) or off, a choice to the next
    (up) or previous value."""
    if param.kind == "bool":
        return up
    if param.kind == "choice":
        index = param.values.index(value) + (1 if up else -1)
        return param.values[min(max(index, 0), len(param.values) - 1)]
    if param.kind == "log_float":
        factor = rng.choice(LOG_FACTORS)
        return fit(param, value * factor if up else value / factor)
    step = _additive_step(param, value, rng)
    return fit(param, value + step if up else value - step)


def neighbours(param: Parameter, value: Any, rng: random.Random) -> list[Any]:
    """The conservative steps from value, in random order (a bool has one: the flip; a choice every
    other value)."""
    if param.kind == "bool":
        return [not value]
    if param.kind == "choice":
        others = [option for option in param.values if option != value]
        rng.shuffle(others)
        return others
    ways = [True, False]
    rng.shuffle(ways)
    return [shift(param, value, up, rng) for up in ways]


def sample(param: Parameter, value: Any, rng: random.Random) -> Any:
    """A value anywhere in range: log-uniform for log_float, uniform otherwise; a bool flips, a choice
    takes another value."""
    if param.kind == "bool":
        return not value
    if param.kind == "choice":
        return rng.choice([option for option in param.values if option != value])
    low, high = _bounds(param)
    if param.kind == "log_float":
        return fit(param, math.exp(rng.uniform(math.log(low), math.log(high))))
    if param.kind == "int":
        return rng.randint(math.ceil(low), math.floor(high))
    return fit(param, rng.uniform(low, high))


def edge(param: Parameter, up: bool) -> Any:
    if param.kind == "choice":
        return param.values[-1 if up else 0]
    return up if param.kind == "bool" else fit(param, _bounds(param)[1 if up else 0])


def _named_value(param: Parameter, way: str) -> Any:
    """The choice value an effect's direction 'to <value>' names, or None for up/down/on/off."""
    if param.kind != "choice" or not way.startswith("to "):
        return None
    return next((option for option in param.values if str(option) == way.removeprefix("to ")), None)


def step_towards(param: Parameter, value: Any, way: str, rng: random.Random) -> Any:
    """One step in an effect's direction: the named value of a choice, else shift up or down."""
    named = _named_value(param, way)
    return named if named is not None else shift(param, value, way in UP_DIRECTIONS, rng)


def edge_towards(param: Parameter, way: str) -> Any:
    """The range edge in an effect's direction (a choice: the value it names)."""
    named = _named_value(param, way)
    return named if named is not None else edge(param, way in UP_DIRECTIONS)


# ------------------------------------------------------------------------------------------ helpers


def _child(tree: Tree, parent: Node, changes: dict[str, Any], strategy: str) -> Proposal | None:
    """The parent with `changes` applied, unless that config is already a node (or the parent)."""
    config = {**parent.config, **changes}
    if tree.has_config(config):
        return None
    return Proposal(parent.node_id, config, mutation_text(parent.config, config), strategy)


def _replicate(node: Node) -> Proposal:
    return Proposal(node.parent_id, dict(node.config), later_trial_mutation(REPLICATE, node.node_id), REPLICATE,
                    replicate_of=node.node_id)


def _active(space: SearchSpace, node: Node, name: str) -> bool:
    """False when the parameter's `requires` is off in the node's config (time_step without
    recurrent_training, say): changing it would train the same model again."""
    return _active_in(space, node.config, name)


def _active_in(space: SearchSpace, config: dict[str, Any], name: str) -> bool:
    requires = space.parameters[name].requires
    if requires is None:
        return True
    return bool(config[requires] if requires in config else get_value(space.base, requires))


def _has_value(param: Parameter, config: dict[str, Any]) -> bool:
    """Whether the config holds a value of the parameter: null counts for a choice with null among its values
    (a switch such as type_grouping_at, off), which must stay movable from off."""
    return config.get(param.name) is not None or (param.kind == "choice" and None in param.values
                                                   and param.name in config)


def _movable(space: SearchSpace, node: Node) -> list[str]:
    """The tunable parameters the node has a value for and that have an effect there."""
    return [name for name, param in space.parameters.items()
            if _has_value(param, node.config) and _active(space, node, name)]


def _tunable(space: SearchSpace, node: Node, *names: str) -> bool:
    return all(name in space.parameters and _has_value(space.parameters[name], node.config) for name in names)


def _metric(node: Node, key: str) -> float:
    try:
        return float(node.metrics.get(key, math.nan))
    except (TypeError, ValueError):
        return math.nan


def _last_finished_all(tree: Tree, n: int, condition: Callable[[Node], bool]) -> bool:
    """Whether the last n nodes (index order) with a finished search-fidelity trial all meet the condition."""
    done = [node for node in tree.nodes.values()
            if any(t.status != "running" for t in node.trials_at(node.fidelity))]
    return len(done) >= n and all(condition(node) for node in done[-n:])


def _scaled(tree: Tree, space: SearchSpace, node: Node, factors: dict[str, float], strategy: str) -> Proposal | None:
    if not _tunable(space, node, *factors):
        return None
    changes = {name: fit(space.parameters[name], node.config[name] * f) for name, f in factors.items()}
    return _child(tree, node, changes, strategy)


def mutation_counts(tree: Tree) -> Counter[str]:
    """How often each parameter was changed from a parent, over the whole tree."""
    counts: Counter[str] = Counter()
    for node in tree.nodes.values():
        if node.parent_id is not None:
            counts.update(changed_parameters(tree.nodes[node.parent_id].config, node.config))
    return counts


def _best_positive_effect(tree: Tree, space: SearchSpace) -> Effect | None:
    # parameter_effects is sorted by |mean Δ|, so the first positive one is the largest.
    return next((e for e in tree.parameter_effects() if e.mean_delta > 0 and e.parameter in space.parameters), None)


def _edge_child(tree: Tree, space: SearchSpace, node: Node, name: str, way: str) -> Proposal | None:
    """The node with parameter `name` at its edge in direction `way` (up, down, on, off, to <value>)."""
    if not _tunable(space, node, name) or not _active(space, node, name):
        return None
    return _child(tree, node, {name: edge_towards(space.parameters[name], way)}, "boundary-probe")


# ------------------------------------------------------------------------------------------ what worked


@dataclass(frozen=True)
class Improvement:
    """A node whose own mutation raised the reward over its origin."""

    node: Node
    origin: Node
    changes: dict[str, Any]  # the mutation: parameter -> the node's value
    delta: float  # node reward − origin reward, > 0


def _baseline(tree: Tree, space: SearchSpace) -> Node | None:
    """The root whose config is the base (the spread's `{}`)."""
    base = space.base_values()
    return next((node for node in tree.nodes.values() if node.parent_id is None and node.config == base), None)


def _origin(node: Node, tree: Tree, baseline: Node | None) -> Node | None:
    """What the node's mutation is measured from: its parent; for another root of the spread, the
    baseline root (its spread entry is then its mutation)."""
    if node.parent_id is not None:
        return tree.nodes[node.parent_id]
    return None if baseline is None or baseline is node else baseline


def improvements(tree: Tree, space: SearchSpace) -> list[Improvement]:
    """Every finished node that beat its finished origin, largest Δreward first (ties: older first)."""
    baseline = _baseline(tree, space)
    found = []
    for node in tree.finished_nodes():
        origin = _origin(node, tree, baseline)
        if origin is None or origin.reward is None or node.reward <= origin.reward:
            continue
        changes = {name: node.config.get(name) for name in changed_parameters(origin.config, node.config)}
        found.append(Improvement(node, origin, changes, node.reward - origin.reward))
    return sorted(found, key=lambda i: (-i.delta, i.node.index))


def _lineage(node: Node, tree: Tree, baseline: Node | None) -> set[str]:
    """The node and everything its config was built from (parents, and the baseline for the spread)."""
    ids: set[str] = set()
    current: Node | None = node
    while current is not None and current.node_id not in ids:
        ids.add(current.node_id)
        current = _origin(current, tree, baseline)
    return ids


def merge_into(tree: Tree, space: SearchSpace, node: Node) -> Proposal | None:
    """When the node's own mutation improved: another branch's improving mutation applied to it as
    well, largest Δreward first. For siblings this is their parent with both mutations. A mutation is
    taken whole, and only where it applies cleanly: the node still has the values it started from
    (so it neither undoes the node's own changes nor overwrites a different one), it is in range and
    every parameter it sets has its `requires` on in the merged config. Neither node may be built on
    the other."""
    found = improvements(tree, space)
    if not any(i.node is node for i in found):
        return None
    baseline = _baseline(tree, space)
    lineage = _lineage(node, tree, baseline)
    for other in found:
        if other.node.node_id in lineage or node.node_id in _lineage(other.node, tree, baseline):
            continue
        if not set(other.changes) <= set(space.parameters):
            continue
        changes = {name: fit(space.parameters[name], value) for name, value in other.changes.items()}
        if _applies_cleanly(space, node, other.origin.config, changes):
            proposal = _child(tree, node, changes, "merge")
            if proposal is not None:
                return proposal
    return None


def _applies_cleanly(space: SearchSpace, node: Node, before: dict[str, Any], changes: dict[str, Any]) -> bool:
    """Whether a mutation made from config `before` can be put on the node whole: the node still holds `before`'s
    value of every parameter it sets (so it neither undoes nor overwrites the node's own changes), and each is in
    effect once it is applied."""
    return (all(node.config.get(name) == before.get(name) for name in changes)
            and all(_active_in(space, {**node.config, **changes}, name) for name in changes))


def further(param: Parameter, old: Any, new: Any) -> Any:
    """One more step of the move old -> new: a log_float by the same factor, a float or int by the same
    difference, a choice to the next value the same way; None for a bool or when the range ends."""
    if param.kind == "bool":
        return None
    if param.kind == "choice":
        step = param.values.index(new) - param.values.index(old)
        index = param.values.index(new) + (1 if step > 0 else -1)
        return param.values[index] if step and 0 <= index < len(param.values) else None
    value = fit(param, new * (new / old) if param.kind == "log_float" else new + (new - old))
    return None if value == new else value


def step_further(tree: Tree, space: SearchSpace, node: Node) -> Proposal | None:
    """When the node's own mutation changed one parameter and improved: one more step the same way."""
    own = next((i for i in improvements(tree, space) if i.node is node), None)
    if own is None or len(own.changes) != 1:
        return None
    (name,) = own.changes
    if name not in space.parameters or not _active(space, node, name):
        return None
    value = further(space.parameters[name], own.origin.config[name], node.config[name])
    return None if value is None else _child(tree, node, {name: value}, "direction")


# ------------------------------------------------------------------------------------------ rules


def initial_spread(tree: Tree, space: SearchSpace, rng: random.Random) -> Proposal | None:
    """Entry k of the spread while the tree has k < len(spread) nodes, finished or not."""
    spread = space.initial_spread or ({},)
    k = len(tree.nodes)
    if k >= len(spread):
        return None
    entry = spread[k]
    settings = "; ".join(f"{name}={format_value(value)}" for name, value in entry.items())
    mutation = f"initial: {settings}" if entry else "baseline"
    return Proposal(None, {**space.base_values(), **entry}, mutation, "initial")


def replicate_best(tree: Tree, space: SearchSpace, rng: random.Random) -> Proposal | None:
    """A new best is re-run with fresh seeds before the other rules build on it. A best whose result
    failed is not: a failure has nothing to confirm, and at full budget each replicate costs a full trial
    (on development network 9202 four of the first six full trials went to two such nodes)."""
    best = tree.best()
    if (best is None or best.result_classification == "failed"
            or len(best.trials_at(best.result_fidelity)) >= space.replicates):
        return None
    return _replicate(best)


def settle(tree: Tree, space: SearchSpace, rng: random.Random) -> Proposal | None:
    """Converged at the screening budget but not at the full one: the reaction part's learning rates
    (k and MLP_sub) ÷ 2 on the best such node (by screen reward). A cosine schedule spread over four times
    the iterations keeps its peak rate four times longer, and a rate that the screen's short schedule
    brings down in time can keep the reaction fit from settling at the full budget (on the mission network
    the power form at 5e-3: loss still in the thousands at 70 % of the run, R² 0.80)."""
    gaps = [node for node in tree.finished_nodes()
            if node.classification == "converged" and node.fidelity != FULL
            and node.full_classification not in (None, "converged")]
    for node in sorted(gaps, key=lambda n: (-n.reward, n.index)):
        proposal = _scaled(tree, space, node, {LR_K: 0.5, LR_SUB: 0.5}, "settle")
        if proposal is not None:
            return proposal
    return None


def homeo_kick(tree: Tree, space: SearchSpace, rng: random.Random) -> Proposal | None:
    """R² high but MLP_node flat: lr_node × 2 and node L1 ÷ 2 on the best node."""
    best = tree.best()
    if best is None:
        return None
    flat = abs(_metric(best, "avg_slope_ratio")) < HOMEO_KICK_MAX_SLOPE
    if not (_metric(best, "rate_constants_R2") > HOMEO_KICK_MIN_R2 and flat):
        return None
    return _scaled(tree, space, best, {LR_NODE: 2.0, NODE_L1: 0.5}, "homeo-kick")


def _switched_on(param: Parameter) -> Any:
    """The value a rule gives a switch it turns on: for a gate, 1 % of its range, small enough not to swamp
    the losses the node was tuned with; for a choice, its first value that is not null."""
    if param.kind == "choice":
        return next(value for value in param.values if value is not None)
    return fit(param, NEAR_ZERO_SCALE * (param.high - param.low))


def gates(space: SearchSpace) -> list[str]:
    """The numeric parameters that other parameters `require` and that can be 0: loss terms with settings
    of their own, off at 0 (coeff_residual_fit, whose start and rate are parameters, say)."""
    required = {param.requires for param in space.parameters.values() if param.requires is not None}
    return [name for name, param in space.parameters.items()
            if name in required and param.kind in ("float", "int") and param.low == 0]


def switches(space: SearchSpace) -> list[str]:
    """What turns a part of the model or the run on: the gates (off at 0) and the choices that list null
    among their values (off at null: type_grouping_at, group_solve_moves), in the space's order."""
    numeric = set(gates(space))
    return [name for name, param in space.parameters.items()
            if name in numeric or (param.kind == "choice" and None in param.values)]


def _is_off(param: Parameter, value: Any) -> bool:
    return value is None if param.kind == "choice" else value == 0


def structure(space: SearchSpace, config: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """What a config is built from rather than how it is tuned: the value of every choice and bool and
    whether every gate is on, for the parameters in effect there."""
    numeric = set(gates(space))
    return tuple((name, bool(config[name]) if name in numeric else config[name])
                 for name, param in space.parameters.items()
                 if (name in numeric or param.kind in ("bool", "choice")) and name in config
                 and _active_in(space, config, name))


def _opened(space: SearchSpace, parent: Node, node: Node) -> list[str]:
    """The switches that are off in the parent and on in the node."""
    return [name for name in switches(space)
            if name in parent.config and _is_off(space.parameters[name], parent.config[name])
            and name in node.config and not _is_off(space.parameters[name], node.config[name])]


def _switch_candidates(tree: Tree, space: SearchSpace, bases: list[Node]) -> list[tuple[Node, str]]:
    """(node, switch) pairs to try, in order: every switch each base node leaves off, base by base; then, on each
    finished node that opened a switch (best reward first), the switches that `require` the one it opened."""
    pairs = [(base, name) for base in bases for name in switches(space)]
    opening = sorted((node for node in tree.finished_nodes() if node.parent_id is not None),
                     key=lambda n: (-n.reward, n.index))
    for node in opening:
        opened = set(_opened(space, tree.nodes[node.parent_id], node))
        pairs += [(node, name) for name in switches(space) if space.parameters[name].requires in opened]
    return pairs


def _switch_bases(tree: Tree, best: Node) -> list[Node]:
    """In a screened search, the full-budget nodes in the best node's class whose screen ended in that class too,
    best first; else, or where there is none, the best node alone.

    Development network 9202 (docs/results.md, "Where the switch-tests went"): eight full trials were partial-k
    at 0.61–0.64, so which was the best was seed noise. The best had screened partial (k still unlearnt at a
    quarter budget), and the type grouping and the group solve turned on under it screened partial too and were
    never promoted, while on a node 0.012 below it whose screen was partial-k already they converged at screen."""
    if not tree.screened():
        return [best]
    faithful = [node for node in tree.nodes.values()
                if node.full_reward is not None and node.full_classification == best.result_classification
                and node.classification == node.full_classification]
    return tree.best_first(faithful) or [best]


def switch_test(tree: Tree, space: SearchSpace, rng: random.Random) -> Proposal | None:
    """A best node short of converged that leaves a switch off: the switch turned on (a gate at 1 % of its
    range, a choice at its first non-null value), once per structure. A loss term that the search has never
    switched on in a config of this structure gets one trial there, however the conservative steps would rank
    it: whether a term helps depends on what the model is built from (on the mission network the residual
    fit converges at the screening budget with the power-form MLP_sub and not without it), and one
    parameter in thirty-odd is rarely drawn.

    A switch that opens others (their `requires`) is followed through: on the node that turned it on, each of
    those is turned on in turn, once per structure, whatever that node scored. A switch whose own settings
    include further switches may be worth nothing until they are on too, and then the reward does not rise
    along the way for the best node to lead there (docs/results.md, "Where the tree breaks on this space").

    In a screened search the switches go on the nodes of the best node's class whose screen ended in that class
    (`_switch_bases`), one after the other: a switch-test child is judged by its screen, so under a parent whose
    screen is a class below its full run the child's screen cannot show what the switch does at full budget, and
    within a class the order of the rewards is mostly seed noise."""
    best = tree.best()
    if best is None or best.result_classification == "converged":
        return None
    tested: dict[tuple[tuple[str, Any], ...], set[str]] = {}
    for node in tree.nodes.values():
        if node.parent_id is not None:
            parent = tree.nodes[node.parent_id]
            tested.setdefault(structure(space, parent.config), set()).update(_opened(space, parent, node))
    for node, name in _switch_candidates(tree, space, _switch_bases(tree, best)):
        param = space.parameters[name]
        if (name in tested.get(structure(space, node.config), set()) or name not in node.config
                or not _is_off(param, node.config[name]) or not _active(space, node, name)):
            continue
        proposal = _child(tree, node, {name: _switched_on(param)}, "switch-test")
        if proposal is not None:
            return proposal
    return None


def _applied_off_the_floor(tree: Tree, changes: dict[str, Any]) -> bool:
    """Whether some node made exactly these changes to a parent that did not fail."""
    for node in tree.nodes.values():
        if node.parent_id is None:
            continue
        parent = tree.nodes[node.parent_id]
        made = {name: node.config.get(name) for name in changed_parameters(parent.config, node.config)}
        if made == changes and parent.reward is not None and parent.result_classification != "failed":
            return True
    return False


def floor_retest(tree: Tree, space: SearchSpace, rng: random.Random) -> Proposal | None:
    """A spread entry judged only where everything failed, applied to the best node once it no longer fails.

    A spread root is measured against the baseline root, both built the base's way. Where both failed, their
    rewards differ by seed noise at the reward's floor and say nothing of the entry, yet the rules read them as a
    verdict: the entry's mutation is no improvement to merge, and the line the tree builds from the best root
    never has it. So once the best node (short of converged) has left the floor, each such entry, in spread
    order, is applied to it, whole and once: where it applies cleanly (the best node still has the baseline's
    values of the entry's parameters, every one in effect there) and no node has made that change to a parent
    that did not fail. On 9202's first tree repetition (docs/results.md) the priors entry failed beside the
    baseline and the tree's line never switched the restoring prior on, which every converged free-form trial had.
    """
    best = tree.best()
    baseline = _baseline(tree, space)
    if (best is None or baseline is None or baseline.reward is None or baseline.result_classification != "failed"
            or best.result_classification in ("failed", "converged")):
        return None
    roots = [node for node in tree.nodes.values() if node.parent_id is None and node is not baseline]
    for root in sorted(roots, key=lambda n: n.index):
        if root.reward is None or root.result_classification != "failed":
            continue
        changes = {name: root.config[name] for name in changed_parameters(baseline.config, root.config)}
        if not changes or _applied_off_the_floor(tree, changes):
            continue
        if set(changes) <= set(space.parameters) and _applies_cleanly(space, best, baseline.config, changes):
            proposal = _child(tree, best, changes, "floor-retest")
            if proposal is not None:
                return proposal
    return None


def embedding_focus(tree: Tree, space: SearchSpace, rng: random.Random) -> Proposal | None:
    """Slopes move but the types are not all separated: lr_embedding × 2 on the best node, at most
    lr_node; when it is there already, embedding fusion × 2 (from 0: 1 % of its range): the residual
    phase's kNN fusion where the best node fits the residual, else the all-pairs fusion."""
    best = tree.best()
    if best is None or not _tunable(space, best, LR_EMBEDDING, LR_NODE):
        return None
    low, high = EMBEDDING_FOCUS_SLOPES
    if not (low <= _metric(best, "avg_slope_ratio") <= high and _metric(best, "embedding_cluster_acc")
            < space.thresholds.converged_cluster_acc):
        return None
    current = best.config[LR_EMBEDDING]
    raised = fit(space.parameters[LR_EMBEDDING], min(2 * current, best.config[LR_NODE]))
    if raised > current:
        return _child(tree, best, {LR_EMBEDDING: raised}, "embedding-focus")
    name = RESIDUAL_FUSION if (best.config.get(RESIDUAL_FIT) or 0) > 0 else FUSION
    if not _tunable(space, best, name):
        return None
    fusion = space.parameters[name]
    value = best.config[name]
    stronger = fit(fusion, 2 * value) if value > 0 else _switched_on(fusion)
    return _child(tree, best, {name: stronger}, "embedding-focus") if stronger > value else None


def k_protect(tree: Tree, space: SearchSpace, rng: random.Random) -> Proposal | None:
    """Rate constants keep being found while the rest fails: lr_node and lr_embedding ÷ 2 on the best."""
    best = tree.best()
    if best is None or not _last_finished_all(tree, K_PROTECT_RUN, lambda n: n.classification == "partial-k"):
        return None
    return _scaled(tree, space, best, {LR_NODE: 0.5, LR_EMBEDDING: 0.5}, "k-protect")


def degeneracy_break(tree: Tree, space: SearchSpace, rng: random.Random) -> Proposal | None:
    """Dynamics fit but parameters wrong: recurrent training on and time_step × 2 (at least 2) on the best."""
    best = tree.best()
    degenerate = _last_finished_all(tree, DEGENERACY_RUN, lambda n: _metric(n, "degeneracy_gap") > DEGENERACY_MIN_GAP)
    if best is None or not degenerate or not _tunable(space, best, RECURRENT, TIME_STEP):
        return None
    longer = fit(space.parameters[TIME_STEP], max(2, 2 * best.config[TIME_STEP]))
    return _child(tree, best, {RECURRENT: True, TIME_STEP: longer}, "degeneracy-break")


def boundary_probe(tree: Tree, space: SearchSpace, rng: random.Random) -> Proposal | None:
    """Converging steadily: push the parameter with the best positive effect to its range edge on the best."""
    best = tree.best()
    if best is None or not _last_finished_all(tree, BOUNDARY_RUN, lambda n: n.classification == "converged"):
        return None
    effect = _best_positive_effect(tree, space)
    return None if effect is None else _edge_child(tree, space, best, effect.parameter, effect.direction)


def _perturb(tree: Tree, space: SearchSpace, rng: random.Random, node: Node, strategy: str) -> Proposal | None:
    """One conservative step of one parameter, parameters not yet changed from this node first."""
    tried = {name for child in tree.children(node.node_id) for name in changed_parameters(node.config, child.config)}
    fresh = [name for name in _movable(space, node) if name not in tried]
    again = [name for name in _movable(space, node) if name in tried]
    rng.shuffle(fresh)
    rng.shuffle(again)
    for name in fresh + again:
        for value in neighbours(space.parameters[name], node.config[name], rng):
            proposal = _child(tree, node, {name: value}, strategy)
            if proposal is not None:
                return proposal
    return None


def _exploit(tree: Tree, space: SearchSpace, rng: random.Random, node: Node, strategy: str) -> Proposal | None:
    """Build on what worked first: a merge into the node, else a step further along its own mutation,
    else a conservative change."""
    return (merge_into(tree, space, node) or step_further(tree, space, node)
            or _perturb(tree, space, rng, node, strategy))


def exploit(tree: Tree, space: SearchSpace, rng: random.Random) -> Proposal | None:
    """Slot 0: the top-UCB node (merge, direction or a conservative change)."""
    ranked = tree.ranked(space.ucb_c)
    return _exploit(tree, space, rng, ranked[0][0], "exploit") if ranked else None


def exploit_second(tree: Tree, space: SearchSpace, rng: random.Random) -> Proposal | None:
    """Slot 1: the same on the second-ranked node, or on the top one while only one has finished."""
    ranked = tree.ranked(space.ucb_c)
    return _exploit(tree, space, rng, ranked[min(1, len(ranked) - 1)][0], "exploit-2") if ranked else None


def explore(tree: Tree, space: SearchSpace, rng: random.Random) -> Proposal | None:
    """Slot 2: the least-visited finished node (any node while none has finished), the least-mutated
    parameter, a value sampled anywhere in range; further parameters after a collision."""
    candidates = tree.finished_nodes() or list(tree.nodes.values())
    if not candidates:
        return None
    visits = tree.visit_counts()
    fewest = min(visits[node.node_id] for node in candidates)
    parent = rng.choice([node for node in candidates if visits[node.node_id] == fewest])
    names = _movable(space, parent)
    if not names:
        return None
    rng.shuffle(names)
    counts = mutation_counts(tree)
    names.sort(key=lambda name: counts[name])  # stable: ties stay in random order
    for attempt in range(EXPLORE_TRIES):
        name = names[attempt % len(names)]
        proposal = _child(tree, parent, {name: sample(space.parameters[name], parent.config[name], rng)}, "explore")
        if proposal is not None:
            return proposal
    return None


def principle_test(tree: Tree, space: SearchSpace, rng: random.Random) -> Proposal | None:
    """Slot 3: the strongest effect seen at least twice, applied in the same direction to the best-ranked
    node it was not learned on (neither a parent nor a child of its evidence)."""
    ranked = [node for node, _ in tree.ranked(space.ucb_c)]
    for effect in tree.parameter_effects():
        if effect.count < PRINCIPLE_MIN_COUNT or effect.parameter not in space.parameters:
            continue
        learned = set(effect.evidence) | {tree.nodes[child].parent_id for child in effect.evidence}
        param = space.parameters[effect.parameter]
        for node in ranked:
            if (node.node_id in learned or not _tunable(space, node, effect.parameter)
                    or not _active(space, node, effect.parameter)):
                continue
            value = step_towards(param, node.config[param.name], effect.direction, rng)
            proposal = _child(tree, node, {param.name: value}, "principle-test")
            if proposal is not None:
                return proposal
    return None


def probe_extreme(tree: Tree, space: SearchSpace, rng: random.Random) -> Proposal | None:
    """Slot 3 without a principle (boundary-probe): on the top-UCB node, the parameter with the best
    positive effect to its edge in that direction, else a random parameter to a random edge."""
    ranked = tree.ranked(space.ucb_c)
    if not ranked:
        return None
    node = ranked[0][0]
    effect = _best_positive_effect(tree, space)
    if effect is not None:
        proposal = _edge_child(tree, space, node, effect.parameter, effect.direction)
        if proposal is not None:
            return proposal
    names = _movable(space, node)
    rng.shuffle(names)
    for name in names:
        ways = ["up", "down"]
        rng.shuffle(ways)
        for way in ways:
            proposal = _edge_child(tree, space, node, name, way)
            if proposal is not None:
                return proposal
    return None


OVERRIDES: tuple[Rule, ...] = (settle, homeo_kick, floor_retest, switch_test, embedding_focus, k_protect,
                               degeneracy_break, boundary_probe)
SLOT_ROLES: tuple[tuple[Rule, ...], ...] = ((exploit,), (exploit_second,), (explore,), (principle_test, probe_extreme))


def propose(tree: Tree, space: SearchSpace, rng: random.Random, slot: int) -> Proposal:
    """The next trial to run; `slot` is this suggestion's number among the strategies' suggestions, whose role is
    slot mod 4."""
    for rule in (initial_spread, replicate_best, *OVERRIDES, *SLOT_ROLES[slot % len(SLOT_ROLES)], explore):
        proposal = rule(tree, space, rng)
        if proposal is not None:
            return proposal
    # Every move collides: more seeds of the best node are never wasted.
    return _replicate(tree.best() or list(tree.nodes.values())[-1])
