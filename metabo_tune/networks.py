"""Real networks: a cobra model (bundled with cobra, or an SBML / cobra JSON file) turned into our Network.

The rules (docs/config.md, `simulation.network`):
* only internal reactions are kept: cobra's `reaction.boundary` ones (exchange, demand, sink) are dropped, and so
  are biomass reactions: those in the model's objective and those whose id contains "biomass" (any case);
* a reversible reaction becomes a forward and a backward mass-action reaction (the backward one takes the
  products as substrates and the negated column of S);
* substrate orders are the |stoichiometric coefficients|; a non-integer one is rounded to the nearest integer
  (halves up, at least 1) in the rate law, and S keeps the exact coefficient; the rounded reactions are named;
* `simulation.ignore_metabolites` leaves currency metabolites out of S and the rate laws (as if held at 1);
* metabolites that take part in no kept reaction are dropped, and so are reactions left without any metabolite.

The model file is read once per load; `content_digest` keys the dataset cache by the file's bytes, not its path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metabo_tune.config import BUNDLED_MODELS, SimulationConfig
from metabo_tune.simulate import DataError, Network

CONVERTER_VERSION = 1  # part of the cache key: a change of the rules below must change it


@dataclass(frozen=True)
class ModelNetwork:
    """A converted model: the Network, and the names of its rows and columns."""

    network: Network
    metabolite_ids: list[str]
    metabolite_compartments: list[str]
    reaction_ids: list[str]  # the source reaction's id, with "_fwd" / "_rev" for a split reversible one
    rounded_orders: list[str]  # ids of the reactions whose non-integer orders were rounded


def model_path(name: str) -> Path:
    """The file behind `simulation.network`: one of cobra's bundled models, or the user's path."""
    if name in BUNDLED_MODELS:  # found without importing cobra (a second of imports for a cache key)
        spec = importlib.util.find_spec("cobra")
        if spec is None or not spec.submodule_search_locations:
            raise DataError(f"simulation.network {name}: cobra is not installed (pip install cobra)")
        return Path(spec.submodule_search_locations[0]) / "data" / BUNDLED_MODELS[name]
    path = Path(name).expanduser()
    if not path.is_file():
        raise DataError(f"simulation.network {name}: no such file")
    return path


def content_digest(name: str) -> str:
    """sha256 of the model file's bytes: the cache key of a model network."""
    return hashlib.sha256(model_path(name).read_bytes()).hexdigest()


def read_model(name: str):
    """The cobra Model of `simulation.network`; a file cobra cannot read is a one-line DataError."""
    import cobra

    path = model_path(name)
    logging.getLogger("cobra").setLevel(logging.ERROR)  # cobra logs every SBML quirk it repairs
    try:
        if path.name.endswith(".json"):
            return cobra.io.load_json_model(str(path))
        return cobra.io.read_sbml_model(str(path))
    except Exception as exc:  # cobra and libsbml raise many types for a file that is not a model
        kind = "cobra JSON" if path.name.endswith(".json") else "SBML"
        text = str(exc).strip()
        reason = text.splitlines()[0].split(". ")[0] if text else type(exc).__name__
        raise DataError(f"simulation.network {name}: not a readable {kind} model (cobra: {reason[:160]})") from None


def _is_dropped(reaction, objective: set[str]) -> bool:
    return reaction.boundary or reaction.id in objective or "biomass" in reaction.id.lower()


def _bare_id(metabolite) -> str:
    suffix = f"_{metabolite.compartment}"
    return metabolite.id[: -len(suffix)] if metabolite.compartment and metabolite.id.endswith(suffix) else metabolite.id


def _ignored(model, names: list[str], source: str) -> set[str]:
    """Ids of the metabolites `names` select (by id, or by id without compartment suffix)."""
    chosen: set[str] = set()
    for name in names:
        matched = {m.id for m in model.metabolites if name in (m.id, _bare_id(m))}
        if not matched:
            raise DataError(f"simulation.ignore_metabolites: {name!r} matches no metabolite of {source}")
        chosen |= matched
    return chosen


def _order(coefficient: float) -> int:
    return max(1, math.floor(abs(coefficient) + 0.5))


