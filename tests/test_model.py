import numpy as np
import pytest
import torch
from torch import nn

from metabo_tune import model as model_module
from metabo_tune.config import GraphModelConfig, SimulationConfig
from metabo_tune.model import MLP, Tanh, build_model
from metabo_tune.simulate import simulate


class ExactSubstrate(nn.Module):
    """MLP_sub's exact counterpart c^|s|, reading the model's scaled input."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[..., :1] * self.scale) ** x[..., 1:2]


class ExactHomeostasis(nn.Module):
    """MLP_node's exact counterpart −λ(a)(c − b(a)) with the type written into embedding column 0."""

    def __init__(self, scale: torch.Tensor, lam: np.ndarray, base: np.ndarray) -> None:
        super().__init__()
        self.scale, self.lam, self.base = scale, torch.tensor(lam), torch.tensor(base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        types = x[..., 1].round().long()
        return (-self.lam[types] * (x[..., 0] * self.scale - self.base[types])).unsqueeze(-1)


SIMS_WITH_SQUARES = [
    SimulationConfig(n_metabolites=20, n_reactions=30, n_frames=200),
    # half random reactions: substrate orders 2 occur, so the c^2 branch is exercised too
    SimulationConfig(n_metabolites=15, n_reactions=24, n_frames=200, cycle_fraction=0.5, seed=3),
]


def exact_model(dataset):
    """The learner with the true rate law and homeostasis plugged in, in float64."""
    truth = dataset.truth
    model = build_model(dataset.observed.network, GraphModelConfig(), 7.0, seed=0, log_k_init=(-2, 1)).double()
    model.sub_mlp = ExactSubstrate(model.input_scale)
    model.node_mlp = ExactHomeostasis(model.input_scale, truth.lambda_per_type, truth.baseline_per_type)
    with torch.no_grad():
        model.log_k.copy_(torch.tensor(truth.log_k))
        model.embedding.zero_()
        model.embedding[:, 0] = torch.tensor(truth.types, dtype=torch.float64)
    return model


@pytest.fixture(scope="module")
def reference_dataset():
    return simulate(SimulationConfig())


def test_exact_substitutes_reproduce_the_reference_network(reference_dataset):
    model = exact_model(reference_dataset)
    traj = reference_dataset.observed.trajectory
    with torch.no_grad():
        pred = model(torch.tensor(traj.concentrations)).numpy()
    assert np.abs(pred - traj.derivatives).max() < 1e-9 * np.abs(traj.derivatives).max()


def test_substrate_function_is_evaluated_once_per_distinct_input(reference_dataset):
    network = reference_dataset.observed.network
    model = build_model(network, GraphModelConfig(), 1.0, seed=0, log_k_init=(-2, 1))
    # 510 substrate edges, but metabolite 49 is in no reaction and every order is 1: 99 distinct inputs
    assert len(network.substrate_metabolite) == 510
    assert model.pair_metabolite.shape == (99,)
    calls = []
    model.sub_mlp.register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape))
    model(torch.rand(8, 100))
    assert calls == [torch.Size([8 * 99, 2])]  # one pass over 2-D rows


def test_homeostasis_output_starts_at_zero_with_live_hidden_layers(reference_dataset):
    model = build_model(reference_dataset.observed.network, GraphModelConfig(), 1.0, seed=0, log_k_init=(-2, 1))
    last, first = model.node_mlp[-1], model.node_mlp[0]
    assert torch.count_nonzero(last.weight) == 0 and torch.count_nonzero(last.bias) == 0
    assert torch.count_nonzero(first.weight) == first.weight.numel()
    conc = torch.rand(4, 100) * 10
    assert torch.count_nonzero(model.homeostasis(conc)) == 0
    # the output layer gets a gradient at once, so training can move it
    model.homeostasis(conc).sum().backward()
    assert torch.count_nonzero(last.weight.grad) > 0


def test_build_is_seeded_and_leaves_the_global_rng_alone(reference_dataset):
    network = reference_dataset.observed.network
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = build_model(network, GraphModelConfig(), 1.0, seed=5, log_k_init=(-2, 1))
    after = torch.rand(3)
    b = build_model(network, GraphModelConfig(), 1.0, seed=5, log_k_init=(-2, 1))
    c = build_model(network, GraphModelConfig(), 1.0, seed=6, log_k_init=(-2, 1))
    assert torch.equal(before, after)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.log_k, c.log_k)
    assert a.log_k.min() >= -2 and a.log_k.max() <= 1


