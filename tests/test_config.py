from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import pytest

from metabo_tune.config import (
    Config,
    ConfigError,
    GraphModelConfig,
    SimulationConfig,
    TrainingConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    read_yaml,
)

REPO = Path(__file__).parents[1]
HOMEO = REPO / "search_spaces" / "homeo_rank_50.yaml"


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def config_error(func, *args) -> str:
    """Call func, require a ConfigError and return its message, checked to be one line."""
    with pytest.raises(ConfigError) as info:
        func(*args)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def dict_error(raw: dict) -> str:
    message = config_error(config_from_dict, raw, "cfg.yaml")
    assert message.startswith("cfg.yaml: ")
    return message


# --------------------------------------------------------------------------------------------
# The search space's base config (the reference's iter_116 settings)


@pytest.fixture(scope="module")
def homeo() -> Config:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the mission file must load without "ignored" warnings
        return load_config(HOMEO)


def test_homeo_base_has_iter_116_learning_rates(homeo):
    t = homeo.training
    assert (t.learning_rate_k, t.learning_rate_embedding, t.learning_rate_node, t.learning_rate_sub) == (
        5e-3, 1e-4, 1e-4, 5e-3)
    assert [t.learning_rate(g) for g in ("k", "embedding", "node", "sub")] == [5e-3, 1e-4, 1e-4, 5e-3]


def test_homeo_base_has_iter_116_regularisers(homeo):
    t = homeo.training
    assert t.coeff_MLP_node_L1 == 1.0
    assert t.coeff_MLP_sub_norm == 1.0
    assert t.coeff_MLP_sub_diff == 6
    assert t.coeff_k_floor == 1.0
    assert t.k_floor_threshold == -2
    assert t.batch_size == 8


def test_homeo_base_has_iter_116_architecture(homeo):
    g = homeo.graph_model
    assert (g.hidden_dim_sub, g.n_layers_sub, g.hidden_dim_node, g.n_layers_node) == (64, 4, 32, 2)


def test_homeo_base_simulation_is_the_reference_network(homeo):
    s = homeo.simulation
    assert (s.n_metabolites, s.n_reactions, s.n_frames, s.seed) == (100, 256, 2880, 42)
    assert s.homeostatic_lambda_per_type == [0.001, 0.002]
    assert s.homeostatic_baseline_per_type == [4.0, 6.0]
    assert homeo.dataset == "homeo_rank_50"


def test_iterations_per_epoch_is_72000_for_aug_1000_and_360000_for_aug_5000(homeo):
    assert homeo.training.data_augmentation_loop == 1000
    assert homeo.training.iterations_per_epoch(2880) == 72_000
    aug_5000 = homeo.training.model_copy(update={"data_augmentation_loop": 5000})
    assert aug_5000.iterations_per_epoch(2880) == 360_000


def test_a_trainings_iterations_count_its_epochs_from_the_configured_frames_per_run(homeo):
    assert homeo.total_iterations() == 72_000
    raw = homeo.to_dict()
    raw["training"]["n_epochs"], raw["simulation"]["n_runs"] = 3, 4  # more runs add data, not iterations
    assert type(homeo).model_validate(raw).total_iterations() == 216_000


def test_iterations_per_epoch_is_at_least_one():
    assert TrainingConfig(batch_size=64, data_augmentation_loop=0.01).iterations_per_epoch(10) == 1


# --------------------------------------------------------------------------------------------
# Plain run configs and the predecessor's inert keys


def test_plain_run_config_without_base_loads(tmp_path):
    path = write(tmp_path, """\
        description: plain
        simulation:
          n_metabolites: 20
          n_reactions: 30
        training:
          batch_size: 4
          learning_rate_k: 2.0e-3
        """)
    cfg = load_config(path)
    assert cfg.description == "plain"
    assert (cfg.simulation.n_metabolites, cfg.simulation.n_reactions) == (20, 30)
    assert (cfg.training.batch_size, cfg.training.learning_rate_k) == (4, 2e-3)
    assert cfg.graph_model == GraphModelConfig()


