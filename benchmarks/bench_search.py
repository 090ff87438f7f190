"""Search efficiency: how good a config each searcher finds at the same training budget, start points,
concurrency and fidelity rule.

    python benchmarks/bench_search.py [--space search_spaces/smoke.yaml] [--num-trials 8] [--budget B]
                                      [--concurrency 4] [--reps 5 | --reps tree=3,random=2,tpe=2]
                                      [--methods tree,random,tpe] [--out results/bench_search] [--cpus N]
                                      [--confirm-seeds 2] [--confirm-networks 9101,9102]
                                      [--confirm-candidates 3] [--network SEED] [--resume]

--network runs every method on another network of the space's kind (the base's simulation seed; runs.csv records
it, and a resume on another network is refused): the space's own network is development once settings or rules
were chosen on it.

Compared, each with real training through the project's trainable (`trainable.run_search_trial`) and
scored by the project's reward (searcher.METRIC, in [0, 1]):

* tree: `metabo_tune.searcher.TreeSearcher`, the UCB tree over one-parameter mutations, which starts
  from the space's base config and its initial spread;
* random: Ray Tune's `OptunaSearch` with Optuna's `RandomSampler` over the space's parameter ranges
  (a `Searcher`, so it can be screened like TPE; Ray's `BasicVariantGenerator` cannot be wrapped),
  whose first proposals are the tree's starting points (`start_points`: the base, then each slot of the
  initial spread, as `points_to_evaluate`);
* tpe: Optuna's TPE (`ray.tune.search.optuna.OptunaSearch`) over the same ranges, from the same starting
  points. Its first --concurrency sampled trials after them are random (`n_startup_trials`), not Optuna's
  default 10, which at budgets of 10 trials or fewer would make it random search again.

Why: the tree's rules encode what is known about this problem (an initial spread around a good base,
replicate-before-trust, condition overrides); the two generic searchers show what that knowledge buys
over knowing only the ranges. Random and TPE train each config with the run's base seed, as the tree does
for its new nodes, so configs differ by their values, not by noise. A parameter with `requires` is sampled
always; while its requirement is off the trial keeps the base's value (`SearchSpace.in_effect`, the
`config_for` path the tree's configs take too).

Budget. --num-trials caps the trials of a run; --budget B also caps its training: B full-budget trials of
the base config's iterations (`Config.total_iterations`, batch size and screening counted), every trial
the searcher proposes counted, screens, promotions and the tree's replicates alike (`BudgetedSearcher`).
A run proposes nothing once its budget is spent; the trial that crossed it still trains, so every method
spends the budget to within one trial. A run is finished at whichever cap it reaches first.

Fidelity. When the space has a `fidelity` section, random and TPE follow the tree's rule
(`ScreeningSearcher`): every config the sampler proposes is trained at screen, and when that trial
completes, the screens due are promoted by `metabo_tune.tree.promotions_due`, the function
`TreeSearcher.promotions_due` applies (classified converged at screen, or a screen reward in the top
floor(n / promote_eta) of the n screen rewards so far, an errored screen counting as 0, ties in its favour;
a diverged or errored trial is never promoted). A promotion is served before any new config, once, as a
trial of the same values and seed at full budget whose node id is the screened trial's id, so the two trial
dirs pair up (node_<id>_seed_<s>_screen / _full). The sampler learns from the screen results only, so TPE compares
rewards within one fidelity. --num-trials counts screens and promotions alike, as for the tree. Without a
fidelity section every trial is at full budget. Rewards are compared within one fidelity, so the figures
below use full-budget trials only: a screen trial is never "converged" and never a best.

Repetition r seeds every searcher with r and trains its new configs at the space's base seed +
SEED_STRIDE · r (`repetition_space`; 77, 177, 277, ...), so repetitions are independent draws, not one
path run again; the summary says how many trials two repetitions share (--reps N: repetitions 0..N-1 of
every method; --reps tree=3,random=2,tpe=2: so many of each method named, which are then the methods
unless --methods says otherwise); the methods alternate within a repetition, so a machine that gets
slower or busier affects them alike. Each run is its own Tune experiment in `<out>/<method>_rep<r>/`,
whose `completions.csv` lists the finished trials in completion order: trial_id, node_id, seed, fidelity,
reward (0 for an errored trial), classification ("error" for one), status (completed, diverged or error)
and time_s since the run started, and the values (JSON). It is rewritten as each trial finishes, when a
line on stderr says which and how the run stands, so what a killed run finished is on disk. From it, the
run's row in `<out>/runs.csv`:
train_seed, trials_done, errors, screen_trials, full_trials, first_converged (the number of finished trials
when the first full-budget trial classified converged finished; empty if none), wall_s_first_converged,
budget_used and budget_first_converged (training spent, in full-budget trials), wall_s, the
best full-budget trial (best_reward, best_node, best_seed, best_values), best_after_k for k = 1..N (the
best full-budget reward among the first k finished trials; empty while there is none) and base_ms_per_it,
the speed of the machine: ms per iteration of the space's base config on one torch thread (median of 3
windows of 300 iterations after 100 to warm up), measured once per invocation before its first run, with
nothing else running (a run resumed in a later invocation gets that one's; empty for a row rebuilt from a
finished completions.csv); wall times on machines of different speeds compare only through it. With --resume, the
runs already in `<out>/runs.csv` are kept and skipped, and a run directory without a row (a run cut off by
Ctrl-C, a kill or the end of a session) is continued where Tune's last experiment snapshot left it
(`Tuner.restore`): its finished trials are kept, its interrupted ones go on from their last checkpoint,
and its searcher, completion log and clock are restored with it. Its times (time_s, wall_s) count the time
it ran, before and after the interruption, up to its last snapshot before it; the gap between is not
counted. A random or TPE run whose Tune snapshot is gone but whose completions.csv is there (a new
machine, where only the committed logs were put back) is replayed from the log
(`ScreeningSearcher.replay`): its recorded trials are kept, the promotion rule is applied to them again,
and the sampler is brought to where it was (random exactly, TPE from the recorded screens as evaluated
points); the trials in flight at the cut are trained again from the start, and its clock goes on from its
last recorded completion. A tree run is taken up alike from its completions.csv and its tree_state.jsonl
(`TreeSearcher.replay`: the tree, the random generator, the suggestion count and the promotion queue at its last
completion); a trial the state holds but the log lacks trains again. Any other run directory Tune cannot restore is
started again.

Confirmation (--confirm-seeds N, default 2, 0 skips it): a converged full-budget trial counts only once it
converges again at full budget on N training seeds that no trial of any run used (the first N non-negative
integers, `metabo_tune.confirm.fresh_seeds`), the i-th on the i-th network of --confirm-networks (simulation
seeds, cycled; default the space's own network, which the search has seen). After all runs, each run's
converged full-budget trials are tried in completion order, in rounds (`confirm_first_converged`): round 1
trains every run's first, round 2 the second of the runs not yet confirmed, up to --confirm-candidates. A
run's first confirmed trial is its first_confirmed (the trial number; none if no candidate converged on
every seed) and budget_first_confirmed the training its run had spent then. Each training goes to
`<out>/confirm/<method>_rep<r>/node_<id>_seed_<s>_net_<n>/` (`metabo_tune.sweep.train_runs`,
concurrency-many at once but no more than the CPUs), where a rerun reuses a finished or interrupted one; a
config, seed and network two runs share (the base is every method's first trial) is trained once. With
--resume, a (method, run, node, seed, network) already in `<out>/confirmations.csv` keeps its row (a new
machine gets it back from the committed file). Classification and reward use the space's thresholds and
weights. `<out>/confirmations.csv`: method, rep, trial, node, seed, network, status, classification, reward
and the headline metrics.

Summary (`<out>/summary.md`, printed, and `<out>/summary.csv` with the same figures per method), over
every run in runs.csv of the chosen methods, also those of an earlier invocation with more --reps (so
`--reps 2 --resume` after `--reps tree=3,random=2,tpe=2` summarises 3 tree runs and 2 of each baseline):
runs; the trial of the first converged full-budget trial and of the first confirmed one (median over all
runs, a run without one counting as beyond every run with one: "none" when half the runs or more had none;
then each run's, in repetition order, "–" for none); the training spent at the first confirmed and the wall
time to the first converged (medians, alike); the best full-budget reward after N/2 and N trials, the
training spent (median [min–max]); the wall time (median); the most trials two repetitions of the method
share (`shared_trials`: same values, seed and fidelity); base_ms_per_it (median [min–max]).
`<out>/progress.png` draws each run's best full-budget reward so far against finished trials and against
wall time, a star at each converged full-budget trial.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from ray import tune
from ray.tune.search import Searcher

from metabo_tune.atomic_file import write_atomically
from metabo_tune.cli import ArgumentParser, output_folder
from metabo_tune.config import Config
from metabo_tune.confirm import fresh_seeds
from metabo_tune.labels import classify
from metabo_tune.search import trial_name, trial_resources
from metabo_tune.searcher import METRIC, STATE_FILE, ConcurrencyLimitedSearcher, TreeSearcher
from metabo_tune.simulate import load_or_simulate
from metabo_tune.space import SearchSpace, SpaceError, load_space, reward
from metabo_tune.sweep import HEADLINE, reported_columns, train_runs
from metabo_tune.train import Trainer
from metabo_tune.tree import FULL, SCREEN, promotions_due

REPO = Path(__file__).resolve().parents[1]
METHODS = ("tree", "random", "tpe")
COMPLETION_COLUMNS = ("trial_id", "node_id", "seed", "fidelity", "reward", "classification", "status", "time_s",
                      "values")
RUN_COLUMNS = ("trials_done", "errors", "screen_trials", "full_trials", "first_converged",
               "wall_s_first_converged", "best_reward", "best_node", "best_seed", "best_values")
ID_COLUMNS = {"trial_id": str, "node_id": str, "best_node": str}
SEED_STRIDE = 100  # repetition r trains at the base seed + SEED_STRIDE · r; a tree's replicates stay below it
REPLAY_SLACK = 64  # proposals beyond the recorded screens a replay may find in flight before it gives up


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(REPO / "search_spaces" / "smoke.yaml"))
    parser.add_argument("--num-trials", type=int, default=8, help="trials per run (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="trials at once (default: %(default)s)")
    parser.add_argument("--reps", default="5", help="repetitions per method, seeds 0..: N for every method, or "
                        "METHOD=N,... for each method named (default: %(default)s)")
    parser.add_argument("--methods", help=f"comma-separated (default: {','.join(METHODS)}, or those --reps names)")
    parser.add_argument("--out", default="results/bench_search", help="output directory (default: %(default)s)")
    parser.add_argument("--network", type=int,
                        help="the network every run searches: the simulation seed of the space's base (default: the "
                             "space's own). A network settings or rules were chosen on is development: measure "
                             "discovery on a fresh one")
    parser.add_argument("--cpus", type=float, help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--budget", type=float,
                        help="training budget of each run in full-budget trials' iterations (a screen counts its "
                             "share); a run proposes no trial once it is spent (default: --num-trials alone)")
    parser.add_argument("--confirm-seeds", type=int, default=2,
                        help="fresh training seeds a converged full-budget trial must converge on again to count "
                             "as confirmed; 0 skips confirmation (default: %(default)s)")
    parser.add_argument("--confirm-networks", type=_seeds,
                        help="simulation seeds of the networks the confirmations train on, one per confirmation "
                             "seed in turn, e.g. 9101,9102 (default: the space's own network)")
    parser.add_argument("--confirm-candidates", type=int, default=3,
                        help="converged full-budget trials per run tried in completion order until one is "
                             "confirmed (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs recorded in <out>/runs.csv, continue a run that was cut off, "
                             "and do the missing ones")
    args = parser.parse_args(argv)
    if min(args.num_trials, args.concurrency) < 1:
        parser.error("--num-trials and --concurrency must be >= 1")
    if args.confirm_seeds < 0 or args.confirm_candidates < 1:
        parser.error("--confirm-seeds must be >= 0 and --confirm-candidates >= 1")
    if args.budget is not None and not args.budget > 0:
        parser.error(f"--budget must be > 0 full-budget trials, got {args.budget:g}")
    methods = [method.strip() for method in (args.methods or ",".join(METHODS)).split(",") if method.strip()]
    try:
        counts = repetition_counts(args.reps, methods)
    except ValueError as exc:
        parser.error(f"--reps {args.reps}: {exc}")
    named, option = (methods, "--methods") if args.methods is not None else (list(counts), "--reps")
    unknown = sorted(set(named) - set(METHODS))
    if unknown or not named:
        parser.error(f"{option}: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    if args.methods is not None and set(counts) != set(methods):
        parser.error(f"--reps {args.reps} and --methods {args.methods} name different methods; give one of them")
    args.methods, args.reps = named, counts
    return args


def repetition_counts(reps: str, methods: list[str]) -> dict[str, int]:
    """--reps as {method: repetitions}: "2" gives every method of --methods 2; "tree=3,tpe=2" the methods
    named, which then are the methods run."""
    if "=" not in reps:
        counts = dict.fromkeys(methods, _count(reps))
    else:
        counts = {}
        for item in filter(None, (part.strip() for part in reps.split(","))):
            method, _, count = item.partition("=")
            if method.strip() in counts:
                raise ValueError(f"{method.strip()} is named twice")
            counts[method.strip()] = _count(count)
    return counts


def pending_runs(reps: dict[str, int], done: set[tuple[str, int]]) -> list[tuple[int, str]]:
    """(rep, method) of the runs still to do, repetition by repetition, the methods alternating within one."""
    return [(rep, method) for rep in range(max(reps.values())) for method, count in reps.items()
            if rep < count and (method, rep) not in done]


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated whole numbers, e.g. 9101,9102") from None
    if not seeds:
        raise argparse.ArgumentTypeError("expected at least one simulation seed")
    return seeds


def _count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a whole number; give N or METHOD=N,...") from None
    if count < 1:
        raise ValueError("repetitions must be >= 1")
    return count


# ------------------------------------------------------------------------------------- searchers

def optuna_space(space: SearchSpace) -> dict[str, Any]:
    """The space's parameters as Optuna distributions, 'section.key' → distribution (ranges inclusive)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    distributions: dict[str, Any] = {}
    for name, parameter in space.parameters.items():
        if parameter.kind in ("log_float", "float"):
            distributions[name] = FloatDistribution(parameter.low, parameter.high, log=parameter.kind == "log_float")
        elif parameter.kind == "int":
            distributions[name] = IntDistribution(int(parameter.low), int(parameter.high))
        elif parameter.kind == "choice":
            distributions[name] = CategoricalDistribution(list(parameter.values))
        else:
            distributions[name] = CategoricalDistribution([False, True])
    return distributions


