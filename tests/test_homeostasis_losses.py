import dataclasses

import numpy as np
import pytest
import torch
from test_train import linear_head_config, small_config

from metabo_tune import homeostasis_losses
from metabo_tune.config import DEFAULT_CONSERVATION_FRAMES, config_from_dict
from metabo_tune.homeostasis_losses import ResidualMoments, shared_relaxation_fit, sliding_mean, window_means
from metabo_tune.simulate import add_measurement_noise, left_null_space, simulate
from metabo_tune.train import Trainer


@pytest.fixture(scope="module")
def small_dataset():
    return simulate(small_config().simulation)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as `train` sets it: these tests drive the Trainer directly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("threshold", [10_000, 0])  # its gradient by autograd, and from the forward's product
def test_moment_conservation_loss_equals_the_loss_over_every_frame(small_dataset, monkeypatch, threshold):
    monkeypatch.setattr(homeostasis_losses, "CHEAPER_FORMS_ABOVE", threshold)
    trainer = Trainer(linear_head_config(), small_dataset.observed, "cpu")
    model = trainer.model
    with torch.no_grad():  # a head far from its start, with per-metabolite rates and baselines
        model.embedding.normal_(generator=torch.Generator().manual_seed(1))
        model.relaxation.log_rate.weight.fill_(0.4)
        model.relaxation.baseline.weight.fill_(-0.3)
    null_space = trainer.homeostasis_losses.null_space
    head = [model.embedding, *model.relaxation.parameters()]
    all_frames = ((model.homeostasis(trainer.conc) - trainer.deriv) @ null_space).square().sum(-1).mean()
    losses = trainer.losses(0)
    torch.testing.assert_close(losses["conservation"], all_frames, rtol=1e-5, atol=0)
    assert losses["conservation"] > 0
    for mine, direct in zip(torch.autograd.grad(losses["conservation"], head), torch.autograd.grad(all_frames, head),
                            strict=True):  # and so is its gradient
        torch.testing.assert_close(mine, direct, rtol=1e-4, atol=1e-6 * direct.abs().max().item())


def test_mlp_head_with_all_frames_samples_the_default_count_with_a_warning(small_dataset):
    """The MLP head has no moments; 'all' would put every frame through it each step (60× an iteration on
    the mission network), so it samples the default count, and the sampled loss is the all-frame formula
    on those frames."""
    raw = small_config().to_dict()
    raw["training"] |= {"coeff_conservation": 1.0, "conservation_frames": "all"}
    with pytest.warns(UserWarning, match="conservation_frames 'all' is the linear head's"):
        cfg = config_from_dict(raw)
    assert cfg.sampled_conservation_frames() == DEFAULT_CONSERVATION_FRAMES
    trainer = Trainer(cfg, small_dataset.observed, "cpu")
    _, sampled = trainer._frames(0)
    assert sampled.shape == (DEFAULT_CONSERVATION_FRAMES,)
    c, dcdt = trainer.homeostasis_losses.conservation_frames(sampled)
    direct = ((trainer.model.homeostasis(c) - dcdt) @ trainer.homeostasis_losses.null_space).square().sum(-1).mean()
    torch.testing.assert_close(trainer.losses(0)["conservation"], direct, rtol=1e-5, atol=0)
    assert linear_head_config().sampled_conservation_frames() is None  # the moments, no sampling


