"""The search-space file: base config, per-trial budget, frozen keys, tunable parameters with their
ranges, the four-slot initial spread, the reward weights, the thresholds, block size and UCB constant.

Pure Python (no Ray): the tree, the strategies and the searcher read a `SearchSpace`.

Layout of a search-space file (YAML). `base`, `parameters` and `initial_spread` are required, the rest
falls back to the defaults shown::

    base: {simulation: ..., graph_model: ..., training: ...}   # a full run config, or the path of one
                                                              # (relative to this file): ../configs/x.yaml
    budget: {n_epochs: 1, data_augmentation_loop: 1000}      # per trial, applied onto base.training
    frozen: [simulation, training.freeze_stoichiometry]       # sections or section.key; never tuned
    parameters:                                               # 'section.key' -> {type, low, high}
      training.learning_rate_k: {type: log_float, low: 1.0e-4, high: 1.0e-2}
      training.coeff_MLP_node_L1: {type: float, low: 0.0, high: 10.0}
      training.time_step: {type: int, low: 1, high: 16}
      training.recurrent_training: {type: bool}
    initial_spread:                                           # one entry per parallel slot of the first
      - {}                                                    # batch, changes relative to base ({} = base)
      - {training.learning_rate_node: 5.0e-4}
    reward: {rate_constants: 0.4, slopes: 0.3, embeddings: 0.3}   # all three weights when given
    thresholds: {converged_r2: 0.9, slope_ratio_min: 0.5, slope_ratio_max: 2.0, baseline_rel_tol: 0.1,
                 converged_cluster_acc: 1.0, failed_r2: 0.5, failed_slope_ratio: 0.1}   # any subset
    block_size: 12
    ucb_c: 1.0
    replicates: 2
    fidelity:                                                 # optional: screen new nodes cheaply first
      screen: {training.data_augmentation_loop: 250}          # overrides of a screening trial
      promote_eta: 3                                          # promote the top floor(n/eta) of n screened

Parameter types: `log_float` (a positive float, multiplicative steps), `float` and `int` (additive
steps), `bool` (flipped; no low/high), `choice` (`values: [mlp, linear]`, any config values, null
included, in an order: a step moves to the neighbouring value; no low/high). `low` < `high`, both
inclusive, and both must be valid config values, those of a `requires` parameter with its requirements
on. `requires: section.key` marks a value that matters only while that key is truthy (and in effect
itself): while it is off, a trial's config keeps the base's value, or null for a choice that has null among
its values: a switch the requirement's off value contradicts (`in_effect`). The budget keys
(n_epochs, data_augmentation_loop) and training.seed cannot be parameters: the first fix what a trial
costs, the seed is noise that replicates vary. The base's own value of every parameter must lie in its
range (an error, not a warning): the base is the first trial, and the strategies step from it and keep
every value they propose in range. Every problem
is a `SpaceError` whose one-line message names the file and the key.

With a `fidelity` section every new node is first trained at the screening budget (`screen`: budget keys
no larger than the budget, or declared parameters within their range, as 'section.key'), and a node whose
screen reward ranks in the top floor(n / promote_eta) of the n nodes screened so far (checked at every
screen's completion), or that is classified converged at screen, is promoted once: one trial of the same
config and seed at the full budget (asynchronous successive halving; the searcher applies the rule, the tree
keeps the fidelities apart).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from metabo_tune.config import Config, ConfigError, _number_or_text, config_from_dict, read_yaml
from metabo_tune.labels import Thresholds, classify
from metabo_tune.tree import FULL, SCREEN

ParameterKind = Literal["log_float", "float", "int", "bool", "choice"]


class SpaceError(ValueError):
    """A search-space file that cannot be used; the message is one line meant for the user."""


@dataclass(frozen=True)
class Parameter:
    """One tunable config value, addressed as 'section.key' (e.g. 'training.learning_rate_node').

    log_float: a positive float moved by multiplicative steps; float / int: moved by additive steps;
    bool: flipped; choice: one of `values`, stepping to a neighbour in their order. `low`/`high` bound
    every value the search may propose (inclusive)."""

    name: str
    kind: ParameterKind
    low: float | None = None
    high: float | None = None
    requires: str | None = None  # 'section.key' that must be truthy for this value to matter
    values: tuple[Any, ...] | None = None  # a choice's options, in order


@dataclass(frozen=True)
class RewardWeights:
    rate_constants: float = 0.4
    slopes: float = 0.3
    embeddings: float = 0.3

    def __post_init__(self) -> None:
        for weight in dataclasses.fields(self):
            value = getattr(self, weight.name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{weight.name} must be a finite number >= 0, got {value!r}")
        if self.total == 0:
            raise ValueError("all weights are 0; at least one must be > 0")

    @property
    def total(self) -> float:
        return self.rate_constants + self.slopes + self.embeddings


@dataclass(frozen=True)
class Fidelity:
    """The screening budget: 'section.key' → value overrides of a screen trial, and the promotion rule."""

    screen: dict[str, Any]
    promote_eta: int = 3


@dataclass(frozen=True)
class SearchSpace:
    source: str
    base: Config  # the base config with the budget applied
    frozen: tuple[str, ...]  # 'section' or 'section.key' entries the search must never change
    parameters: dict[str, Parameter]
    initial_spread: tuple[dict[str, Any], ...]  # one dict of 'section.key' → value per slot; {} = base
    reward: RewardWeights = field(default_factory=RewardWeights)
    thresholds: Thresholds = field(default_factory=Thresholds)
    block_size: int = 12
    ucb_c: float = 1.0
    replicates: int = 2  # trials (seeds) a new best needs before it is trusted
    fidelity: Fidelity | None = None  # None: every trial at the full budget

    @property
    def search_fidelity(self) -> str:
        """The fidelity every new node starts at."""
        return FULL if self.fidelity is None else SCREEN

    def base_values(self) -> dict[str, Any]:
        """The base config's value of every tunable parameter, 'section.key' → value."""
        return {name: get_value(self.base, name) for name in self.parameters}

    def in_effect(self, values: dict[str, Any]) -> dict[str, Any]:
        """`values` with every parameter whose requirement is off (its `requires` falsy, or itself not in
        effect) back at the base's value, or at null where it is a choice with null among its values. The
        trainer ignores such a value, and some would contradict the requirement's off value (type_grouping_at
        without the residual fit is an error), so a sampler that draws every parameter at once, or a step that
        switches a requirement off, still gives a valid config. Null is the switch's own off value: a base that
        groups the types (noisy_rank_50) must not keep grouping in a trial that turns the residual fit off."""
        def current(name: str) -> Any:
            return values.get(name, get_value(self.base, name))

        def on(name: str) -> bool:
            parameter = self.parameters.get(name)
            required = None if parameter is None else parameter.requires
            return required is None or (bool(current(required)) and on(required))

        def off(name: str) -> Any:
            parameter = self.parameters.get(name)
            return None if parameter is not None and _is_switch(parameter) else get_value(self.base, name)

        return {name: value if on(name) else off(name) for name, value in values.items()}

    def config_for(self, values: dict[str, Any], seed: int | None = None, fidelity: str = FULL) -> Config:
        """The base config with `values` ('section.key' → value), optionally the training seed set, and
        at screen fidelity the screening overrides on top."""
        values = self.in_effect(self.base_values() | values)
        if fidelity == SCREEN:
            if self.fidelity is None:
                raise ValueError(f"{self.source}: a screen trial needs a fidelity section")
            values = {**values, **self.fidelity.screen}
        raw = self.base.to_dict()
        for name, value in values.items():
            section, key = name.split(".")
            raw[section][key] = value
        if seed is not None:
            raw["training"]["seed"] = seed
        return Config.model_validate(raw)


