"""Model networks: cobra models converted into our Network, simulated with the hub rule, and bad input."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from cobra import Metabolite, Model, Reaction
from cobra.io import save_json_model, write_sbml_model

from metabo_tune import networks
from metabo_tune.config import ConfigError, SimulationConfig, config_from_dict
from metabo_tune.simulate import (
    DataError,
    Trajectory,
    check_activity,
    load_or_simulate,
    simulate,
    simulation_key,
)
from metabo_tune.train import main as train_main

ROOT = Path(__file__).resolve().parent.parent


def toy_model() -> Model:
    """a + 2 b <-> c (reversible), c + h -> d (irreversible), d -> a with bounds ≤ 0 (so it runs a -> d),
    0.5 a -> e (a non-integer order), exchange of a, a biomass objective, h in two compartments."""
    model = Model("toy")
    mets = {name: Metabolite(f"{name}_{comp}", compartment=comp)
            for name, comp in [("a", "c"), ("b", "c"), ("c", "c"), ("d", "c"), ("e", "c"), ("h", "c")]}
    mets["h_e"] = Metabolite("h_e", compartment="e")

    def reaction(rid: str, stoich: dict[str, float], lower: float, upper: float = 1000.0) -> Reaction:
        rxn = Reaction(rid, lower_bound=lower, upper_bound=upper)
        rxn.add_metabolites({mets[name]: value for name, value in stoich.items()})
        return rxn

    model.add_reactions([
        reaction("R1", {"a": -1, "b": -2, "c": 1}, -1000.0),
        reaction("R2", {"c": -1, "h": -1, "d": 1, "h_e": 1}, 0.0),
        reaction("R3", {"a": 1, "d": -1}, -1000.0, 0.0),  # written d -> a, runs a -> d
        reaction("R4", {"a": -0.5, "e": 1}, 0.0),
        reaction("EX_a", {"a": -1}, -10.0),
        reaction("GROWTH", {"b": -0.25, "e": -0.5}, 0.0),
    ])
    model.objective = "GROWTH"
    return model


@pytest.fixture(scope="module")
def toy() -> networks.ModelNetwork:
    return networks.convert(toy_model(), [], "toy")


def column(model_network: networks.ModelNetwork, reaction_id: str) -> dict[str, float]:
    j = model_network.reaction_ids.index(reaction_id)
    stoich = model_network.network.stoichiometry[:, j]
    return {model_network.metabolite_ids[i]: float(stoich[i]) for i in np.flatnonzero(stoich)}


def substrates(model_network: networks.ModelNetwork, reaction_id: str) -> dict[str, int]:
    net = model_network.network
    j = model_network.reaction_ids.index(reaction_id)
    mask = net.substrate_reaction == j
    return {model_network.metabolite_ids[m]: int(s)
            for m, s in zip(net.substrate_metabolite[mask], net.substrate_order[mask], strict=True)}


def test_only_internal_reactions_are_kept_and_reversible_ones_are_split(toy):
    assert toy.reaction_ids == ["R1_fwd", "R1_rev", "R2", "R3", "R4"]  # no exchange, no biomass objective
    assert column(toy, "R1_fwd") == {"a_c": -1, "b_c": -2, "c_c": 1}
    assert column(toy, "R1_rev") == {"a_c": 1, "b_c": 2, "c_c": -1}
    assert substrates(toy, "R1_fwd") == {"a_c": 1, "b_c": 2}  # orders are |coefficients|
    assert substrates(toy, "R1_rev") == {"c_c": 1}
    assert substrates(toy, "R3") == {"a_c": 1}  # a reaction that can only run backwards is turned round
    assert column(toy, "R3") == {"a_c": -1, "d_c": 1}


def test_a_non_integer_order_is_rounded_and_named_while_s_keeps_the_coefficient(toy):
    assert substrates(toy, "R4") == {"a_c": 1}
    assert column(toy, "R4") == {"a_c": -0.5, "e_c": 1}
    assert toy.rounded_orders == ["R4"]


def test_currency_metabolites_are_ignored_by_id_or_by_id_without_compartment():
    converted = networks.convert(toy_model(), ["h", "e_c"], "toy")
    assert "h_c" not in converted.metabolite_ids and "h_e" not in converted.metabolite_ids
    assert "e_c" not in converted.metabolite_ids
    assert column(converted, "R2") == {"c_c": -1, "d_c": 1}
    assert "R4" in converted.reaction_ids  # still consumes a


def test_a_currency_metabolite_not_in_the_model_is_named():
    with pytest.raises(DataError, match="'atp' matches no metabolite of toy"):
        networks.convert(toy_model(), ["atp"], "toy")


def test_a_model_without_internal_reactions_is_refused():
    model = toy_model()
    model.remove_reactions([r for r in model.reactions if r.id.startswith("R")])
    with pytest.raises(DataError, match="toy: no internal reactions"):
        networks.convert(model, [], "toy")


def test_the_hub_rule_gives_every_reaction_the_drawn_rate_over_its_busiest_substrates_degree(toy):
    net = toy.network
    drawn = np.linspace(-2, -1, net.n_reactions)
    log_k = networks.hub_scaled_log_k(drawn, net, reference_concentration=5.0)
    degree = networks.substrate_degrees(net)
    assert degree[toy.metabolite_ids.index("a_c")] == 3  # R1_fwd, R3 and R4
    for j in range(net.n_reactions):
        mask = net.substrate_reaction == j
        rate = 10 ** log_k[j] * np.prod(5.0 ** net.substrate_order[mask])
        assert rate == pytest.approx(10 ** drawn[j] / degree[net.substrate_metabolite[mask]].max())


def test_compartment_types_need_as_many_types_as_compartments(toy):
    types = networks.compartment_types(toy, 2, "toy")
    assert types[toy.metabolite_ids.index("h_e")] == 1 and types[toy.metabolite_ids.index("a_c")] == 0
    with pytest.raises(DataError, match="2 compartments"):
        networks.compartment_types(toy, 3, "toy")


@pytest.fixture(scope="module")
def core_small() -> SimulationConfig:
    return SimulationConfig(network="e_coli_core", n_frames=300)


def test_e_coli_core_simulates_bounded_and_moving(core_small, capsys):
    dataset = simulate(core_small)
    net, conc = dataset.observed.network, dataset.observed.trajectory.concentrations
    assert (net.n_metabolites, net.n_reactions) == (72, 113)
    assert dataset.truth.log_k.shape == (113,) and dataset.truth.types.shape == (72,)
    assert np.isfinite(conc).all() and conc.max() < 100 * core_small.concentration_max
    err = capsys.readouterr().err
    assert "72 metabolites, 113 reactions" in err and "metabolites move, activity rank" in err
    assert "rounded in 1 reactions (CYTBD)" in err
    assert dataset.heldout is not None


def test_random_network_data_do_not_depend_on_the_new_keys():
    default = SimulationConfig()
    assert (default.network, default.n_metabolites, default.n_reactions) == ("random", 100, 256)
    assert simulation_key(default) == "35cdbd117bf1fb9b"  # as before the model networks


def test_the_cache_is_keyed_by_the_file_content_not_its_path(tmp_path):
    first, second = tmp_path / "one.json", tmp_path / "two.json"
    save_json_model(toy_model(), first)
    shutil.copy(first, second)
    key = simulation_key(SimulationConfig(network=str(first)))
    assert key == simulation_key(SimulationConfig(network=str(second)))
    changed = toy_model()
    changed.reactions.R2.lower_bound = -1000.0
    save_json_model(changed, second)
    assert simulation_key(SimulationConfig(network=str(second))) != key


def test_an_sbml_file_loads_like_the_same_json_model(tmp_path, monkeypatch):
    monkeypatch.setenv("METABO_TUNE_CACHE", str(tmp_path / "cache"))
    write_sbml_model(toy_model(), str(tmp_path / "toy.xml"))
    save_json_model(toy_model(), tmp_path / "toy.json")
    loaded = [load_or_simulate(SimulationConfig(network=str(tmp_path / name), n_frames=50, ignore_metabolites=["h"]))
              for name in ("toy.xml", "toy.json")]
    np.testing.assert_array_equal(loaded[0].observed.network.stoichiometry, loaded[1].observed.network.stoichiometry)
    np.testing.assert_array_equal(loaded[0].observed.trajectory.concentrations,
                                  loaded[1].observed.trajectory.concentrations)


def test_a_draw_that_blows_up_or_goes_flat_is_a_data_error():
    cfg = SimulationConfig(network="e_coli_core")
    flat = Trajectory(np.full((20, 4), 3.0), np.zeros((20, 4)), 0.1)
    with pytest.raises(DataError, match="went flat"):
        check_activity(flat, cfg)
    exploding = Trajectory(np.linspace(1.0, 1e4, 80).reshape(20, 4), np.zeros((20, 4)), 0.1)
    with pytest.raises(DataError, match=r"blew up .* at frame 2"):
        check_activity(exploding, cfg)


@pytest.mark.parametrize("change, message", [
    ({"network": "e_coli_core", "n_metabolites": 100}, "model 'e_coli_core' sets the network's size"),
    ({"network": "e_colli_core"}, "unknown bundled model 'e_colli_core'"),
    ({"ignore_metabolites": ["h"]}, "model networks only"),
    ({"metabolite_types": "compartment"}, "model networks only"),
    ({"network": "textbook", "data_dir": "x"}, "both name the data"),
])
def test_model_network_keys_are_validated(change, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"simulation": change})


def bad_inputs(tmp_path) -> dict[str, tuple[list[str], str]]:
    (tmp_path / "notes.xml").write_text("these are not SBML\n")
    empty = toy_model()
    empty.remove_reactions([r for r in empty.reactions if r.id.startswith("R")])
    save_json_model(empty, tmp_path / "empty.json")
    return {
        "not SBML": ([f"simulation.network={tmp_path / 'notes.xml'}"], "notes.xml: not a readable SBML model"),
        "no internal reactions": ([f"simulation.network={tmp_path / 'empty.json'}"],
                                  "empty.json: no internal reactions"),
        "unknown bundled name": (["simulation.network=iJO1367"], "unknown bundled model 'iJO1367'"),
        "currency not in model": (["simulation.network=textbook", "simulation.ignore_metabolites=[h, gtp]"],
                                  "'gtp' matches no metabolite of textbook"),
    }


@pytest.mark.parametrize("case", ["not SBML", "no internal reactions", "unknown bundled name", "currency not in model"])
def test_bad_model_input_is_one_error_line_with_exit_code_2(case, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METABO_TUNE_CACHE", str(tmp_path / "cache"))
    overrides, message = bad_inputs(tmp_path)[case]
    argv = [str(ROOT / "configs/e_coli_core.yaml"), "--out", str(tmp_path / "run"), "--quiet"]
    for item in overrides:
        argv += ["--set", item]
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err


def test_a_trial_runs_unchanged_on_e_coli_core_and_only_metrics_and_plots_read_its_truth(tmp_path, monkeypatch):
    """The rest of the pipeline (trainer, metrics, plots) on a model network, at a tiny budget, its truth guarded."""
    from test_train import GuardedTruth

    from metabo_tune.config import load_config
    from metabo_tune.train import run_trial

    monkeypatch.setenv("METABO_TUNE_CACHE", str(tmp_path / "cache"))
    cfg = load_config(ROOT / "configs/e_coli_core.yaml", ["simulation.n_frames=200",
                                                           "training.data_augmentation_loop=2"])
    dataset = load_or_simulate(cfg.simulation)
    guarded = GuardedTruth(dataset.truth)
    outcome = run_trial(cfg, tmp_path / "run", dataset=dataclasses.replace(dataset, truth=guarded),
                        show_progress=False)
    assert outcome.metrics["status"] == "completed"
    assert outcome.metrics["n_identifiable"] == 113
    assert np.isfinite(outcome.metrics["rate_constants_R2"])
    assert guarded.readers == {"metabo_tune.metrics", "metabo_tune.plots"}


@pytest.mark.usefixtures("fast_head_fit")
def test_the_free_form_config_starts_e_coli_core_at_the_form_free_fits_k_and_keeps_it(tmp_path, monkeypatch):
    """configs/e_coli_core_free_forms.yaml at a tiny budget: its warm start assumes no form, yet finds k on the real
    network where a random start does not (R² 0.42 at the full budget), and a short run keeps it."""
    from metabo_tune.config import load_config
    from metabo_tune.train import run_trial

    monkeypatch.setenv("METABO_TUNE_CACHE", str(tmp_path / "cache"))
    cfg = load_config(ROOT / "configs/e_coli_core_free_forms.yaml", ["simulation.n_frames=300",
                                                                      "training.data_augmentation_loop=2"])
    outcome = run_trial(cfg, tmp_path / "run", show_progress=False)
    assert outcome.metrics["status"] == "completed"
    assert outcome.metrics["rate_constants_R2"] > 0.999
    assert abs(outcome.metrics["MLP_sub_exponent_s1"] - 1.0) < 0.05


def test_compartment_types_reach_the_truth_through_the_simulation():
    dataset = simulate(SimulationConfig(network="e_coli_core", metabolite_types="compartment", n_frames=20))
    types = dataset.truth.types
    assert set(types.tolist()) == {0, 1} and 0 < (types == 1).sum() < 72  # cytosol and extracellular
    with pytest.raises(DataError, match="e_coli_core has 2 compartments"):
        simulate(SimulationConfig(network="e_coli_core", metabolite_types="compartment", n_metabolite_types=3,
                                  homeostatic_lambda_per_type=[0.001, 0.002, 0.003],
                                  homeostatic_baseline_per_type=[4.0, 6.0, 8.0], n_frames=20))


def test_a_cached_model_dataset_is_described_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METABO_TUNE_CACHE", str(tmp_path / "cache"))
    cfg = SimulationConfig(network="e_coli_core", n_frames=30)
    first = load_or_simulate(cfg)
    simulated = capsys.readouterr().err
    second = load_or_simulate(cfg)
    cached = capsys.readouterr().err
    assert second.source.startswith("cache:") and not first.source.startswith("cache:")
    line = [text for text in simulated.splitlines() if "activity rank" in text]
    assert line and line[0] in cached


def test_a_draw_that_overflows_is_one_blow_up_line(monkeypatch, capsys):
    """Without the hub rule E. coli core overflows within a few Euler steps: one DataError, no numpy warnings."""
    monkeypatch.setattr(networks, "hub_scaled_log_k", lambda drawn, network, reference: drawn)
    with pytest.raises(DataError, match=r"e_coli_core, seed 42: the draw blew up .* at frame [1-3]\)"):
        simulate(SimulationConfig(network="e_coli_core", n_frames=40))
    assert "RuntimeWarning" not in capsys.readouterr().err