def one_type_relaxation(noise_level: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(c, dc/dt, left null space) of 12 metabolites of one type (λ 0.003, b 5.5) and one reaction, with
    measurement noise of `noise_level` (dc/dt then by forward differences)."""
    sim = {"n_metabolites": 12, "n_reactions": 1, "n_frames": 300, "n_metabolite_types": 1,
           "homeostatic_lambda_per_type": [0.003], "homeostatic_baseline_per_type": [5.5]}
    dataset = simulate(config_from_dict({"simulation": sim}).simulation)
    trajectory = dataset.observed.trajectory
    if noise_level:
        trajectory = add_measurement_noise(trajectory, noise_level, np.random.default_rng(0))
    return trajectory.concentrations, trajectory.derivatives, left_null_space(dataset.observed.network.stoichiometry)


def test_shared_relaxation_fit_is_exact_for_one_type_without_reactions():
    rate, baseline = shared_relaxation_fit(*one_type_relaxation())
    assert rate == pytest.approx(0.003, rel=1e-6)
    assert baseline == pytest.approx(5.5, rel=1e-6)


def test_sliding_mean_averages_every_run_of_window_frames():
    values = np.random.default_rng(0).normal(size=(20, 3))
    expected = np.stack([values[t:t + 4].mean(0) for t in range(17)])
    np.testing.assert_allclose(sliding_mean(values, 4), expected, rtol=1e-12)
    torch.testing.assert_close(sliding_mean(torch.tensor(values, dtype=torch.float32), 4),
                               torch.tensor(expected), rtol=1e-6, atol=1e-6)
    assert sliding_mean(values, 1) is values


def test_the_weak_form_removes_the_noise_bias_of_the_relaxation_fit():
    """Forward differences of noisy c carry −noise(t)/dt, which correlates with the noise in c(t) and
    inflates a fitted relaxation rate; over 30-frame means the noise telescopes and decorrelates.
    Measured when written: 0.00469 pointwise, 0.00298 over windows (truth 0.003)."""
    c, dcdt, null = one_type_relaxation(noise_level=0.03)
    pointwise_rate, _ = shared_relaxation_fit(c, dcdt, null)
    window_rate, window_baseline = shared_relaxation_fit(sliding_mean(c, 30), sliding_mean(dcdt, 30), null)
    assert pointwise_rate > 1.4 * 0.003
    assert window_rate == pytest.approx(0.003, rel=0.03)
    assert window_baseline == pytest.approx(5.5, rel=0.01)


def test_the_trapezoid_window_removes_the_noise_bias_at_any_width():
    """The trapezoid pairs the W forward differences with c over the W + 1 frames that bound them, half
    weight at both ends: the noise at the ends cancels, so even W = 1 (the midpoint) fits without the
    bias that the box keeps at W = 1 and shrinks only as 1/W². Measured when written (truth 0.003):
    box 0.00469 / 0.00327 / 0.00304 at W = 1 / 3 / 10, trapezoid 0.00307 / 0.00312 / 0.00302."""
    c, dcdt, null = one_type_relaxation(noise_level=0.03)
    for window in (1, 3, 10):
        rate, baseline = shared_relaxation_fit(*window_means(c, dcdt, window, "trapezoid"), null)
        assert rate == pytest.approx(0.003, rel=0.05), window
        assert baseline == pytest.approx(5.5, rel=0.01), window
    assert shared_relaxation_fit(*window_means(c, dcdt, 1, "box"), null)[0] > 1.4 * 0.003


def test_window_means_of_both_shapes_by_their_definitions():
    values = np.random.default_rng(1).normal(size=(20, 3))
    rates = np.random.default_rng(2).normal(size=(20, 3))
    box_c, box_r = window_means(values, rates, 4, "box")
    np.testing.assert_allclose(box_c, sliding_mean(values, 4), rtol=1e-12)
    np.testing.assert_allclose(box_r, sliding_mean(rates, 4), rtol=1e-12)
    trap_c, trap_r = window_means(values, rates, 4, "trapezoid")
    weights = np.array([0.5, 1, 1, 1, 0.5]) / 4
    np.testing.assert_allclose(trap_c, np.stack([weights @ values[t:t + 5] for t in range(16)]), rtol=1e-12)
    np.testing.assert_allclose(trap_r, np.stack([rates[t:t + 4].mean(0) for t in range(16)]), rtol=1e-12)
    mid_c, mid_r = window_means(torch.tensor(values), torch.tensor(rates), 1, "trapezoid")
    torch.testing.assert_close(mid_c, torch.tensor((values[:-1] + values[1:]) / 2), rtol=1e-12, atol=0)
    torch.testing.assert_close(mid_r, torch.tensor(rates[:-1]), rtol=0, atol=0)


@pytest.mark.parametrize("shape", ["box", "trapezoid"])
def test_weak_form_moments_are_the_losses_over_window_means(small_dataset, shape):
    """With moment_window W both moment losses equal their definitions on W-frame means of c, dc/dt
    and the residual (the shape's pairs): the weak form is exact for a head linear in c."""
    window = 5
    trainer = Trainer(linear_head_config(coeff_residual_fit=2.0, residual_fit_start=0.0, moment_window=window,
                                         moment_window_shape=shape),
                      small_dataset.observed, "cpu")
    model = trainer.model
    with torch.no_grad():
        model.embedding.normal_(generator=torch.Generator().manual_seed(4))
        model.relaxation.log_rate.weight.fill_(0.3)
        model.relaxation.baseline.weight.fill_(0.5)
        c, dcdt = window_means(trainer.conc.double(), trainer.deriv.double(), window, shape)
        residual = window_means(trainer.conc.double(),
                                (trainer.deriv - model.reaction_part(trainer.conc)).double(), window, shape)[1]
        rate, baseline = (x.double() for x in model.relaxation.coefficients(model.embedding))
        head = -rate * (c - baseline)
        conservation = ((head - dcdt) @ trainer.homeostasis_losses.null_space.double()).square().sum(-1).mean()
        residual_fit = (head - residual).square().mean(0).sum()
    losses = trainer.losses(0)
    torch.testing.assert_close(losses["conservation"].double(), conservation, rtol=1e-5, atol=0)
    torch.testing.assert_close(losses["residual_fit"].double(), 2.0 * residual_fit, rtol=1e-5, atol=0)


def test_a_moment_window_longer_than_the_data_is_refused(small_dataset):
    with pytest.raises(ValueError, match="moment_window 302 exceeds the 301 frames"):
        Trainer(linear_head_config(moment_window=302), small_dataset.observed, "cpu")
    with pytest.raises(ValueError, match=r"moment_window 301 exceeds the 301 frames of the data \(a trapezoid"):
        Trainer(linear_head_config(moment_window=301, moment_window_shape="trapezoid"), small_dataset.observed, "cpu")
    Trainer(linear_head_config(moment_window=301), small_dataset.observed, "cpu")


def test_residual_moments_give_the_per_metabolite_fit_over_every_frame(small_dataset):
    trainer = Trainer(linear_head_config(coeff_residual_fit=2.0, residual_fit_start=0.0), small_dataset.observed, "cpu")
    model = trainer.model
    with torch.no_grad():
        model.embedding.normal_(generator=torch.Generator().manual_seed(4))
        model.relaxation.log_rate.weight.fill_(0.3)
        model.relaxation.baseline.weight.fill_(0.5)
        residual = trainer.deriv - model.reaction_part(trainer.conc)
        direct = (model.homeostasis(trainer.conc) - residual).square().mean(0).sum()
    losses = trainer.losses(0)
    torch.testing.assert_close(losses["residual_fit"], 2.0 * direct, rtol=1e-5, atol=0)
    # the reactions enter as data: only the head and the embeddings learn from this term
    grads = torch.autograd.grad(losses["residual_fit"], [model.log_k, model.embedding], allow_unused=True)
    assert grads[0] is None and grads[1].abs().sum() > 0


def test_with_a_zero_margin_the_residual_fit_and_cross_fit_leave_out_the_frames_near_zero(small_dataset):
    """zero_margin at the data's 20 % quantile of c: each metabolite's residual fit and cross fit are its mean square
    over the frames whose c stays above it (moment window 1: the frame itself), computed directly."""
    margin = float(np.quantile(small_dataset.observed.trajectory.concentrations, 0.2))
    cfg = linear_head_config(coeff_residual_fit=2.0, residual_fit_start=0.0, zero_margin=margin)
    trainer = Trainer(cfg, small_dataset.observed, "cpu")
    model = trainer.model
    kept = (trainer.conc > margin).float()
    assert 0.0 < kept.mean() < 1.0
    with torch.no_grad():
        model.embedding.normal_(generator=torch.Generator().manual_seed(4))
        model.relaxation.log_rate.weight.fill_(0.3)
        model.relaxation.baseline.weight.fill_(0.5)
        residual = trainer.deriv - model.reaction_part(trainer.conc)
        squares = (model.homeostasis(trainer.conc) - residual).square()
        direct = ((squares * kept).sum(0) / kept.sum(0)).sum()
    torch.testing.assert_close(trainer.losses(0)["residual_fit"], 2.0 * direct, rtol=1e-5, atol=0)
    centres = model.embedding[:3].detach().numpy()
    with torch.no_grad():
        own = torch.stack([(model.head(trainer.conc, torch.as_tensor(centre).expand(trainer.conc.shape[1], -1))
                            - residual).square() for centre in centres], -1)
        expected = (own * kept.unsqueeze(-1)).sum(0) / kept.sum(0).unsqueeze(-1)
    np.testing.assert_allclose(trainer.homeostasis_losses.centre_fit(centres), expected.double().numpy(), rtol=1e-4)


def test_residual_fit_starts_at_its_fraction_of_the_run(small_dataset):
    trainer = Trainer(linear_head_config(coeff_residual_fit=1.0, residual_fit_start=0.5), small_dataset.observed, "cpu")
    half = trainer.total_iterations // 2
    assert trainer.losses(half - 1)["residual_fit"] == 0 and trainer.homeostasis_losses.residual is None
    assert trainer.losses(half)["residual_fit"] > 0


def mlp_head_residual_trainer(small_dataset, **training):
    cfg = small_config(coeff_conservation=1.0, coeff_residual_fit=1.0, residual_fit_start=0.0, **training)
    trainer = Trainer(cfg, small_dataset.observed, "cpu")
    with torch.no_grad():  # a head that depends on c and on the embedding (a fresh one is 0 everywhere)
        trainer.model.node_mlp[-1].weight.normal_(generator=torch.Generator().manual_seed(0))
        trainer.model.embedding.normal_(generator=torch.Generator().manual_seed(1))
    return trainer


def test_the_mlp_heads_residual_fit_is_its_mean_square_over_sampled_frames(small_dataset):
    """Σ_i mean_t (h(c_i, a_i) − r_i)² over residual_fit_frames frames, r = dc/dt − reactions(c) of the refresh."""
    trainer = mlp_head_residual_trainer(small_dataset, residual_fit_frames=5)
    loss = trainer.losses(3)["residual_fit"]
    residual = trainer.homeostasis_losses.residual
    with torch.no_grad():
        np.testing.assert_allclose(residual.residual, trainer.deriv - trainer.model.reaction_part(trainer.conc),
                                   atol=1e-6)
        frames = torch.randint(len(trainer.conc), (5,), generator=torch.Generator().manual_seed(4 * 7_919_003 + 3))
        expected = (trainer.model.homeostasis(trainer.conc[frames]) - residual.residual[frames]).square().sum(-1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    head_weight = trainer.model.node_mlp[-1].weight
    assert torch.autograd.grad(loss, head_weight)[0].abs().sum() > 0


def test_the_mlp_heads_neighbours_are_those_whose_head_fits_the_residual_best(small_dataset):
    trainer = mlp_head_residual_trainer(small_dataset, residual_fit_frames=7, coeff_residual_fusion=0.1,
                                        residual_fusion_neighbours=3)
    assert trainer.losses(0)["embedding_fusion"] > 0
    residual, model = trainer.homeostasis_losses.residual, trainer.model
    frames = torch.linspace(0, len(trainer.conc) - 1, 7).long()
    n = trainer.conc.shape[1]
    with torch.no_grad():
        fit = torch.stack([torch.stack([(model.head(residual.concentrations[frames, i:i + 1], model.embedding[j:j + 1])
                                         - residual.residual[frames, i:i + 1]).square().mean() for j in range(n)])
                           for i in range(n)])
    fit.fill_diagonal_(float("inf"))
    assert torch.equal(residual.neighbours.sort(1).values, fit.topk(3, largest=False).indices.sort(1).values)


def test_residual_fusion_pulls_each_embedding_towards_the_metabolites_that_fit_its_residual_best(small_dataset):
    cfg = linear_head_config(coeff_residual_fit=1.0, residual_fit_start=0.5, coeff_residual_fusion=0.5,
                             residual_fusion_neighbours=3)
    trainer = Trainer(cfg, small_dataset.observed, "cpu")
    model = trainer.model
    with torch.no_grad():  # distinct coefficients per metabolite (a fresh head gives all the same)
        model.relaxation.log_rate.weight.normal_(generator=torch.Generator().manual_seed(0))
        model.relaxation.baseline.weight.normal_(generator=torch.Generator().manual_seed(1))
    assert trainer.losses(trainer.homeostasis_losses.residual_start - 1)["embedding_fusion"] == 0
    fused = trainer.losses(trainer.homeostasis_losses.residual_start)["embedding_fusion"]
    with torch.no_grad():
        rate, baseline = (v.double().numpy() for v in model.relaxation.coefficients(model.embedding))
    c = small_dataset.observed.trajectory.concentrations.astype(np.float64)
    residual = trainer.deriv.double().numpy() - model.reaction_part(trainer.conc).detach().double().numpy()
    # metabolite i's residual fitted with metabolite j's (λ_j, b_j), straight from the frames
    cross = ((-rate[None, None, :] * (c[:, :, None] - baseline[None, None, :]) - residual[:, :, None]) ** 2).mean(0)
    with torch.no_grad():
        coefficients = model.relaxation.coefficients(model.embedding)
        moment_form = trainer.homeostasis_losses.residual.cross_fit(*coefficients).numpy()
    np.testing.assert_allclose(moment_form, cross, rtol=1e-6, atol=1e-12)
    np.fill_diagonal(cross, np.inf)
    neighbours = np.argsort(cross, axis=1)[:, :3]
    emb = model.embedding.detach().double().numpy()
    expected = 0.5 * np.linalg.norm(emb[:, None] - emb[neighbours], axis=-1).sum()
    assert fused.item() == pytest.approx(expected, rel=1e-5)
    fused.backward()
    # descent moves metabolite 0 towards its neighbours' mean
    towards = emb[neighbours[0]].mean(0) - emb[0]
    assert float(np.dot(-model.embedding.grad[0].double().numpy(), towards)) > 0


@pytest.mark.parametrize("threshold", [10_000, 0])
def test_the_neighbours_ranking_orders_each_row_as_the_cross_fit(monkeypatch, threshold):
    """Both forms of the ranking (elementwise below CHEAPER_FORMS_ABOVE metabolites, one product above) give
    the cross fit less at most a per-row constant, so the same neighbours."""
    monkeypatch.setattr(homeostasis_losses, "CHEAPER_FORMS_ABOVE", threshold)
    gen = torch.Generator().manual_seed(3)
    c = 1.0 + 8.0 * torch.rand(200, 60, generator=gen, dtype=torch.float64)
    r = -0.002 * (c - 5.0) + 1e-4 * torch.randn(200, 60, generator=gen, dtype=torch.float64)
    moments = ResidualMoments.of(c, r)
    rate = 1e-3 * (1.0 + torch.rand(60, generator=gen, dtype=torch.float64))
    baseline = 3.0 + 4.0 * torch.rand(60, generator=gen, dtype=torch.float64)
    cross, ranking = moments.cross_fit(rate, baseline), moments.ranking_fit(rate, baseline)
    offset = cross - ranking
    np.testing.assert_allclose(offset.numpy(), offset[:, :1].expand_as(offset).numpy(), rtol=1e-9, atol=1e-15)
    if threshold == 0:
        np.testing.assert_allclose(offset[:, 0].numpy(), moments.r_sq.numpy(), rtol=1e-9)
    assert torch.equal(cross.topk(5, largest=False).indices, ranking.topk(5, largest=False).indices)


def test_residual_fusion_without_the_residual_fit_warns_and_is_ignored(small_dataset):
    with pytest.warns(UserWarning, match="coeff_residual_fusion"):
        cfg = linear_head_config(coeff_residual_fusion=1.0)
    trainer = Trainer(cfg, small_dataset.observed, "cpu")
    assert trainer.losses(trainer.total_iterations - 1)["embedding_fusion"] == 0


def test_embedding_fusion_is_the_sum_of_pairwise_distances(small_dataset):
    trainer = Trainer(linear_head_config(coeff_embedding_fusion=0.5), small_dataset.observed, "cpu")
    emb = trainer.model.embedding.detach()
    expected = 0.5 * torch.pdist(emb).sum()
    torch.testing.assert_close(trainer.losses(0)["embedding_fusion"], expected)
    with torch.no_grad():  # coinciding embeddings keep a finite gradient
        trainer.model.embedding.zero_()
    trainer.losses(0)["loss"].backward()
    assert torch.isfinite(trainer.model.embedding.grad).all()


def test_switched_off_terms_are_left_out_and_recorded_as_zero(small_dataset):
    trainer = Trainer(small_config(), small_dataset.observed, "cpu")
    assert trainer.homeostasis_losses.terms(0, None) == {}
    losses = trainer.losses(0)
    assert all(losses[name] == 0 for name in ("conservation", "residual_fit", "embedding_fusion"))
    assert losses["loss"] == sum(losses[name] for name in ("prediction", "MLP_sub_diff", "MLP_node_L1",
                                                           "MLP_sub_norm", "k_floor"))


def test_the_residual_is_refreshed_at_exactly_every_residual_refresh_every_iterations(small_dataset):
    """Refreshed with the reactions as they stand when the refresh is due, and held fixed in between."""
    cfg = linear_head_config(coeff_residual_fit=1e3, residual_fit_start=0.5, residual_refresh_every=7)
    trainer = Trainer(cfg, small_dataset.observed, "cpu")
    terms = trainer.homeostasis_losses
    start, total = terms.residual_start, trainer.total_iterations
    trainer.run(until=start)
    assert terms.residual is None
    previous, refreshed = None, []
    for iteration in range(start, total):
        fresh = dataclasses.asdict(terms.residual_moments())  # the current reactions' residual
        trainer.run(until=iteration + 1)
        held = {name: value.clone() for name, value in dataclasses.asdict(terms.residual).items()}
        if previous is None or any(not torch.equal(held[name], previous[name]) for name in held):
            refreshed.append(iteration)
            assert all(torch.equal(held[name], fresh[name]) for name in held), iteration
        previous = held
    assert refreshed == list(range(start, total, 7))
    assert len(refreshed) > 5