def get_value(cfg: Config, name: str) -> Any:
    section, key = name.split(".")
    return getattr(getattr(cfg, section), key)


# --------------------------------------------------------------------------------------------
# Loading

_TOP_LEVEL = ("base", "budget", "frozen", "parameters", "initial_spread", "reward", "thresholds", "block_size",
              "ucb_c", "replicates", "fidelity")
_FIDELITY_KEYS = ("screen", "promote_eta")
_REQUIRED = ("base", "parameters", "initial_spread")
_SPEC_KEYS = ("type", "low", "high", "values", "requires")
_KINDS: tuple[str, ...] = typing.get_args(ParameterKind)
_BUDGET_KEYS = ("n_epochs", "data_augmentation_loop")
_NOT_TUNABLE = {
    **{f"training.{key}": "it is the per-trial budget; set it under 'budget'" for key in _BUDGET_KEYS},
    "training.seed": "the search treats the seed as noise (replicates vary it), not as a knob",
}
_SECTIONS: dict[str, type[BaseModel]] = {
    name: info.annotation for name, info in Config.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
}


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space file (layout in the module docstring)."""
    try:
        raw = read_yaml(path)
    except ConfigError as exc:
        raise SpaceError(str(exc)) from None
    src = str(path)
    if not isinstance(raw, dict):
        raise SpaceError(f"{src}: expected a mapping with keys {', '.join(_REQUIRED)}, got {type(raw).__name__}")
    _refuse_run_config(raw, src)
    _check_keys(raw, _TOP_LEVEL, _REQUIRED, src, prefix="", missing=f"required: {', '.join(_REQUIRED)}")

    base = _load_base(raw["base"], raw.get("budget"), src)
    frozen = _load_frozen(raw.get("frozen"), src)
    parameters = _load_parameters(raw["parameters"], base, frozen, src)
    initial_spread = _load_spread(raw["initial_spread"], base, parameters, src)
    return SearchSpace(
        source=src,
        base=base,
        frozen=frozen,
        parameters=parameters,
        initial_spread=initial_spread,
        reward=_load_reward(raw.get("reward"), src),
        thresholds=_load_thresholds(raw.get("thresholds"), src),
        block_size=_integer(raw.get("block_size", 12), src, "block_size", minimum=1),
        ucb_c=_number(raw.get("ucb_c", 1.0), src, "ucb_c", minimum=0.0),
        replicates=_integer(raw.get("replicates", 2), src, "replicates", minimum=1),
        fidelity=_load_fidelity(raw.get("fidelity"), base, frozen, parameters, src),
    )


def _refuse_run_config(raw: dict, src: str) -> None:
    sections = [key for key in raw if key in _SECTIONS]
    if sections and "base" not in raw and "parameters" not in raw:
        raise SpaceError(f"{src}: a run config ({'/'.join(sections)} sections), not a search space: train it with "
                         f"python -m metabo_tune.train, or pass a space from search_spaces/")


def _load_base(raw_base: Any, budget: Any, src: str) -> Config:
    source = f"{src} (base)"
    if isinstance(raw_base, str):  # a run config's path, relative to the space file
        path = Path(src).parent / raw_base
        try:
            raw_base = read_yaml(path)
        except ConfigError as exc:
            raise SpaceError(f"{src}: base: {exc}") from None
        source = f"{src} (base: {path})"
    if not isinstance(raw_base, dict):
        raise SpaceError(f"{src}: base: expected a run config (simulation, graph_model, training) or its path, "
                         f"got {type(raw_base).__name__}")
    try:
        base = config_from_dict(raw_base, source=source)
    except ConfigError as exc:
        raise SpaceError(str(exc)) from None
    if budget is None:
        return base
    if not isinstance(budget, dict):
        raise SpaceError(f"{src}: budget: expected a mapping of {', '.join(_BUDGET_KEYS)}, got {type(budget).__name__}")
    for key in budget:
        if key not in _BUDGET_KEYS:
            raise SpaceError(f"{src}: unknown key 'budget.{key}' ({_hint(str(key), _BUDGET_KEYS)})")
    raw = base.to_dict()
    raw["training"].update(budget)
    try:
        return config_from_dict(raw, source=f"{src} (budget)")
    except ConfigError as exc:
        raise SpaceError(str(exc)) from None


def _load_frozen(entries: Any, src: str) -> tuple[str, ...]:
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise SpaceError(f"{src}: frozen: expected a list of 'section' or 'section.key' entries, "
                         f"got {type(entries).__name__}")
    for entry in entries:
        if not isinstance(entry, str):
            problem = "expected a 'section' or 'section.key' string"
        elif "." in entry:
            problem = _config_key_problem(entry)
        else:
            problem = None if entry in _SECTIONS else f"not a section ({_hint(entry, tuple(_SECTIONS))})"
        if problem:
            raise SpaceError(f"{src}: frozen entry '{entry}': {problem}")
    return tuple(entries)


def _load_parameters(specs: Any, base: Config, frozen: tuple[str, ...], src: str) -> dict[str, Parameter]:
    if not isinstance(specs, dict) or not specs:
        raise SpaceError(f"{src}: parameters: expected a non-empty mapping of 'section.key' → {{type, low, high}}")
    parameters = {}
    for name, spec in specs.items():
        where = f"{src}: parameters.{name}"
        problem = _config_key_problem(str(name)) or _NOT_TUNABLE.get(name)
        if problem:
            raise SpaceError(f"{where}: {problem}")
        for entry in frozen:
            if name == entry or name.startswith(entry + "."):
                raise SpaceError(f"{where}: frozen by the entry '{entry}' under 'frozen'")
        parameters[name] = _parse_spec(name, spec, where)
    for name, parameter in parameters.items():
        _check_domain(parameter, base, _requirements_on(parameter, parameters), _switches_under(name, parameters),
                      f"{src}: parameters.{name}")
    return parameters


def _is_switch(parameter: Parameter) -> bool:
    """A choice with null among its values: null is its off value."""
    return parameter.kind == "choice" and None in parameter.values


def _switches_under(name: str, parameters: dict[str, Parameter]) -> dict[str, None]:
    """The choices with null among their values whose chain of requirements passes through `name`: what
    `SearchSpace.in_effect` switches off while `name` is off."""
    switches: dict[str, None] = {}
    for other in parameters.values():
        required, seen = other.requires, set()
        while required is not None and required not in seen:
            if required == name:
                if _is_switch(other):
                    switches[other.name] = None
                break
            seen.add(required)
            required = parameters[required].requires if required in parameters else None
    return switches


def _requirements_on(parameter: Parameter, parameters: dict[str, Parameter]) -> dict[str, Any]:
    """Values that switch on the chain of requirements of `parameter`, as far as they are parameters: the
    value of a `requires` parameter is checked where it takes effect (the largest value, True, or the last
    truthy choice)."""
    values: dict[str, Any] = {}
    required = parameters.get(parameter.requires) if parameter.requires else None
    while required is not None and required.name not in values:
        if required.kind == "bool":
            values[required.name] = True
        elif required.kind == "choice":
            values[required.name] = next((value for value in reversed(required.values) if value), None)
        else:
            values[required.name] = required.high
        required = parameters.get(required.requires) if required.requires else None
    return values


def _parse_spec(name: str, spec: Any, where: str) -> Parameter:
    if not isinstance(spec, dict):
        raise SpaceError(f"{where}: expected a mapping with keys {', '.join(_SPEC_KEYS)}, got {type(spec).__name__}")
    for key in spec:
        if key not in _SPEC_KEYS:
            raise SpaceError(f"{where}: unknown key '{key}' ({_hint(str(key), _SPEC_KEYS)})")
    requires = spec.get("requires")
    if requires is not None:
        problem = _config_key_problem(requires) if isinstance(requires, str) else "expected 'section.key'"
        if problem:
            raise SpaceError(f"{where}.requires: {problem}")
    kind = spec.get("type")
    if kind not in _KINDS:
        raise SpaceError(f"{where}.type: expected one of {', '.join(_KINDS)}, got {kind!r}")
    if kind == "choice":
        return _parse_choice(name, spec, where, requires)
    if "values" in spec:
        raise SpaceError(f"{where}.values: only a choice parameter has values (a {kind} has low and high)")
    value_type = _field_type(name)
    fits = {"bool": bool, "int": int, "float": float, "log_float": float}[kind]
    if value_type is not fits:
        expected = {bool: "bool", int: "int", float: "log_float or float"}.get(value_type)
        what = f"use type {expected}" if expected else "a word-valued key needs type choice with its values"
        raise SpaceError(f"{where}.type: '{kind}' does not fit this config value ({what})")
    if kind == "bool":
        extra = [key for key in ("low", "high") if key in spec]
        if extra:
            raise SpaceError(f"{where}.{extra[0]}: a bool parameter has no range (only 'type')")
        return Parameter(name, kind, requires=requires)
    for key in ("low", "high"):
        if key not in spec:
            raise SpaceError(f"{where}: '{key}' is missing (a {kind} parameter needs low and high)")
    low = _value(spec["low"], kind, f"{where}.low")
    high = _value(spec["high"], kind, f"{where}.high")
    if kind == "log_float" and low <= 0:
        raise SpaceError(f"{where}.low: a log_float needs low > 0, got {low!r} (use type float for a range from 0)")
    if low >= high:
        raise SpaceError(f"{where}: low ({low!r}) must be < high ({high!r})")
    return Parameter(name, kind, low, high, requires)


def _parse_choice(name: str, spec: dict, where: str, requires: str | None) -> Parameter:
    extra = [key for key in ("low", "high") if key in spec]
    if extra:
        raise SpaceError(f"{where}.{extra[0]}: a choice parameter has no range (give 'values')")
    values = spec.get("values")
    if not isinstance(values, list) or len(values) < 2:
        raise SpaceError(f"{where}.values: expected a list of at least two config values, got {values!r}")
    values = [_number_or_text(value) for value in values]
    if any(isinstance(value, (list, dict)) for value in values):
        raise SpaceError(f"{where}.values: every value must be a single number, bool, word or null, got {values!r}")
    if len({repr(value) for value in values}) < len(values):
        raise SpaceError(f"{where}.values: {values!r} repeats a value")
    return Parameter(name, "choice", requires=requires, values=tuple(values))


def _check_domain(parameter: Parameter, base: Config, requirements_on: dict[str, Any], switches_under: dict[str, None],
                  where: str) -> None:
    """Every bound (both values of a bool, each value of a choice) must give a valid config with its
    requirements on (and, where the bound is off, the switches that require it off), and the base must lie in
    range."""
    if parameter.kind == "bool":
        bounds = [("value", False), ("value", True)]
    elif parameter.kind == "choice":
        bounds = [("value", value) for value in parameter.values]
    else:
        bounds = [("low", parameter.low), ("high", parameter.high)]
    for label, value in bounds:
        problem = _config_problem(base, requirements_on | {parameter.name: value} | ({} if value else switches_under))
        if problem:
            raise SpaceError(f"{where}: {label} {value!r} is not a valid config value ({problem})")
    current = get_value(base, parameter.name)
    if parameter.kind == "choice" and current not in parameter.values:
        raise SpaceError(f"{where}: the base value {current!r} is not one of the values {list(parameter.values)!r}; "
                         f"add it or change base")
    if parameter.kind in ("bool", "choice"):
        return
    if current is None:
        raise SpaceError(f"{where}: the base config leaves it unset; give it a value in "
                         f"[{parameter.low!r}, {parameter.high!r}] under base")
    if not parameter.low <= current <= parameter.high:
        raise SpaceError(f"{where}: the base value {current!r} is outside [{parameter.low!r}, {parameter.high!r}]; "
                         f"widen the range or change base")


def _load_spread(entries: Any, base: Config, parameters: dict[str, Parameter], src: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(entries, list) or not entries:
        raise SpaceError(f"{src}: initial_spread: expected a non-empty list with one mapping per slot ({{}} = base)")
    base_values = {name: get_value(base, name) for name in parameters}
    spread: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        where = f"{src}: initial_spread[{i}]"
        if not isinstance(entry, dict):
            raise SpaceError(f"{where}: expected a mapping of 'section.key' → value ({{}} = base), "
                             f"got {type(entry).__name__}")
        slot = {}
        for name, value in entry.items():
            if name not in parameters:
                known = _config_key_problem(str(name)) is None
                hint = "declare it under 'parameters'" if known else _hint(str(name), tuple(parameters))
                raise SpaceError(f"{where}.{name}: not a declared parameter ({hint})")
            slot[name] = _in_range(value, parameters[name], f"{where}.{name}")
        problem = _config_problem(base, slot)
        if problem:
            raise SpaceError(f"{where}: not a valid config ({problem})")
        for j, earlier in enumerate(spread):
            if {**base_values, **earlier} == {**base_values, **slot}:
                raise SpaceError(f"{where}: gives the same config as initial_spread[{j}]")
        spread.append(slot)
    return tuple(spread)


def _load_fidelity(raw: Any, base: Config, frozen: tuple[str, ...], parameters: dict[str, Parameter],
                   src: str) -> Fidelity | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SpaceError(f"{src}: fidelity: expected a mapping with keys {', '.join(_FIDELITY_KEYS)}, "
                         f"got {type(raw).__name__}")
    _check_keys(raw, _FIDELITY_KEYS, ("screen",), src, prefix="fidelity.", missing="the screening overrides")
    screen = raw["screen"]
    if not isinstance(screen, dict) or not screen:
        raise SpaceError(f"{src}: fidelity.screen: expected a non-empty mapping of 'section.key' → value")
    values = {}
    for name, value in screen.items():
        where = f"{src}: fidelity.screen.{name}"
        problem = _config_key_problem(str(name))
        if problem:
            raise SpaceError(f"{where}: {problem}")
        for entry in frozen:
            if name == entry or name.startswith(entry + "."):
                raise SpaceError(f"{where}: frozen by the entry '{entry}' under 'frozen'")
        if name in parameters:
            values[name] = _in_range(value, parameters[name], where)
            continue
        section, key = name.split(".")
        if section != "training" or key not in _BUDGET_KEYS:
            raise SpaceError(f"{where}: neither a budget key ({', '.join(_BUDGET_KEYS)}) nor a declared parameter")
        value = _value(value, "int" if _field_type(name) is int else "float", where)
        problem = _config_problem(base, {name: value})
        if problem:
            raise SpaceError(f"{where}: {value!r} is not a valid config value ({problem})")
        full = get_value(base, name)
        if value > full:
            raise SpaceError(f"{where}: {value!r} is above the full budget {full!r}; a screen must be cheaper")
        values[name] = value
    if all(value == get_value(base, name) for name, value in values.items()):
        raise SpaceError(f"{src}: fidelity.screen: changes nothing from the full budget and base")
    eta = _integer(raw.get("promote_eta", 3), src, "fidelity.promote_eta", minimum=2)
    return Fidelity(values, eta)


def _load_reward(raw: Any, src: str) -> RewardWeights:
    if raw is None:
        return RewardWeights()
    names = tuple(f.name for f in dataclasses.fields(RewardWeights))
    if not isinstance(raw, dict):
        raise SpaceError(f"{src}: reward: expected a mapping of {', '.join(names)}, got {type(raw).__name__}")
    _check_keys(raw, names, names, src, prefix="reward.", missing=f"give all of {', '.join(names)}")
    try:
        return RewardWeights(**{key: _number(raw[key], src, f"reward.{key}") for key in names})
    except ValueError as exc:
        raise SpaceError(f"{src}: reward: {exc}") from None


def _load_thresholds(raw: Any, src: str) -> Thresholds:
    if raw is None:
        return Thresholds()
    names = tuple(f.name for f in dataclasses.fields(Thresholds))
    if not isinstance(raw, dict):
        raise SpaceError(f"{src}: thresholds: expected a mapping with keys among {', '.join(names)}, "
                         f"got {type(raw).__name__}")
    for key in raw:
        if key not in names:
            raise SpaceError(f"{src}: unknown key 'thresholds.{key}' ({_hint(str(key), names)})")
    thresholds = Thresholds(**{key: _number(value, src, f"thresholds.{key}") for key, value in raw.items()})
    if thresholds.baseline_rel_tol < 0:
        raise SpaceError(f"{src}: thresholds.baseline_rel_tol must be >= 0, got {thresholds.baseline_rel_tol!r}")
    if thresholds.slope_ratio_min >= thresholds.slope_ratio_max:
        raise SpaceError(f"{src}: thresholds.slope_ratio_min ({thresholds.slope_ratio_min!r}) must be < "
                         f"slope_ratio_max ({thresholds.slope_ratio_max!r})")
    return thresholds


# --------------------------------------------------------------------------------------------
# Small validators


def _check_keys(raw: dict, allowed: tuple[str, ...], required: tuple[str, ...], src: str, prefix: str,
                missing: str) -> None:
    for key in raw:
        if key not in allowed:
            raise SpaceError(f"{src}: unknown key '{prefix}{key}' ({_hint(str(key), allowed)})")
    for key in required:
        if key not in raw:
            raise SpaceError(f"{src}: '{prefix}{key}' is missing ({missing})")


def _hint(word: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, allowed, n=1)
    return f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"


def _config_key_problem(name: str) -> str | None:
    """Why `name` is not a 'section.key' of the run config, or None when it is one."""
    section, dot, key = name.partition(".")
    if not dot or section not in _SECTIONS:
        return f"not a 'section.key' of the run config (sections: {', '.join(_SECTIONS)})"
    fields = tuple(_SECTIONS[section].model_fields)
    if key not in fields:
        return f"'{key}' is not a key of section '{section}' ({_hint(key, fields)})"
    return None


def _field_type(name: str) -> type | None:
    """bool, int or float for a scalar config key (an optional one counts as its type), else None."""
    section, key = name.split(".")
    annotation = _SECTIONS[section].model_fields[key].annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        # None and word options (conservation_frames: int | 'all') leave the numeric type to range over.
        options = [_unannotated(arg) for arg in typing.get_args(annotation)
                   if arg is not type(None) and typing.get_origin(arg) is not Literal]
        annotation = options[0] if len(options) == 1 else None
    return annotation if annotation in (bool, int, float) else None


def _unannotated(annotation: Any) -> Any:
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation


def _config_problem(base: Config, values: dict[str, Any]) -> str | None:
    raw = base.to_dict()
    for name, value in values.items():
        section, key = name.split(".")
        raw[section][key] = value
    try:
        with warnings.catch_warnings():  # a config that merely warns is valid here
            warnings.simplefilter("ignore")
            config_from_dict(raw, source="base")
    except ConfigError as exc:
        return str(exc).removeprefix("base: ")
    return None


def _value(value: Any, kind: str, where: str) -> Any:
    """`value` as the Python type of a `kind` parameter; ints pass as floats, 5e-4 (YAML text) as a float."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise SpaceError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise SpaceError(f"{where}: expected an integer, got {value!r}")
        return value
    value = _number_or_text(value)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise SpaceError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _in_range(value: Any, parameter: Parameter, where: str) -> Any:
    if parameter.kind == "choice":
        value = _number_or_text(value)
        if value not in parameter.values:
            raise SpaceError(f"{where}: {value!r} is not one of the parameter's values {list(parameter.values)!r}")
        return value
    value = _value(value, parameter.kind, where)
    if parameter.kind != "bool" and not parameter.low <= value <= parameter.high:
        raise SpaceError(f"{where}: {value!r} is outside the parameter's range [{parameter.low!r}, {parameter.high!r}]")
    return value