def start_points(space: SearchSpace) -> list[dict[str, Any]]:
    """The tree's starting points as full parameter dicts: the base, then each slot of the initial spread."""
    return [space.base_values() | dict(slot) for slot in space.initial_spread]


def sampler_searcher(method: str, space: SearchSpace, seed: int, concurrency: int,
                     evaluated: set[str] = frozenset()) -> Searcher:
    """Random search or TPE as a Ray `Searcher` that proposes 'section.key' → value dicts, the tree's starting
    points first (`start_points`, less those in `evaluated`: JSON as logged), so every method starts where the
    tree starts."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if method == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=concurrency)
    points = [point for point in start_points(space) if json.dumps(point, sort_keys=True) not in evaluated]
    return OptunaSearch(space=optuna_space(space), metric=METRIC, mode="max", sampler=sampler,
                        points_to_evaluate=points or None)


def on_network(space: SearchSpace, network: int) -> SearchSpace:
    """The space searching another network of its kind: its base's simulation seed replaced, the rest as it is."""
    raw = space.base.to_dict()
    raw["simulation"]["seed"] = network
    return dataclasses.replace(space, base=Config.model_validate(raw))


def repetition_space(space: SearchSpace, rep: int) -> SearchSpace:
    """The space as repetition `rep` trains it: its own base seed, the space's plus SEED_STRIDE · rep, so
    repetitions are independent draws rather than one path run again."""
    seed = space.base.training.seed + SEED_STRIDE * rep
    return dataclasses.replace(space, base=space.config_for({}, seed=seed))