def test_empty_yaml_file_gives_the_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()


def test_empty_section_gives_that_sections_defaults(tmp_path):
    assert load_config(write(tmp_path, "training:\n")).training == TrainingConfig()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("plotting:\n  colormap: viridis\n", "'plotting'"),
        ("claude:\n  n_iter_block: 4\n", "'claude'"),
        ("training:\n  skip_phase1: true\n", "'training.skip_phase1'"),
        ("graph_model:\n  particle_model_name: PDE_M1\n", "'graph_model.particle_model_name'"),
    ],
)
def test_reference_only_keys_load_with_a_warning_naming_them(tmp_path, text, named):
    path = write(tmp_path, text)
    with pytest.warns(UserWarning, match="ignored") as record:
        cfg = load_config(path)
    assert any(named in str(w.message) and str(path) in str(w.message) for w in record)
    assert cfg == Config()


def test_inert_key_does_not_hide_real_values_in_its_section(tmp_path):
    path = write(tmp_path, "training:\n  skip_phase1: true\n  batch_size: 16\n")
    with pytest.warns(UserWarning, match="skip_phase1"):
        cfg = load_config(path)
    assert cfg.training.batch_size == 16


# --------------------------------------------------------------------------------------------
# Errors: ConfigError, one line, naming the file and the key


def test_misspelled_key_suggests_the_closest_valid_key():
    message = dict_error({"training": {"learing_rate_k": 1e-3}})
    assert "training.learing_rate_k" in message
    assert "did you mean 'learning_rate_k'" in message


def test_misspelled_key_in_a_yaml_file_names_the_file(tmp_path):
    path = write(tmp_path, "training:\n  learing_rate_k: 1.0e-3\n")
    message = config_error(load_config, path)
    assert str(path) in message
    assert "did you mean 'learning_rate_k'" in message


def test_unknown_section_is_an_error():
    message = dict_error({"simulaton": {"seed": 1}})
    assert "unknown key 'simulaton'" in message
    assert "did you mean 'simulation'" in message


def test_unknown_section_without_close_match_lists_allowed_sections():
    message = dict_error({"zzz": {}})
    assert "'zzz'" in message
    assert "allowed: dataset, description, graph_model, regression, simulation, training" in message


def test_negative_learning_rate_names_the_key():
    message = dict_error({"training": {"learning_rate_k": -1e-3}})
    assert "training.learning_rate_k" in message
    assert "-0.001" in message


def test_wrong_type_names_the_key_and_the_value():
    message = dict_error({"training": {"batch_size": "eight"}})
    assert "training.batch_size" in message
    assert "'eight'" in message


def test_section_that_is_not_a_mapping_is_an_error():
    message = dict_error({"training": [1, 2]})
    assert "'training' must be a mapping" in message


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"simulation": {"cycle_fraction": 1.5}}, "simulation.cycle_fraction"),
        ({"simulation": {"cycle_fraction": -0.1}}, "simulation.cycle_fraction"),
        ({"training": {"time_step": 0}}, "training.time_step"),
        ({"simulation": {"delta_t": 0}}, "simulation.delta_t"),
        ({"training": {"device": "gpu"}}, "training.device"),
        ({"graph_model": {"aggr_type": "add"}}, "graph_model.aggr_type"),
    ],
)
def test_out_of_domain_value_names_the_key(raw, key):
    assert key in dict_error(raw)


@pytest.mark.parametrize(
    ("raw", "key", "why"),
    [
        ({"simulation": {"flux_limit": True}}, "flux_limit", "not implemented"),
        ({"simulation": {"use_mass_action": False}}, "use_mass_action", "mass-action"),
        ({"training": {"freeze_stoichiometry": False}}, "freeze_stoichiometry", "frozen"),
        ({"training": {"coeff_S_L1": 0.1}}, "coeff_S_L1", "S is frozen"),
    ],
)
def test_unsupported_fixed_value_says_why(raw, key, why):
    message = dict_error(raw)
    assert key in message
    assert why in message