def convert(model, ignore: list[str], source: str) -> ModelNetwork:
    """Apply the module's rules to a cobra Model."""
    objective = {r.id for r in model.reactions if r.objective_coefficient != 0}
    ignored = _ignored(model, ignore, source)
    columns: list[tuple[str, dict[str, float]]] = []  # (id, {metabolite id: signed coefficient})
    for reaction in model.reactions:
        if _is_dropped(reaction, objective):
            continue
        coefficients = {m.id: float(c) for m, c in reaction.metabolites.items() if m.id not in ignored and c != 0}
        if not coefficients:
            continue
        if reaction.reversibility:
            columns += [(f"{reaction.id}_fwd", coefficients),
                        (f"{reaction.id}_rev", {m: -c for m, c in coefficients.items()})]
        elif reaction.lower_bound < 0 and reaction.upper_bound <= 0:  # written backwards: runs products → reactants
            columns.append((reaction.id, {m: -c for m, c in coefficients.items()}))
        else:
            columns.append((reaction.id, coefficients))
    if not columns:
        raise DataError(f"simulation.network {source}: no internal reactions (after dropping exchange, demand, "
                        f"sink and biomass reactions{' and the ignored metabolites' if ignored else ''})")
    used = {m for _, coefficients in columns for m in coefficients}
    metabolites = [m for m in model.metabolites if m.id in used]  # the model's order
    row = {m.id: i for i, m in enumerate(metabolites)}
    stoich = np.zeros((len(metabolites), len(columns)))
    edges: list[tuple[int, int, int]] = []
    rounded: list[str] = []
    for j, (reaction_id, coefficients) in enumerate(columns):
        for met, coefficient in coefficients.items():
            stoich[row[met], j] = coefficient
            if coefficient < 0:
                edges.append((row[met], j, _order(coefficient)))
                if abs(coefficient) != round(abs(coefficient)) and reaction_id not in rounded:
                    rounded.append(reaction_id)
    edges.sort(key=lambda e: (e[1], e[0]))
    met_index, rxn_index, order = (np.array([e[i] for e in edges], dtype=np.int64).reshape(-1) for i in range(3))
    network = Network(stoich, met_index, rxn_index, order)
    return ModelNetwork(network, [m.id for m in metabolites], [m.compartment or "" for m in metabolites],
                        [reaction_id for reaction_id, _ in columns], rounded)


def load_model_network(cfg: SimulationConfig) -> ModelNetwork:
    """`cfg.network` read and converted."""
    return convert(read_model(cfg.network), cfg.ignore_metabolites, cfg.network)


def substrate_degrees(network: Network) -> np.ndarray:
    """[n_metabolites] number of reactions in which each metabolite is a substrate."""
    return np.bincount(network.substrate_metabolite, minlength=network.n_metabolites)


def hub_scaled_log_k(drawn: np.ndarray, network: Network, reference_concentration: float) -> np.ndarray:
    """The hub rule: log10 k_j = drawn_j − log10 max_{i ∈ sub(j)} d_i − Σ_{e ∈ sub(j)} |s_e|·log10 c_ref.

    At the reference concentration c_ref every reaction then runs at 10^drawn_j divided by the substrate degree
    d of its busiest substrate (the number of reactions that consume it), so a hub that feeds a thousand
    reactions is drained at the rate of a metabolite that feeds one, and a high-order reaction (4 h⁺) is not
    c_ref⁴ times faster than a first-order one. Without it explicit Euler at delta_t 0.1 diverges on E. coli
    core in three steps."""
    degree = substrate_degrees(network).astype(float)
    busiest = np.ones(network.n_reactions)
    np.maximum.at(busiest, network.substrate_reaction, degree[network.substrate_metabolite])
    total_order = np.bincount(network.substrate_reaction, weights=network.substrate_order.astype(float),
                              minlength=network.n_reactions)
    return drawn - np.log10(busiest) - total_order * np.log10(reference_concentration)


def compartment_types(model_network: ModelNetwork, n_types: int, source: str) -> np.ndarray:
    """One type per compartment, in order of first appearance; n_types must match their number."""
    names = list(dict.fromkeys(model_network.metabolite_compartments))
    if len(names) != n_types:
        raise DataError(f"simulation.metabolite_types compartment: {source} has {len(names)} compartments "
                        f"({', '.join(names)}), but n_metabolite_types is {n_types}: set it to {len(names)} with "
                        f"as many homeostatic_*_per_type values")
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[c] for c in model_network.metabolite_compartments], dtype=np.int64)
