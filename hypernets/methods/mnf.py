"""Multiplicative normalising flows (Louizos & Welling, ICML 2017): a Gaussian posterior over
weights whose means are scaled by multiplicative noise z from a normalising flow.

For every linear layer z has one entry per input unit, for every convolution one per output
filter (the paper's choice). Given z, the weights are independent Gaussians,

    q(W | z) = prod_ij N(W_ij; z_i mu_ij, sigma_ij^2),

and z ~ q(z) is a diagonal Gaussian pushed through ``n_flows`` masked RealNVP steps
(:class:`MaskedRealNVP`), so the marginal q(W) is a rich, correlated mixture. Its entropy has
no closed form; the paper bounds the KL with an auxiliary inverse model r(z | W):

    KL(q(W) || p(W)) <= E_q(W, z) [ KL(q(W | z) || p(W)) + log q(z) - log r(z | W) ],

with r(z | W) a Gaussian whose mean and log precision come from ``tanh`` features of W (read
through their Gaussian given z, as the paper's reparameterisation does), after a second flow
on z. Biases and every tensor outside linear and convolutional weights (normalisation gains and
shifts) are mean-field Gaussians with a closed-form KL, as in the reference code's biases.

The loss per data point is the NLL averaged over the S sampled nets plus ``anneal`` times the
bound averaged over the same S draws of z, over ``n_train`` (``anneal`` as Bayes by Hypernet's,
see :func:`~hypernets.methods.base.annealing_weight`; the published MNIST run annealed it in).
Written here because no maintained library offers MNF for functional, sample-batched targets.

Settings follow the authors' code (``AMLab-Amsterdam/MNF_VBNN``, ``dense_layers.py`` and
``conv_layers.py``), of which Bayes by Hypernet's (``pawni/BayesByHypernet``, ``layers.py``) is a
copy: an initial log standard deviation of -9 for the weights (the code's ``logvar_W`` is used
as a log standard deviation throughout), q(z) starting with variance 0.1, flows of 50 and 100
hidden units. Deviations, on purpose:

- *Prior.* N(0, ``prior_std``^2) on every weight, as every method of the book and the authors'
  code (prior variance 1); Bayes by Hypernet's copy initialised the prior's log variance at 1,
  a prior variance of e.
- *Weights, not pre-activations.* S whole weight sets are sampled (the book's functional core);
  the code drew each example's pre-activations (local reparameterisation), which has
  lower-variance gradients for the same objective.
- *One flow type.* The masked RealNVP flow also for one-dimensional z (the code switched to
  planar flows there); ``log q(z)`` is the sample's density, not its expectation.
- *z starts at 1* (mean 1): multiplicative noise around the identity, so the weights start at
  their initial means. The code starts the mean at 1 only without flows and at 0 with them.
- *Biases* start with standard deviation e^-9 like the weights (the code: e^-4.5, its bias
  parameter being a log variance).
- The clipping of sigma at ``max_std`` (the code's ``thres_var``, 0.3 in Bayes by Hypernet's
  CIFAR runs) applies in the bound as in the sampling, so that both use the same posterior.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hypernets.likelihoods import Likelihood
from hypernets.methods.base import (Method, annealing_weight, check_prior_std,
                                    init_linear_layers)
from hypernets.targets import Conv2d, Linear, Params, TargetNet
from hypernets.validation import check_int, check_positive, check_real

_LOG_2PI = math.log(2 * math.pi)


def _truncated_normal(shape, mean: float, std: float, generator) -> Tensor:
    """N(mean, std^2) truncated at 2 std, as TensorFlow's initialiser."""
    values = torch.empty(shape)
    nn.init.trunc_normal_(values, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=generator)
    return mean + std * values


