"""The learner: rate constants, metabolite embeddings, a homeostasis head and MLP_sub (substrate).

    dc_i/dt = h(c_i, a_i) + Σ_j S_ij · 10^log_k_j · Π_{e ∈ sub(j)} |MLP_sub(c_e, |s_e|)|

The homeostasis head h is either MLP_node(c_i, a_i) or the linear relaxation −λ(a_i)·(c_i − b(a_i)).

S and the substrate edges are given and frozen. MLP_sub depends only on (c, |s|), so it is evaluated
once per distinct (metabolite, order) pair and gathered onto reactions (100 rows instead of 510 here).
Both MLPs see c/input_scale (xnorm); the rate law's product is taken over the MLP outputs.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import nn

from metabo_tune.config import GraphModelConfig
from metabo_tune.simulate import Network

_ONE = torch.ones(())
SPARSE_ABOVE = 1_000_000  # entries of S from which S·v runs over S's nonzeros instead of a dense product


def _tanh_(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) as 2·sigmoid(2x) − 1 (see Tanh), in place in x (a Linear's output, which no backward
    needs): no new [rows, hidden] buffers."""
    # x + x and s + s − 1, not × 2.0: a Python scalar costs a tensor conversion per call.
    y = x.add_(x).sigmoid_()
    return y.add_(y).sub_(_ONE)  # a 0-dim CPU tensor is valid with CUDA tensors too


