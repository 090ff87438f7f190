from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from metabo_tune.config import load_config
from metabo_tune.metrics import Thresholds, classify
from metabo_tune.space import Fidelity, RewardWeights, SpaceError, load_space, reward, reward_inputs

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
HOMEO = SPACES / "homeo_rank_50.yaml"
OPEN = SPACES / "homeo_rank_50_open.yaml"
SMOKE = SPACES / "smoke.yaml"
SMALL_JOINT = SPACES / "small_joint.yaml"
NOISY = SPACES / "noisy_rank_50.yaml"
FREE = SPACES / "free_forms.yaml"
E_COLI = SPACES / "e_coli_core_smoke.yaml"
Mutation = Callable[[dict], object]


# --------------------------------------------------------------------------------------------
# The shipped files


@pytest.mark.parametrize("path", [HOMEO, OPEN, SMOKE, SMALL_JOINT, NOISY, FREE, E_COLI],
                         ids=["homeo", "open", "smoke", "small_joint", "noisy", "free_forms", "e_coli_core_smoke"])
def test_shipped_spaces_load_with_the_budget_applied_and_the_spread_in_range(path: Path) -> None:
    space = load_space(path)
    assert space.base.training.n_epochs == 1
    assert space.initial_spread[0] == {}
    assert len(space.initial_spread) == (5 if path == FREE else 4)  # free_forms: its fifth, the form-free warm start
    for slot in space.initial_spread:
        for name, value in slot.items():
            parameter = space.parameters[name]
            if parameter.kind == "choice":
                assert value in parameter.values
                continue
            assert type(value) is type(space.base_values()[name])
            if parameter.kind != "bool":
                assert parameter.low <= value <= parameter.high
        space.config_for(slot)
    for name in ("training.seed", "training.n_epochs", "training.data_augmentation_loop"):
        assert name not in space.parameters


def test_homeo_space_is_the_mission() -> None:
    space = load_space(HOMEO)
    assert space.base.training.iterations_per_epoch(space.base.simulation.n_frames) == 72_000
    values = space.base_values()
    assert {key: values[f"training.{key}"] for key in (
        "learning_rate_k", "learning_rate_embedding", "learning_rate_node", "learning_rate_sub",
        "coeff_MLP_node_L1", "coeff_MLP_sub_norm", "coeff_MLP_sub_diff", "coeff_k_floor", "k_floor_threshold",
        "batch_size")} == {
        "learning_rate_k": 5e-3, "learning_rate_embedding": 1e-4, "learning_rate_node": 1e-4,
        "learning_rate_sub": 5e-3, "coeff_MLP_node_L1": 1.0, "coeff_MLP_sub_norm": 1.0,
        "coeff_MLP_sub_diff": 6.0, "coeff_k_floor": 1.0, "k_floor_threshold": -2.0, "batch_size": 8}
    assert {key: values[f"graph_model.{key}"] for key in (
        "hidden_dim_sub", "n_layers_sub", "hidden_dim_node", "n_layers_node")} == {
        "hidden_dim_sub": 64, "n_layers_sub": 4, "hidden_dim_node": 32, "n_layers_node": 2}
    linear_head = {"graph_model.homeostasis_head": "linear", "training.detach_homeostasis": True,
                   "training.coeff_conservation": 1e4, "training.conservation_frames": "all",
                   "training.coeff_MLP_node_L1": 0.0, "training.learning_rate_node": 1e-3,
                   "training.learning_rate_embedding": 1e-3, "training.lr_schedule": "cosine"}
    residual_restart = linear_head | {"training.coeff_residual_fit": 1e4, "training.residual_fit_start": 0.9,
                                      "training.residual_fit_learning_rate": 1e-4}
    assert space.initial_spread[1:] == (
        linear_head,
        residual_restart,
        residual_restart | {"graph_model.substrate_form": "power", "training.log_k_init_max": -1.0,
                            "training.learning_rate_sub": 2e-3, "training.learning_rate_k": 2e-3,
                            "training.residual_fit_learning_rate": 1e-3, "training.coeff_residual_fusion": 1e-2,
                            "training.residual_fusion_neighbours": 25})
    assert "simulation" in space.frozen
    assert space.parameters["graph_model.homeostasis_head"].values == ("mlp", "linear")
    assert space.parameters["training.time_step"].high == 4
    assert (space.block_size, space.ucb_c, space.replicates) == (12, 0.25, 2)
    assert space.reward == RewardWeights(0.4, 0.3, 0.3)
    assert space.thresholds == Thresholds()