class MaskedRealNVP(nn.Module):
    """Louizos & Welling's masked RealNVP flow on z [S, dim]: ``n_flows`` steps, each

        z <- m * z + (1 - m) * (z * g + (1 - g) * mu),  g = sigmoid(s(m * z)),

    with a fresh Bernoulli(1/2) mask m per step and call (the authors' code), one tanh hidden
    layer of ``hidden`` units giving mu and s. Returns the new z and log |det| per sample.
    """

    def __init__(self, dim: int, n_flows: int, hidden: int,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.steps = nn.ModuleList(
            nn.ModuleDict({"hidden": nn.Linear(dim, hidden), "shift": nn.Linear(hidden, dim),
                           "gate": nn.Linear(hidden, dim)}) for _ in range(n_flows))
        init_linear_layers(self, generator)
        for step in self.steps:
            nn.init.constant_(step["gate"].bias, 2.0)  # gates start near 1: close to identity

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        log_det = z.new_zeros(z.shape[0])
        for step in self.steps:
            mask = (torch.rand_like(z) < 0.5).to(z.dtype)
            h = torch.tanh(step["hidden"](mask * z))
            shift, gate = step["shift"](h), torch.sigmoid(step["gate"](h))
            z = mask * z + (1 - mask) * (z * gate + (1 - gate) * shift)
            log_det = log_det + ((1 - mask) * torch.log(gate)).sum(1)
        return z, log_det


class _NoisyWeight(nn.Module):
    """One linear or convolutional weight [out, in, ...] with its multiplicative noise z.

    ``z_axis`` is the weight's axis that z scales: 1 (inputs) for linear layers, 0 (filters)
    for convolutions.
    """

    def __init__(self, mean: Tensor, z_axis: int, *, init_log_std: float, n_flows: int,
                 flow_hidden: int, aux_flow_hidden: int, generator):
        super().__init__()
        self.z_axis = z_axis
        dim = mean.shape[z_axis]
        self.mean = nn.Parameter(mean.clone())
        self.log_std = nn.Parameter(_truncated_normal(mean.shape, init_log_std, 0.05, generator))
        self.z_mean = nn.Parameter(_truncated_normal((dim,), 1.0, 0.05, generator))
        self.z_log_var = nn.Parameter(torch.full((dim,), math.log(0.1)))
        self.flow_q = MaskedRealNVP(dim, n_flows, flow_hidden, generator)
        self.flow_r = MaskedRealNVP(dim, n_flows, aux_flow_hidden, generator)
        self.r_projection = nn.Parameter(_truncated_normal((dim,), 0.0, 0.05, generator))
        self.r_mean = nn.Parameter(_truncated_normal((dim,), 0.0, 0.05, generator))
        self.r_log_precision = nn.Parameter(_truncated_normal((dim,), 0.0, 0.05, generator))

    def _z_major(self, t: Tensor) -> Tensor:
        """[..., *weight_shape] -> [..., dim, rest]: z's axis first, the others flattened."""
        lead = t.dim() - self.mean.dim()
        t = t.movedim(lead + self.z_axis, lead)
        return t.reshape(*t.shape[:lead + 1], -1)

    def _broadcast(self, z: Tensor) -> Tensor:
        """z [S, dim] shaped to multiply weights [S, *weight_shape]."""
        shape = [z.shape[0]] + [1] * self.mean.dim()
        shape[1 + self.z_axis] = z.shape[1]
        return z.reshape(shape)

    def sample(self, n_samples: int, max_std: float) -> tuple[Tensor, Tensor]:
        """S weight sets [S, *shape] and the bound's term per sample [S]."""
        std = self.log_std.exp().clamp(max=max_std)
        eps = torch.randn(n_samples, self.z_mean.shape[0], device=self.mean.device)
        z0 = self.z_mean + (0.5 * self.z_log_var).exp() * eps
        z, log_det_q = self.flow_q(z0)
        log_q = (-0.5 * (_LOG_2PI + self.z_log_var + eps.pow(2))).sum(1) - log_det_q
        weights = self.mean * self._broadcast(z) + std * torch.randn(n_samples, *self.mean.shape,
                                                                       device=self.mean.device)
        return weights, (z, log_q, std)

    def kl_given_z(self, z: Tensor, std: Tensor, prior_std: float) -> Tensor:
        """KL(q(W | z) || N(0, prior_std^2)) per sample of z [S], in closed form."""
        mean = self._z_major(self.mean) * z.unsqueeze(2)  # [S, dim, rest]
        std = self._z_major(std)                          # [dim, rest]
        return (math.log(prior_std) - torch.log(std)
                + (std.pow(2) + mean.pow(2)) / (2 * prior_std**2) - 0.5).sum((1, 2))

    def log_aux(self, z: Tensor, std: Tensor) -> Tensor:
        """log r(z | W) per sample [S], W drawn given z through its Gaussian (one draw)."""
        mean = self._z_major(self.mean) * z.unsqueeze(2)
        variance = self._z_major(std).pow(2)
        features_mean = torch.einsum("d,sdr->sr", self.r_projection, mean)
        features_var = torch.einsum("d,dr->r", self.r_projection.pow(2), variance)
        features = torch.tanh(features_mean + features_var.sqrt() * torch.randn_like(features_mean))
        level = features.mean(1, keepdim=True)  # [S, 1]
        r_mean, r_log_precision = self.r_mean * level, self.r_log_precision * level
        z_r, log_det_r = self.flow_r(z)
        return log_det_r + (-0.5 * r_log_precision.exp() * (z_r - r_mean).pow(2)
                            - 0.5 * _LOG_2PI + 0.5 * r_log_precision).sum(1)

    def bound(self, z: Tensor, log_q: Tensor, std: Tensor, prior_std: float) -> Tensor:
        """KL(q(W | z) || p) + log q(z) - log r(z | W) per sample [S]."""
        return self.kl_given_z(z, std, prior_std) + log_q - self.log_aux(z, std)


class MultiplicativeNormalizingFlows(Method):
    """MNF: multiplicative flow noise on every linear and convolutional weight (see the module).

    ``prior_std``: the N(0, prior_std^2) prior. ``init_log_std``: the initial log standard
    deviation of q(W | z) (the reference's -9). ``max_std``: sigma's ceiling in sampling and
    bound (the reference's ``thres_var``: 1 on MNIST, 0.3 on CIFAR). ``n_flows``, ``flow_hidden``,
    ``aux_flow_hidden``: the flows of q(z) and r(z | W) (2 steps of 50 and 100 hidden units in
    the reference). ``anneal_start``, ``anneal_epochs``: the KL schedule. ``train_samples``: S
    nets per step (default 1, as one draw per step of the reference). ``generator`` seeds every
    initialisation.
    """

    def __init__(self, target: TargetNet, likelihood: Likelihood, *, prior_std: float = 1.0,
                 init_log_std: float = -9.0, max_std: float = 1.0, n_flows: int = 2,
                 flow_hidden: int = 50, aux_flow_hidden: int = 100, anneal_start: float = 0.0,
                 anneal_epochs: float = 0.0, train_samples: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(target, likelihood, train_samples=train_samples)
        self.prior_std = check_prior_std(prior_std)
        self.init_log_std = check_real("init_log_std", init_log_std)
        self.max_std = check_positive("max_std", max_std)
        n_flows = check_int("n_flows", n_flows, minimum=1)
        flow_hidden = check_int("flow_hidden", flow_hidden, minimum=1)
        aux_flow_hidden = check_int("aux_flow_hidden", aux_flow_hidden, minimum=1)
        self.anneal_start = check_real("anneal_start", anneal_start, minimum=0.0)
        self.anneal_epochs = check_real("anneal_epochs", anneal_epochs, minimum=0.0)
        init = target.init(1, generator)
        noisy = {f"{name}.weight": 1 if isinstance(layer, Linear) else 0
                 for name, layer in target.layers if isinstance(layer, (Linear, Conv2d))}
        self.noisy_names = list(noisy)
        self.plain_names = [n for n in target.param_shapes if n not in noisy]
        self.noisy = nn.ModuleList(
            _NoisyWeight(init[n][0], noisy[n], init_log_std=self.init_log_std, n_flows=n_flows,
                         flow_hidden=flow_hidden, aux_flow_hidden=aux_flow_hidden,
                         generator=generator) for n in self.noisy_names)
        self.plain_mean = nn.ParameterList(nn.Parameter(init[n][0].clone())
                                           for n in self.plain_names)
        self.plain_log_std = nn.ParameterList(
            nn.Parameter(_truncated_normal(init[n].shape[1:], self.init_log_std, 0.05, generator))
            for n in self.plain_names)

    def _sample(self, n_samples: int) -> tuple[Params, list]:
        params, draws = {}, []
        for name, weight in zip(self.noisy_names, self.noisy):
            params[name], draw = weight.sample(n_samples, self.max_std)
            draws.append(draw)
        for name, mean, log_std in zip(self.plain_names, self.plain_mean, self.plain_log_std):
            std = log_std.exp().clamp(max=self.max_std)
            params[name] = mean + std * torch.randn(n_samples, *mean.shape, device=mean.device)
        return {n: params[n] for n in self.target.param_shapes}, draws

    def sample_params(self, n_samples: int) -> Params:
        return self._sample(n_samples)[0]

    def kl_bound(self, draws: list) -> Tensor:
        """The KL bound, averaged over the S draws of z behind ``draws`` (from :meth:`_sample`)."""
        total = sum(weight.bound(*draw, self.prior_std).mean()
                    for weight, draw in zip(self.noisy, draws))
        for mean, log_std in zip(self.plain_mean, self.plain_log_std):
            std = log_std.exp().clamp(max=self.max_std)
            total = total + (math.log(self.prior_std) - torch.log(std)
                             + (std.pow(2) + mean.pow(2)) / (2 * self.prior_std**2) - 0.5).sum()
        return total

    def training_loss(self, x, y, *, n_train, epoch):
        params, draws = self._sample(self.train_samples)
        nll = self.expected_nll(params, x, y)
        kl = self.kl_bound(draws)
        anneal = annealing_weight(epoch, self.anneal_start, self.anneal_epochs)
        return nll + anneal * kl / n_train, {"nll": nll.detach(), "kl": kl.detach(),
                                             "anneal": torch.tensor(anneal)}