def trial_iterations(space: SearchSpace, values: dict[str, Any], fidelity: str = FULL) -> int:
    """Iterations a trial of `values` trains at `fidelity` (batch size and screening included)."""
    return space.config_for(values, fidelity=fidelity).total_iterations()


def iterations_spent(space: SearchSpace, log: pd.DataFrame) -> int:
    """The iterations the trials of a completion log trained."""
    return sum(trial_iterations(space, json.loads(row["values"]), row["fidelity"]) for row in log.to_dict("records"))


class BudgetedSearcher(Searcher):
    """An inner searcher (the tree, or a ScreeningSearcher) that stops proposing once the iterations of the
    trials it proposed reach `budget_iterations`: every method spends the same training, replicates,
    screens and promotions all counted. The trial that crosses the budget still trains, so a run ends within
    one trial of it."""

    def __init__(self, inner: Searcher, space: SearchSpace, budget_iterations: int, spent: int = 0) -> None:
        """`spent`: the iterations of the trials a replayed run had finished; those in flight at its cut are
        counted when they are served again."""
        super().__init__(metric=METRIC, mode="max")
        self.inner, self.space, self.budget_iterations = inner, space, budget_iterations
        self.spent = spent

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.inner.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.spent >= self.budget_iterations:
            return Searcher.FINISHED
        suggestion = self.inner.suggest(trial_id)
        if isinstance(suggestion, dict):
            self.spent += trial_iterations(self.space, suggestion["values"], suggestion.get("fidelity", FULL))
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self.inner.on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)
        inner = Path(checkpoint_path).read_bytes()
        write_atomically(Path(checkpoint_path), pickle.dumps({"inner": inner, "spent": self.spent,
                                                              "budget_iterations": self.budget_iterations}))

    def restore(self, checkpoint_path: str) -> None:
        state = pickle.loads(Path(checkpoint_path).read_bytes())
        with tempfile.TemporaryDirectory() as scratch:
            inner = Path(scratch) / "inner.pkl"
            inner.write_bytes(state["inner"])
            self.inner.restore(str(inner))
        self.spent, self.budget_iterations = state["spent"], state["budget_iterations"]