# Each structural choice with the keys that are documented to go with it (README, Results): a slot of
# the open spread may make one of these choices and change nothing but its companions.
STRUCTURAL_COMPANIONS = {
    "graph_model.homeostasis_head": {"training.detach_homeostasis", "training.coeff_conservation",
                                     "training.conservation_frames", "training.coeff_MLP_node_L1",
                                     "training.learning_rate_node", "training.learning_rate_embedding",
                                     "training.lr_schedule"},
    "graph_model.substrate_form": {"training.log_k_init_max"},
    "training.lr_schedule": set(),
    "training.coeff_conservation": {"training.conservation_frames", "training.detach_homeostasis"},
    "training.coeff_residual_fit": {"training.residual_fit_start", "training.residual_fit_learning_rate"},
    "training.coeff_residual_fusion": {"training.residual_fusion_neighbours"},
    "training.coeff_embedding_fusion": set(),
    "training.recurrent_training": {"training.time_step"},
}


def test_open_space_is_the_mission_space_with_another_spread() -> None:
    mission, open_space = load_space(HOMEO), load_space(OPEN)
    assert mission.fidelity is None  # the planted mission trains every trial at the full budget
    assert open_space.fidelity == Fidelity({"training.data_augmentation_loop": 250.0}, promote_eta=3)
    assert open_space.base == mission.base  # the network, the data and the budget (applied onto base)
    assert yaml.safe_load(OPEN.read_text())["budget"] == yaml.safe_load(HOMEO.read_text())["budget"]
    assert open_space.parameters == mission.parameters
    assert (open_space.frozen, open_space.reward, open_space.thresholds) == \
        (mission.frozen, mission.reward, mission.thresholds)
    assert (open_space.block_size, open_space.ucb_c, open_space.replicates) == \
        (mission.block_size, mission.ucb_c, mission.replicates)
    answer = mission.initial_spread[3]
    assert set(answer) <= set(open_space.parameters)  # every knob of the answer can be found
    base = open_space.base_values()
    # the residual fit's companions: documented defaults, in effect only once a trial switches the fit on
    assert base["training.coeff_residual_fit"] == 0
    assert (base["training.residual_fit_start"], base["training.residual_fit_learning_rate"]) == (0.9, 1e-3)
    assert len(open_space.initial_spread) == 4 and open_space.initial_spread[0] == {}
    for slot in open_space.initial_spread:
        config = base | slot
        assert not all(config[name] == value for name, value in answer.items()), slot
        changed = {name for name, value in slot.items() if value != base[name]}
        assert not changed or any(changed - {choice} <= STRUCTURAL_COMPANIONS[choice]
                                  for choice in changed & set(STRUCTURAL_COMPANIONS)), slot


def test_free_form_space_learns_both_forms_from_iter_116_with_nothing_of_the_free_form_config() -> None:
    space, iter_116 = load_space(FREE), load_space(OPEN).base_values()
    model, sim = space.base.graph_model, space.base.simulation
    assert (model.homeostasis_head, model.substrate_form) == ("mlp", "mlp")
    assert {"graph_model.homeostasis_head", "graph_model.substrate_form", "simulation"} <= set(space.frozen)
    assert (sim.substrate_kinetics, sim.homeostasis_form, sim.n_runs) == ("michaelis_menten", "saturating", 3)
    assert space.fidelity is not None and space.base.total_iterations() == 72_000
    priors = {"graph_model.substrate_zero", "training.coeff_MLP_sub_diff", "training.coeff_MLP_node_restoring",
              "training.sub_norm_target", "training.coeff_k_floor"}
    assert priors <= set(space.parameters)
    base = space.base_values()
    # the open space's residual-fit companions are not iter_116's
    companions = {"training.residual_fit_start", "training.residual_fit_learning_rate"}
    assert {name: base[name] for name in set(iter_116) & set(base) - companions} == \
        {name: iter_116[name] for name in set(iter_116) & set(base) - companions}
    answer = {"training.type_grouping_at", "training.coeff_residual_fit", "training.coeff_residual_fusion",
              "training.lr_schedule", "training.group_solve_moves"}
    assert base["training.group_solve_moves"] is None
    for slot in space.initial_spread:
        assert not answer & set(slot), slot


@pytest.mark.parametrize("path", [OPEN, FREE], ids=["open", "free_forms"])
def test_every_draw_of_a_space_is_a_valid_config(path: Path) -> None:
    """What random search and TPE do: every parameter drawn at once, requirements on or off."""
    space, rng = load_space(path), random.Random(0)

    def draw(parameter):
        if parameter.kind == "bool":
            return rng.random() < 0.5
        if parameter.kind == "choice":
            return rng.choice(parameter.values)
        if parameter.kind == "int":
            return rng.randint(int(parameter.low), int(parameter.high))
        if parameter.kind == "log_float":
            return math.exp(rng.uniform(math.log(parameter.low), math.log(parameter.high)))
        return rng.uniform(parameter.low, parameter.high)

    for _ in range(300):
        space.config_for({name: draw(parameter) for name, parameter in space.parameters.items()})


def test_a_base_given_as_a_path_is_that_run_config_with_the_budget_applied(tmp_path: Path) -> None:
    space = load_space(E_COLI)
    shipped = load_config(SPACES.parent / "configs" / "e_coli_core.yaml").to_dict()
    shipped["training"]["data_augmentation_loop"] = 25
    assert space.base.to_dict() == shipped and space.base.total_iterations() == 1800
    raw = yaml.safe_load(E_COLI.read_text()) | {"base": "no_such_config.yaml"}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpaceError, match=r"space.yaml: base: .*no_such_config.yaml: no such config file"):
        load_space(path)