def test_parameter_groups_cover_every_parameter_once(reference_dataset):
    model = build_model(reference_dataset.observed.network, GraphModelConfig(), 1.0, seed=0, log_k_init=(-2, 1))
    groups = model.parameter_groups()
    assert set(groups) == {"k", "embedding", "node", "sub"}
    grouped = [id(p) for params in groups.values() for p in params]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    sizes = {name: sum(p.numel() for p in params) for name, params in groups.items()}
    # the reference's homeo_rank_50 architecture: 256 + 200 + 161 + 8 577 = 9 194 parameters
    assert sizes == {"k": 256, "embedding": 200, "node": 161, "sub": 8577}


def test_tanh_matches_torch_in_value_and_gradient():
    x = torch.linspace(-30, 30, 2001, dtype=torch.float64, requires_grad=True)
    ours = Tanh()(x.clone())  # it overwrites its input, as it may a layer's output
    (grad_ours,) = torch.autograd.grad(ours.sum(), x)
    ref = torch.tanh(x)
    (grad_ref,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_ours, grad_ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize(("n_in", "hidden", "n_layers", "input_gradient"),
                         [(2, 64, 4, False), (3, 32, 2, True), (2, 16, 1, False), (3, 8, 3, True)])
def test_mlp_is_its_layers_in_one_autograd_node_with_bit_identical_values_and_gradients(
        n_in, hidden, n_layers, input_gradient):
    torch.manual_seed(0)
    net = MLP(n_in, hidden, n_layers)
    with torch.no_grad():  # weights of order 1, so that every tanh works in its curved range
        for p in net.parameters():
            p.normal_()
    x = torch.randn(900, n_in, requires_grad=input_gradient)
    upstream = torch.randn(900, 1)
    results = []
    for forward in (net.forward, lambda rows: nn.Sequential.forward(net, rows)):  # one node; layer by layer
        out = forward(x)
        inputs = [*net.parameters(), x] if input_gradient else list(net.parameters())
        results.append((out, torch.autograd.grad(out, inputs, upstream)))
    (fused, fused_grads), (layered, layered_grads) = results
    assert torch.equal(fused, layered)
    assert all(torch.equal(a, b) for a, b in zip(fused_grads, layered_grads, strict=True))
    assert len(fused_grads) == 2 * n_layers + input_gradient
    assert type(fused.grad_fn).__name__ == "_MLPFunctionBackward"


def linear_head_model(network):
    return build_model(network, GraphModelConfig(homeostasis_head="linear"), 2.0, seed=0, log_k_init=(-2, 1))


def test_linear_head_is_a_relaxation_with_positive_rate(reference_dataset):
    model = linear_head_model(reference_dataset.observed.network)
    relaxation = model.relaxation
    assert model.node_mlp is None
    with torch.no_grad():
        model.embedding.copy_(torch.randn(100, 2))
        relaxation.log_rate.weight.copy_(torch.tensor([[3.0, -1.0]]))  # large weights: λ spans decades
        relaxation.log_rate.bias.fill_(-5.0)
        relaxation.baseline.weight.copy_(torch.tensor([[0.5, 0.2]]))
        relaxation.baseline.bias.fill_(1.5)
    rate, baseline = relaxation.coefficients(model.embedding)
    assert (rate > 0).all()
    conc = torch.rand(4, 100) * 10
    expected = -rate * (conc - baseline)
    torch.testing.assert_close(model.homeostasis(conc), expected)
    # b is in raw concentration units: input_scale (2.0) times the affine map
    torch.testing.assert_close(baseline, 2.0 * (model.embedding @ torch.tensor([0.5, 0.2]) + 1.5))


def test_linear_head_starts_shared_and_gives_the_embeddings_gradient(reference_dataset):
    model = linear_head_model(reference_dataset.observed.network)
    model.relaxation.initialise(rate=1.5e-3, baseline=5.0)
    rate, baseline = model.relaxation.coefficients(model.embedding)
    torch.testing.assert_close(rate, torch.full((100,), 1.5e-3))
    torch.testing.assert_close(baseline, torch.full((100,), 5.0))
    # the embeddings are random, the maps flat: the weights get gradient first, then the embeddings
    model.homeostasis(torch.rand(4, 100) * 10).square().sum().backward()
    assert torch.count_nonzero(model.relaxation.log_rate.weight.grad) == 2
    assert torch.count_nonzero(model.relaxation.baseline.weight.grad) == 2


def test_linear_head_parameters_are_the_node_group(reference_dataset):
    model = linear_head_model(reference_dataset.observed.network)
    groups = model.parameter_groups()
    assert {id(p) for p in groups["node"]} == {id(p) for p in model.relaxation.parameters()}
    grouped = sorted(id(p) for params in groups.values() for p in params)
    assert grouped == sorted(id(p) for p in model.parameters())


def test_detached_homeostasis_passes_no_gradient(reference_dataset):
    model = linear_head_model(reference_dataset.observed.network)
    model(torch.rand(4, 100) * 10, detach_homeostasis=True).sum().backward()
    assert model.relaxation.log_rate.bias.grad is None and model.embedding.grad is None
    assert model.log_k.grad is not None


def test_power_substrate_form_is_mass_action_times_a_learned_factor(reference_dataset):
    model = build_model(reference_dataset.observed.network, GraphModelConfig(substrate_form="power"), 3.0, seed=0,
                        log_k_init=(-2, 1))
    conc, order = torch.rand(50) * 10, torch.tensor([1.0, 2.0]).repeat(25)
    factor = torch.exp(model.sub_mlp(torch.stack([conc / 3.0, order], -1)).squeeze(-1))
    torch.testing.assert_close(model.substrate(conc, order), conc**order * factor)
    last = model.sub_mlp[-1]
    with torch.no_grad():  # a zero correction leaves exact mass action
        last.weight.zero_()
        last.bias.zero_()
    torch.testing.assert_close(model.substrate(conc, order), conc**order)


def test_mass_action_form_is_c_to_the_order_whatever_the_mlp(reference_dataset):
    model = build_model(reference_dataset.observed.network, GraphModelConfig(substrate_form="mass_action"), 3.0,
                        seed=0, log_k_init=(-2, 1))
    conc, order = torch.rand(50) * 10, torch.tensor([1.0, 2.0]).repeat(25)
    torch.testing.assert_close(model.substrate(conc, order), conc**order)
    with torch.no_grad():
        model.sub_mlp[-1].bias.fill_(3.0)
    torch.testing.assert_close(model.substrate(conc, order), conc**order)


def test_the_zero_prior_subtracts_the_mlps_value_at_zero_for_each_order(reference_dataset):
    """substrate_zero: f(c, s) = MLP(c, s) − MLP(0, s), so f(0, s) = 0 for every order, whatever the weights."""
    network = reference_dataset.observed.network
    free = build_model(network, GraphModelConfig(), 3.0, seed=0, log_k_init=(-2, 1))
    zeroed = build_model(network, GraphModelConfig(substrate_zero=True), 3.0, seed=0, log_k_init=(-2, 1))
    conc, order = torch.rand(4, 50) * 10, torch.tensor([1.0, 2.0, 3.0]).repeat(4, 17)[:, :50]
    at_zero = free.substrate(torch.zeros_like(order), order)
    assert (at_zero != 0).all()  # the free MLP is not 0 at c = 0
    torch.testing.assert_close(zeroed.substrate(conc, order), free.substrate(conc, order) - at_zero)
    # zero to rounding: the two rows of a pair sit at different places of one matrix product
    torch.testing.assert_close(zeroed.substrate(torch.zeros(3), torch.tensor([1.0, 2.0, 3.0])), torch.zeros(3),
                               rtol=0, atol=1e-7)


def test_repeated_orders_raise_the_order_one_law_to_each_edges_order(reference_dataset):
    """substrate_orders 'repeated': f(c, s) = f(c, 1)^s, with the zero prior and the same weights as 'input'."""
    network = reference_dataset.observed.network
    config = GraphModelConfig(substrate_zero=True, substrate_orders="repeated")
    per_order = build_model(network, GraphModelConfig(substrate_zero=True), 3.0, seed=0, log_k_init=(-2, 1))
    repeated = build_model(network, config, 3.0, seed=0, log_k_init=(-2, 1))
    conc, order = torch.rand(4, 51) * 10, torch.tensor([1.0, 2.0, 3.0]).repeat(4, 17)
    order_one = per_order.substrate(conc, torch.ones_like(order))
    torch.testing.assert_close(repeated.substrate(conc, order), order_one.pow(order))
    assert not torch.allclose(per_order.substrate(conc, order), order_one.pow(order))  # 'input' learns each order


def power_model(network, head="mlp", form="power"):
    return build_model(network, GraphModelConfig(substrate_form=form, homeostasis_head=head), 3.0, seed=0,
                       log_k_init=(-2, 1))


def test_power_form_is_exactly_zero_at_zero_concentration():
    dataset = simulate(SIMS_WITH_SQUARES[1])
    model = power_model(dataset.observed.network)
    order = torch.tensor([1.0, 2.0])
    assert torch.equal(model.substrate(torch.zeros(2), order), torch.zeros(2))
    assert (model.substrate(torch.full((2,), 1e-3), order) > 0).all()
    # every reaction with metabolite m as a substrate stops when c_m = 0, and only those
    network = dataset.observed.network
    m = int(network.substrate_metabolite[0])
    conc = torch.rand(3, network.n_metabolites) + 0.5
    conc[:, m] = 0.0
    rates = model.rates(conc)
    stopped = np.zeros(network.n_reactions, dtype=bool)
    stopped[network.substrate_reaction[network.substrate_metabolite == m]] = True
    assert torch.count_nonzero(rates[:, stopped]) == 0
    assert (rates[:, ~stopped] > 0).all()


def test_power_form_has_finite_gradients_at_zero_concentration():
    """c^|s|·exp(g) written as exp(|s|·log c + g) would give the exact zero too, but 0·∞ = nan gradients."""
    network = simulate(SIMS_WITH_SQUARES[1]).observed.network
    model = power_model(network)
    conc = torch.zeros(2, requires_grad=True)
    values = model.substrate(conc, torch.tensor([1.0, 2.0]))
    (grad,) = torch.autograd.grad(values.sum(), conc)
    # d/dc [c·e^g(c)] = e^g(0) at c = 0; d/dc [c²·e^g(c)] = 0
    g_at_zero = model.sub_mlp(torch.tensor([[0.0, 1.0]])).squeeze()
    torch.testing.assert_close(grad, torch.stack([torch.exp(g_at_zero), torch.zeros(())]).detach())
    # the whole model, one state with every c at 0 and one with a few: finite gradients everywhere
    conc = torch.rand(2, network.n_metabolites) + 0.5
    conc[0] = 0.0
    conc[1, network.substrate_metabolite[:3]] = 0.0
    conc.requires_grad_(True)
    model(conc).square().sum().add(model.rates(conc).sum()).backward()
    assert torch.isfinite(conc.grad).all()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.sub_mlp[0].weight.grad.abs().sum() > 0


def exact_power_model(dataset, form="power"):
    """The power form with g = 0 (exact mass action; or the mass-action form, which has no g), the true log k, and
    the linear head set to each type's true (λ, b) through the embedding (column 0: the type), in float64."""
    truth = dataset.truth
    model = power_model(dataset.observed.network, head="linear", form=form).double()
    lam, base = np.log(truth.lambda_per_type), truth.baseline_per_type / 3.0
    with torch.no_grad():
        model.sub_mlp[-1].weight.zero_()
        model.sub_mlp[-1].bias.zero_()
        model.log_k.copy_(torch.tensor(truth.log_k))
        model.embedding.zero_()
        model.embedding[:, 0] = torch.tensor(truth.types, dtype=torch.float64)
        for layer, (at_0, at_1) in ((model.relaxation.log_rate, lam), (model.relaxation.baseline, base)):
            layer.weight.zero_()
            layer.weight[0, 0] = at_1 - at_0
            layer.bias.fill_(at_0)
    return model


def exact_mass_action_model(dataset):
    return exact_power_model(dataset, form="mass_action")


@pytest.mark.parametrize("build", [exact_model, exact_power_model, exact_mass_action_model],
                         ids=["mlp_substitutes", "power_form", "mass_action_form"])
@pytest.mark.parametrize("sim", SIMS_WITH_SQUARES)
def test_exact_substitutes_reproduce_the_simulated_derivatives(sim, build):
    """The free MLPs replaced by the exact functions, the power form with no correction, and the mass-action form
    give the simulator's dc/dt."""
    dataset = simulate(sim)
    assert sim.cycle_fraction == 1.0 or (dataset.observed.network.substrate_order == 2).any()
    model = build(dataset)
    traj = dataset.observed.trajectory
    with torch.no_grad():
        pred = model(torch.tensor(traj.concentrations)).numpy()
    np.testing.assert_allclose(pred, traj.derivatives, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("build", [exact_model, exact_power_model], ids=["mlp_substitutes", "power_form"])
def test_a_sparse_stoichiometry_gives_the_dense_products_and_gradients(build, monkeypatch):
    """S·v over S's nonzeros (large networks) equals the dense product, on E. coli core's real S too."""
    dataset = simulate(SimulationConfig(network="e_coli_core", n_frames=40))
    conc = torch.tensor(dataset.observed.trajectory.concentrations)
    outputs = []
    for threshold in (10**12, 0):
        monkeypatch.setattr(model_module, "SPARSE_ABOVE", threshold)
        model = build(dataset)
        assert model.sparse_stoichiometry == (threshold == 0)
        pred = model(conc)
        pred.square().sum().backward()
        outputs.append((pred.detach().numpy(), model.log_k.grad.numpy().copy()))
    np.testing.assert_allclose(outputs[1][0], dataset.observed.trajectory.derivatives, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(outputs[1][0], outputs[0][0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(outputs[1][1], outputs[0][1], rtol=1e-10)
