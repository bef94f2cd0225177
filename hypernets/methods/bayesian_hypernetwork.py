"""Bayesian Hypernetwork (Krueger et al., 2017): a normalising flow over weight-norm scales.

Every linear and convolutional weight of the target is weight-normalised: output unit ``i``
has the weight ``g_i * V_i / ||V_i||``. The directions ``V`` and all other parameters (biases,
normalisation gains) are point estimates; the scales ``g`` — one per output unit, ``D`` in all
— are random, drawn by a normalising flow:

    ε ~ N(0, I_D)  ->  element-wise affine  ->  k RealNVP affine couplings  ->  g

with a fixed random permutation between couplings (each coupling's network has one hidden
layer of 200 units). The flow is invertible with a triangular Jacobian, so
``log q(g) = log N(ε; 0, I) − log|det ∂g/∂ε|`` is exact and the KL term of the ELBO needs no
estimator beyond the Monte-Carlo average:

    loss per data point = E_q[NLL(y | x, g)] + E_q[log q(g) − log p(g)] / n_train,

with the prior ``p(g) = N(0, prior_std^2 I)`` (the reference code's Gaussian prior with
precision ``lbda = 1 / prior_std^2``, default 1).

The couplings are zuko's ``GeneralCouplingTransform`` (affine, as in RealNVP) and its
permutation and composition transforms; the element-wise affine is torch's
``AffineTransform``. The coupling networks' output layers start at zero, so the flow starts as
the element-wise Gaussian ``g ~ N(g_0, init_std^2)`` with ``g_0 = ||V_0||``: the sampled nets
start at the target's default initialisation.

``per_datapoint=True`` (training only, for targets built from Linear, Activation, Flatten and
Dropout layers) draws one ``g`` per example instead of one per net: each layer computes
``x · V̂ᵀ`` once for the batch and scales each example's row by its own ``g``, so independent
weights per example cost no more than shared ones and the gradient is less noisy. Prediction
always samples whole nets.

Defaults: Adam at lr 1e-3 (the reference code's optimiser and learning rate); one sampled net
per step like the reference (``train_samples``); ``k = 4`` couplings (the reference's default
is a single coupling layer); ``init_std = 0.1`` (the reference started the element-wise scale at
about e^-7). The reference also clipped gradients (total norm 10, elements at 5); this
implementation does not. Dropout markers in the target are ignored: only g is random.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import AffineTransform
from zuko.flows.coupling import GeneralCouplingTransform
from zuko.transforms import ComposedTransform, PermutationTransform

from hypernets.likelihoods import Likelihood
from hypernets.methods.base import (
    Method,
    StackedParams,
    check_prior_std,
    full_precision,
)
from hypernets.targets import Linear, Params, TargetNet
from hypernets.validation import (
    check_bool,
    check_int,
    check_positive,
    check_positive_int,
)


def _normal_log_prob(x: Tensor, std: float) -> Tensor:
    """Sum over the last dimension of log N(x; 0, std^2)."""
    return (-0.5 * (x / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)


class ScaleFlow(nn.Module):
    """The hypernetwork: ε ~ N(0, I_D) -> g through an element-wise affine and k couplings."""

    def __init__(self, dim: int, n_couplings: int, coupling_hidden: int, shift: Tensor,
                 init_std: float, generator: torch.Generator | None = None):
        super().__init__()
        if n_couplings > 0 and dim < 2:
            raise ValueError(f"coupling layers split the scales in two, so they need at least 2 "
                             f"weight-normalised units, the target has {dim}")
        self.dim = dim
        self.shift = nn.Parameter(shift.clone())
        self.log_scale = nn.Parameter(torch.full((dim,), math.log(init_std)))
        self.couplings = nn.ModuleList(
            GeneralCouplingTransform(dim, hidden_features=(coupling_hidden,))
            for _ in range(n_couplings))
        for coupling in self.couplings:
            first, last = coupling.hyper[0], coupling.hyper[-1]
            bound = 1 / math.sqrt(first.in_features)
            with torch.no_grad():
                first.weight.copy_((torch.rand(first.weight.shape, generator=generator) * 2 - 1)
                                   * bound)
                first.bias.copy_((torch.rand(first.bias.shape, generator=generator) * 2 - 1)
                                 * bound)
            # Zero output: each coupling starts as the identity.
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        orders = [torch.randperm(dim, generator=generator) for _ in range(max(n_couplings - 1, 0))]
        self.register_buffer("orders", torch.stack(orders) if orders
                             else torch.empty(0, dim, dtype=torch.long))

    def transform(self) -> ComposedTransform:
        """The map ε -> g with exact log-determinants (``call_and_ladj``)."""
        parts = [AffineTransform(self.shift, self.log_scale.exp(), event_dim=1)]
        for i, coupling in enumerate(self.couplings):
            if i > 0:
                parts.append(PermutationTransform(self.orders[i - 1]))
            parts.append(coupling())
        return ComposedTransform(*parts)

    def rsample_and_log_prob(self, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """g [*shape, D] (reparameterised) and log q(g) [*shape], in float32."""
        eps = torch.randn(*shape, self.dim, device=self.shift.device, dtype=self.shift.dtype)
        with full_precision(self.shift.device):
            g, log_det = self.transform().call_and_ladj(eps)
        return g, _normal_log_prob(eps, 1.0) - log_det

    def log_prob(self, g: Tensor) -> Tensor:
        """log q(g) of given scales, through the inverse map, in float32."""
        with full_precision(self.shift.device):
            transform = self.transform()
            eps = transform.inv(g.to(self.shift.dtype))
            _, log_det = transform.call_and_ladj(eps)
        return _normal_log_prob(eps, 1.0) - log_det


class BayesianHypernetwork(Method):
    """Weight-normalised target whose per-unit scales g come from a normalising flow."""

    default_lr = 1e-3
    default_train_samples = 1

    def __init__(self, target: TargetNet, likelihood: Likelihood, *, n_couplings: int = 4,
                 coupling_hidden: int = 200, prior_std: float = 1.0, init_std: float = 0.1,
                 per_datapoint: bool = False, train_samples: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(target, likelihood, train_samples=train_samples)
        n_couplings = check_int("n_couplings", n_couplings, minimum=0)
        coupling_hidden = check_positive_int("coupling_hidden", coupling_hidden)
        init_std = check_positive("init_std", init_std)
        if check_bool("per_datapoint", per_datapoint):
            target.require_mlp("per_datapoint=True")
        self.prior_std = check_prior_std(prior_std)
        self.per_datapoint = per_datapoint
        # Linear and convolution weights (also inside residual blocks) are [out, in, ...].
        self.normalised = [name for name, shape in target.param_shapes.items()
                           if name.endswith("weight") and len(shape) >= 2]
        if not self.normalised:
            raise ValueError(f"{target.name} has no linear or convolutional weight to normalise")
        self.units: dict[str, slice] = {}
        start = 0
        for name in self.normalised:
            n_units = target.param_shapes[name][0]
            self.units[name] = slice(start, start + n_units)
            start += n_units
        self.point = StackedParams(target, 1, generator)
        initial_norms = torch.cat([self._row_norms(self._point(name)) for name in self.normalised])
        self.flow = ScaleFlow(start, n_couplings, coupling_hidden, initial_norms.detach(),
                              init_std, generator)

    @staticmethod
    def _row_norms(weight: Tensor) -> Tensor:
        return weight.flatten(1).norm(dim=1)

    def _point(self, name: str) -> Tensor:
        return self.point.as_dict()[name][0]

    def _directions(self) -> dict[str, Tensor]:
        """V / ||V|| per output unit, for every normalised weight."""
        directions = {}
        for name in self.normalised:
            v = self._point(name)
            directions[name] = v / self._row_norms(v).reshape(-1, *[1] * (v.dim() - 1))
        return directions

    def params_from_scales(self, g: Tensor) -> Params:
        """Target parameters [S, ...] for scales g [S, D]."""
        n_samples = g.shape[0]
        directions = self._directions()
        params = {}
        for name, value in self.point.as_dict().items():
            if name in directions:
                v_hat = directions[name]
                scale = g[:, self.units[name]].reshape(n_samples, -1, *[1] * (v_hat.dim() - 1))
                params[name] = scale * v_hat
            else:
                params[name] = value.expand(n_samples, *value.shape[1:])
        return params

    def sample_params(self, n_samples: int) -> Params:
        g, _ = self.flow.rsample_and_log_prob((n_samples,))
        return self.params_from_scales(g)

    def forward_per_example(self, x: Tensor, g: Tensor) -> Tensor:
        """Outputs [S, B, out]: example b of net s uses its own scales g[s, b] (g is [S, B, D])."""
        if (tuple(x.shape[1:]) != self.target.input_shape or g.dim() != 3
                or tuple(g.shape[1:]) != (len(x), self.flow.dim)):
            raise ValueError(f"forward_per_example needs x [B, *{self.target.input_shape}] and g "
                             f"[S, B, {self.flow.dim}], got {tuple(x.shape)} and "
                             f"{tuple(g.shape)}")
        directions = self._directions()
        point = self.point.as_dict()

        def linear(layer_name: str, layer: Linear, h: Tensor) -> Tensor:
            # One matmul for the whole batch ([B, ...] before the first layer, [S, B, ...]
            # after); each example's g scales its own row.
            name = f"{layer_name}.weight"
            h = (h @ directions[name].T) * g[..., self.units[name]]
            return h + point[f"{layer_name}.bias"][0] if layer.bias else h

        return self.target.walk_mlp(x, linear)

    def training_loss(self, x, y, *, n_train, epoch):
        if self.per_datapoint:
            g, log_q = self.flow.rsample_and_log_prob((self.train_samples, x.shape[0]))
            nll = self.likelihood.nll(self.forward_per_example(x, g), y).mean()
        else:
            g, log_q = self.flow.rsample_and_log_prob((self.train_samples,))
            nll = self.expected_nll(self.params_from_scales(g), x, y)
        kl = (log_q - _normal_log_prob(g, self.prior_std)).mean()
        return nll + kl / n_train, {"nll": nll.detach(), "kl": kl.detach()}