def test_smoke_space_is_small() -> None:
    space = load_space(SMOKE)
    assert space.base.training.iterations_per_epoch(space.base.simulation.n_frames) == 75
    assert space.base.simulation.n_metabolites == 20
    assert space.block_size == 4
    assert space.initial_spread[3]["training.time_step"] == 2


def test_small_joint_space_is_the_learning_tests_network_at_10000_iterations() -> None:
    space = load_space(SMALL_JOINT)
    sim = space.base.simulation
    assert (sim.n_metabolites, sim.n_reactions, sim.n_frames) == (30, 45, 1000)
    assert space.base.training.iterations_per_epoch(sim.n_frames) == 10_000
    assert space.base.graph_model.homeostasis_head == "mlp" and space.base.training.coeff_conservation == 0


def test_config_for_applies_values_and_seed() -> None:
    space = load_space(SMOKE)
    cfg = space.config_for({"training.learning_rate_node": 5e-4, "training.recurrent_training": True}, seed=3)
    assert cfg.training.learning_rate_node == 5e-4
    assert cfg.training.recurrent_training is True
    assert cfg.training.seed == 3
    assert cfg.training.data_augmentation_loop == 10
    assert space.config_for({}).training.seed == space.base.training.seed
    assert space.base.training.learning_rate_node == 1e-4


def test_a_value_whose_requirement_is_off_takes_the_base_value_down_the_chain() -> None:
    space = load_space(OPEN)  # attach_homeostasis_fraction requires detach_homeostasis requires coeff_conservation
    base = space.base.training
    drawn = {"training.coeff_conservation": 0.0, "training.detach_homeostasis": True,
             "training.attach_homeostasis_fraction": 0.7, "training.learning_rate_k": 2e-3}
    off = space.config_for(drawn).training
    assert (off.detach_homeostasis, off.attach_homeostasis_fraction) == (base.detach_homeostasis,
                                                                         base.attach_homeostasis_fraction)
    assert off.learning_rate_k == 2e-3
    on = space.config_for(drawn | {"training.coeff_conservation": 1e3}).training
    assert (on.detach_homeostasis, on.attach_homeostasis_fraction) == (True, 0.7)
    assert space.in_effect({"training.time_step": 3}) == {"training.time_step": base.time_step}
    assert space.in_effect({"training.time_step": 3, "training.recurrent_training": True})["training.time_step"] == 3


def test_a_switch_whose_requirement_is_off_is_switched_off_not_kept_at_the_base() -> None:
    """noisy_rank_50's base groups the types, which needs the residual fit: a trial that draws the fit off
    gets the grouping off (its null), not the base's 0.95, which the config would refuse."""
    space = load_space(NOISY)
    assert space.base.training.type_grouping_at == 0.95
    off = space.config_for({"training.coeff_residual_fit": 0.0}).training
    assert (off.coeff_residual_fit, off.type_grouping_at) == (0.0, None)
    assert off.residual_fit_start == space.base.training.residual_fit_start  # not a switch: the base's value
    on = space.config_for({"training.coeff_residual_fit": 10.0, "training.type_grouping_at": 0.98}).training
    assert on.type_grouping_at == 0.98


def test_budget_overrides_the_base(tmp_path: Path) -> None:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["budget"] = {"data_augmentation_loop": 20}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    space = load_space(path)
    assert space.base.training.data_augmentation_loop == 20
    assert space.base.training.iterations_per_epoch(300) == 150