def test_noise_levels_are_accepted():
    cfg = config_from_dict({"simulation": {"noise_model_level": 0.02}, "training": {"measurement_noise_level": 0.01}})
    assert cfg.simulation.noise_model_level == 0.02
    assert cfg.training.measurement_noise_level == 0.01


@pytest.mark.parametrize("section_key", ["simulation.noise_model_level", "training.measurement_noise_level"])
@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf")])
def test_bad_noise_level_names_the_key(section_key, bad):
    section, key = section_key.split(".")
    assert section_key in dict_error({section: {key: bad}})


@pytest.mark.parametrize(("window", "polyorder", "expected"), [
    (8, 3, "derivative_window must be odd"),
    (5, 5, "derivative_polyorder must be < derivative_window (5)"),
    (1, 0, "simulation.derivative_window"),
])
def test_bad_derivative_fit_names_the_key(window, polyorder, expected):
    assert expected in dict_error({"simulation": {"derivative_window": window, "derivative_polyorder": polyorder}})


@pytest.mark.parametrize("c_min", [9.0, 10.0])
def test_concentration_min_not_below_max_is_an_error(c_min):
    message = dict_error({"simulation": {"concentration_min": c_min, "concentration_max": 9.0}})
    assert "concentration_min must be < concentration_max" in message


def test_homeostatic_lambda_per_type_of_wrong_length_is_an_error():
    message = dict_error({"simulation": {"homeostatic_lambda_per_type": [0.001]}})
    assert "homeostatic_lambda_per_type" in message
    assert "(2)" in message


def test_homeostasis_lists_must_follow_n_metabolite_types():
    cfg = config_from_dict({"simulation": {
        "n_metabolite_types": 3,
        "homeostatic_lambda_per_type": [0.001, 0.002, 0.003],
        "homeostatic_baseline_per_type": [4.0, 5.0, 6.0],
    }})
    assert cfg.simulation.n_metabolite_types == 3
    assert "homeostatic_baseline_per_type" in dict_error({"simulation": {
        "n_metabolite_types": 3, "homeostatic_lambda_per_type": [0.001, 0.002, 0.003]}})


def test_missing_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "nope.yaml"
    message = config_error(load_config, path)
    assert str(path) in message
    assert "no such config file" in message


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "description: x\ntraining: batch_size: 8\n")
    message = config_error(load_config, path)
    assert str(path) in message
    assert "not valid YAML at line 2" in message


def test_yaml_whose_top_level_is_a_list_is_a_config_error(tmp_path):
    path = write(tmp_path, "- 1\n- 2\n")
    assert str(path) in config_error(load_config, path)


# --------------------------------------------------------------------------------------------
# --set overrides


def test_override_sets_a_value_in_the_search_space_base():
    cfg = load_config(HOMEO, ["training.learning_rate_node=5e-4"])
    assert isinstance(cfg.training.learning_rate_node, float)
    assert cfg.training.learning_rate_node == 5e-4
    assert cfg.training.learning_rate_embedding == 1e-4  # explicit in the file, so no fallback to node


def test_override_wins_over_the_file_value(tmp_path):
    path = write(tmp_path, "training:\n  batch_size: 4\n")
    assert load_config(path, ["training.batch_size=16"]).training.batch_size == 16


def test_overrides_are_parsed_as_yaml_scalars():
    raw = apply_overrides({}, ["training.recurrent_training=true", "simulation.homeostatic_lambda_per_type=[1, 2]",
                               "training.learning_rate_k=5.0e-4", "training.batch_size=16"])
    assert raw["training"] == {"recurrent_training": True, "learning_rate_k": 5e-4, "batch_size": 16}
    assert raw["simulation"]["homeostatic_lambda_per_type"] == [1, 2]
    assert type(raw["training"]["recurrent_training"]) is bool
    assert type(raw["training"]["learning_rate_k"]) is float


