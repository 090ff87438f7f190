"""The exploration tree: one node per tried config, one trial per training run (seed) of that config.

The searcher adds a node (and its first trial) when it suggests a config, so the tree also holds the
trials still running; a replicate adds a further trial to an existing node. Ids are the caller's.
Mutate the tree only through its methods.

UCB
---
    UCB(n) = R(n) + c · sqrt(ln N / V(n))

* R(n): the mean reward over the finished nodes of n's subtree (n and all its descendants), where a
  node's reward is the mean over its replicate trials;
* V(n): the trials in n's subtree, finished or running;
* N: the trials in the whole tree.

Why this form:

* It is UCB1 with a subtree as the arm: a node is worth expanding again when what grew from it is
  good on average, not because one child got lucky once.
* Running trials count in V and N as virtual visits: the suggestions of a wave are made before
  any of them reports, and each one lowers its parent's score for the next, so they spread out
  instead of all expanding the same node.
* There is no block filter: a node keeps its parent for good (the predecessor silently turned parents
  from earlier blocks into roots). Blocks only group finished trials for the summaries in
  `render_memory`.
* Replicates are averaged into one node reward, so a lucky seed is not rewarded as a discovery and a
  re-run does not count as a new node.
* c is in reward units. The bonus of a fresh leaf is c·sqrt(ln N), about 2c at N = 50; choose c on the
  scale of the reward differences that matter (the seed-to-seed noise), or the bonus swamps the reward
  as the predecessor's c·sqrt(N)/(1 + V) with c = 1.414 did.

A finished trial without a reward (None or nan) counts as a visit but not in any mean; the searcher gives an
errored trial the reward 0.

Fidelity
--------
A trial runs at one of two budgets: "full" (the space's budget) or "screen" (its cheaper screening budget,
when the space has a fidelity section). A node's search fidelity is that of its first trial: the searcher
starts every node at screen when the space screens, else at full, and may later promote it with one
full-budget trial. Everything the search compares, R, V and N above, the node reward, the strategies and
the parameter effects, counts only the trials at the node's search fidelity, so rewards are compared within
one fidelity. The full-budget result (`full_reward`, `full_metrics`, `full_classification`) is kept apart:
`best` ranks nodes by it first, and "converged" counts only there. `promotions_due` is the promotion rule
itself, shared by the searcher and benchmarks/bench_search.py's screening of random search and TPE.
"""

from __future__ import annotations

import json
import math
import numbers
import statistics
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

FINISHED_STATUSES = ("completed", "diverged", "error")
SCREEN, FULL = "screen", "full"
FIDELITIES = (SCREEN, FULL)
PROMOTION, REPLICATE = "promotion", "replicate"  # the strategies of a node's later trials

# Metrics shown in the UCB table and the block summaries: (label, metrics key).
_UCB_METRICS = (("R2", "rate_constants_R2"), ("Pearson", "test_pearson"), ("Cluster", "embedding_cluster_acc"))
_BLOCK_METRICS = (("R2", "rate_constants_R2"), ("avg_slope_ratio", "avg_slope_ratio"),
                  ("cluster_acc", "embedding_cluster_acc"))


def promotions_due(screened: Mapping[str, float], candidates: Mapping[str, bool], eta: int) -> list[str]:
    """The promotions of asynchronous successive halving, on screen rewards. `screened`: node id → screen reward
    of each of the n configs screened so far (an errored screen at 0); `candidates`: node id → classified
    converged at screen, for the screened configs that completed and were never promoted. Due are the
    candidates classified converged at screen and those whose reward ranks in the top floor(n / eta) (ties in
    their favour), best first. So nothing is promoted on rank before eta configs are screened, and a config
    left out may be promoted later, as n grows. The top ceil(n / eta), checked once at each screen's own
    completion, promoted every early leader whatever its reward: on development network 9202 4 of the tree's
    16 full-budget trials went to configs this rule leaves out, each at the reward's floor."""
    slots = len(screened) // eta
    due = [node_id for node_id, converged in candidates.items()
           if converged or sum(other > screened[node_id] for other in screened.values()) < slots]
    return sorted(due, key=lambda node_id: (-screened[node_id], node_id))


