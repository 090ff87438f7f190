from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from metabo_tune.config import GraphModelConfig, SimulationConfig
from metabo_tune.model import MetabolicGNN, build_model
from metabo_tune.plots import write_trial_plots
from metabo_tune.simulate import Dataset, simulate

torch.set_num_threads(1)

ALL_PLOTS = ["mlp_sub.png", "mlp_node.png", "mlp_sub_forms.png", "mlp_node_forms.png", "rate_constants.png",
             "embeddings.png", "loss.png"]


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return simulate(SimulationConfig(n_metabolites=20, n_reactions=30, n_frames=300))


@pytest.fixture
def model(dataset: Dataset) -> MetabolicGNN:
    scale = float(1.5 * dataset.observed.trajectory.concentrations.std())
    return build_model(dataset.observed.network, GraphModelConfig(), scale, 0, (-2.0, 1.0))


HISTORY = {
    "iteration": np.arange(0, 1000, 10),
    "prediction": np.geomspace(10.0, 0.1, 100),
    "conservation": np.concatenate([np.zeros(50), np.geomspace(1e-3, 1e-5, 50)]),  # zeros are skipped
    "regularisation": np.zeros(100),  # nothing positive: no line, no crash
}


def assert_images(paths, names):
    assert [p.name for p in paths] == names
    for path in paths:
        assert path.is_file() and path.stat().st_size > 5000
        image = imread(path)
        assert image.shape[0] >= 300 and image.shape[1] >= 400
        assert image[..., :3].std() > 0.01  # something was drawn


def test_writes_every_plot_with_truth(tmp_path, dataset, model):
    paths = write_trial_plots(model, dataset, HISTORY, tmp_path / "trial")
    assert_images(paths, ALL_PLOTS)
    assert sorted(p.name for p in (tmp_path / "trial").iterdir()) == sorted(ALL_PLOTS)


def test_plots_without_truth_skip_the_rate_constants(tmp_path, dataset, model):
    no_truth = dataclasses.replace(dataset, truth=None, heldout=None)
    paths = write_trial_plots(model, no_truth, {"prediction": np.linspace(1.0, 0.5, 20)}, tmp_path)
    assert_images(paths, [name for name in ALL_PLOTS if name not in ("rate_constants.png", "mlp_node_forms.png")])
    assert not (tmp_path / "rate_constants.png").exists()


def test_plots_do_not_change_the_model(tmp_path, dataset, model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    write_trial_plots(model, dataset, HISTORY, tmp_path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_form_plots_on_michaelis_menten_and_saturating_data_and_with_unknown_forms(tmp_path, model):
    forms = simulate(SimulationConfig(n_metabolites=20, n_reactions=30, n_frames=300,
                                      substrate_kinetics="michaelis_menten", homeostasis_form="saturating"))
    paths = write_trial_plots(model, forms, HISTORY, tmp_path / "forms")
    assert_images(paths, ALL_PLOTS)
    unknown = dataclasses.replace(forms, truth=dataclasses.replace(forms.truth, michaelis_K=None,
                                                                   homeostasis_width=None))
    assert_images(write_trial_plots(model, unknown, HISTORY, tmp_path / "unknown"), ALL_PLOTS)