class ScreeningSearcher(ConcurrencyLimitedSearcher):
    """An inner searcher's configs under the space's fidelity rule (module docstring, Fidelity): new
    configs at screen, promotions by `tree.promotions_due` at full, served first. It owns the concurrency, as
    TreeSearcher does, and tells the inner searcher only about the trials it proposed."""

    def __init__(self, inner: Searcher, space: SearchSpace) -> None:
        super().__init__(max_concurrent=1)
        self.inner = inner
        self.space = space
        self.seed = space.base.training.seed
        self.proposed: dict[str, dict[str, Any]] = {}  # trial id (= node id) → values, the inner's trials
        self.screen_rewards: dict[str, float] = {}  # trial id → reward of every finished screen, for the rank
        self.candidates: dict[str, bool] = {}  # completed screens never promoted → classified converged there
        self.promotions: list[str] = []  # node ids waiting for their full-budget trial, oldest first
        self.promoted: set[str] = set()
        self.last_results: dict[str, dict[str, Any]] = {}
        self.reproposals: list[tuple[str, dict[str, Any]]] = []  # (inner id, values) to serve again (replay)
        self.inner_ids: dict[str, str] = {}  # trial id → the inner's id for it, where they differ (replay)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.full():
            return None
        if self.promotions:
            node_id = self.promotions.pop(0)
            self.promoted.add(node_id)
            values, fidelity = self.proposed[node_id], FULL
        elif self.reproposals:
            self.inner_ids[trial_id], values = self.reproposals.pop(0)
            node_id, fidelity = trial_id, self.space.search_fidelity
            self.proposed[trial_id] = dict(values)
        else:
            values = self.inner.suggest(trial_id)
            if values is None or values == Searcher.FINISHED:
                return values
            node_id, fidelity = trial_id, self.space.search_fidelity
            self.proposed[trial_id] = dict(values)
        self.live.add(trial_id)
        suggestion = {"node_id": node_id, "seed": self.seed, "values": dict(values)}
        if self.space.fidelity is not None:
            suggestion["fidelity"] = fidelity
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self.last_results[trial_id] = result
        if trial_id in self.proposed:
            self.inner.on_trial_result(self.inner_ids.get(trial_id, trial_id), result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self.live.discard(trial_id)
        last = result if result is not None else self.last_results.get(trial_id, {})
        self.last_results.pop(trial_id, None)
        if trial_id not in self.proposed:
            return  # a promotion: the inner searcher learns within the screen fidelity only
        self.inner.on_trial_complete(self.inner_ids.pop(trial_id, trial_id), result=result, error=error)
        status = "error" if error else last.get("status", "error")
        value = 0.0 if status == "error" else float(last.get(METRIC, 0.0))
        self._rank(trial_id, status, value, converged=last.get("classification") == "converged")

    def _rank(self, trial_id: str, status: str, value: float, *, converged: bool) -> None:
        """A finished screen joins the rank, and the screens due join the promotions."""
        if self.space.fidelity is None or math.isnan(value):
            return  # no fidelity rule, or no reward: out of the rank, as in the tree
        self.screen_rewards[trial_id] = value
        if status == "completed" and trial_id not in self.promoted and trial_id not in self.promotions:
            self.candidates[trial_id] = converged
        due = promotions_due(self.screen_rewards, self.candidates, self.space.fidelity.promote_eta)
        for node_id in due:
            del self.candidates[node_id]
        self.promotions += due

    def replay(self, log: pd.DataFrame, *, results_steer_proposals: bool) -> None:
        """Take up a run from its completion log (COMPLETION_COLUMNS) when Tune's snapshot of it is gone, as
        on a new machine. The rank and the promotions are derived again from the recorded trials in
        completion order, and a promotion recorded at full budget counts as served; one promoted but not
        recorded (in flight at the cut, or waiting) is served first. The inner searcher is brought to where
        it was: with `results_steer_proposals` False (random search), its seeded sampler is asked again
        until it has proposed every recorded screen, so that it goes on with the proposals the uninterrupted
        run would have made, and those it proposed besides (in flight at the cut) are served again before
        anything new; with it True (TPE), the recorded screens are told to it as evaluated points, and its
        next proposals follow from them but not bit for bit as the uninterrupted run's would have (its
        sampler's state at the cut is lost)."""
        screened = [row for row in log.to_dict("records")
                    if self.space.fidelity is None or row["fidelity"] == SCREEN]
        for row in log.to_dict("records"):
            if self.space.fidelity is not None and row["fidelity"] != SCREEN:
                if row["node_id"] not in self.promotions:
                    raise ReplayError(f"trial {row['trial_id']} at full budget promotes node {row['node_id']}, "
                                      "which this space's promotion rule had not promoted: the log comes from "
                                      "another space")
                self.promotions.remove(row["node_id"])
                self.promoted.add(row["node_id"])
                continue
            self.proposed[row["trial_id"]] = json.loads(row["values"])
            self._rank(row["trial_id"], recorded_status(row), float(row["reward"]),
                       converged=row["classification"] == "converged")
        if results_steer_proposals:
            for row in screened:
                status, value = recorded_status(row), float(row["reward"])
                self.inner.add_evaluated_point(json.loads(row["values"]), value,
                                               error=status == "error" or math.isnan(value))
        else:
            self._propose_again(screened)

    def _propose_again(self, screened: list[dict[str, Any]]) -> None:
        """Ask the inner searcher until it has proposed every screened row's values, then tell it their
        results in completion order."""
        inner_ids: dict[str, str] = {}  # values (JSON, as logged) → the inner's id for them
        waiting = {row["values"] for row in screened}
        for number in range(len(screened) + REPLAY_SLACK):
            if not waiting:
                break
            inner_id = f"replay_{number}"
            values = self.inner.suggest(inner_id)
            logged = json.dumps(values, sort_keys=True)
            if logged in waiting:
                waiting.remove(logged)
                inner_ids[logged] = inner_id
            else:
                self.reproposals.append((inner_id, values))
        if waiting:
            raise ReplayError(f"{len(waiting)} recorded screens are not among the sampler's first "
                              f"{len(screened) + REPLAY_SLACK} proposals: the log comes from another space, "
                              "method or seed")
        for row in screened:
            status = recorded_status(row)
            self.inner.on_trial_complete(inner_ids[row["values"]], error=status == "error",
                                         result={METRIC: float(row["reward"]), "status": status})

    def save(self, checkpoint_path: str) -> None:
        """Everything, the inner searcher (Optuna's study and sampler) included, so that a restored run
        proposes what the uninterrupted one would have."""
        Path(checkpoint_path).write_bytes(pickle.dumps(self.__dict__))

    def restore(self, checkpoint_path: str) -> None:
        self.__dict__.update(pickle.loads(Path(checkpoint_path).read_bytes()))


# ------------------------------------------------------------------------------------- one run

class CompletionLog(tune.Callback):
    """Each finished trial in completion order (COMPLETION_COLUMNS); an errored or unfinished trial
    counts as reward 0, classification 'error', as in the search's own tables. Its clock runs while Tune
    runs the experiment: Tune snapshots the log with the experiment (`get_state`), so a restored run goes
    on with the rows and the time it had at that snapshot. It writes the rows to `path` as each trial
    finishes and when Tune's loop ends (finished or stopped), and prints a progress line per trial."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = time.perf_counter()
        self.offset_s = 0.0  # time run before the last restore
        self.rows: list[dict[str, Any]] = []

    def setup(self, **info: Any) -> None:
        self.start = time.perf_counter()

    def elapsed_s(self) -> float:
        return self.offset_s + time.perf_counter() - self.start

    def get_state(self) -> dict[str, Any]:
        return {"rows": list(self.rows), "elapsed_s": self.elapsed_s()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.rows, self.offset_s = list(state["rows"]), float(state["elapsed_s"])

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.write()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        self._add(trial, result if result.get("final", False) else None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._add(trial, None)

    def _add(self, trial: Any, result: dict[str, Any] | None) -> None:
        config = trial.config
        self.rows.append({
            "trial_id": trial.trial_id, "node_id": str(config["node_id"]), "seed": int(config["seed"]),
            "fidelity": config.get("fidelity", FULL),
            "reward": 0.0 if result is None else float(result.get(METRIC, 0.0)),
            "classification": "error" if result is None else str(result.get("classification")),
            "status": "error" if result is None else str(result.get("status", "completed")),
            "time_s": self.elapsed_s(), "values": json.dumps(config["values"], sort_keys=True)})
        self.write()
        print(progress_line(self.path.parent.name, self.table()), file=sys.stderr, flush=True)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(COMPLETION_COLUMNS))

    def write(self) -> None:
        write_atomically(self.path, self.table().to_csv(index=False))


def progress_line(run: str, log: pd.DataFrame) -> str:
    """The latest finished trial of a run and where the run stands (`run_figures`: full budget only)."""
    last, figures = log.iloc[-1], run_figures(log, len(log))
    first = figures["first_converged"]
    return (f"[bench] {run} trial {len(log)} at {last['time_s'] / 60:.1f} min: node {last['node_id']} "
            f"{last['fidelity']} {last['classification']} {last['reward']:.4f} | best full "
            f"{'none yet' if math.isnan(figures['best_reward']) else format(figures['best_reward'], '.4f')}, "
            f"first converged {'none yet' if math.isnan(first) else f'trial {first}'}")


def trial_costs(log: pd.DataFrame, space: SearchSpace) -> pd.Series:
    """Each logged trial's iterations as a share of a full-budget trial of the base config."""
    full = space.base.total_iterations()
    return pd.Series([trial_iterations(space, json.loads(values), fidelity) / full
                      for values, fidelity in zip(log["values"], log["fidelity"], strict=True)], index=log.index,
                     dtype=float)


def run_complete(log: pd.DataFrame, args: argparse.Namespace, space: SearchSpace) -> bool:
    """The run has its --num-trials trials, or has spent its --budget."""
    return len(log) >= args.num_trials or (args.budget is not None and trial_costs(log, space).sum() >= args.budget)


def run_figures(log: pd.DataFrame, num_trials: int, space: SearchSpace | None = None) -> dict[str, Any]:
    """A run's figures from its completion log (COMPLETION_COLUMNS, completion order); only full-budget
    trials can be converged or best. With the space, also the training spent (budget_used, in full-budget
    trials) and how much of it had been spent when the first converged trial finished."""
    log = log.reset_index(drop=True)
    full = log["fidelity"].eq(FULL)
    converged = log.index[full & log["classification"].eq("converged")]
    first = converged[0] if len(converged) else None
    figures: dict[str, Any] = {
        "trials_done": len(log), "errors": int(log["classification"].eq("error").sum()),
        "screen_trials": int(log["fidelity"].eq(SCREEN).sum()), "full_trials": int(full.sum()),
        "first_converged": math.nan if first is None else int(first) + 1,
        "wall_s_first_converged": math.nan if first is None else float(log.at[first, "time_s"])}
    rated = log[full & log["classification"].ne("error")]
    best = None if rated.empty else rated.loc[rated["reward"].idxmax()]
    figures |= {"best_reward": math.nan if best is None else float(best["reward"]),
                "best_node": None if best is None else best["node_id"],
                "best_seed": math.nan if best is None else int(best["seed"]),
                "best_values": None if best is None else best["values"]}
    if space is not None:
        spent = trial_costs(log, space).cumsum()
        figures |= {"budget_used": float(spent.iloc[-1]) if len(spent) else 0.0,
                    "budget_first_converged": math.nan if first is None else float(spent.iloc[first])}
    best = best_so_far(log)["best_reward"]
    for k in range(1, num_trials + 1):
        figures[f"best_after_{k}"] = float(best[k - 1]) if k <= len(log) else math.nan
    return figures


def recorded_status(row: dict[str, Any]) -> str:
    """A logged trial's status. A log written before the status column was added infers it: 'error' from
    the classification, 'diverged' from class 'failed' with reward 0 (`space.reward` gives 0 to a trial
    that did not complete), 'completed' otherwise."""
    status = row.get("status")
    if isinstance(status, str):
        return status
    if row["classification"] == "error":
        return "error"
    return "diverged" if row["classification"] == "failed" and float(row["reward"]) == 0.0 else "completed"


class RunInterrupted(RuntimeError):
    """A run that ended before its trial budget: it gets no row, so --resume continues it."""


class ReplayError(ValueError):
    """A completion log that this space, method and seed cannot have written."""


def machine_ms_per_iteration(space: SearchSpace, observed: Any, iterations: int = 300, windows: int = 3) -> float:
    """The speed of this machine as the trials see it: median wall ms per iteration of the space's base
    config on one torch thread, after 100 iterations to warm up (windows shortened to fit a small budget)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(space.base, observed, device="cpu")
        warm_up = min(100, trainer.total_iterations // 4)
        iterations = max(1, min(iterations, (trainer.total_iterations - warm_up) // windows))
        trainer.run(until=warm_up)
        times = []
        for _ in range(windows):
            start = time.perf_counter()
            trainer.run(until=trainer.iteration + iterations)
            times.append((time.perf_counter() - start) / iterations * 1e3)
    finally:
        torch.set_num_threads(threads)
    return float(pd.Series(times).median())


def run_dir(out: Path, method: str, rep: int) -> Path:
    """The Tune experiment of one search of `method` with seed `rep`, its completions.csv inside."""
    return out / f"{method}_rep{rep}"


def run_once(method: str, rep: int, space: SearchSpace, args: argparse.Namespace, resources: dict[str, float],
             out: Path) -> dict[str, Any]:
    """One search of `method` with seed `rep`, or the rest of one that was cut off; writes its
    completions.csv and returns its runs.csv row."""
    from metabo_tune.trainable import run_search_trial

    experiment_dir = run_dir(out, method, rep)
    name = experiment_dir.name
    trainable = tune.with_resources(tune.with_parameters(run_search_trial, space=space,
                                                         trials_dir=str(experiment_dir / "trials")), resources)
    log_path, state_path = experiment_dir / "completions.csv", experiment_dir / STATE_FILE
    recorded = pd.read_csv(log_path, dtype=ID_COLUMNS) if log_path.is_file() else None
    # tuner.pkl is written as fit() starts, the experiment state at Tune's first snapshot
    if tune.Tuner.can_restore(str(experiment_dir)) and any(experiment_dir.glob("experiment_state-*.json")):
        print(f"[bench] {name} was cut off; continuing it", file=sys.stderr, flush=True)
        tuner = tune.Tuner.restore(str(experiment_dir), trainable=trainable)
    elif recorded is not None and run_complete(recorded, args, space):
        print(f"[bench] {name} had finished; its row comes from its completions.csv", file=sys.stderr)
        return run_row(method, rep, space, recorded.head(args.num_trials), args.num_trials) \
            | {"base_ms_per_it": math.nan}
    elif recorded is not None and (method != "tree" or state_path.is_file()):
        print(f"[bench] {name}: Tune's snapshot is gone; replaying the {len(recorded)} trials of its "
              f"completions.csv{' and ' + STATE_FILE if method == 'tree' else ''} and going on",
              file=sys.stderr, flush=True)
        state = state_path.read_bytes() if method == "tree" else None
        shutil.rmtree(experiment_dir)
        experiment_dir.mkdir(parents=True)
        recorded.to_csv(log_path, index=False)  # kept until Tune's first snapshot holds it
        if state is not None:
            state_path.write_bytes(state)
        tuner = new_tuner(method, rep, space, args, trainable, experiment_dir, recorded)
    else:
        if experiment_dir.exists():
            why = (f"a tree cannot be rebuilt from its completions.csv without its {STATE_FILE}"
                   if log_path.is_file() else "it was cut off before Tune could snapshot it")
            print(f"[bench] {name}: {why}; starting it again", file=sys.stderr)
            shutil.rmtree(experiment_dir)
        tuner = new_tuner(method, rep, space, args, trainable, experiment_dir)
    with contextlib.redirect_stdout(sys.stderr):  # Tune's experiment banners; stdout keeps the table alone
        tuner.fit()
    completions = pd.read_csv(experiment_dir / "completions.csv", dtype=ID_COLUMNS)
    if not run_complete(completions, args, space):  # Tune returns normally after a Ctrl-C
        raise RunInterrupted(f"{name} stopped after {len(completions)} trials, before its --num-trials "
                             f"{args.num_trials}{'' if args.budget is None else f' or --budget {args.budget:g}'}")
    return run_row(method, rep, space, completions, args.num_trials)


def run_row(method: str, rep: int, space: SearchSpace, completions: pd.DataFrame, num_trials: int) -> dict[str, Any]:
    """A finished run's runs.csv row: seed is the searcher's, train_seed the base seed its new configs train at."""
    return ({"method": method, "rep": rep, "seed": rep, "network": space.base.simulation.seed,
             "train_seed": repetition_space(space, rep).base.training.seed,
             "wall_s": float(completions["time_s"].max())} | run_figures(completions, num_trials, space))


def new_tuner(method: str, rep: int, space: SearchSpace, args: argparse.Namespace, trainable: Any,
              experiment_dir: Path, recorded: pd.DataFrame | None = None) -> tune.Tuner:
    """A new Tune experiment for one run; with `recorded`, the completion log of a run whose Tune snapshot is
    gone, one that goes on from it (`ScreeningSearcher.replay`; a tree's `TreeSearcher.replay`, from the
    experiment directory's STATE_FILE)."""
    log = CompletionLog(experiment_dir / "completions.csv")
    own = repetition_space(space, rep)
    if method == "tree":
        search_alg: Searcher = TreeSearcher(own, experiment_dir, seed=rep)
        if recorded is not None:
            kept = search_alg.replay(set(recorded["trial_id"]))
            recorded = recorded[recorded["trial_id"].isin(kept)]  # any other is trained again
    else:
        # a replayed TPE is told the recorded screens; random search proposes them again (replay)
        evaluated = set() if recorded is None or method == "random" else set(recorded["values"])
        search_alg = ScreeningSearcher(sampler_searcher(method, own, rep, args.concurrency, evaluated), own)
        if recorded is not None and len(recorded):
            search_alg.replay(recorded, results_steer_proposals=method == "tpe")
    if args.budget is not None:
        spent = 0 if recorded is None else iterations_spent(own, recorded)
        search_alg = BudgetedSearcher(search_alg, own, round(args.budget * space.base.total_iterations()), spent)
    if recorded is not None and len(recorded):
        log.set_state({"rows": recorded.to_dict("records"), "elapsed_s": float(recorded["time_s"].max())})
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=search_alg, metric=METRIC, mode="max",
            num_samples=args.num_trials - (0 if recorded is None else len(recorded)),
            max_concurrent_trials=args.concurrency, reuse_actors=True,
            trial_name_creator=trial_name, trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(
            name=experiment_dir.name, storage_path=str(experiment_dir.parent), verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[log]))


def recorded_runs(out: Path, num_trials: int) -> list[dict[str, Any]]:
    """The rows of `<out>/runs.csv` (none if it does not exist yet); they must come from runs of
    `num_trials` trials, since rewards after different budgets do not compare."""
    path = out / "runs.csv"
    if not path.exists():
        return []
    try:
        runs = pd.read_csv(path, dtype=ID_COLUMNS)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        runs = pd.DataFrame()
    if not {"method", "rep"} <= set(runs.columns):
        raise ValueError(f"{path} is not a runs.csv of this benchmark (no method and rep columns); choose another "
                         "--out")
    if f"best_after_{num_trials}" not in runs or f"best_after_{num_trials + 1}" in runs:
        raise ValueError(f"{path} holds runs of another --num-trials than {num_trials}; resume with the same one")
    missing = [column for column in RUN_COLUMNS if column not in runs]
    if missing:
        raise ValueError(f"{path} was written before fidelities were recorded (no {missing[0]}); "
                         "choose another --out")
    return runs.to_dict("records")


# ------------------------------------------------------------------------------------- confirmation

def confirmation_jobs(concurrency: int, cpus: float | None) -> int:
    return max(1, min(concurrency, int(cpus) if cpus else os.cpu_count() or 1))


CONFIRMATION_KEY = ("method", "rep", "node", "seed", "network")


def confirmation_config(space: SearchSpace, values: dict[str, Any], seed: int, network: int) -> Config:
    """A trial's values at full budget on a training seed and a network (simulation seed) of their own."""
    return on_network(space, network).config_for(values, seed=seed)


def confirm_first_converged(logs: dict[tuple[str, int], pd.DataFrame], space: SearchSpace, out: Path,
                            args: argparse.Namespace, jobs: int, recorded: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each run's converged full-budget trials (`logs`: (method, rep) → its completion log), in completion
    order, trained again at full budget on
    --confirm-seeds training seeds that no trial of any run used, the i-th on the i-th network of
    --confirm-networks (cycled; default the space's own). A trial converged on all of them is confirmed, and
    the run's later candidates are not tried: candidates go in rounds, the next round only for runs without
    a confirmed trial yet, at most --confirm-candidates per run. One row per (run, trial, seed); the same
    config, seed and network is trained once for every run that has it (the start points are shared). A row
    of `recorded` (an earlier confirmations.csv) with the same method, run, node, seed and network is kept."""
    used = set().union(*(set(log["seed"].astype(int)) for log in logs.values())) if logs else set()
    seeds = fresh_seeds(used, args.confirm_seeds)
    networks = args.confirm_networks or [space.base.simulation.seed]
    pairs = [(seed, networks[index % len(networks)]) for index, seed in enumerate(seeds)]
    kept = {} if recorded is None else {tuple(row[key] if key in ("method", "node") else int(row[key])
                                              for key in CONFIRMATION_KEY): row for row in recorded.to_dict("records")}
    candidates = {run: log.index[log["fidelity"].eq(FULL) & log["classification"].eq("converged")].tolist()
                  for run, log in logs.items()}
    rows: list[dict[str, Any]] = []
    confirmed: set[tuple[str, int]] = set()
    for round_number in range(args.confirm_candidates):
        picked, configs, dirs, trained = [], [], [], {}
        for (method, rep), log in logs.items():
            if (method, rep) in confirmed or round_number >= len(candidates[(method, rep)]):
                continue
            position = candidates[(method, rep)][round_number]
            trial = log.loc[position]
            for seed, network in pairs:
                pick = {"method": method, "rep": rep, "trial": position + 1, "node": str(trial["node_id"]),
                        "seed": seed, "network": network}
                key = tuple(pick[name] for name in CONFIRMATION_KEY)
                if key in kept:
                    picked.append({"recorded": kept[key] | {"trial": position + 1}})
                    continue
                cfg = confirmation_config(space, json.loads(trial["values"]), seed, network)
                identity = json.dumps(cfg.to_dict(), sort_keys=True)
                if identity not in trained:
                    trained[identity] = len(configs)
                    configs.append(cfg)
                    name = f"node_{pick['node']}_seed_{seed}_net_{network}"
                    dirs.append(out / "confirm" / f"{method}_rep{rep}" / name)
                picked.append(pick | {"training": trained[identity]})
        if not picked:
            break
        print(f"[bench] confirmation round {round_number + 1}: {len(picked)} (trial, seed) pairs, "
              f"{sum('recorded' in pick for pick in picked)} recorded in confirmations.csv, {len(configs)} to "
              f"train, {jobs} at once, in {out / 'confirm'}", file=sys.stderr, flush=True)
        results = train_runs(configs, dirs, jobs) if configs else []
        round_rows = []
        for pick in picked:
            if "recorded" in pick:
                round_rows.append(pick["recorded"])
                continue
            metrics = results[pick.pop("training")]
            status = str(metrics.get("status", "completed"))
            # run_trial classifies with the default thresholds; the space's own decide here, as in the search
            round_rows.append(pick | metrics | {
                "status": status, "classification": classify(metrics, status, space.thresholds),
                "reward": reward(metrics, space.reward, space.thresholds)})
        table = pd.DataFrame(round_rows)
        for (method, rep), group in table.groupby(["method", "rep"]):
            if group["classification"].eq("converged").all():
                confirmed.add((method, int(rep)))
        rows += round_rows
    fixed = ["method", "rep", "trial", "node", "seed", "network", "status", "classification", "reward"]
    if not rows:
        return pd.DataFrame(columns=fixed)
    table = pd.DataFrame(rows)
    return table[fixed + reported_columns(table.columns, HEADLINE)]


def first_confirmed(runs: pd.DataFrame, confirmations: pd.DataFrame, logs: dict[tuple[str, int], pd.DataFrame],
                    space: SearchSpace) -> pd.DataFrame:
    """runs with first_confirmed, the trial number of each run's first trial that converged on every
    confirmation seed (NaN where none did), and budget_first_confirmed, the training its run had spent (in
    full-budget trials) when that trial finished."""
    firsts: dict[tuple[str, int], int] = {}
    if len(confirmations):
        passed = confirmations.groupby(["method", "rep", "trial"])["classification"].agg(
            lambda labels: bool(labels.eq("converged").all()))
        for (method, rep, trial), ok in passed.items():
            if ok:
                firsts[(method, int(rep))] = min(int(trial), firsts.get((method, int(rep)), int(trial)))
    runs = runs.copy()
    keys = [(method, int(rep)) for method, rep in zip(runs["method"], runs["rep"], strict=True)]
    runs["first_confirmed"] = [firsts.get(key, math.nan) for key in keys]
    runs["budget_first_confirmed"] = [
        float(trial_costs(logs[key], space).iloc[:firsts[key]].sum()) if key in firsts else math.nan for key in keys]
    return runs


# ------------------------------------------------------------------------------------- summary

def summary_table(runs: pd.DataFrame, num_trials: int,
                  shared: dict[str, int] | None = None) -> pd.DataFrame:
    """One row per method: the figures of the module docstring's Summary. `runs` carries first_confirmed
    where confirmations ran (`first_confirmed`); `shared` is `shared_trials` of the runs' logs."""
    half = max(1, num_trials // 2)
    rows = []
    for method, group in runs.groupby("method", sort=False):
        group = group.sort_values("rep")
        row: dict[str, Any] = {"method": method, "runs": len(group)}
        for figure in ("first_converged", "first_confirmed"):  # first_confirmed: none without confirmations
            values = group.get(figure, pd.Series(math.nan, index=group.index))
            row |= {f"runs_{figure.removeprefix('first_')}": int(values.notna().sum()),
                    f"{figure}_median": censored_median(values) if figure in group else math.nan,
                    f"{figure}_per_run": " ".join("–" if pd.isna(first) else f"{first:g}" for first in values)}
        for figure in ("wall_s_first_converged", "budget_first_confirmed"):
            row[f"{figure}_median"] = censored_median(group[figure]) if figure in group else math.nan
        for k in dict.fromkeys((half, num_trials)):
            values = group[f"best_after_{k}"]
            row |= {f"best_after_{k}_median": values.median(), f"best_after_{k}_min": values.min(),
                    f"best_after_{k}_max": values.max()}
        row["wall_s_median"] = group["wall_s"].median()
        for figure in ("base_ms_per_it", "budget_used"):
            values = group.get(figure, pd.Series(dtype=float))
            row |= {f"{figure}_median": values.median(), f"{figure}_min": values.min(),
                    f"{figure}_max": values.max()}
        row["shared_trials"] = (shared or {}).get(method, math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def shared_trials(logs: dict[tuple[str, int], pd.DataFrame]) -> dict[str, int]:
    """Per method, the most trials two of its repetitions share: the same values, seed and fidelity, trained
    alike in both (0 with one repetition)."""
    trials: dict[str, list[set[tuple[str, int, str]]]] = {}
    for (method, _), log in logs.items():
        trials.setdefault(method, []).append(set(zip(log["values"], log["seed"].astype(int), log["fidelity"],
                                                     strict=True)))
    return {method: max((len(a & b) for i, a in enumerate(runs) for b in runs[i + 1:]), default=0)
            for method, runs in trials.items()}


def censored_median(values: pd.Series) -> float:
    """The median over all runs of a figure that a run without a converged trial lacks (NaN): such a run
    counts as beyond every run that has one, so the median is inf when half the runs or more have none
    (with an even count, the mean of the middle two, inf if either is). A median over the runs that
    converged only would credit a method for its lucky runs."""
    return float(values.fillna(math.inf).median())


def repetitions(runs: pd.DataFrame) -> str:
    """Which repetitions (= searcher seeds) the summary covers, per method: "repetitions: tree 0–2, tpe 0–1"."""
    spans = []
    for method, reps in runs.groupby("method", sort=False)["rep"]:
        low, high = int(reps.min()), int(reps.max())
        spans.append(f"{method} {low}" if low == high else f"{method} {low}–{high}")
    return "repetitions: " + ", ".join(spans)


def _range(row: dict[str, Any], name: str, digits: int = 3) -> str:
    """A summary figure as "median [min–max]", "–" where no run has it."""
    median = row[f"{name}_median"]
    if pd.isna(median):
        return "–"
    return f"{median:.{digits}f} [{row[f'{name}_min']:.{digits}f}–{row[f'{name}_max']:.{digits}f}]"


def summary_markdown(summary: pd.DataFrame, num_trials: int) -> str:
    half = max(1, num_trials // 2)
    header = ["method", "runs", "first converged at trial", "first confirmed at trial",
              "training spent at first confirmed", "wall time to first converged", f"best after {half}",
              f"best after {num_trials}", "wall time", "training spent", "shared trials", "base config ms/it"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary.to_dict("records"):
        cells = [str(row["method"]), str(row["runs"]),
                 _first(row["first_converged_median"], row["first_converged_per_run"]),
                 _first(row["first_confirmed_median"], row["first_confirmed_per_run"]),
                 _censored(row["budget_first_confirmed_median"], "{:.1f} trials"),
                 _censored(row["wall_s_first_converged_median"], "{:.0f} s"),
                 _range(row, f"best_after_{half}"), _range(row, f"best_after_{num_trials}"),
                 f"{row['wall_s_median']:.0f} s", _range(row, "budget_used", 1),
                 "–" if pd.isna(row["shared_trials"]) else f"{row['shared_trials']:g}",
                 _range(row, "base_ms_per_it", 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _first(median: float, per_run: str) -> str:
    """A censored median trial number with each run's: "none (– 30)" when half the runs or more have none."""
    if math.isnan(median):
        return "–"
    return f"{'none' if math.isinf(median) else f'{median:g}'} ({per_run})"


def _censored(median: float, form: str) -> str:
    return "–" if math.isnan(median) else "none" if math.isinf(median) else form.format(median)


METHOD_COLOURS = {"tree": "tab:blue", "random": "tab:grey", "tpe": "tab:orange"}


def best_so_far(log: pd.DataFrame) -> pd.DataFrame:
    """A run's best full-budget reward after each finished trial (NaN before the first full-budget one),
    with the trial's number and its time in minutes: the curve of progress.png."""
    log = log.reset_index(drop=True)
    full = log["fidelity"].eq(FULL) & log["classification"].ne("error")
    return pd.DataFrame({"trial": log.index + 1, "minutes": log["time_s"] / 60,
                         "best_reward": log["reward"].where(full).cummax().ffill(),
                         "converged": full & log["classification"].eq("converged")})


def progress_figure(logs: dict[tuple[str, int], pd.DataFrame]) -> Figure:
    """Best full-budget reward so far against finished trials and against wall time, one line per run
    ((method, rep) → its completion log), coloured by method; a star marks each full-budget trial that
    converged."""
    fig = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    by_trial, by_time = fig.subplots(1, 2, sharey=True)
    for (method, rep), log in logs.items():
        curve = best_so_far(log)
        colour = METHOD_COLOURS[method]
        for ax, x in ((by_trial, "trial"), (by_time, "minutes")):
            ax.step(curve[x], curve["best_reward"], where="post", color=colour, alpha=0.8,
                    label=f"{method} rep {rep}" if ax is by_trial else None)
            hits = curve[curve["converged"]]
            ax.plot(hits[x], hits["best_reward"], "*", color=colour, markersize=10)
    by_trial.set(xlabel="finished trials (screens and promotions)", ylabel="best full-budget reward so far")
    by_time.set(xlabel="wall time of the run (min)")
    by_trial.legend(fontsize="small", loc="lower right")
    for ax in (by_trial, by_time):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        space = load_space(args.space)
    except SpaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.network is not None:
        space = on_network(space, args.network)
    try:
        out = output_folder(args.out, "--out").resolve()
        rows = recorded_runs(out, args.num_trials) if args.resume else []
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    other = next((row for row in rows if pd.notna(row.get("network"))  # older rows: the space's own network
                  and row["network"] != space.base.simulation.seed), None)
    if other is not None:
        print(f"error: {out / 'runs.csv'} holds runs on network {other['network']}, not "
              f"{space.base.simulation.seed}; resume with --network {other['network']}, or choose another --out",
              file=sys.stderr)
        return 2
    done = {(row["method"], int(row["rep"])) for row in rows}
    todo = pending_runs(args.reps, done)
    taken = [run_dir(out, m, r) for r, m in todo if run_dir(out, m, r).exists()]
    if taken and not args.resume:
        print(f"error: {taken[0]} already exists; choose another --out, or add --resume", file=sys.stderr)
        return 2
    if {"random", "tpe"} & set(args.methods):
        try:
            import optuna  # noqa: F401
        except ImportError:
            print("error: --methods random and tpe need optuna: pip install -e '.[bench]'", file=sys.stderr)
            return 2
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_or_simulate(space.base.simulation)  # the dataset cache is filled before any run is timed
    speed = math.nan
    if todo:
        speed = machine_ms_per_iteration(space, dataset.observed)
        print(f"[bench] this machine: {speed:.2f} ms per iteration of the base config on one thread",
              file=sys.stderr, flush=True)

    os.environ["RAY_AUTH_MODE"] = "disabled"  # a private local instance needs no token
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    resources = trial_resources(ray.cluster_resources(), "auto", args.concurrency)
    print(f"[bench] {args.space}: {args.num_trials} trials, {args.concurrency} at once, {resources} each, "
          f"{'screened' if space.fidelity else 'all at full budget'}, repetitions: "
          f"{', '.join(f'{m} {n}' for m, n in args.reps.items())}; results in {out}", file=sys.stderr, flush=True)
    for rep, method in todo:
        try:
            row = run_once(method, rep, space, args, resources, out)
        except RunInterrupted as exc:
            ray.shutdown()
            print(f"[bench] {exc}; the finished runs are in {out / 'runs.csv'}, add --resume to go on",
                  file=sys.stderr)
            return 130
        except ReplayError as exc:
            ray.shutdown()
            print(f"error: {run_dir(out, method, rep) / 'completions.csv'}: {exc}; move it away to start the "
                  "run again", file=sys.stderr)
            return 2
        row.setdefault("base_ms_per_it", speed)
        rows.append(row)
        pd.DataFrame(rows).to_csv(out / "runs.csv", index=False)
        first = row["first_converged"]
        print(f"[bench] {method} rep {rep}: best full {row['best_reward']:.3f} after "
              f"{row['trials_done']} trials ({row['screen_trials']} screen, {row['errors']} errored), first "
              f"converged at {'none' if math.isnan(first) else f'trial {first:g}'}, {row['wall_s']:.0f} s",
              file=sys.stderr, flush=True)
    ray.shutdown()
    runs = pd.DataFrame(rows)
    runs = runs[runs["method"].isin(args.methods)]
    logs = {(method, rep): pd.read_csv(run_dir(out, method, rep) / "completions.csv", dtype=ID_COLUMNS)
            for method, rep in zip(runs["method"], runs["rep"].astype(int), strict=True)}
    if args.confirm_seeds:
        recorded = pd.read_csv(out / "confirmations.csv", dtype={"node": str}) \
            if args.resume and (out / "confirmations.csv").is_file() else None
        confirmations = confirm_first_converged(logs, space, out, args, confirmation_jobs(args.concurrency, args.cpus),
                                                recorded)
        confirmations.to_csv(out / "confirmations.csv", index=False)
        runs = first_confirmed(runs, confirmations, logs, space)
    summary = summary_table(runs, args.num_trials, shared_trials(logs))
    summary.to_csv(out / "summary.csv", index=False)
    table = summary_markdown(summary, args.num_trials)
    fidelity = (f"screened at {space.fidelity.screen}, promote_eta {space.fidelity.promote_eta}; rewards and "
                "convergence at full budget only" if space.fidelity else "every trial at full budget")
    budget = "" if args.budget is None else f", at most {args.budget:g} full-budget trials of training"
    networks = ", ".join(map(str, args.confirm_networks or [space.base.simulation.seed]))
    confirmed = (f"a converged trial is confirmed when it converges again on {args.confirm_seeds} training seeds no "
                 f"trial used, on networks {networks} (simulation seeds)" if args.confirm_seeds else "no confirmations")
    (out / "summary.md").write_text(
        f"# Search benchmark: {args.space}, network {space.base.simulation.seed}\n\n{args.num_trials} trials per run"
        f"{budget}, {args.concurrency} at once, "
        f"{fidelity}; {repetitions(runs)}, repetition r training at base seed + {SEED_STRIDE} r; rewards median "
        f"[min–max] over repetitions; {confirmed}; a run without one counts as beyond every run with one.\n\n"
        + table)
    progress_figure(logs).savefig(out / "progress.png")
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
