"""The search-space file: base config, per-trial budget, frozen keys, tunable parameters with their
ranges, the four-slot initial spread, the reward weights, the thresholds, block size and UCB constant.

Pure Python (no Ray, no torch): the tree, the strategies and the searcher read a `SearchSpace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from metabo_tune.config import Config
from metabo_tune.metrics import Thresholds

ParameterKind = Literal["log_float", "float", "int", "bool"]


class SpaceError(ValueError):
    """A search-space file that cannot be used; the message is one line meant for the user."""


@dataclass(frozen=True)
class Parameter:
    """One tunable config value, addressed as 'section.key' (e.g. 'training.learning_rate_node').

    log_float: a positive float moved by multiplicative steps; float / int: moved by additive steps;
    bool: flipped. `low`/`high` bound every value the search may propose (inclusive)."""

    name: str
    kind: ParameterKind
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class RewardWeights:
    rate_constants: float = 0.4
    slopes: float = 0.3
    embeddings: float = 0.3


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

    def base_values(self) -> dict[str, Any]:
        """The base config's value of every tunable parameter, 'section.key' → value."""
        return {name: get_value(self.base, name) for name in self.parameters}

    def config_for(self, values: dict[str, Any], seed: int | None = None) -> Config:
        """The base config with `values` ('section.key' → value) and optionally the training seed set."""
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