def test_override_exponent_without_dot_is_a_float():
    raw = apply_overrides({}, ["training.learning_rate_node=5e-4", "training.data_augmentation_loop=1e3"])
    assert raw["training"] == {"learning_rate_node": 5e-4, "data_augmentation_loop": 1000.0}
    cfg = config_from_dict(raw)
    assert type(cfg.training.learning_rate_node) is float
    assert cfg.training.learning_rate_node == 5e-4


def test_apply_overrides_does_not_mutate_its_input():
    raw = {"training": {"batch_size": 4}}
    result = apply_overrides(raw, ["training.batch_size=16"])
    assert raw == {"training": {"batch_size": 4}}
    assert result == {"training": {"batch_size": 16}}


def test_override_of_an_unknown_key_is_a_config_error():
    message = config_error(load_config, HOMEO, ["training.learing_rate_node=5e-4"])
    assert "did you mean 'learning_rate_node'" in message


@pytest.mark.parametrize("item", ["training.lr", "a.b.c=1", "=3", ".x=1", "training.=1"])
def test_malformed_override_is_a_one_line_config_error(item):
    message = config_error(apply_overrides, {}, [item])
    assert f"'{item}'" in message
    assert "expected section.key=value" in message


def test_an_override_given_twice_is_a_config_error():
    message = config_error(apply_overrides, {}, ["training.seed=1", "training.batch_size=4", "training.seed=2"])
    assert message == "--set training.seed is given twice ('training.seed=1', then 'training.seed=2'); keep one"


def test_override_into_a_non_section_is_a_config_error():
    message = config_error(apply_overrides, {"description": "x"}, ["description.text=y"])
    assert "'description' is not a section" in message


def test_override_into_an_empty_yaml_section(tmp_path):
    cfg = load_config(write(tmp_path, "training:\n"), ["training.batch_size=4"])
    assert cfg.training.batch_size == 4


# --------------------------------------------------------------------------------------------
# Learning-rate fallbacks and the round trip


def test_missing_group_rates_fall_back_to_learning_rate_start():
    t = TrainingConfig(learning_rate_start=3e-3)
    assert [t.learning_rate(g) for g in ("k", "node", "sub", "embedding")] == [3e-3] * 4


def test_missing_embedding_rate_falls_back_to_the_node_rate():
    t = TrainingConfig(learning_rate_start=3e-3, learning_rate_node=7e-4)
    assert t.learning_rate("embedding") == 7e-4
    assert t.learning_rate("k") == 3e-3


def test_explicit_group_rate_is_used():
    t = TrainingConfig(learning_rate_start=3e-3, learning_rate_node=7e-4, learning_rate_embedding=2e-5,
                       learning_rate_k=1e-2, learning_rate_sub=4e-3)
    assert [t.learning_rate(g) for g in ("k", "embedding", "node", "sub")] == [1e-2, 2e-5, 7e-4, 4e-3]


def test_round_trip_of_the_homeo_base(homeo):
    assert config_from_dict(homeo.to_dict()) == homeo


def test_round_trip_of_non_default_values():
    cfg = Config(
        description="rt",
        simulation=SimulationConfig(n_metabolites=12, n_reactions=10, cycle_fraction=0.5, data_dir="/data"),
        training=TrainingConfig(learning_rate_node=5e-4, lr_schedule="cosine", device="cuda:1"),
    )
    back = config_from_dict(cfg.to_dict())
    assert back == cfg
    assert back.simulation.data_dir == "/data"
    assert back.training.learning_rate_k is None


# --------------------------------------------------------------------------------------------
# The simulated forms: use_mass_action (the predecessor's key) and substrate_kinetics are one choice