def later_trial_mutation(strategy: str, node_id: str) -> str:
    """The mutation text of a node's later trial: "promotion of <id>" or "replicate of <id>"."""
    return f"{strategy} of {node_id}"


def trial_origin(node: dict[str, Any], position: int) -> tuple[str, str]:
    """(strategy, mutation) the searcher gave the node's trial at `position`, read from the node's tree.jsonl
    record: the first trial is the node's own; a full-budget trial on the seed of a screened first trial is its
    promotion; any other is a replicate, with a seed of its own."""
    if position == 0:
        return node["strategy"], node["mutation"]
    first, trial = node["trials"][0], node["trials"][position]
    fidelities = (trial.get("fidelity", FULL), first.get("fidelity", FULL))
    strategy = PROMOTION if fidelities == (FULL, SCREEN) and trial["seed"] == first["seed"] else REPLICATE
    return strategy, later_trial_mutation(strategy, node["node_id"])


def _has_reward(reward: float | None) -> bool:
    return reward is not None and not math.isnan(reward)


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None below two values)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


@dataclass
class Trial:
    """One training run (one seed) of a node."""

    trial_id: str
    seed: int
    status: str = "running"  # running | completed | diverged | error
    reward: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    fidelity: str = FULL  # screen | full


@dataclass
class Node:
    """One config tried, with all its trials (replicates share the node)."""

    node_id: str
    parent_id: str | None  # None: a root (the initial spread)
    config: dict[str, Any]  # every tunable value, 'section.key' -> value
    mutation: str
    strategy: str
    index: int  # creation order, 0-based
    trials: list[Trial] = field(default_factory=list)

    @property
    def fidelity(self) -> str:
        """The search fidelity: that of the node's first trial (full while it has none)."""
        return self.trials[0].fidelity if self.trials else FULL

    @property
    def finished_trials(self) -> list[Trial]:
        """Finished trials at every fidelity."""
        return [t for t in self.trials if t.status != "running"]

    def trials_at(self, fidelity: str) -> list[Trial]:
        return [t for t in self.trials if t.fidelity == fidelity]

    def rewards_at(self, fidelity: str) -> list[float]:
        """The rewards of the finished trials at `fidelity` that have one."""
        return [t.reward for t in self.trials_at(fidelity) if t.status != "running" and _has_reward(t.reward)]

    def reward_at(self, fidelity: str) -> float | None:
        """Replicate mean at `fidelity`; None until a trial there finished with a reward."""
        rewards = self.rewards_at(fidelity)
        return statistics.fmean(rewards) if rewards else None

    def metrics_at(self, fidelity: str) -> dict[str, Any]:
        """The last finished trial's metrics at `fidelity`."""
        finished = [t for t in self.trials_at(fidelity) if t.status != "running"]
        return finished[-1].metrics if finished else {}

    @property
    def rewards(self) -> list[float]:
        """The search-fidelity rewards of the finished trials that have one."""
        return self.rewards_at(self.fidelity)

    @property
    def reward(self) -> float | None:
        """Replicate mean at the search fidelity; None until a trial there finished with a reward."""
        return self.reward_at(self.fidelity)

    @property
    def reward_sd(self) -> float | None:
        """Sample standard deviation of the replicate rewards; None below two."""
        rewards = self.rewards
        return statistics.stdev(rewards) if len(rewards) > 1 else None

    @property
    def status(self) -> str:
        """'running' while any trial runs, else the last trial's status ('pending' with no trial)."""
        if any(t.status == "running" for t in self.trials):
            return "running"
        return self.trials[-1].status if self.trials else "pending"

    @property
    def metrics(self) -> dict[str, Any]:
        """The last finished search-fidelity trial's metrics."""
        return self.metrics_at(self.fidelity)

    @property
    def classification(self) -> str | None:
        return self.metrics.get("classification")

    @property
    def full_reward(self) -> float | None:
        return self.reward_at(FULL)

    @property
    def full_metrics(self) -> dict[str, Any]:
        return self.metrics_at(FULL)

    @property
    def full_classification(self) -> str | None:
        """The classification at full budget, the only one that can call a node converged."""
        return self.full_metrics.get("classification")

    @property
    def result_fidelity(self) -> str:
        """Where the node's headline result comes from: full once a full-budget trial has a reward, else
        the search fidelity."""
        return FULL if self.full_reward is not None else self.fidelity

    @property
    def result_classification(self) -> str | None:
        """The classification where the node's headline result comes from (`result_fidelity`)."""
        return self.metrics_at(self.result_fidelity).get("classification")


