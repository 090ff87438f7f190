"""Ray Tune `Searcher` adapter around the exploration tree and the strategy table.

Thin on purpose: `suggest` asks `strategies.propose` for one mutation and records it in the tree,
`on_trial_complete` records the reward, `save`/`restore` persist everything (the promotion queue
included).

With a fidelity section in the space (space.py) every new node is suggested at screen, and a node is
promoted (asynchronous successive halving, `tree.promotions_due`) once its screen reward ranks in the top
floor(n / eta) of the n nodes screened so far, checked at every screen's completion, or when it is classified
converged at screen: it joins a queue that `suggest` serves before any new mutation, as one trial of the
same config and seed at full budget. A node is promoted at most once (it is queued once, and never again once
it has a full trial).

Measured pitfalls of Ray 2.58–2.60 that shape it (reference/ray_tune_notes.md): the searcher owns concurrency
(`set_max_concurrency` returns True, `suggest` returns None when full) because Ray's limiter forgets
errored trials that a resume revives; errors arrive with `result=None`, so the last interim result is
kept; on restore `set_search_properties` is not called again, so `restore` brings back every field.

Tune snapshots the searcher together with its trial list, every 10 s or at a trial's final checkpoint, so
a driver killed between a `suggest` and the next snapshot leaves a trial Tune forgets: its directory, and
the resume checkpoint its trainable may have written there, would be orphaned, and the searcher would
propose afresh. So every suggestion is also appended to suggestions.jsonl at once; `restore` re-issues,
first and in order, each one its snapshot does not hold, under the new trial id Tune asks with. The node,
seed and fidelity, hence the trial directory, are the same, so the trial resumes where it stopped.

Where Tune's snapshot itself is gone (a new machine, where only committed logs were put back), `replay` takes
the search up from tree_state.jsonl, which each completion rewrites: the searcher's own state (its random
generator, suggestion count and promotion queue) on the first line, then the tree's nodes as in tree.jsonl.
The random generator only moves at a suggestion, so that state is the one the next suggestion would have seen.
"""

from __future__ import annotations

import json
import pickle
import random
from collections.abc import Collection
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from metabo_tune.atomic_file import write_atomically
from metabo_tune.space import SearchSpace
from metabo_tune.strategies import propose
from metabo_tune.tree import FULL, PROMOTION, SCREEN, Node, Tree, later_trial_mutation, promotions_due, trial_origin

METRIC = "reward"
SUGGESTIONS_FILE = "suggestions.jsonl"
STATE_FILE = "tree_state.jsonl"


class ConcurrencyLimitedSearcher(Searcher):
    """A searcher that owns its concurrency: Tune tells it the limit, and `full()` says when the trials
    in `live` (added by the subclass's suggest, removed on completion) reach it."""

    def __init__(self, max_concurrent: int) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.max_concurrent = max_concurrent
        self.live: set[str] = set()

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self.max_concurrent = max_concurrent
        return True

    def full(self) -> bool:
        return len(self.live) >= self.max_concurrent