@pytest.mark.parametrize(("raw", "kinetics"), [
    ({}, "mass_action"),
    ({"use_mass_action": True}, "mass_action"),
    ({"substrate_kinetics": "michaelis_menten"}, "michaelis_menten"),
    ({"use_mass_action": False, "substrate_kinetics": "michaelis_menten"}, "michaelis_menten"),
    ({"use_mass_action": True, "substrate_kinetics": "mass_action"}, "mass_action"),
])
def test_use_mass_action_follows_substrate_kinetics(raw, kinetics):
    simulation = config_from_dict({"simulation": raw}).simulation
    assert simulation.substrate_kinetics == kinetics
    assert simulation.use_mass_action is (kinetics == "mass_action")
    reloaded = config_from_dict({"simulation": simulation.model_dump()}).simulation
    assert reloaded == simulation


def test_use_mass_action_contradicting_substrate_kinetics_is_one_line():
    message = dict_error({"simulation": {"use_mass_action": True, "substrate_kinetics": "michaelis_menten"}})
    assert "use_mass_action true contradicts substrate_kinetics michaelis_menten" in message
    assert "\n" not in message


@pytest.mark.parametrize("raw", [{"michaelis_K": 0.0}, {"homeostasis_width": -1.0}, {"michaelis_K": float("inf")},
                                 {"homeostasis_form": "sigmoid"}, {"substrate_kinetics": "hill"}])
def test_bad_form_values_name_the_key(raw):
    assert next(iter(raw)) in dict_error({"simulation": raw})


@pytest.mark.parametrize(("training", "expected"), [
    ({"type_grouping_at": 0.9}, "type_grouping_at 0.9 needs coeff_residual_fit > 0"),
    ({"type_grouping_at": 0.6, "coeff_residual_fit": 1.0, "residual_fit_start": 0.7}, "residual_fit_start <="),
    ({"type_grouping_at": 1.0, "coeff_residual_fit": 1.0}, "training.type_grouping_at"),
    ({"n_types": 0}, "training.n_types"),
    ({"type_merge_tolerance": 0.0}, "training.type_merge_tolerance"),
])
def test_type_grouping_needs_the_residual_phase_and_sane_values(training, expected):
    assert expected in dict_error({"training": training})
    grouped = config_from_dict({"training": {"type_grouping_at": 0.9, "coeff_residual_fit": 1.0,
                                             "residual_fit_start": 0.9, "n_types": 2}}).training
    assert (grouped.type_grouping_at, grouped.n_types, grouped.type_merge_tolerance) == (0.9, 2, 0.25)


GROUPED = {"type_grouping_at": 0.9, "coeff_residual_fit": 1.0, "residual_fit_start": 0.9}


@pytest.mark.parametrize(("raw", "expected"), [
    ({"training": {"group_solve_moves": 5}}, "group_solve_moves 5 needs type_grouping_at"),
    ({"training": GROUPED | {"group_solve_moves": -1}}, "training.group_solve_moves"),
])
def test_the_group_solve_needs_type_groups_under_either_head(raw, expected):
    assert expected in dict_error(raw)
    for head in ("mlp", "linear"):
        on = config_from_dict({"training": GROUPED | {"group_solve_moves": 5},
                               "graph_model": {"homeostasis_head": head}})
        assert on.training.group_solve_moves == 5


@pytest.mark.parametrize("section", ["regression", "training"])
@pytest.mark.parametrize(("value", "accepted"), [("auto", True), (0.02, True), (0, True), (None, True), (-0.1, False),
                                                 ("some", False)])
def test_the_zero_margin_is_auto_a_concentration_or_null(section, value, accepted):
    raw = {section: {"zero_margin": value}}
    if accepted:
        assert getattr(config_from_dict(raw), section).zero_margin == value
    else:
        assert f"{section}.zero_margin" in dict_error(raw)


def test_a_key_given_twice_is_refused_but_a_merge_may_repeat_one(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("simulation:\n  seed: 1\n  n_frames: 300\n  seed: 2\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: 'seed' is given twice \(line 4\); keep one"):
        load_config(twice)
    merged = tmp_path / "merged.yaml"
    merged.write_text("defaults: &defaults {seed: 1, n_frames: 300}\nsimulation: {<<: *defaults, seed: 2}\n")
    assert read_yaml(merged)["simulation"] == {"seed": 2, "n_frames": 300}