@dataclass(frozen=True)
class Effect:
    """What changing one parameter in one direction did to the reward, child minus parent."""

    parameter: str
    direction: str  # up | down | on | off | "to <value>" (a choice's words)
    mean_delta: float
    stderr: float | None  # None with a single observation
    count: int
    evidence: tuple[str, ...]  # the children's node ids


def changed_parameters(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The names whose value differs between two configs, sorted."""
    return sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))


def direction(old: Any, new: Any) -> str:
    if isinstance(new, bool):
        return "on" if new else "off"
    if isinstance(old, numbers.Real) and isinstance(new, numbers.Real):
        return "up" if new > old else "down"
    return f"to {new}"


@dataclass
class _Stats:
    reward_sum: float = 0.0
    rewarded: int = 0  # finished nodes with a reward
    visits: int = 0

    @property
    def mean(self) -> float | None:
        return self.reward_sum / self.rewarded if self.rewarded else None


@dataclass
class Tree:
    nodes: dict[str, Node] = field(default_factory=dict, init=False)  # in index order
    _children: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _trial_nodes: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    # ---------------------------------------------------------------------------------- building

    def add_node(self, node_id: str, parent_id: str | None, config: dict[str, Any], mutation: str,
                 strategy: str) -> Node:
        """A new node without trials; its parent must already be in the tree."""
        node = Node(node_id, parent_id, dict(config), mutation, strategy, index=len(self.nodes))
        self._insert(node)
        return node

    def _insert(self, node: Node) -> None:
        if node.node_id in self.nodes:
            raise ValueError(f"node {node.node_id!r} already exists")
        if node.parent_id is not None and node.parent_id not in self.nodes:
            raise ValueError(f"parent {node.parent_id!r} of node {node.node_id!r} is not in the tree")
        for trial in node.trials:
            self._register_trial(trial.trial_id, node.node_id)
        self.nodes[node.node_id] = node
        self._children[node.node_id] = []
        if node.parent_id is not None:
            self._children[node.parent_id].append(node.node_id)

    def _register_trial(self, trial_id: str, node_id: str) -> None:
        if trial_id in self._trial_nodes:
            raise ValueError(f"trial {trial_id!r} already exists")
        self._trial_nodes[trial_id] = node_id

    def add_trial(self, node_id: str, trial_id: str, seed: int, fidelity: str = FULL) -> Trial:
        """A running trial of the node; a replicate or a promotion is a further trial of the same node."""
        if fidelity not in FIDELITIES:
            raise ValueError(f"fidelity must be one of {', '.join(FIDELITIES)}, got {fidelity!r}")
        node = self._node(node_id)
        self._register_trial(trial_id, node_id)
        trial = Trial(trial_id, seed, fidelity=fidelity)
        node.trials.append(trial)
        return trial

    def complete_trial(self, trial_id: str, status: str, reward: float | None,
                       metrics: dict[str, Any] | None = None) -> Node:
        """Record a trial's outcome (completing it again overwrites it); returns its node."""
        if status not in FINISHED_STATUSES:
            raise ValueError(f"status must be one of {', '.join(FINISHED_STATUSES)}, got {status!r}")
        node = self.node_of_trial(trial_id)
        if node is None:
            raise KeyError(f"unknown trial {trial_id!r}")
        trial = next(t for t in node.trials if t.trial_id == trial_id)
        trial.status, trial.metrics = status, dict(metrics or {})
        trial.reward = None if reward is None else float(reward)
        return node

    # ---------------------------------------------------------------------------------- structure

    def _node(self, node_id: str) -> Node:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise KeyError(f"unknown node {node_id!r}") from None

    def node_of_trial(self, trial_id: str) -> Node | None:
        node_id = self._trial_nodes.get(trial_id)
        return None if node_id is None else self.nodes[node_id]

    def children(self, node_id: str) -> list[Node]:
        self._node(node_id)
        return [self.nodes[child] for child in self._children[node_id]]

    def subtree(self, node_id: str) -> list[Node]:
        """The node and all its descendants, in index order."""
        found, stack = [], [self._node(node_id)]
        while stack:
            node = stack.pop()
            found.append(node)
            stack.extend(self.children(node.node_id))
        return sorted(found, key=lambda n: n.index)

    def finished_nodes(self) -> list[Node]:
        """Nodes with a reward, in index order."""
        return [n for n in self.nodes.values() if n.reward is not None]

    def has_config(self, config: dict[str, Any]) -> bool:
        return any(node.config == config for node in self.nodes.values())

    # ---------------------------------------------------------------------------------- scores

    def _subtree_stats(self) -> dict[str, _Stats]:
        """Reward sum, rewarded-node count and visits of every subtree, in one pass: a child always
        comes after its parent in index order, so walking backwards finishes a subtree before its root."""
        stats = {node_id: _Stats() for node_id in self.nodes}
        for node in reversed(self.nodes.values()):
            own = stats[node.node_id]
            own.visits += len(node.trials_at(node.fidelity))
            if node.reward is not None:
                own.reward_sum += node.reward
                own.rewarded += 1
            if node.parent_id is not None:
                parent = stats[node.parent_id]
                parent.reward_sum += own.reward_sum
                parent.rewarded += own.rewarded
                parent.visits += own.visits
        return stats

    def _stats(self, node_id: str) -> _Stats:
        self._node(node_id)
        return self._subtree_stats()[node_id]

    def visits(self, node_id: str) -> int:
        """V(n): search-fidelity trials, finished or running, in n's subtree."""
        return self._stats(node_id).visits

    def visit_counts(self) -> dict[str, int]:
        """V(n) of every node at once."""
        return {node_id: s.visits for node_id, s in self._subtree_stats().items()}

    def total_visits(self) -> int:
        """N: all search-fidelity trials in the tree."""
        return sum(len(node.trials_at(node.fidelity)) for node in self.nodes.values())

    def subtree_reward(self, node_id: str) -> float | None:
        """Mean of the node rewards over the finished nodes of n's subtree."""
        return self._stats(node_id).mean

    def _ucb(self, stats: _Stats, c: float, total: int) -> float | None:
        mean = stats.mean
        return None if mean is None else mean + c * math.sqrt(math.log(total) / stats.visits)

    def ucb(self, node_id: str, c: float) -> float | None:
        """R(n) + c·sqrt(ln N / V(n)) (module docstring); None when no node of the subtree finished."""
        return self._ucb(self._stats(node_id), c, self.total_visits())

    def ranked(self, c: float) -> list[tuple[Node, float]]:
        """Finished nodes with their UCB, best first; ties go to the older node."""
        stats, total = self._subtree_stats(), self.total_visits()
        scored = [(node, self._ucb(stats[node.node_id], c, total)) for node in self.finished_nodes()]
        return sorted(scored, key=lambda pair: (-pair[1], pair[0].index))

    def best(self) -> Node | None:
        """Highest replicate-mean reward at full budget; a node that has only been screened is the best
        only while no node has a full-budget reward. Ties go to more replicates, then to the older node."""
        return _best_of(list(self.nodes.values()))

    @staticmethod
    def best_first(nodes: list[Node]) -> list[Node]:
        """These nodes in the order `best` picks from: by full-budget reward while any has one (then only those),
        else by search-fidelity reward; ties to more replicates, then to the older node."""
        return _best_first(nodes)

    def screened(self) -> bool:
        """Whether the search fidelity is screen (the space has a fidelity section)."""
        return any(node.fidelity == SCREEN for node in self.nodes.values())

    def parameter_effects(self) -> list[Effect]:
        """Child reward − parent reward per (parameter, direction) over every finished child of a
        finished parent; a child that changed a pair counts for each parameter. Strongest first."""
        deltas: dict[tuple[str, str], list[tuple[float, str]]] = {}
        for child in self.finished_nodes():
            parent = None if child.parent_id is None else self.nodes[child.parent_id]
            if parent is None or parent.reward is None:
                continue
            for name in changed_parameters(parent.config, child.config):
                key = (name, direction(parent.config.get(name), child.config.get(name)))
                deltas.setdefault(key, []).append((child.reward - parent.reward, child.node_id))
        effects = []
        for (name, way), items in deltas.items():
            mean, sd = _mean_sd([delta for delta, _ in items])
            stderr = None if sd is None else sd / math.sqrt(len(items))
            effects.append(Effect(name, way, mean, stderr, len(items), tuple(node_id for _, node_id in items)))
        return sorted(effects, key=lambda e: (-abs(e.mean_delta), e.parameter, e.direction))

    # ---------------------------------------------------------------------------------- persistence

    def to_json(self) -> str:
        """Every node with its trials; metrics must be JSON values (tuples come back as lists)."""
        return json.dumps({"format": 1, "nodes": [asdict(node) for node in self.nodes.values()]})

    @classmethod
    def from_json(cls, text: str) -> Tree:
        tree = cls()
        for raw in json.loads(text)["nodes"]:
            trials = [Trial(**t) for t in raw["trials"]]
            tree._insert(Node(**{**raw, "trials": trials}))
        return tree

    # ---------------------------------------------------------------------------------- views

    def _finished_trials(self) -> list[tuple[Node, Trial]]:
        """Finished trials in node index order (replicates sit with their node)."""
        return [(node, trial) for node in self.nodes.values() for trial in node.finished_trials]

    def render_ucb_scores(self, c: float, block_size: int) -> str:
        """The predecessor's `ucb_scores.txt` line shape, one line per finished node, best first."""
        finished = len(self._finished_trials())
        block = max(1, math.ceil(finished / block_size))
        lines = [f"=== UCB Scores (N_total={self.total_visits()}, c={c}, block {block} of {block_size} trials) ===",
                 ""]
        screened = self.screened()
        if screened:
            lines[1:1] = [_SCREEN_NOTE + " Full= is a promoted node's full-budget reward, kept out of UCB."]
        visits = self.visit_counts()
        for node, score in self.ranked(c):
            shown = ", ".join(f"{label}={_metric(node.metrics, key):.3f}" for label, key in _UCB_METRICS)
            parent = "root" if node.parent_id is None else node.parent_id
            full = f", Full={node.full_reward:.3f}" if screened and node.full_reward is not None else ""
            lines.append(f"Node {node.node_id}: UCB={score:.3f}, parent={parent}, visits={visits[node.node_id]}, "
                         f"{shown}, Reward={node.reward:.3f}{full}, Mutation={node.mutation}")
        return "\n".join(lines) + "\n"

    def render_memory(self, block_size: int) -> str:
        """Markdown: learned parameter effects with evidence counts, then one summary line per
        completed block of `block_size` finished trials."""
        lines = ["# Exploration memory", "", "## Learned parameter effects", "",
                 "Δreward = child reward − parent reward (replicate means), per changed parameter and direction.", ""]
        if self.screened():
            lines[-1:-1] = [_SCREEN_NOTE]
        effects = self.parameter_effects()
        if effects:
            lines += ["| parameter | direction | mean Δreward ± stderr | n | evidence (nodes) |",
                      "|---|---|---|---|---|"]
            lines += [_effect_row(e) for e in effects]
        else:
            lines.append("No parent–child pair has finished yet.")
        lines += ["", f"## Blocks of {block_size} finished trials", ""]
        trials = self._finished_trials()
        n_blocks = len(trials) // block_size
        lines += [self._block_line(b + 1, trials[b * block_size:(b + 1) * block_size]) for b in range(n_blocks)]
        if not n_blocks:
            lines.append("No block completed yet.")
        return "\n".join(lines) + "\n"

    def _block_line(self, number: int, trials: list[tuple[Node, Trial]]) -> str:
        labels = Counter(_label(trial) for _, trial in trials)
        counts = ", ".join(f"{label} {n}" for label, n in sorted(labels.items(), key=lambda item: (-item[1], item[0])))
        nodes = list({node.node_id: node for node, _ in trials}.values())
        scored = [n for n in nodes if n.reward is not None]
        text = f"- Block {number}: {len(trials)} trials; {counts}"
        top = _best_of(nodes)
        if top is not None:
            fidelity = top.result_fidelity
            shown = ", ".join(f"{label} {_metric(top.metrics_at(fidelity), key):.3f}" for label, key in _BLOCK_METRICS)
            which = f"{fidelity} reward" if self.screened() else "reward"
            text += f"; best node {top.node_id} {which} {top.reward_at(fidelity):.3f} ({shown})"
        improved = [f"{n.node_id} `{n.mutation}` ({n.reward - parent:+.3f})" for n in scored
                    if (parent := self._parent_reward(n)) is not None and n.reward > parent]
        return text + "; improved on parent: " + (", ".join(improved) if improved else "none")

    def _parent_reward(self, node: Node) -> float | None:
        return None if node.parent_id is None else self.nodes[node.parent_id].reward


_SCREEN_NOTE = ("Rewards are screen-fidelity rewards (every node's first trial runs at the screening budget), "
                "so nodes are compared within one fidelity.")


def _best_first(nodes: list[Node]) -> list[Node]:
    """By full-budget reward, or by search-fidelity reward while none has a full one; best first."""
    full = [node for node in nodes if node.full_reward is not None]
    fidelity = FULL if full else None
    candidates = full or [node for node in nodes if node.reward is not None]

    def key(node: Node) -> tuple[float, int, int]:
        at = fidelity or node.fidelity
        return -node.reward_at(at), -len(node.rewards_at(at)), node.index

    return sorted(candidates, key=key)


def _best_of(nodes: list[Node]) -> Node | None:
    """The first of `_best_first`."""
    ranked = _best_first(nodes)
    return ranked[0] if ranked else None


def _metric(metrics: dict[str, Any], key: str) -> float:
    """A metric as a float; nan when missing or not a number."""
    try:
        return float(metrics.get(key, math.nan))
    except (TypeError, ValueError):
        return math.nan


def _label(trial: Trial) -> str:
    """The trial's classification; a screening trial's says so ('converged at screen' is not converged)."""
    default = "unknown" if trial.status == "completed" else "failed"
    label = trial.metrics.get("classification") or default
    return f"{label} at screen" if trial.fidelity == SCREEN else label


def _effect_row(effect: Effect) -> str:
    spread = "" if effect.stderr is None else f" ± {effect.stderr:.3f}"
    cells = (effect.parameter, effect.direction, f"{effect.mean_delta:+.3f}{spread}", str(effect.count),
             ", ".join(effect.evidence))
    return "| " + " | ".join(cells) + " |"