class TreeSearcher(ConcurrencyLimitedSearcher):
    def __init__(self, space: SearchSpace, experiment_dir: str | Path, seed: int = 0) -> None:
        super().__init__(max_concurrent=4)
        self.space = space
        self.experiment_dir = str(experiment_dir)
        self.seed = seed
        self.tree = Tree()
        self.rng = random.Random(seed)
        self.last_results: dict[str, dict[str, Any]] = {}
        self.n_suggested = 0  # suggestions made by the strategies (promotions do not take a role's turn)
        self.promotions: list[str] = []  # node ids waiting for their full-budget trial, oldest first
        self.reissues: list[dict[str, Any]] = []  # journal entries Tune lost in a kill, oldest first

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.full():
            return None
        if self.reissues:
            return self._reissue(trial_id, self.reissues.pop(0))
        if self.promotions:
            node = self.tree.nodes[self.promotions.pop(0)]
            seed, fidelity = node.trials[0].seed, FULL
            strategy, mutation = PROMOTION, later_trial_mutation(PROMOTION, node.node_id)
        else:
            # the roles take turns whatever the concurrency: below four trials at once, a wave's position alone
            # would never reach explore or principle-test
            proposal = propose(self.tree, self.space, self.rng, slot=self.n_suggested)
            strategy, mutation = proposal.strategy, proposal.mutation
            if proposal.replicate_of is not None:
                node = self.tree.nodes[proposal.replicate_of]
                seed = self.space.base.training.seed + len(node.trials)  # a fresh seed per replicate
                fidelity = node.result_fidelity  # where the result it re-tests came from
            else:
                node = self.tree.add_node(trial_id, proposal.parent_id, proposal.config, proposal.mutation,
                                          proposal.strategy)
                seed = self.space.base.training.seed  # common seed: nodes differ by their config, not by noise
                fidelity = self.space.search_fidelity
            self.n_suggested += 1
        return self._start(trial_id, node, strategy, mutation, seed, fidelity)

    def _start(self, trial_id: str, node: Node, strategy: str, mutation: str, seed: int,
               fidelity: str) -> dict[str, Any]:
        self.tree.add_trial(node.node_id, trial_id, seed, fidelity)
        self.live.add(trial_id)
        suggestion = {"node_id": node.node_id, "parent_id": node.parent_id, "strategy": strategy,
                      "mutation": mutation, "seed": seed, "values": dict(node.config)}
        entry = {"trial_id": trial_id, "trial_fidelity": fidelity} | suggestion
        directory = Path(self.experiment_dir)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / SUGGESTIONS_FILE, "a") as journal:
            journal.write(json.dumps(entry) + "\n")
        if self.space.fidelity is not None:
            suggestion["fidelity"] = fidelity
        return suggestion

    def _reissue(self, trial_id: str, entry: dict[str, Any]) -> dict[str, Any]:
        """The lost suggestion `entry` again, as trial `trial_id`: its node is added back if the snapshot
        predates it (a lost parent comes earlier in the journal), and a lost promotion leaves the queue."""
        node = self.tree.nodes.get(entry["node_id"])
        if node is None:
            node = self.tree.add_node(entry["node_id"], entry["parent_id"], entry["values"], entry["mutation"],
                                      entry["strategy"])
        if entry["strategy"] == PROMOTION:
            self.promotions = [node_id for node_id in self.promotions if node_id != node.node_id]
        else:
            self.n_suggested += 1
        return self._start(trial_id, node, entry["strategy"], entry["mutation"], entry["seed"],
                           entry["trial_fidelity"])

    def lost_suggestions(self) -> list[dict[str, Any]]:
        """The journal's suggestions whose trial (node, seed, fidelity) the tree does not hold, once each,
        oldest first. A line cut short by a kill mid-write is skipped (its suggestion never reached Tune),
        and ended, so the next suggestion starts a line of its own."""
        path = Path(self.experiment_dir) / SUGGESTIONS_FILE
        if not path.is_file():
            return []
        text = path.read_text()
        if text and not text.endswith("\n"):
            with open(path, "a") as journal:
                journal.write("\n")
        held = {(node.node_id, trial.seed, trial.fidelity) for node in self.tree.nodes.values()
                for trial in node.trials}
        lost = []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            key = (entry["node_id"], entry["seed"], entry["trial_fidelity"])
            if key not in held:
                held.add(key)
                lost.append(entry)
        return lost

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self.last_results[trial_id] = result

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self.live.discard(trial_id)
        if self.tree.node_of_trial(trial_id) is None:
            return  # a trial this searcher never suggested (e.g. restarted under a new id by Ray)
        last = result if result is not None else self.last_results.get(trial_id, {})
        status = "error" if error else last.get("status", "error")
        value = 0.0 if status == "error" else float(last.get(METRIC, 0.0))
        kept = {key: value for key, value in last.items() if not key.startswith("config/")}
        node = self.tree.complete_trial(trial_id, status, value, kept)
        self.last_results.pop(trial_id, None)
        trial = next(t for t in node.trials if t.trial_id == trial_id)
        if trial.fidelity == SCREEN:
            self.promotions += self.promotions_due()
        self.write_tree_files()

    def replay(self, finished: Collection[str]) -> set[str]:
        """Take the search up from the experiment directory's STATE_FILE, keeping the trials that finished
        there and are in `finished` (those of the completion log); returns their ids. Every other trial it
        holds (running at the cut, or finished after the log was last written) is suggested again first, as a
        kill's lost suggestions are, and trains from the start: its node, seed and fidelity are kept, its
        trial id is the new one Tune asks with."""
        head, *nodes = (json.loads(line) for line in (Path(self.experiment_dir) / STATE_FILE).read_text().splitlines())
        if head["seed"] != self.seed:
            raise ValueError(f"{STATE_FILE} holds the search of seed {head['seed']}, not {self.seed}")
        kept: set[str] = set()
        unscreened: set[str] = set()  # nodes whose search-fidelity result is trained again: not promotable yet
        for node in nodes:
            for number, trial in enumerate(node["trials"]):
                if trial["status"] != "running" and trial["trial_id"] in finished:
                    kept.add(trial["trial_id"])
                    continue
                if number == 0:
                    unscreened.add(node["node_id"])
                strategy, mutation = trial_origin(node, number)
                self.reissues.append({
                    "trial_id": trial["trial_id"], "trial_fidelity": trial["fidelity"], "node_id": node["node_id"],
                    "parent_id": node["parent_id"], "strategy": strategy, "mutation": mutation, "seed": trial["seed"],
                    "values": node["config"]})
            node["trials"] = [trial for trial in node["trials"] if trial["trial_id"] in kept]
        self.tree = Tree.from_json(json.dumps({"format": 1, "nodes": nodes}))
        self.n_suggested = head["n_suggested"] - sum(entry["strategy"] != PROMOTION for entry in self.reissues)
        self.promotions = [node_id for node_id in head["promotions"] if node_id not in unscreened]
        version, internal, gauss = head["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        return kept

    def promotions_due(self) -> list[str]:
        """The screened nodes `tree.promotions_due` promotes now: among those whose screen completed, never
        promoted, queued or trained at full."""
        if self.space.fidelity is None:
            return []
        nodes = [node for node in self.tree.nodes.values() if node.fidelity == SCREEN and node.reward is not None]
        screened = {node.node_id: node.reward for node in nodes}
        candidates = {node.node_id: node.classification == "converged" for node in nodes
                      if node.node_id not in self.promotions and not node.trials_at(FULL)
                      and node.trials[0].status == "completed"}
        return promotions_due(screened, candidates, self.space.fidelity.promote_eta)

    def write_tree_files(self) -> None:
        directory = Path(self.experiment_dir)
        directory.mkdir(parents=True, exist_ok=True)
        # JSON Lines, one node per line: Ray copies the experiment dir's *.json/*.pkl files to its staging
        # dir on resume and back on every sync, which would overwrite a fresh tree.json with a stale one.
        nodes = "".join(json.dumps(node) + "\n" for node in json.loads(self.tree.to_json())["nodes"])
        write_atomically(directory / "tree.jsonl", nodes)
        head = {"seed": self.seed, "n_suggested": self.n_suggested, "promotions": self.promotions,
                "rng": self.rng.getstate()}
        write_atomically(directory / STATE_FILE, json.dumps(head) + "\n" + nodes)
        write_atomically(directory / "ucb_scores.txt",
                         self.tree.render_ucb_scores(self.space.ucb_c, self.space.block_size))
        write_atomically(directory / "memory.md", self.tree.render_memory(self.space.block_size))

    _STATE = ("space", "experiment_dir", "seed", "live", "last_results", "max_concurrent", "n_suggested",
              "promotions")

    def save(self, checkpoint_path: str) -> None:
        state = {key: getattr(self, key) for key in self._STATE}
        state |= {"tree": self.tree.to_json(), "rng": self.rng.getstate(), "metric": self.metric, "mode": self.mode}
        write_atomically(Path(checkpoint_path), pickle.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        state = pickle.loads(Path(checkpoint_path).read_bytes())
        state.setdefault("promotions", [])  # a searcher saved before fidelities existed
        for key in self._STATE:
            setattr(self, key, state[key])
        self.tree = Tree.from_json(state["tree"])
        self.rng = random.Random()
        self.rng.setstate(state["rng"])
        self._metric, self._mode = state["metric"], state["mode"]
        self.reissues = self.lost_suggestions()  # the snapshot's own queue included: it is journalled too