def _number(value: Any, src: str, key: str, minimum: float | None = None) -> float:
    number = _value(value, "float", f"{src}: {key}")
    if minimum is not None and number < minimum:
        raise SpaceError(f"{src}: {key}: must be >= {minimum!r}, got {number!r}")
    return number


def _integer(value: Any, src: str, key: str, minimum: int) -> int:
    number = _value(value, "int", f"{src}: {key}")
    if number < minimum:
        raise SpaceError(f"{src}: {key}: must be >= {minimum}, got {number!r}")
    return number


# --------------------------------------------------------------------------------------------
# Reward

_TYPE_RATIO = re.compile(r"MLP_node_slope_ratio_\d+")
_TIERS = {"converged": 3, "partial-k": 2, "partial-homeo": 2, "partial": 1}


def reward_inputs(n_types: int) -> tuple[str, ...]:
    """The metric keys `reward` reads, for a network with `n_types` metabolite types."""
    return ("status", "rate_constants_R2", "avg_slope_ratio", "embedding_cluster_acc",
            *(f"MLP_node_{name}_{t}" for name in ("slope_ratio", "slope_at_zero_ratio", "zero_rel_err")
              for t in range(n_types)))


def reward(metrics: dict[str, Any], weights: RewardWeights, thresholds: Thresholds) -> float:
    """A trial's reward in [0, 1]: converged > partial-k, partial-homeo > partial > failed, strictly by
    class, and within a class by recovery quality.

    * score_k = clip(rate_constants_R2, 0, 1)
    * per type t with ratio r_t = MLP_node_slope_ratio_t: s_t = max(0, 1 − |log2 r_t| / 2) if r_t > 0
      else 0 (1 at the truth, 0.5 at half or double, 0 at a quarter or four times);
      score_slopes = mean of s_t over the types present in the metrics (0 if none)
    * score_emb = clip((embedding_cluster_acc − 1/n_types) / (1 − 1/n_types), 0, 1), n_types = the
      number of MLP_node_slope_ratio_t keys (chance accuracy maps to 0); clip(embedding_cluster_acc, 0, 1)
      when n_types ≤ 1
    * score = (w_k·score_k + w_slopes·score_slopes + w_emb·score_emb) / (w_k + w_slopes + w_emb)
    * tier = 3 converged, 2 partial-k or partial-homeo, 1 partial, 0 failed or unknown
      (metrics.classify with status = metrics["status"], default "completed")
    * reward = (tier + score) / 4; a trial whose status is not "completed" (diverged, error) gets 0.

    A missing, nan or non-numeric input counts as 0.
    """
    status = metrics.get("status", "completed")
    if status != "completed":
        return 0.0
    ratios = [_finite(value) for key, value in metrics.items() if _TYPE_RATIO.fullmatch(key)]
    n_types = len(ratios)
    score_k = _clip(_finite(metrics.get("rate_constants_R2")))
    score_slopes = sum(_slope_score(r) for r in ratios) / n_types if ratios else 0.0
    chance = 1.0 / n_types if n_types > 1 else 0.0
    score_emb = _clip((_finite(metrics.get("embedding_cluster_acc")) - chance) / (1.0 - chance))
    score = (weights.rate_constants * score_k + weights.slopes * score_slopes
             + weights.embeddings * score_emb) / weights.total
    tier = _TIERS.get(classify(metrics, status, thresholds), 0)
    return (tier + score) / 4


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0.0
    return float(value)


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def _slope_score(ratio: float) -> float:
    return max(0.0, 1.0 - abs(math.log2(ratio)) / 2) if ratio > 0 else 0.0