class _SigmoidTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = _tanh_(x)
        ctx.mark_dirty(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


class Tanh(nn.Module):
    """tanh as 2·sigmoid(2x) − 1 (equal to within 2e-7). On torch 2.13's CPU build the native tanh
    forward took 6× longer than sigmoid (131 vs 22 µs for 800×64, one thread, measured), which made it
    the largest single cost of a training step; the backward keeps the native kernel, which is fast.
    It overwrites its input, which must be a layer's output that nothing else reads and not a view
    (autograd would add a slow copy back into the base)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SigmoidTanh.apply(x)


class _NarrowLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        x, weight = ctx.saved_tensors
        grad_x = (weight.t() @ grad.t()).t() if ctx.needs_input_grad[0] else None
        return grad_x, (x.t() @ grad).t(), grad.sum(0)


class NarrowLinear(nn.Linear):
    """nn.Linear for a layer with few inputs (the MLPs' first). Autograd's backward of x @ Wᵀ takes
    gradᵀ @ x for the weight and grad @ W for x; with 2 or 3 input columns MKL computes those 2–6× slower
    than the transposed products (xᵀ @ grad)ᵀ and (Wᵀ @ gradᵀ)ᵀ, which give the same values (measured).
    x is 2-D [rows, in_features]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _NarrowLinearFunction.apply(x, self.weight, self.bias)


class _MLPFunction(torch.autograd.Function):
    """Linear → tanh → … → Linear in one autograd node, with the backward that autograd builds from the
    layers written out (the same kernels on the same operands: bit-identical values and gradients).
    One node instead of three per layer saves the engine's per-node cost, which at these sizes is a
    large part of the MLPs' time. Arguments: x, then weight and bias of every layer."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        weights, biases = params[0::2], params[1::2]
        inputs = [x]  # every layer's input; a hidden layer's is the tanh before it, computed in place
        for weight, bias in zip(weights[:-1], biases[:-1], strict=True):
            inputs.append(_tanh_(torch.addmm(bias, inputs[-1], weight.t())))
        ctx.save_for_backward(*inputs, *weights)
        return torch.addmm(biases[-1], inputs[-1], weights[-1].t())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        inputs, weights = saved[: len(saved) // 2], saved[len(saved) // 2:]
        param_grads = []  # bias, weight of the last layer first
        for i in range(len(weights) - 1, 0, -1):  # nn.Linear's backward (addmm with Wᵀ), then tanh's
            param_grads += [grad.sum(0), grad.t().mm(inputs[i])]
            grad = torch.ops.aten.tanh_backward(grad.mm(weights[i]), inputs[i])
        param_grads += [grad.sum(0), (inputs[0].t() @ grad).t()]  # NarrowLinear's
        grad_x = (weights[0].t() @ grad.t()).t() if ctx.needs_input_grad[0] else None
        return grad_x, *reversed(param_grads)


class MLP(nn.Sequential):
    """n_layers Linear layers (n_in → hidden → … → 1) with tanh between them. Indexed and saved as the
    nn.Sequential of its layers, whose layer-by-layer forward it computes as one autograd node. x is
    2-D [rows, n_in]."""

    def __init__(self, n_in: int, hidden: int, n_layers: int) -> None:
        sizes = [n_in] + [hidden] * (n_layers - 1) + [1]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            layers.append(NarrowLinear(a, b) if i == 0 else nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(Tanh())
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = [p for layer in self if isinstance(layer, nn.Linear) for p in (layer.weight, layer.bias)]
        return _MLPFunction.apply(x, *params)


class LinearRelaxation(nn.Module):
    """h_i = −λ(a_i)·(c_i − b(a_i)) with log λ and b/xnorm affine in the embedding.

    Linear in c, so every metabolite relaxes towards a baseline, which the free MLP_node does not
    enforce; λ stays positive. Both maps start flat (zero weights), so at first all metabolites share one
    (λ, b), set by `initialise` from data; the embeddings then receive gradient through the weights."""

    def __init__(self, embedding_dim: int, input_scale: float) -> None:
        super().__init__()
        self.log_rate = nn.Linear(embedding_dim, 1)
        self.baseline = nn.Linear(embedding_dim, 1)
        for layer in (self.log_rate, self.baseline):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.input_scale = input_scale

    @torch.no_grad()
    def initialise(self, rate: float, baseline: float) -> None:
        self.log_rate.bias.fill_(math.log(rate))
        self.baseline.bias.fill_(baseline / self.input_scale)

    def coefficients(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(λ_i, b_i) per metabolite, in raw concentration units."""
        rate = torch.exp(self.log_rate(embedding).squeeze(-1))
        return rate, self.baseline(embedding).squeeze(-1) * self.input_scale

    def forward(self, conc: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        rate, baseline = self.coefficients(embedding)
        return -rate * (conc - baseline)


class MetabolicGNN(nn.Module):
    def __init__(self, network: Network, cfg: GraphModelConfig, input_scale: float,
                 log_k_init: tuple[float, float] = (-2.0, 1.0)) -> None:
        super().__init__()
        n, n_rxn = network.n_metabolites, network.n_reactions
        self.rate_softplus = cfg.rate_softplus
        self.substrate_form = cfg.substrate_form
        self.substrate_zero = cfg.substrate_zero and cfg.substrate_form == "mlp"
        self.repeated_orders = cfg.substrate_orders == "repeated" and cfg.substrate_form == "mlp"
        self.embedding = nn.Parameter(0.1 * torch.randn(n, cfg.embedding_dim))
        self.node_mlp: MLP | None = None
        self.relaxation: LinearRelaxation | None = None
        if cfg.homeostasis_head == "linear":
            self.relaxation = LinearRelaxation(cfg.embedding_dim, input_scale)
        else:
            self.node_mlp = MLP(1 + cfg.embedding_dim, cfg.hidden_dim_node, cfg.n_layers_node)
            last = self.node_mlp[-1]
            nn.init.zeros_(last.weight)  # output starts at 0; hidden layers keep their init so gradients flow
            nn.init.zeros_(last.bias)
        self.sub_mlp = MLP(2, cfg.hidden_dim_sub, cfg.n_layers_sub)
        self.log_k = nn.Parameter(torch.empty(n_rxn).uniform_(*log_k_init))

        pairs = np.unique(np.stack([network.substrate_metabolite, network.substrate_order], 1), axis=0)
        pairs = pairs.reshape(-1, 2)
        pair_of = {(int(m), int(s)): i for i, (m, s) in enumerate(pairs)}
        index, order = network.padded_substrates()
        gather = np.full(index.shape, len(pairs), dtype=np.int64)  # len(pairs) → the constant-1 column
        for (r, w), met in np.ndenumerate(index):
            if order[r, w] > 0:
                gather[r, w] = pair_of[(int(met), int(order[r, w]))]
        self.sparse_stoichiometry = network.stoichiometry.size > SPARSE_ABOVE
        if self.sparse_stoichiometry:
            row, col = np.nonzero(network.stoichiometry)
            self.register_buffer("stoichiometry_row", torch.tensor(row, dtype=torch.long))
            self.register_buffer("stoichiometry_col", torch.tensor(col, dtype=torch.long))
            self.register_buffer("stoichiometry_value", torch.tensor(network.stoichiometry[row, col],
                                                                     dtype=torch.float32))
        else:
            self.register_buffer("stoichiometry", torch.tensor(network.stoichiometry, dtype=torch.float32))
        self.n_metabolites = n
        self.register_buffer("pair_metabolite", torch.tensor(pairs[:, 0], dtype=torch.long))
        self.register_buffer("pair_order", torch.tensor(pairs[:, 1], dtype=torch.float32))
        self.register_buffer("reaction_gather", torch.tensor(gather))
        self.register_buffer("input_scale", torch.tensor(float(input_scale)))

    # -- components ------------------------------------------------------------------------

    def homeostasis(self, conc: torch.Tensor) -> torch.Tensor:
        """h(c_i, a_i) for every metabolite; conc is [..., n] → [..., n]."""
        return self.head(conc, self.embedding)

    def head(self, conc: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """h(c, a) elementwise: conc [..., m] with embeddings [m, d] (one per last-axis entry) → [..., m]."""
        if self.relaxation is not None:
            return self.relaxation(conc, embedding)
        emb = embedding.expand(*conc.shape, embedding.shape[-1])
        inputs = torch.cat([(conc / self.input_scale).unsqueeze(-1), emb], dim=-1)
        # 2-D rows: NarrowLinear takes them, and no layer output is a view that Tanh would overwrite
        return self.node_mlp(inputs.flatten(0, -2)).view(conc.shape)

    def substrate(self, conc: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """MLP_sub(c, |s|) elementwise on broadcastable tensors, in raw concentration units. With substrate_zero
        the MLP's value at (0, |s|) is subtracted, evaluated in the same pass once per order present. With
        substrate_orders 'repeated', MLP_sub(c, 1)^|s|."""
        conc, order = torch.broadcast_tensors(conc, order)
        if self.substrate_form == "mass_action":
            return conc.clamp(min=0.0).pow(order)
        return self.substrate_law(conc, order, self.substrate_mlp(conc, order))

    def substrate_mlp(self, conc: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """MLP_sub's own output at (c, |s|) on tensors of one shape (at order 1 throughout with repeated orders),
        less its value at (0, |s|) with substrate_zero: what `substrate_law` builds the rate law's factor from."""
        if self.repeated_orders:
            order = torch.ones_like(order)
        inputs = torch.stack([conc / self.input_scale, order], dim=-1)
        if self.substrate_zero:
            orders, inverse = torch.unique(order, return_inverse=True)
            at_zero = torch.stack([torch.zeros_like(orders), orders], dim=-1)
            out = self.sub_mlp(torch.cat([inputs.view(-1, 2), at_zero])).squeeze(-1)
            values, zero_values = torch.split(out, [conc.numel(), len(orders)])
            return (values - zero_values[inverse.view(-1)]).view(conc.shape)
        return self.sub_mlp(inputs.view(-1, 2)).view(conc.shape)  # 2-D rows, as for MLP_node

    def substrate_law(self, conc: torch.Tensor, order: torch.Tensor, mlp_values: torch.Tensor) -> torch.Tensor:
        """The rate law's factor at (c, |s|) from `substrate_mlp`'s values there: c^|s|·exp(g) in the power form,
        g^|s| with repeated orders, g itself otherwise."""
        if self.substrate_form == "power":
            return conc.clamp(min=0.0).pow(order) * torch.exp(mlp_values)
        if self.repeated_orders:
            return mlp_values.pow(order)
        return mlp_values

    def rates(self, conc: torch.Tensor, substrate_values: torch.Tensor | None = None) -> torch.Tensor:
        """Reaction rates v [..., n_reactions] at concentrations [..., n]. `substrate_values`
        [..., n_pairs] are MLP_sub at the (metabolite, order) pairs when the caller evaluated them."""
        if substrate_values is None:
            substrate_values = self.substrate(conc[..., self.pair_metabolite], self.pair_order)
        terms = nn.functional.pad(substrate_values.abs(), (0, 1), value=1.0)  # the constant-1 column
        gathered = terms.index_select(-1, self.reaction_gather.flatten())
        products = gathered.unflatten(-1, self.reaction_gather.shape).prod(dim=-1)
        if self.rate_softplus:
            products = nn.functional.softplus(products)
        return torch.pow(10.0, self.log_k) * products

    def reaction_part(self, conc: torch.Tensor, substrate_values: torch.Tensor | None = None) -> torch.Tensor:
        """S·v. A large S is kept as its nonzeros (a genome-scale S is 99.8 % zeros): each rate is gathered
        onto its nonzeros and summed into its metabolites, at a cost linear in nnz(S)."""
        rates = self.rates(conc, substrate_values)
        if not self.sparse_stoichiometry:
            return rates @ self.stoichiometry.T
        flat = rates.reshape(-1, rates.shape[-1])
        terms = flat.index_select(1, self.stoichiometry_col) * self.stoichiometry_value
        out = flat.new_zeros(flat.shape[0], self.n_metabolites).index_add_(1, self.stoichiometry_row, terms)
        return out.view(*rates.shape[:-1], self.n_metabolites)

    def forward(self, conc: torch.Tensor, detach_homeostasis: bool = False) -> torch.Tensor:
        """Predicted dc/dt [..., n] at concentrations [..., n]."""
        homeo = self.homeostasis(conc)
        return self.reaction_part(conc) + (homeo.detach() if detach_homeostasis else homeo)

    # -- groups for the optimiser ----------------------------------------------------------

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"k": [self.log_k], "embedding": [self.embedding],
                "node": list((self.relaxation or self.node_mlp).parameters()), "sub": list(self.sub_mlp.parameters())}


def build_model(network: Network, cfg: GraphModelConfig, input_scale: float, seed: int,
                log_k_init: tuple[float, float]) -> MetabolicGNN:
    """Construct with every random draw from `seed`, without touching the global torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MetabolicGNN(network, cfg, input_scale, log_k_init)