def test_a_fidelity_section_screens_with_its_overrides(tmp_path: Path) -> None:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["fidelity"] = {"screen": {"training.data_augmentation_loop": 5, "training.learning_rate_node": "1e-3"}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    space = load_space(path)
    assert space.fidelity == Fidelity({"training.data_augmentation_loop": 5.0, "training.learning_rate_node": 1e-3},
                                      promote_eta=3)  # values as config values; eta defaults to 3
    assert space.search_fidelity == "screen" and load_space(SMOKE).search_fidelity == "full"
    screen = space.config_for({"training.learning_rate_k": 2e-3}, seed=4, fidelity="screen")
    assert (screen.training.data_augmentation_loop, screen.training.learning_rate_node) == (5.0, 1e-3)
    assert (screen.training.learning_rate_k, screen.training.seed) == (2e-3, 4)
    assert space.config_for({}).training.data_augmentation_loop == 10
    with pytest.raises(ValueError, match="needs a fidelity section"):
        load_space(SMOKE).config_for({}, fidelity="screen")


def test_yaml_text_numbers_and_integers_become_floats(tmp_path: Path) -> None:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["parameters"]["training.learning_rate_k"] = {"type": "log_float", "low": "1e-4", "high": "1e-2"}
    raw["initial_spread"][2] = {"training.coeff_MLP_node_L1": 2}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    space = load_space(path)
    assert space.parameters["training.learning_rate_k"].low == 1e-4
    assert space.initial_spread[2] == {"training.coeff_MLP_node_L1": 2.0}
    assert isinstance(space.initial_spread[2]["training.coeff_MLP_node_L1"], float)


# --------------------------------------------------------------------------------------------
# Invalid files: one case per rule, each a one-line SpaceError naming the file and the key


def _set_param(name: str, spec: dict) -> Mutation:
    def mutate(raw: dict) -> None:
        raw["parameters"][name] = spec
    return mutate


def _set(key: str, value: object) -> Mutation:
    def mutate(raw: dict) -> None:
        raw[key] = value
    return mutate


def _set_slot(index: int, slot: dict) -> Mutation:
    def mutate(raw: dict) -> None:
        raw["initial_spread"][index] = slot
    return mutate


def _set_base(section: str, key: str, value: object) -> Mutation:
    def mutate(raw: dict) -> None:
        raw["base"][section][key] = value
    return mutate


INVALID = {
    "unknown top-level key": (_set("parameter", {}), ["'parameter'", "did you mean 'parameters'"]),
    "missing required key": (lambda raw: raw.pop("initial_spread"), ["'initial_spread' is missing"]),
    "unknown spec key": (_set_param("training.coeff_MLP_node_L1", {"type": "float", "low": 0.0, "hgh": 1.0}),
                         ["parameters.training.coeff_MLP_node_L1", "'hgh'", "did you mean 'high'"]),
    "unknown type": (_set_param("training.coeff_MLP_node_L1", {"type": "real", "low": 0.0, "high": 1.0}),
                     ["parameters.training.coeff_MLP_node_L1.type", "log_float"]),
    "no section": (_set_param("learning_rate_k", {"type": "log_float", "low": 1e-4, "high": 1e-2}),
                   ["parameters.learning_rate_k", "section.key"]),
    "unknown config key": (_set_param("training.learning_rate_kk", {"type": "log_float", "low": 1e-4, "high": 1e-2}),
                           ["parameters.training.learning_rate_kk", "did you mean 'learning_rate_k'"]),
    "frozen key": (_set_param("training.coeff_S_L1", {"type": "float", "low": 0.0, "high": 1.0}),
                   ["parameters.training.coeff_S_L1", "frozen", "'training.coeff_S_L1'"]),
    "key in a frozen section": (_set_param("simulation.n_frames", {"type": "int", "low": 100, "high": 300}),
                                ["parameters.simulation.n_frames", "frozen", "'simulation'"]),
    "budget key as parameter": (_set_param("training.data_augmentation_loop",
                                           {"type": "float", "low": 1.0, "high": 20.0}),
                                ["parameters.training.data_augmentation_loop", "budget"]),
    "seed as parameter": (_set_param("training.seed", {"type": "int", "low": 0, "high": 9}),
                          ["parameters.training.seed", "noise"]),
    "frozen entry not a key": (_set("frozen", ["simulation", "training.coeff_S_LL1"]),
                               ["frozen entry 'training.coeff_S_LL1'", "did you mean 'coeff_S_L1'"]),
    "frozen entry not a section": (_set("frozen", ["simulations"]),
                                   ["frozen entry 'simulations'", "did you mean 'simulation'"]),
    "high outside the domain": (_set_param("training.time_step", {"type": "int", "low": 1, "high": 100}),
                                ["parameters.training.time_step", "high 100", "less than or equal to 64"]),
    "low outside the domain": (_set_param("training.coeff_MLP_sub_norm", {"type": "float", "low": -1.0, "high": 1.0}),
                               ["parameters.training.coeff_MLP_sub_norm", "low -1.0"]),
    "low above high": (_set_param("training.coeff_MLP_node_L1", {"type": "float", "low": 5.0, "high": 1.0}),
                       ["parameters.training.coeff_MLP_node_L1", "must be < high"]),
    "log_float from 0": (_set_param("training.coeff_conservation", {"type": "log_float", "low": 0.0, "high": 1e5}),
                         ["parameters.training.coeff_conservation.low", "low > 0"]),
    "bool with a range": (_set_param("training.recurrent_training", {"type": "bool", "low": 0, "high": 1}),
                          ["parameters.training.recurrent_training.low", "no range"]),
    "requires an unknown key": (_set_param("training.time_step", {"type": "int", "low": 1, "high": 4,
                                                                  "requires": "training.recurent_training"}),
                                ["parameters.training.time_step.requires", "did you mean 'recurrent_training'"]),
    "missing high": (_set_param("training.coeff_MLP_node_L1", {"type": "float", "low": 0.0}),
                     ["parameters.training.coeff_MLP_node_L1", "'high' is missing"]),
    "float bound for int": (_set_param("training.time_step", {"type": "int", "low": 1, "high": 4.5}),
                            ["parameters.training.time_step.high", "integer"]),
    "type does not fit the key": (_set_param("training.learning_rate_k", {"type": "int", "low": 1, "high": 2}),
                                  ["parameters.training.learning_rate_k.type", "log_float or float"]),
    "text key": (_set_param("training.lr_schedule", {"type": "bool"}),
                 ["parameters.training.lr_schedule.type", "type choice"]),
    "choice without values": (_set_param("graph_model.homeostasis_head", {"type": "choice"}),
                              ["parameters.graph_model.homeostasis_head.values", "at least two"]),
    "choice with a range": (_set_param("graph_model.homeostasis_head", {"type": "choice", "values": ["mlp", "linear"],
                                                                        "low": 0}),
                            ["parameters.graph_model.homeostasis_head.low", "no range"]),
    "choice value not a config value": (_set_param("graph_model.homeostasis_head",
                                                   {"type": "choice", "values": ["mlp", "quadratic"]}),
                                        ["parameters.graph_model.homeostasis_head", "value 'quadratic'"]),
    "choice repeats a value": (_set_param("graph_model.homeostasis_head",
                                          {"type": "choice", "values": ["mlp", "linear", "mlp"]}),
                               ["parameters.graph_model.homeostasis_head.values", "repeats"]),
    "choice without the base value": (_set_param("training.conservation_frames",
                                                 {"type": "choice", "values": [128, "all"]}),
                                      ["parameters.training.conservation_frames", "base value 64", "not one of"]),
    "values on a float": (_set_param("training.coeff_MLP_node_L1", {"type": "float", "low": 0.0, "high": 1.0,
                                                                    "values": [0.0, 1.0]}),
                          ["parameters.training.coeff_MLP_node_L1.values", "only a choice"]),
    "base value outside the range": (_set_param("training.coeff_MLP_node_L1",
                                                {"type": "float", "low": 2.0, "high": 5.0}),
                                     ["parameters.training.coeff_MLP_node_L1", "base value 1.0", "outside"]),
    "base value unset": (lambda raw: raw["base"]["training"].pop("learning_rate_embedding"),
                         ["parameters.training.learning_rate_embedding", "unset"]),
    "spread out of range": (_set_slot(1, {"training.learning_rate_node": 5e-3}),
                            ["initial_spread[1].training.learning_rate_node", "outside"]),
    "spread key not a parameter": (_set_slot(1, {"training.batch_size": 16}),
                                   ["initial_spread[1].training.batch_size", "not a declared parameter"]),
    "spread float for int": (_set_slot(3, {"training.recurrent_training": True, "training.time_step": 2.0}),
                             ["initial_spread[3].training.time_step", "integer"]),
    "spread number for bool": (_set_slot(3, {"training.recurrent_training": 1}),
                               ["initial_spread[3].training.recurrent_training", "true or false"]),
    "spread text for float": (_set_slot(1, {"training.learning_rate_node": "fast"}),
                              ["initial_spread[1].training.learning_rate_node", "number"]),
    "spread entry not a mapping": (_set_slot(1, ["training.learning_rate_node"]), ["initial_spread[1]", "mapping"]),
    "empty spread": (_set("initial_spread", []), ["initial_spread", "non-empty"]),
    "duplicate spread": (_set_slot(2, {"training.learning_rate_node": 5e-4}),
                         ["initial_spread[2]", "same config as initial_spread[1]"]),
    "spread equal to base": (_set_slot(2, {"training.learning_rate_node": 1e-4}),
                             ["initial_spread[2]", "same config as initial_spread[0]"]),
    "bad base": (_set_base("training", "learning_rate_kk", 1e-3),
                 ["(base)", "'training.learning_rate_kk'", "did you mean 'learning_rate_k'"]),
    "bad base value": (_set_base("training", "batch_size", 0), ["(base)", "training.batch_size"]),
    "base not a mapping": (_set("base", 3), ["base", "int"]),
    "unknown budget key": (_set("budget", {"n_epoch": 1}), ["'budget.n_epoch'", "did you mean 'n_epochs'"]),
    "bad budget value": (_set("budget", {"n_epochs": 0}), ["(budget)", "training.n_epochs"]),
    "negative reward weight": (_set("reward", {"rate_constants": 1.0, "slopes": -0.1, "embeddings": 0.0}),
                               ["reward", "slopes", ">= 0"]),
    "all-zero reward": (_set("reward", {"rate_constants": 0, "slopes": 0, "embeddings": 0}),
                        ["reward", "all weights are 0"]),
    "partial reward": (_set("reward", {"rate_constants": 1.0}), ["'reward.slopes' is missing"]),
    "unknown reward key": (_set("reward", {"rate_constant": 1.0, "slopes": 0, "embeddings": 0}),
                           ["'reward.rate_constant'", "did you mean 'rate_constants'"]),
    "unknown threshold": (_set("thresholds", {"converged_R2": 0.8}),
                          ["'thresholds.converged_R2'", "did you mean 'converged_r2'"]),
    "threshold order": (_set("thresholds", {"slope_ratio_min": 3.0}), ["thresholds.slope_ratio_min", "< "]),
    "negative baseline tolerance": (_set("thresholds", {"baseline_rel_tol": -0.1}),
                                    ["thresholds.baseline_rel_tol", ">= 0"]),
    "block_size 0": (_set("block_size", 0), ["block_size", ">= 1"]),
    "block_size not an integer": (_set("block_size", 2.5), ["block_size", "integer"]),
    "negative ucb_c": (_set("ucb_c", -0.5), ["ucb_c", ">= 0"]),
    "replicates 0": (_set("replicates", 0), ["replicates", ">= 1"]),
    "screen key frozen": (_set("fidelity", {"screen": {"training.coeff_S_L1": 0.0}}),
                          ["fidelity.screen.training.coeff_S_L1", "frozen by the entry 'training.coeff_S_L1'"]),
    "screen key in a frozen section": (_set("fidelity", {"screen": {"simulation.n_frames": 100}}),
                                       ["fidelity.screen.simulation.n_frames", "frozen by the entry 'simulation'"]),
    "screen budget above the budget": (_set("fidelity", {"screen": {"training.data_augmentation_loop": 20}}),
                                       ["fidelity.screen.training.data_augmentation_loop", "above the full budget"]),
    "screen budget not a valid value": (_set("fidelity", {"screen": {"training.n_epochs": 0}}),
                                        ["fidelity.screen.training.n_epochs", "not a valid config value"]),
    "screen key neither budget nor parameter": (_set("fidelity", {"screen": {"training.seed": 1}}),
                                                ["fidelity.screen.training.seed", "neither a budget key"]),
    "screen value out of range": (_set("fidelity", {"screen": {"training.learning_rate_k": 1.0}}),
                                  ["fidelity.screen.training.learning_rate_k", "outside"]),
    "unknown screen key": (_set("fidelity", {"screen": {"training.data_augmentation_lop": 5}}),
                           ["fidelity.screen.training.data_augmentation_lop", "did you mean 'data_augmentation_loop'"]),
    "screen that changes nothing": (_set("fidelity", {"screen": {"training.data_augmentation_loop": 10}}),
                                    ["fidelity.screen", "changes nothing"]),
    "empty screen": (_set("fidelity", {"screen": {}}), ["fidelity.screen", "non-empty"]),
    "fidelity without screen": (_set("fidelity", {"promote_eta": 3}), ["'fidelity.screen' is missing"]),
    "unknown fidelity key": (_set("fidelity", {"screen": {"training.data_augmentation_loop": 5}, "promote_et": 3}),
                             ["'fidelity.promote_et'", "did you mean 'promote_eta'"]),
    "promote_eta 1": (_set("fidelity", {"screen": {"training.data_augmentation_loop": 5}, "promote_eta": 1}),
                      ["fidelity.promote_eta", ">= 2"]),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_space_is_one_line_naming_file_and_key(tmp_path: Path, case: str) -> None:
    mutate, fragments = INVALID[case]
    raw = copy.deepcopy(yaml.safe_load(SMOKE.read_text()))
    mutate(raw)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message, message


def test_thresholds_from_the_file_reach_the_label(tmp_path: Path) -> None:
    raw = copy.deepcopy(yaml.safe_load(SMOKE.read_text()))
    raw["thresholds"] = {"baseline_rel_tol": 0.25, "slope_ratio_max": 3.0}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    thresholds = load_space(path).thresholds
    assert thresholds == Thresholds(baseline_rel_tol=0.25, slope_ratio_max=3.0)
    off = _metrics(0.95, [2.5, 1.0], 1.0, zero_errors=[0.2, 0.0])
    assert (classify(off, "completed", thresholds), classify(off, "completed", TH)) == ("converged", "partial-k")


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="no such config file"):
        load_space(tmp_path / "nope.yaml")
    path = tmp_path / "broken.yaml"
    path.write_text("base: [1, 2\n")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(path)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(SpaceError, match="expected a mapping"):
        load_space(path)


def test_a_run_config_given_as_a_space_is_named_as_one(tmp_path: Path) -> None:
    tiny = tmp_path / "run.yaml"
    tiny.write_text(yaml.safe_dump({"training": {"n_epochs": 1}, "graph_model": {"hidden_dim_sub": 16}}))
    for path in (SPACES.parent / "configs" / "joint_recovery.yaml", tiny):
        with pytest.raises(SpaceError) as info:
            load_space(path)
        message = str(info.value)
        assert message.startswith(f"{path}: a run config (") and "\n" not in message
        assert "not a search space" in message and "metabo_tune.train" in message and "unknown key" not in message


def test_reward_weights_validate_themselves() -> None:
    with pytest.raises(ValueError, match="embeddings"):
        RewardWeights(1.0, 0.0, math.nan)
    assert RewardWeights(2.0, 0.0, 0.0).total == 2.0


# --------------------------------------------------------------------------------------------
# Reward

WEIGHTS = RewardWeights()
TH = Thresholds()


def _metrics(r2: float, ratios: list[float], acc: float, status: str = "completed",
             zero_errors: list[float] | None = None) -> dict:
    """A linear head's metrics: its slope at the zero is its line-fit slope; zeros exact unless given."""
    metrics = {"status": status, "rate_constants_R2": r2, "avg_slope_ratio": sum(ratios) / len(ratios),
               "embedding_cluster_acc": acc}
    metrics.update({f"MLP_node_slope_ratio_{t}": r for t, r in enumerate(ratios)})
    metrics.update({f"MLP_node_slope_at_zero_ratio_{t}": r for t, r in enumerate(ratios)})
    metrics.update({f"MLP_node_zero_rel_err_{t}": e for t, e in enumerate(zero_errors or [0.0] * len(ratios))})
    return metrics


def test_reward_hand_checked_values() -> None:
    assert reward(_metrics(1.0, [1.0, 1.0], 1.0), WEIGHTS, TH) == pytest.approx(1.0)
    # converged: score = 0.4·0.91 + 0.3·(0.5 + 0.5)/2 + 0.3·1 = 0.814; (3 + 0.814)/4
    assert reward(_metrics(0.91, [0.5, 2.0], 1.0), WEIGHTS, TH) == pytest.approx(3.814 / 4)
    # partial-k (avg ratio 0.375): slopes (0 + 0.5)/2 = 0.25, embeddings (0.75 − 0.5)/0.5 = 0.5,
    # score = 0.4·0.95 + 0.3·0.25 + 0.3·0.5 = 0.605; (2 + 0.605)/4
    partial_k = _metrics(0.95, [0.25, 0.5], 0.75)
    assert classify(partial_k, "completed", TH) == "partial-k"
    assert reward(partial_k, WEIGHTS, TH) == pytest.approx(2.605 / 4)
    # partial-homeo: R² 0.7, ratios 1/1, acc 0.5 (chance → 0): score = 0.28 + 0.3 = 0.58
    assert reward(_metrics(0.7, [1.0, 1.0], 0.5), WEIGHTS, TH) == pytest.approx(2.58 / 4)
    # partial: R² 0.6, ratios 4/0.25 (avg 2.125, s = 0), acc 0.4 (below chance → 0): score = 0.24
    assert reward(_metrics(0.6, [4.0, 0.25], 0.4), WEIGHTS, TH) == pytest.approx(1.24 / 4)
    # failed (R² < 0.5) keeps its recovery score: 0.4·0.3 + 0.3 + 0.3 = 0.72
    assert reward(_metrics(0.3, [1.0, 1.0], 1.0), WEIGHTS, TH) == pytest.approx(0.72 / 4)
    # only k weighted: failed with R² −0.2 and negative slope ratios scores 0
    assert reward(_metrics(-0.2, [-1.0, -0.5], 0.5), RewardWeights(2.0, 0.0, 0.0), TH) == 0.0
    assert reward(_metrics(0.8, [1.0, 1.0], 1.0), RewardWeights(2.0, 0.0, 0.0), TH) == pytest.approx(2.8 / 4)
    # a zero 20 % off on one type: partial-k, same score (0.4·0.95 + 0.3 + 0.3 = 0.98); (2 + 0.98)/4
    assert reward(_metrics(0.95, [1.0, 1.0], 1.0, zero_errors=[0.0, 0.2]), WEIGHTS, TH) == pytest.approx(2.98 / 4)


def test_reward_of_diverged_errored_and_broken_metrics() -> None:
    assert reward(_metrics(1.0, [1.0, 1.0], 1.0, status="diverged"), WEIGHTS, TH) == 0.0
    assert reward(_metrics(1.0, [1.0, 1.0], 1.0, status="error"), WEIGHTS, TH) == 0.0
    assert reward({"status": "error"}, WEIGHTS, TH) == 0.0
    assert reward({}, WEIGHTS, TH) == 0.0
    nan_k = _metrics(math.nan, [1.0, 1.0], 1.0)
    assert reward(nan_k, WEIGHTS, TH) == pytest.approx(0.6 / 4)  # failed, k counts 0
    nan_ratio = _metrics(0.95, [1.0, 1.0], 1.0)
    nan_ratio["MLP_node_slope_ratio_1"] = math.nan
    nan_ratio["avg_slope_ratio"] = math.nan
    assert reward(nan_ratio, WEIGHTS, TH) == pytest.approx(0.83 / 4)  # failed: tier 0, the nan type scores 0
    no_k = {"status": "completed", "MLP_node_slope_ratio_0": 1.0, "embedding_cluster_acc": 1.0}
    assert reward(no_k, WEIGHTS, TH) == pytest.approx(0.6 / 4)  # unknown: tier 0, one type → acc as is


def test_reward_reads_only_its_inputs() -> None:
    full = _metrics(0.93, [0.8, 1.3], 1.0) | {"test_pearson": 0.99, "classification": "partial", "alpha": 2.0}
    inputs = {key: full[key] for key in reward_inputs(2)}
    assert reward(inputs, WEIGHTS, TH) == reward(full, WEIGHTS, TH)
    assert set(reward_inputs(2)) == {"status", "rate_constants_R2", "avg_slope_ratio", "embedding_cluster_acc",
                                      "MLP_node_slope_ratio_0", "MLP_node_slope_ratio_1",
                                      "MLP_node_slope_at_zero_ratio_0", "MLP_node_slope_at_zero_ratio_1",
                                      "MLP_node_zero_rel_err_0", "MLP_node_zero_rel_err_1"}


def _random_metrics(rng: random.Random) -> dict:
    r2 = rng.choice([rng.uniform(-0.5, 1.0), rng.uniform(0.85, 1.0), math.nan])
    ratios = [rng.choice([rng.uniform(-0.5, 5.0), rng.uniform(0.4, 2.5), 0.0, math.nan]) for _ in range(2)]
    acc = rng.choice([1.0, rng.uniform(0.0, 1.0), math.nan])
    return _metrics(r2, ratios, acc)


def test_reward_orders_the_classes_strictly() -> None:
    rng = random.Random(0)
    tiers = {"converged": 3, "partial-k": 2, "partial-homeo": 2, "partial": 1, "failed": 0}
    by_tier: dict[int, list[float]] = {tier: [] for tier in range(4)}
    seen = set()
    for _ in range(600):
        metrics = _random_metrics(rng)
        label = classify(metrics, "completed", TH)
        value = reward(metrics, WEIGHTS, TH)
        assert 0.0 <= value <= 1.0
        seen.add(label)
        by_tier[tiers[label]].append(value)
    assert seen == set(tiers)
    for tier in range(3):
        assert max(by_tier[tier]) < min(by_tier[tier + 1])


def test_choice_parameters_load_with_their_values_in_order(tmp_path: Path) -> None:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["parameters"]["graph_model.homeostasis_head"] = {"type": "choice", "values": ["mlp", "linear"]}
    raw["parameters"]["training.conservation_frames"] = {"type": "choice", "values": [64, 256, "all"]}
    raw["initial_spread"][1] = {"graph_model.homeostasis_head": "linear", "training.conservation_frames": "all"}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    space = load_space(path)
    assert space.parameters["training.conservation_frames"].values == (64, 256, "all")
    assert space.base_values()["graph_model.homeostasis_head"] == "mlp"
    cfg = space.config_for({**space.base_values(), **space.initial_spread[1]})
    assert (cfg.graph_model.homeostasis_head, cfg.training.conservation_frames) == ("linear", "all")
    raw["initial_spread"][1] = {"graph_model.homeostasis_head": "quadratic"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpaceError, match=r"initial_spread\[1\].graph_model.homeostasis_head: 'quadratic' is not one"):
        load_space(path)


def test_the_joint_recovery_config_is_the_mission_spreads_last_slot() -> None:
    """configs/joint_recovery.yaml writes out the spread's converged slot; the two must not drift apart."""
    space = load_space(HOMEO)
    written = load_config(SPACES.parent / "configs" / "joint_recovery.yaml").to_dict()
    slot = space.config_for(space.initial_spread[3]).to_dict()
    for section in ("simulation", "graph_model", "training"):
        assert written[section] == slot[section], section
    assert written["graph_model"]["substrate_form"] == "power"


def test_the_noisy_space_is_the_joint_recovery_config_in_weak_form_on_noisy_data(tmp_path: Path) -> None:
    """noisy_rank_50's base is configs/joint_recovery.yaml plus the weak forms with their windows read from the data,
    the head attached to the prediction loss, the types grouped at 95 % and the group solve's groups taken at the
    end (seeded from the relaxation mixture where it keeps one group), measurements clamped at zero read back by
    the censored estimate (the regression's too), on the mission network measured with σ_m = 0.01; the noise level
    is part of the data, so the search may not change it."""
    space = load_space(NOISY)
    exact = load_config(SPACES.parent / "configs" / "joint_recovery.yaml").to_dict()
    noisy = space.base.to_dict()
    assert noisy["simulation"] == exact["simulation"] and noisy["graph_model"] == exact["graph_model"]
    changed = {key: value for key, value in noisy["training"].items() if exact["training"][key] != value}
    assert changed == {"measurement_noise_level": 0.01, "moment_window": "auto", "prediction_window": "auto",
                       "detach_homeostasis": False, "type_grouping_at": 0.95, "group_solve_moves": 100,
                       "group_solve_takes_groups": True, "zero_margin": "auto", "group_solve_mixture": True,
                       "decensor_zeros": "auto"}
    assert noisy["regression"]["decensor_zeros"] == "auto"
    assert "auto" in space.parameters["training.moment_window"].values
    assert "auto" in space.parameters["training.prediction_window"].values
    raw = yaml.safe_load(NOISY.read_text())
    raw["parameters"]["training.measurement_noise_level"] = {"type": "float", "low": 0.0, "high": 0.1}
    (tmp_path / "tuned_noise.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SpaceError, match=r"training\.measurement_noise_level"):
        load_space(tmp_path / "tuned_noise.yaml")
