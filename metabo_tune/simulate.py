"""Ground-truth metabolic network, its trajectories, and what the data can and cannot determine.

The stoichiometry follows the predecessor's generator exactly (a `numpy.random.RandomState(seed)`,
reference trainer.md §1.3), so seed 42 gives its S. Every other ground-truth draw (rate constants,
initial states) comes from its own named CPU stream of the same seed, so the data never depend on
the learner's architecture or on the device (the predecessor's k changed with its MLP sizes).

A `Dataset` keeps what training may see (`observed`) apart from the hidden parameters (`truth`) and
the held-out trajectory used only for test metrics.

Noise follows the predecessor's two options (DESIGN.md §8). Process noise (`noise_model_level`) is
part of the simulation and of its cache key; measurement noise (`training.measurement_noise_level`) is
added after the noise-free data are loaded, so one cached simulation serves every level. Both draw from
their own named streams of `simulation.seed` (one for the training trajectory, one for the held-out
one): the noise-free data do not change, and a training seed never changes the data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from scipy import sparse
from scipy.signal import savgol_filter

from metabo_tune.atomic_file import write_atomically
from metabo_tune.config import SimulationConfig

GENERATOR_VERSION = 1
_STREAM_LOG_K = 1
_STREAM_INITIAL_STATE = 2
_STREAM_HELDOUT_STATE = 3
_STREAM_PROCESS_NOISE = 4
_STREAM_HELDOUT_PROCESS_NOISE = 5
_STREAM_MEASUREMENT_NOISE = 6
_STREAM_HELDOUT_MEASUREMENT_NOISE = 7
_STREAM_FURTHER_RUNS = 100  # run r ≥ 1 of the training data: initial state 100 + 2r, process noise 101 + 2r
ArrayT = TypeVar("ArrayT")


class DataError(ValueError):
    """A dataset that cannot be used; the message is one line meant for the user."""


@dataclass(frozen=True)
class Network:
    """What is given about the network: signed stoichiometry and the rate-law substrate edges."""

    stoichiometry: np.ndarray  # [n_metabolites, n_reactions], signed net change per reaction
    substrate_metabolite: np.ndarray  # [n_edges] int
    substrate_reaction: np.ndarray  # [n_edges] int
    substrate_order: np.ndarray  # [n_edges] int, |s| >= 1

    @property
    def n_metabolites(self) -> int:
        return self.stoichiometry.shape[0]

    @property
    def n_reactions(self) -> int:
        return self.stoichiometry.shape[1]

    def padded_substrates(self) -> tuple[np.ndarray, np.ndarray]:
        """[n_reactions, max_substrates] metabolite index and order; padding points at index
        n_metabolites with order 0, so a product over the row ignores it."""
        counts = np.bincount(self.substrate_reaction, minlength=self.n_reactions)
        width = max(1, int(counts.max(initial=0)))
        index = np.full((self.n_reactions, width), self.n_metabolites, dtype=np.int64)
        order = np.zeros((self.n_reactions, width), dtype=np.int64)
        slot = np.zeros(self.n_reactions, dtype=np.int64)
        edges = zip(self.substrate_metabolite, self.substrate_reaction, self.substrate_order, strict=True)
        for met, rxn, s in edges:
            index[rxn, slot[rxn]] = met
            order[rxn, slot[rxn]] = s
            slot[rxn] += 1
        return index, order


@dataclass(frozen=True)
class Trajectory:
    """Concentrations c(t) and the exact derivatives dc/dt at those states, [frames, metabolites].

    Several runs (experiments from different initial states) are stacked along the frames; `run_starts`
    holds each run's first frame. Consecutive frames of two runs are unrelated, so nothing that spans
    frames (a weak-form window, a difference, a rollout) may cross from one run into the next."""

    concentrations: np.ndarray
    derivatives: np.ndarray
    delta_t: float
    run_starts: tuple[int, ...] = (0,)

    @property
    def n_frames(self) -> int:
        return self.concentrations.shape[0]

    @property
    def n_runs(self) -> int:
        return len(self.run_starts)

    def runs(self, values: np.ndarray | None = None) -> list[np.ndarray]:
        """`values` (default: the concentrations), one array per run."""
        return np.split(self.concentrations if values is None else values, self.run_starts[1:])

    def window_starts(self, span: int) -> np.ndarray:
        """The frames t for which frames t … t+span all lie in one run."""
        ends = (*self.run_starts[1:], self.n_frames)
        return np.concatenate([np.arange(start, end - span) for start, end in zip(self.run_starts, ends, strict=True)])

    def clear_of_zero(self, span: int, margin: float) -> np.ndarray:
        """[n_frames − span, n] bool: row t is True where the metabolite's concentration stays above `margin` over
        frames t … t+span (rows across two runs included: see within_runs). Near zero the simulator's clamp breaks
        the ODE and measurements clipped at zero are biased, so no rate law fits such a window."""
        if span == 0:
            return self.concentrations > margin
        return np.lib.stride_tricks.sliding_window_view(self.concentrations, span + 1, axis=0).min(-1) > margin

    def within_runs(self, rows: ArrayT, span: int) -> ArrayT:
        """The rows of a per-window array (numpy or torch; row t: the window of frames t … t+span, n_frames − span
        rows) whose window lies in one run; all of them, unchanged, for a single run."""
        return rows if self.n_runs == 1 else rows[self.window_starts(span)]


@dataclass(frozen=True)
class Observed:
    """Everything training is allowed to see."""

    network: Network
    trajectory: Trajectory


@dataclass(frozen=True)
class Truth:
    """The hidden parameters and functional forms. Only metrics and plots may read these.

    The forms are limits of one family each: michaelis_K = inf is mass action (f(c) = c), and
    homeostasis_width = inf the linear homeostasis; None means the form is not known (user data without
    its truth_michaelis_K.npy or truth_homeostasis_width.npy), and the metrics that need it are left out."""

    log_k: np.ndarray  # [n_reactions], log10, in the gauge f(1, s) = 1
    types: np.ndarray  # [n_metabolites] int
    lambda_per_type: np.ndarray  # [n_types]
    baseline_per_type: np.ndarray  # [n_types]
    michaelis_K: float | None = math.inf
    homeostasis_width: float | None = math.inf

    @property
    def substrate_kinetics(self) -> str | None:
        if self.michaelis_K is None:
            return None
        return "mass_action" if math.isinf(self.michaelis_K) else "michaelis_menten"

    @property
    def homeostasis_form(self) -> str | None:
        if self.homeostasis_width is None:
            return None
        return "linear" if math.isinf(self.homeostasis_width) else "saturating"

    def substrate(self, concentrations: np.ndarray, order: np.ndarray | int = 1) -> np.ndarray:
        """The true substrate function f(c)^order; raises if the kinetics are not known."""
        if self.michaelis_K is None:
            raise DataError("the true substrate kinetics are not known (no truth_michaelis_K.npy)")
        return substrate_function(concentrations, self.michaelis_K) ** order

    def homeostasis(self, concentrations: np.ndarray) -> np.ndarray:
        """h(c) per metabolite; raises if the homeostasis form is not known."""
        if self.homeostasis_width is None:
            raise DataError("the true homeostasis form is not known (no truth_homeostasis_width.npy)")
        lam = self.lambda_per_type[self.types]
        offset = concentrations - self.baseline_per_type[self.types]
        if math.isinf(self.homeostasis_width):
            return -lam * offset
        width = self.homeostasis_width
        return -lam * width * np.tanh(offset / width)


def substrate_function(concentrations: np.ndarray, michaelis_K: float) -> np.ndarray:
    """Per substrate edge: c (mass action, K = inf) or c·(1+K)/(K+c), Michaelis–Menten normalised to
    f(1) = 1, the gauge of c^s at c = 1. Concentrations are >= 0 (the simulator clamps)."""
    if math.isinf(michaelis_K):
        return concentrations
    return concentrations * (1.0 + michaelis_K) / (michaelis_K + concentrations)


@dataclass(frozen=True)
class Identifiability:
    """Which rate constants the data can determine, from S and the substrate edges alone.

    Reactions with the same substrates (and orders) have proportional rates, so only the
    combination of their k along the row space of their stacked S columns is determined; a reaction
    whose S column is zero changes nothing and its k is free.
    """

    identifiable: np.ndarray  # [n_reactions] bool
    reasons: dict[int, str] = field(default_factory=dict)
    combinations: list[tuple[tuple[int, ...], tuple[float, ...]]] = field(default_factory=list)

    @property
    def n_identifiable(self) -> int:
        return int(self.identifiable.sum())


@dataclass(frozen=True)
class Dataset:
    observed: Observed
    heldout: Trajectory | None
    truth: Truth | None
    identifiability: Identifiability
    source: str = "simulated"


# --------------------------------------------------------------------------------------------
# Generator


def generate_network(cfg: SimulationConfig) -> Network:
    """The predecessor's stoichiometry generator (trainer.md §1.3), bit-exact for its settings."""
    rs = np.random.RandomState(cfg.seed)
    n, n_rxn, length = cfg.n_metabolites, cfg.n_reactions, cfg.cycle_length
    stoich = np.zeros((n, n_rxn))
    edges: list[tuple[int, int, int]] = []
    n_cycle_reactions = int(n_rxn * cfg.cycle_fraction)
    used: set[int] = set()
    for q in range(n_cycle_reactions // length):
        available = np.array(sorted(set(range(n)) - used))
        if len(available) < length:
            available = np.arange(n)
        members = rs.choice(available, length, replace=False)
        used.update(int(m) for m in members)
        for i in range(length):
            rxn = q * length + i
            food, catalyst = int(members[i]), int(members[(i + 1) % length])
            edges += [(food, rxn, 1), (catalyst, rxn, 1)]
            stoich[food, rxn] -= 1
            stoich[catalyst, rxn] += 1
    for rxn in range(n_cycle_reactions, n_rxn):
        n_sub, n_prod = int(rs.randint(1, 4)), int(rs.randint(1, 4))
        while n_sub + n_prod > min(cfg.max_metabolites_per_reaction, n):
            if n_prod > 1:
                n_prod -= 1
            else:
                n_sub -= 1
        members = rs.choice(n, n_sub + n_prod, replace=False)
        orders = rs.randint(1, 3, size=n_sub)
        shares = np.full(n_prod, orders.sum() // n_prod)
        shares[: orders.sum() % n_prod] += 1
        rs.shuffle(shares)
        for met, s in zip(members[:n_sub], orders, strict=True):
            edges.append((int(met), rxn, int(s)))
            stoich[met, rxn] -= s
        for met, s in zip(members[n_sub:], shares, strict=True):
            stoich[met, rxn] += s
    met, rxn, order = (np.array([e[i] for e in edges], dtype=np.int64) for i in range(3))
    return Network(stoich, met, rxn, order)


def _stream(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def generate_truth(cfg: SimulationConfig, n_metabolites: int | None = None, n_reactions: int | None = None,
                   types: np.ndarray | None = None) -> Truth:
    """k, types, λ and b. The sizes default to the config's (a random network); `types` default to the
    generator's blocks of n_metabolites // n_metabolite_types."""
    n_met = cfg.n_metabolites if n_metabolites is None else n_metabolites
    log_k = _stream(cfg.seed, _STREAM_LOG_K).uniform(cfg.log_k_min, cfg.log_k_max,
                                                     cfg.n_reactions if n_reactions is None else n_reactions)
    if types is None:
        types = np.minimum(np.arange(n_met) // (n_met // cfg.n_metabolite_types), cfg.n_metabolite_types - 1)
    return Truth(log_k, types, np.array(cfg.homeostatic_lambda_per_type, dtype=float),
                 np.array(cfg.homeostatic_baseline_per_type, dtype=float), *truth_forms(cfg))


def truth_forms(cfg: SimulationConfig) -> tuple[float, float]:
    """(michaelis_K, homeostasis_width) of the simulated truth, inf for mass action and linear homeostasis."""
    return (cfg.michaelis_K if cfg.substrate_kinetics == "michaelis_menten" else math.inf,
            cfg.homeostasis_width if cfg.homeostasis_form == "saturating" else math.inf)


def network_and_truth(cfg: SimulationConfig) -> tuple[Network, Truth]:
    """The random generator's network and truth, or a model's network with the hub rule applied to k
    (networks.hub_scaled_log_k) and types by generator blocks or by compartment."""
    if cfg.is_random:
        return generate_network(cfg), generate_truth(cfg)
    from metabo_tune import networks

    model = networks.load_model_network(cfg)
    network = model.network
    if model.rounded_orders:
        print(f"network {cfg.network}: non-integer substrate orders rounded in {len(model.rounded_orders)} "
              f"reactions ({', '.join(model.rounded_orders[:8])}{' …' if len(model.rounded_orders) > 8 else ''})",
              file=sys.stderr)
    types = (networks.compartment_types(model, cfg.n_metabolite_types, cfg.network)
             if cfg.metabolite_types == "compartment" else None)
    if types is None and network.n_metabolites < cfg.n_metabolite_types:
        raise DataError(f"simulation.network {cfg.network}: {network.n_metabolites} metabolites, fewer than "
                        f"n_metabolite_types {cfg.n_metabolite_types}")
    truth = generate_truth(cfg, network.n_metabolites, network.n_reactions, types)
    reference = 0.5 * (cfg.concentration_min + cfg.concentration_max)
    return network, dataclasses.replace(truth, log_k=networks.hub_scaled_log_k(truth.log_k, network, reference))


SPARSE_ABOVE = 1_000_000  # entries of S from which the simulation multiplies by a sparse S


class RateLaw:
    """dc/dt = S·v(c) + h with v_j = k_j·Π f(c)^|s| (f: substrate_function, mass action by default), its padded
    substrates prepared once; S sparse when large (a genome-scale S is 99.8 % zeros)."""

    def __init__(self, network: Network, log_k: np.ndarray, michaelis_K: float = math.inf) -> None:
        self.index, self.order = network.padded_substrates()
        self.k, self.michaelis_K = 10.0 ** log_k, michaelis_K
        stoich = network.stoichiometry
        self.stoich_t = sparse.csr_matrix(stoich.T) if stoich.size > SPARSE_ABOVE else stoich.T

    def __call__(self, concentrations: np.ndarray, homeostasis: np.ndarray) -> np.ndarray:
        substrate = substrate_function(concentrations, self.michaelis_K)
        padded = np.concatenate([substrate, np.ones((*concentrations.shape[:-1], 1))], axis=-1)
        products = np.prod(padded[..., self.index] ** self.order, axis=-1)
        return (self.k * products) @ self.stoich_t + homeostasis


def rate_law_rhs(concentrations: np.ndarray, network: Network, log_k: np.ndarray,
                 homeostasis: np.ndarray, michaelis_K: float = math.inf) -> np.ndarray:
    """dc/dt = S·v(c) + h with v_j = k_j·Π f(c)^|s| (f: substrate_function; mass action by default);
    works on [..., n] arrays."""
    return RateLaw(network, log_k, michaelis_K)(concentrations, homeostasis)


def integrate(network: Network, truth: Truth, c0: np.ndarray, n_steps: int, delta_t: float,
              process_noise: float = 0.0, rng: np.random.Generator | None = None) -> Trajectory:
    """Explicit Euler with a clamp at zero; frame t stores c_t and the exact pre-clamp f(c_t).

    With process_noise σ_p > 0 (drawn from rng), every step and its clamp are followed by
    c ← max(c + N(0, σ_p²), 0): frame t then stores that noisy state and the model's f at it."""
    conc = np.empty((n_steps + 1, network.n_metabolites))
    deriv = np.empty_like(conc)
    c = c0.astype(float)
    rate_law = RateLaw(network, truth.log_k, truth.michaelis_K)
    for t in range(n_steps + 1):
        y = rate_law(c, truth.homeostasis(c))
        conc[t], deriv[t] = c, y
        if t == n_steps:
            break
        c = np.maximum(c + delta_t * y, 0.0)
        if process_noise > 0:
            c = np.maximum(c + rng.normal(0.0, process_noise, c.shape), 0.0)
    return Trajectory(conc, deriv, delta_t)


def _initial_state(cfg: SimulationConfig, stream: int, n_metabolites: int) -> np.ndarray:
    return _stream(cfg.seed, stream).uniform(cfg.concentration_min, cfg.concentration_max, n_metabolites)


def simulate(cfg: SimulationConfig) -> Dataset:
    """Generate the network, the training data (`n_runs` trajectories from their own initial states, stacked)
    and a held-out trajectory from another initial state, each with its own process-noise draws. A model
    network's training data are checked (check_activity) and described on stderr."""
    network, truth = network_and_truth(cfg)

    def run(state: int, noise: int) -> Trajectory:
        # a model draw that overflows is reported by check_activity in one line, not by numpy's warnings
        with np.errstate(over="ignore", invalid="ignore") if not cfg.is_random else contextlib.nullcontext():
            return integrate(network, truth, _initial_state(cfg, state, network.n_metabolites), cfg.n_frames,
                             cfg.delta_t, cfg.noise_model_level, _stream(cfg.seed, noise))

    runs = [run(_STREAM_INITIAL_STATE, _STREAM_PROCESS_NOISE)]
    runs += [run(_STREAM_FURTHER_RUNS + 2 * r, _STREAM_FURTHER_RUNS + 2 * r + 1) for r in range(1, cfg.n_runs)]
    train = stacked(runs)
    if not cfg.is_random:
        describe_activity(cfg, network, train, *check_activity(train, cfg))
    if not np.isfinite(train.concentrations).all():
        raise DataError(f"simulation seed {cfg.seed}: the training trajectory diverged (explicit Euler, delta_t "
                        f"{cfg.delta_t}, noise_model_level {cfg.noise_model_level}): lower delta_t or the noise")
    heldout = run(_STREAM_HELDOUT_STATE, _STREAM_HELDOUT_PROCESS_NOISE)
    return _without_diverged_heldout(Dataset(Observed(network, train), heldout, truth,
                                             analyse_identifiability(network)), cfg)


def stacked(runs: list[Trajectory]) -> Trajectory:
    """Trajectories of one network (and time step) as the runs of one."""
    if len(runs) == 1:
        return runs[0]
    starts = np.cumsum([0] + [run.n_frames for run in runs[:-1]])
    return Trajectory(np.concatenate([run.concentrations for run in runs]),
                      np.concatenate([run.derivatives for run in runs]), runs[0].delta_t,
                      tuple(int(start) for start in starts))


def _without_diverged_heldout(dataset: Dataset, cfg: SimulationConfig) -> Dataset:
    """Large process noise can push explicit Euler past its stability limit on one trajectory and not the
    other: the test metrics are then left out rather than computed on overflowed values."""
    if dataset.heldout is None or np.isfinite(dataset.heldout.concentrations).all():
        return dataset
    warnings.warn(f"simulation seed {cfg.seed}: the held-out trajectory diverged (explicit Euler, "
                  f"noise_model_level {cfg.noise_model_level}); the test metrics are left out", stacklevel=3)
    return dataclasses.replace(dataset, heldout=None)


MOVING_FRACTION = 0.01  # a metabolite moves when its range over the trajectory exceeds 1 % of its mean
RANK_TOLERANCE = 1e-6  # activity rank: singular values of the centred trajectory above this share of the largest
BLOW_UP_FACTOR = 100.0  # a draw blows up when a concentration exceeds this multiple of concentration_max


def activity(trajectory: Trajectory) -> tuple[int, int]:
    """(metabolites that move, rank of the centred concentration trajectory): how much the data can show."""
    conc = trajectory.concentrations
    span = conc.max(axis=0) - conc.min(axis=0)
    moving = int((span > MOVING_FRACTION * np.maximum(np.abs(conc.mean(axis=0)), 1e-12)).sum())
    sing = np.linalg.svd(conc - conc.mean(axis=0), compute_uv=False)
    rank = int((sing > RANK_TOLERANCE * sing.max(initial=0.0)).sum()) if sing.size and sing.max() > 0 else 0
    return moving, rank


def describe_activity(cfg: SimulationConfig, network: Network, trajectory: Trajectory,
                      moving: int | None = None, rank: int | None = None) -> None:
    """One stderr line on a model network: its size, how many metabolites move, the activity rank."""
    if moving is None or rank is None:
        moving, rank = activity(trajectory)
    print(f"network {cfg.network}: {network.n_metabolites} metabolites, {network.n_reactions} reactions, "
          f"{len(network.substrate_metabolite)} substrate edges; {moving} metabolites move, activity rank {rank}",
          file=sys.stderr)


def check_activity(trajectory: Trajectory, cfg: SimulationConfig) -> tuple[int, int]:
    """activity(), with a DataError when the draw blew up (a concentration not finite or past BLOW_UP_FACTOR ×
    concentration_max) or went flat (no metabolite moves)."""
    conc = trajectory.concentrations
    past = ~np.isfinite(conc) | (conc > BLOW_UP_FACTOR * cfg.concentration_max)
    if past.any():
        frame = int(np.argmax(past.any(axis=1)))
        raise DataError(f"simulation.network {cfg.network}, seed {cfg.seed}: the draw blew up (a concentration "
                        f"passed {BLOW_UP_FACTOR:g} × concentration_max at frame {frame}): lower log_k_max or delta_t, "
                        f"or leave high-order substrates out with ignore_metabolites")
    moving, rank = activity(trajectory)
    if moving == 0:
        raise DataError(f"simulation.network {cfg.network}, seed {cfg.seed}: the draw went flat (no metabolite "
                        f"moves by {MOVING_FRACTION:.0%} of its mean): raise log_k_min or n_frames")
    return moving, rank


# --------------------------------------------------------------------------------------------
# Structure of S


def left_null_space(stoichiometry: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Orthonormal basis [n_metabolites, q] of {u : uᵀS = 0}: directions no reaction can change."""
    u, sing, _ = np.linalg.svd(stoichiometry, full_matrices=True)
    rank = int((sing > tol * max(1.0, sing.max(initial=0.0))).sum())
    return u[:, rank:]


def analyse_identifiability(network: Network) -> Identifiability:
    n_rxn = network.n_reactions
    signatures: dict[tuple, list[int]] = {}
    for rxn in range(n_rxn):
        mask = network.substrate_reaction == rxn
        members = zip(network.substrate_metabolite[mask].tolist(), network.substrate_order[mask].tolist(), strict=True)
        sig = tuple(sorted(members))
        signatures.setdefault(sig, []).append(rxn)
    identifiable = np.ones(n_rxn, dtype=bool)
    reasons: dict[int, str] = {}
    combinations: list[tuple[tuple[int, ...], tuple[float, ...]]] = []
    stoich = network.stoichiometry
    for rxn in range(n_rxn):
        if not np.any(stoich[:, rxn]):
            identifiable[rxn] = False
            reasons[rxn] = "its column of S is zero: the reaction changes no concentration"
    for group in signatures.values():
        live = [r for r in group if identifiable[r]]
        if len(live) < 2:
            continue
        block = stoich[:, live]
        _, sing, vt = np.linalg.svd(block)
        rank = int((sing > 1e-9 * sing.max()).sum())
        if rank == len(live):
            continue
        null = vt[rank:]  # rows span the undetermined directions of k_live
        for pos, rxn in enumerate(live):
            if np.linalg.norm(null[:, pos]) < 1e-9:
                continue
            identifiable[rxn] = False
            others = [r for r in live if r != rxn]
            if len(live) == 2:
                same = np.allclose(stoich[:, live[0]], stoich[:, live[1]])
                kind = "sum" if same else "difference"
                reasons[rxn] = (f"reaction {others[0]} has the same substrates and "
                                f"{'the same' if same else 'the opposite'} net change: only the {kind} "
                                f"of their k is determined")
            else:
                reasons[rxn] = (f"shares its substrates with reactions {others}: "
                                "only combinations of their k are determined")
        for row in vt[:rank]:
            scaled = row / row[np.argmax(np.abs(row))]
            combinations.append((tuple(live), tuple(float(x) for x in np.round(scaled, 12))))
    return Identifiability(identifiable, reasons, combinations)


# --------------------------------------------------------------------------------------------
# Cache and user data


def cache_dir() -> Path:
    return Path(os.environ.get("METABO_TUNE_CACHE", Path.home() / ".cache" / "metabo_tune"))


USER_DATA_KEYS = {"data_dir", "derivative_window", "derivative_polyorder"}  # no effect on a simulation


# A form's keys change the data only when the form is chosen: left out otherwise, so that the default forms keep
# the cache keys (and files) of the simulator before them, whose data they reproduce bit for bit.
FORM_KEYS = {("substrate_kinetics", "mass_action"): {"substrate_kinetics", "michaelis_K"},
             ("homeostasis_form", "linear"): {"homeostasis_form", "homeostasis_width"}}
NETWORK_KEYS = {"network", "ignore_metabolites", "metabolite_types"}  # no effect on a random network
RANDOM_ONLY_KEYS = {"n_metabolites", "n_reactions", "max_metabolites_per_reaction", "cycle_fraction", "cycle_length"}


def simulation_key(cfg: SimulationConfig) -> str:
    """A hash of the simulation section; a model network enters by its file's content, not its path."""
    inert = {key for (name, default), keys in FORM_KEYS.items() if getattr(cfg, name) == default for key in keys}
    if cfg.is_random:
        payload = cfg.model_dump(mode="json", exclude=USER_DATA_KEYS | NETWORK_KEYS | inert)
    else:
        from metabo_tune import networks

        payload = cfg.model_dump(mode="json", exclude=USER_DATA_KEYS | RANDOM_ONLY_KEYS | inert)
        payload["network"] = "sha256:" + networks.content_digest(cfg.network)
        payload["_converter_version"] = networks.CONVERTER_VERSION
    payload["_generator_version"] = GENERATOR_VERSION
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


_ARRAYS = {
    "stoichiometry": ("observed", "network", "stoichiometry"),
    "substrate_metabolite": ("observed", "network", "substrate_metabolite"),
    "substrate_reaction": ("observed", "network", "substrate_reaction"),
    "substrate_order": ("observed", "network", "substrate_order"),
    "concentrations": ("observed", "trajectory", "concentrations"),
    "derivatives": ("observed", "trajectory", "derivatives"),
    "heldout_concentrations": ("heldout", "concentrations"),
    "heldout_derivatives": ("heldout", "derivatives"),
    "log_k": ("truth", "log_k"),
    "types": ("truth", "types"),
    "lambda_per_type": ("truth", "lambda_per_type"),
    "baseline_per_type": ("truth", "baseline_per_type"),
}


def cache_arrays(dataset: Dataset) -> dict[str, np.ndarray]:
    """The arrays the cache stores for a simulated dataset (no held-out ones when it has none)."""
    arrays = {}
    for name, attrs in _ARRAYS.items():
        obj = dataset
        for attr in attrs:
            obj = getattr(obj, attr)
            if obj is None:
                break
        else:
            arrays[name] = obj
    if dataset.observed.trajectory.n_runs > 1:
        arrays["run_starts"] = np.array(dataset.observed.trajectory.run_starts)
    return arrays


def _dataset_from_arrays(arrays: dict[str, np.ndarray], cfg: SimulationConfig, source: str) -> Dataset:
    """A cached simulation; its truth's forms come from cfg, which the cache key covers."""
    delta_t = cfg.delta_t
    network = Network(arrays["stoichiometry"], arrays["substrate_metabolite"], arrays["substrate_reaction"],
                      arrays["substrate_order"])
    run_starts = tuple(int(start) for start in arrays.get("run_starts", [0]))
    observed = Observed(network, Trajectory(arrays["concentrations"], arrays["derivatives"], delta_t, run_starts))
    heldout = (Trajectory(arrays["heldout_concentrations"], arrays["heldout_derivatives"], delta_t)
               if "heldout_concentrations" in arrays else None)
    truth = (Truth(arrays["log_k"], arrays["types"], arrays["lambda_per_type"], arrays["baseline_per_type"],
                   *truth_forms(cfg))
             if "log_k" in arrays else None)
    return Dataset(observed, heldout, truth, analyse_identifiability(network), source)


def add_measurement_noise(trajectory: Trajectory, level: float, rng: np.random.Generator) -> Trajectory:
    """The predecessor's measurement noise (trainer.md §1.6): every c gets N(0, level²) and is clamped
    at 0, and dc/dt at frames 1 … T−2 becomes the forward difference (c[t+1] − c[t]) / dt of the noisy c.

    Frames 0 and T−1 keep the derivative the trajectory had (for simulated data the exact f at the
    noise-free state), as the predecessor does: at those two frames the noisy c and dc/dt do not match.
    With several runs this holds within each run.
    """
    conc = np.maximum(trajectory.concentrations + rng.normal(0.0, level, trajectory.concentrations.shape), 0.0)
    deriv = trajectory.derivatives.copy()
    for run_conc, run_deriv in zip(trajectory.runs(conc), trajectory.runs(deriv), strict=True):
        run_deriv[1:-1] = (run_conc[2:] - run_conc[1:-1]) / trajectory.delta_t  # views: writes into deriv
    return dataclasses.replace(trajectory, concentrations=conc, derivatives=deriv)


def with_measurement_noise(dataset: Dataset, level: float, seed: int) -> Dataset:
    """The dataset as measured with noise `level`: the training and the held-out trajectory each get
    their own draws; the network, the truth and the identifiability stay as they are."""
    if level == 0:
        return dataset
    train = add_measurement_noise(dataset.observed.trajectory, level, _stream(seed, _STREAM_MEASUREMENT_NOISE))
    heldout = (add_measurement_noise(dataset.heldout, level, _stream(seed, _STREAM_HELDOUT_MEASUREMENT_NOISE))
               if dataset.heldout is not None else None)
    return dataclasses.replace(dataset, observed=Observed(dataset.observed.network, train), heldout=heldout,
                               source=f"{dataset.source} + measurement noise {level:g}")


def load_or_simulate(cfg: SimulationConfig, use_cache: bool = True, measurement_noise_level: float = 0.0) -> Dataset:
    """The dataset for a simulation section: user .npy files, the on-disk cache, or a fresh run, then
    measurement noise of `measurement_noise_level` (the training section's key) seeded by cfg.seed."""
    return with_measurement_noise(_load_or_simulate(cfg, use_cache), measurement_noise_level, cfg.seed)


def _load_or_simulate(cfg: SimulationConfig, use_cache: bool) -> Dataset:
    if cfg.data_dir is not None:
        return load_npy_dataset(cfg.data_dir, cfg.delta_t, cfg.derivative_window, cfg.derivative_polyorder)
    path = cache_dir() / f"simulation-{simulation_key(cfg)}.npz"
    if use_cache and path.is_file():
        with np.load(path) as stored:
            arrays = {k: stored[k] for k in stored.files}
        dataset = _dataset_from_arrays(arrays, cfg, f"cache:{path.name}")
        if not cfg.is_random:
            describe_activity(cfg, dataset.observed.network, dataset.observed.trajectory)
        return _without_diverged_heldout(dataset, cfg)
    dataset = simulate(cfg)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **cache_arrays(dataset))
        write_atomically(path, buffer.getvalue())  # concurrent trials may write the same key
    return dataset


NPY_FORMAT = {
    "concentrations.npy": "float [frames, metabolites]: c(t), one row per saved frame",
    "derivatives.npy": "optional, float [frames, metabolites]: dc/dt at the same frames (estimated from c if absent)",
    "run_starts.npy": "optional, int [runs]: where concentrations.npy stacks several experiments (runs from their own "
                      "initial states), the first frame of each: 0, then increasing",
    "stoichiometry.npy": "float [metabolites, reactions]: signed net change S",
    "substrate_orders.npy": "int [metabolites, reactions]: |s| of each substrate in the rate law, 0 if not one",
    "heldout_concentrations.npy": "optional, float [frames, metabolites]: a trajectory kept for test metrics",
    "heldout_derivatives.npy": "optional, float [frames, metabolites]: its dc/dt (estimated from c if absent)",
    "truth_log_k.npy": "optional (truth), float [reactions]: log10 rate constants",
    "truth_types.npy": "optional (truth), int [metabolites]: type index per metabolite",
    "truth_lambda.npy": "optional (truth), float [types]: homeostasis rate per type",
    "truth_baseline.npy": "optional (truth), float [types]: homeostasis baseline per type",
    "truth_michaelis_K.npy": "optional (truth), one float > 0: K of the substrate law c·(1+K)/(K+c) per edge, inf "
                             "for mass action; without it the substrate-form metrics are left out",
    "truth_homeostasis_width.npy": "optional (truth), one float > 0: w of the homeostasis −λ·w·tanh((c − b)/w), inf "
                                   "for −λ·(c − b); without it the metrics that need the true h are left out",
}
_TRUTH_FILES = ("truth_log_k.npy", "truth_types.npy", "truth_lambda.npy", "truth_baseline.npy")
_FORM_FILES = ("truth_michaelis_K.npy", "truth_homeostasis_width.npy")


def estimate_derivatives(concentrations: np.ndarray, delta_t: float, window: int, polyorder: int) -> np.ndarray:
    """dc/dt from sampled c: the first derivative of a Savitzky–Golay fit (a local polynomial of degree
    polyorder over `window` frames, fitted to the first and last window at the ends).

    Local polynomials, not differences: a least-squares fit averages measurement noise over the window
    while following the curvature a finite difference would blur into a lag, and it needs no smoothing
    parameter beyond the window."""
    return savgol_filter(concentrations, window, polyorder, deriv=1, delta=delta_t, axis=0)


def load_npy_dataset(directory: str | Path, delta_t: float, derivative_window: int = 7,
                     derivative_polyorder: int = 3) -> Dataset:
    """Load user data in the NPY_FORMAT layout; errors name the file and what is wrong with it.
    Missing derivative files are estimated from the concentrations (estimate_derivatives)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: data directory does not exist")

    def read(name: str, ndim: int, required: bool = True) -> np.ndarray | None:
        path = directory / name
        if not path.is_file():
            if required:
                raise DataError(f"{path}: missing ({NPY_FORMAT[name]})")
            return None
        arr = _load_npy(path)
        if arr.ndim != ndim:
            raise DataError(f"{path}: expected {ndim}-D array ({NPY_FORMAT[name]}), got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number):
            raise DataError(f"{path}: expected numbers, got dtype {arr.dtype}")
        bad = ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise DataError(f"{path}: {int(bad.sum())} non-finite values (first at index {first})")
        return arr

    def derivatives(name: str, conc: np.ndarray, conc_name: str, run_starts: tuple[int, ...] = (0,)) -> np.ndarray:
        deriv = read(name, 2, required=False)
        if deriv is None:
            runs = np.split(conc.astype(float), run_starts[1:])
            shortest = min(len(run) for run in runs)
            if shortest < derivative_window:
                raise DataError(f"{directory / name}: missing, and estimating it needs at least "
                                f"simulation.derivative_window = {derivative_window} frames in every run, got "
                                f"{shortest}")
            return np.concatenate([estimate_derivatives(run, delta_t, derivative_window, derivative_polyorder)
                                   for run in runs])
        if deriv.shape != conc.shape:
            raise DataError(f"{directory / name}: shape {deriv.shape} differs from {conc_name} {conc.shape}")
        return deriv

    conc = read("concentrations.npy", 2)
    stoich = read("stoichiometry.npy", 2).astype(float)
    orders = read("substrate_orders.npy", 2)
    n_frames, n_met = conc.shape
    if n_frames < 3:
        raise DataError(f"{directory / 'concentrations.npy'}: needs at least 3 frames, got {n_frames}")
    run_starts = _run_starts(read("run_starts.npy", 1, required=False), n_frames, directory / "run_starts.npy")
    deriv = derivatives("derivatives.npy", conc, "concentrations.npy", run_starts)
    if stoich.shape[0] != n_met:
        raise DataError(f"{directory / 'stoichiometry.npy'}: has {stoich.shape[0]} rows, expected {n_met} "
                        "(one per metabolite column of concentrations.npy)")
    if orders.shape != stoich.shape:
        raise DataError(f"{directory / 'substrate_orders.npy'}: shape {orders.shape} differs from "
                        f"stoichiometry {stoich.shape}")
    if (orders < 0).any() or not np.array_equal(orders, np.round(orders)):
        raise DataError(f"{directory / 'substrate_orders.npy'}: orders must be non-negative integers")
    met, rxn = np.nonzero(orders.T)[::-1]
    order_by_rxn = np.lexsort((met, rxn))
    network = Network(stoich, met[order_by_rxn].astype(np.int64), rxn[order_by_rxn].astype(np.int64),
                      orders[met[order_by_rxn], rxn[order_by_rxn]].astype(np.int64))
    heldout = None
    h_conc = read("heldout_concentrations.npy", 2, required=False)
    if h_conc is not None:
        if h_conc.shape[1] != n_met:
            raise DataError(f"{directory / 'heldout_concentrations.npy'}: must be [frames, {n_met}], "
                            f"got shape {h_conc.shape}")
        h_deriv = derivatives("heldout_derivatives.npy", h_conc, "heldout_concentrations.npy")
        heldout = Trajectory(h_conc.astype(float), h_deriv.astype(float), delta_t)
    present = [name for name in _TRUTH_FILES if (directory / name).is_file()]
    truth = None
    if present:
        if len(present) != len(_TRUTH_FILES):
            missing = sorted(set(_TRUTH_FILES) - set(present))
            raise DataError(f"{directory}: truth files come all together; missing {', '.join(missing)}")
        log_k, types = read("truth_log_k.npy", 1), read("truth_types.npy", 1).astype(np.int64)
        lam, base = read("truth_lambda.npy", 1), read("truth_baseline.npy", 1)
        if log_k.shape[0] != stoich.shape[1] or types.shape[0] != n_met:
            raise DataError(f"{directory}: truth_log_k needs {stoich.shape[1]} values and truth_types {n_met}")
        if types.min() < 0 or types.max() >= lam.shape[0] or base.shape != lam.shape:
            raise DataError(f"{directory}: truth_types must index truth_lambda/truth_baseline "
                            f"({lam.shape[0]} types)")
        truth = Truth(log_k.astype(float), types, lam.astype(float), base.astype(float),
                      *(_read_form(directory / name) for name in _FORM_FILES))
    elif forms := [name for name in _FORM_FILES if (directory / name).is_file()]:
        raise DataError(f"{directory / forms[0]}: a true form needs the other truth files ({', '.join(_TRUTH_FILES)})")
    observed = Observed(network, Trajectory(conc.astype(float), deriv.astype(float), delta_t, run_starts))
    return Dataset(observed, heldout, truth, analyse_identifiability(network), f"npy:{directory}")


def _run_starts(starts: np.ndarray | None, n_frames: int, path: Path) -> tuple[int, ...]:
    """run_starts.npy checked against the frames it splits: (0,) when absent."""
    if starts is None:
        return (0,)
    if not np.array_equal(starts, np.round(starts)) or len(starts) == 0 or starts[0] != 0:
        raise DataError(f"{path}: must be whole frame numbers starting with 0, got {starts.tolist()[:5]}")
    if (np.diff(starts) < 3).any() or n_frames - starts[-1] < 3:
        raise DataError(f"{path}: every run needs at least 3 frames (runs must start in increasing order, and the "
                        f"last before frame {n_frames - 2})")
    return tuple(int(start) for start in starts)


def _load_npy(path: Path) -> np.ndarray:
    # numpy calls any file that is not .npy "pickled data", which would send the user after the wrong fix
    try:
        return np.load(path, allow_pickle=False)
    except ValueError:
        raise DataError(f"{path}: not a whole .npy array (cut short, or not written by numpy.save)") from None
    except OSError as exc:  # unreadable, or cut short
        raise DataError(f"{path}: cannot be read as a .npy array ({exc.strerror or exc})") from None


def _read_form(path: Path) -> float | None:
    """One positive number or inf (the limit form), None when the file is absent."""
    if not path.is_file():
        return None
    arr = _load_npy(path)
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path}: expected one number ({NPY_FORMAT[path.name]}), got shape {arr.shape} "
                        f"of dtype {arr.dtype}")
    value = float(arr.ravel()[0])
    if not value > 0:  # also refuses nan
        raise DataError(f"{path}: must be > 0 (inf for the limit form), got {value}")
    return value


def save_npy_dataset(dataset: Dataset, directory: str | Path) -> None:
    """Write a dataset in the NPY_FORMAT layout (the inverse of load_npy_dataset)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    net, traj = dataset.observed.network, dataset.observed.trajectory
    orders = np.zeros_like(net.stoichiometry, dtype=np.int64)
    orders[net.substrate_metabolite, net.substrate_reaction] = net.substrate_order
    np.save(directory / "concentrations.npy", traj.concentrations)
    np.save(directory / "derivatives.npy", traj.derivatives)
    if traj.n_runs > 1:
        np.save(directory / "run_starts.npy", np.array(traj.run_starts))
    np.save(directory / "stoichiometry.npy", net.stoichiometry)
    np.save(directory / "substrate_orders.npy", orders)
    if dataset.heldout is not None:
        np.save(directory / "heldout_concentrations.npy", dataset.heldout.concentrations)
        np.save(directory / "heldout_derivatives.npy", dataset.heldout.derivatives)
    if dataset.truth is not None:
        np.save(directory / "truth_log_k.npy", dataset.truth.log_k)
        np.save(directory / "truth_types.npy", dataset.truth.types)
        np.save(directory / "truth_lambda.npy", dataset.truth.lambda_per_type)
        np.save(directory / "truth_baseline.npy", dataset.truth.baseline_per_type)
        for name, value in zip(_FORM_FILES, (dataset.truth.michaelis_K, dataset.truth.homeostasis_width), strict=True):
            if value is not None:
                np.save(directory / name, np.float64(value))
