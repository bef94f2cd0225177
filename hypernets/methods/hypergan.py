"""HyperGAN (Ratzlaff & Fuxin, ICML 2019): noise -> mixer -> one generator per target layer.

The building blocks shared with HyperGAN-MI (:mod:`hypernets.methods.hypergan_mi`) live here:
:class:`Mixer`, :class:`LayerGenerators`, :func:`mlp_block`, :func:`call_detached` and the
optimiser set-up :func:`adam_groups`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from hypernets.likelihoods import Likelihood
from hypernets.methods.base import Method
from hypernets.targets import Conv2d, GroupNorm, Linear, Params, TargetNet

# Adam betas of the HyperGAN code for every player (mixer, generators, discriminator).
ADAM_BETAS = (0.5, 0.9)
# The paper's learning rates relative to the generators' 1e-4: mixer 5e-4, discriminator 1e-4.
MIXER_LR_RATIO = 5.0
CRITIC_LR_RATIO = 1.0


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_hidden(name: str, hidden: Sequence[int]) -> tuple[int, ...]:
    hidden = tuple(hidden)
    for width in hidden:
        check_positive_int(f"every width in {name}", width)
    return hidden


def mlp_block(sizes: Sequence[int], activation: type[nn.Module],
              batch_norm: bool = False) -> nn.Sequential:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]``; between them (BatchNorm and) activation."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i > 0:
            if batch_norm:
                layers.append(nn.BatchNorm1d(n_in))
            layers.append(activation())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def call_detached(module: nn.Module, *args: Tensor) -> Tensor:
    """``module(*args)`` with its parameters detached: gradients reach the inputs only.

    How one loss trains two players with one optimiser: the other player's term sees this
    module as a fixed function.
    """
    frozen = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(module, frozen, args)


def adam_groups(groups: Sequence[tuple[nn.Module | None, float]]) -> torch.optim.Adam:
    """One Adam over several modules, each at its own learning rate, all with ``ADAM_BETAS``."""
    return torch.optim.Adam([{"params": list(module.parameters()), "lr": lr}
                             for module, lr in groups if module is not None], betas=ADAM_BETAS)


class Mixer(nn.Module):
    """Q: noise [S, in_dim] -> hidden layers (Linear, BatchNorm, ReLU) -> codes [S, N, code_dim].

    BatchNorm follows the HyperGAN code. In training mode it normalises with the statistics of
    the S noise draws of the step (so training needs S >= 2); in eval mode with its running
    averages, so every sample's code depends on its own noise only and any S, also 1, works.
    Because the noise distribution is fixed, the running averages estimate the same
    statistics the training steps used: eval-mode samples follow the trained distribution.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], n_codes: int, code_dim: int):
        super().__init__()
        self.n_codes = n_codes
        self.code_dim = code_dim
        sizes = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], n_codes * code_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, noise: Tensor) -> Tensor:
        if self.training and noise.shape[0] < 2:
            raise ValueError("the mixer's BatchNorm needs at least 2 samples in training mode "
                             f"(statistics over the samples), got {noise.shape[0]}; use eval "
                             "mode to draw single samples")
        return self.net(noise).reshape(noise.shape[0], self.n_codes, self.code_dim)


def init_scales(target: TargetNet) -> dict[str, tuple[float, float]]:
    """(offset, scale) per target tensor: generated = offset + scale * generator output.

    Linear and convolution weights and biases get scale 1/sqrt(fan_in), PyTorch's default
    initialisation bound, so a generator whose raw outputs are O(1) starts with weights of a
    sensible size; without it a 784-input layer starts 28 times too large and training
    diverges. GroupNorm scales and shifts are centred at their init values 1 and 0.
    """
    scales: dict[str, tuple[float, float]] = {}

    def visit(prefix: str, layer) -> None:
        if isinstance(layer, (Linear, Conv2d)):
            fan_in = (layer.in_features if isinstance(layer, Linear)
                      else layer.in_channels * layer.kernel_size**2)
            for key in layer.param_shapes():
                scales[f"{prefix}.{key}"] = (0.0, 1.0 / math.sqrt(fan_in))
        elif isinstance(layer, GroupNorm):
            scales[f"{prefix}.weight"] = (1.0, 1.0)
            scales[f"{prefix}.bias"] = (0.0, 1.0)
        elif hasattr(layer, "sublayers"):
            for name, sub in layer.sublayers().items():
                visit(f"{prefix}.{name}", sub)
        elif layer.param_shapes():
            raise ValueError(f"no generator output scale for layer {prefix!r} of type "
                             f"{type(layer).__name__}")

    for layer_name, layer in target.layers:
        visit(layer_name, layer)
    return scales


class LayerGenerators(nn.Module):
    """One generator per layer group of the target: code [S, code_dim] -> that layer's tensors.

    A generator is an MLP ``code_dim -> hidden... -> (size of the group)`` with ELU (HyperGAN:
    two hidden layers of 512; HyperGAN-MI: none, i.e. linear). Its output is split into the
    group's tensors and mapped through :func:`init_scales`.
    """

    def __init__(self, target: TargetNet, code_dim: int, hidden: Sequence[int]):
        super().__init__()
        scales = init_scales(target)
        self.specs = [[(name, shape, *scales[name]) for name, shape in group.items()]
                      for group in target.layer_groups().values()]
        self.nets = nn.ModuleList(
            mlp_block([code_dim, *hidden, sum(math.prod(s) for _, s, *_ in spec)], nn.ELU)
            for spec in self.specs)

    @property
    def n_layers(self) -> int:
        return len(self.nets)

    def forward(self, codes: Tensor) -> Params:
        """codes [S, n_layers, code_dim] -> the target's parameter dict, tensors [S, ...]."""
        if codes.dim() != 3 or codes.shape[1] != self.n_layers:
            raise ValueError(f"codes must have shape [S, {self.n_layers}, code_dim], "
                             f"got {tuple(codes.shape)}")
        n_samples = codes.shape[0]
        params = {}
        for i, (net, spec) in enumerate(zip(self.nets, self.specs)):
            flat = net(codes[:, i])
            chunks = flat.split([math.prod(shape) for _, shape, *_ in spec], dim=1)
            for (name, shape, offset, scale), chunk in zip(spec, chunks):
                params[name] = offset + scale * chunk.reshape(n_samples, *shape)
        return params


class HyperGAN(Method):
    """HyperGAN: s ~ N(0, I) -> mixer Q -> N layer codes -> N generators -> S target nets.

    **Model.** Noise s in R^noise_dim goes through the mixer (:class:`Mixer`: hidden layers of
    ``hidden`` units with BatchNorm and ReLU) to N * code_dim numbers, split into one code per
    layer group of the target (N groups). Generator i (``hidden``-``hidden`` ELU MLP) maps
    code i to that layer's weights and biases, scaled by :func:`init_scales`.

    **Loss** (one scalar, one optimiser; per data point):

        mean NLL over the S nets and the batch
        + beta * BCE(D(codes), 1)      -- D's parameters detached: trains mixer only
        + BCE(D(prior), 1) + BCE(D(codes.detach()), 0)  -- trains D only

    The task loss is the mean of the S nets' losses, not the loss of an averaged net. The
    adversarial term is the non-saturating GAN loss pulling Q(s) towards the prior
    P = N(0, I) of dimension N * code_dim: D (``hidden``-``hidden`` ReLU MLP, logits) sees the
    whole mixed latent vector of a sample. It is not divided by ``n_train``: HyperGAN's
    objective is not a bound on the evidence, and beta weighs it against the per-example task
    loss. Logged: ``nll``, ``adversarial`` (the mixer's term before beta) and
    ``discriminator`` (D's loss).

    **Ablations.** ``use_discriminator=False`` is beta = 0: no discriminator module, no
    adversarial terms. ``use_mixer=False`` feeds each generator its own independent
    N(0, I_code_dim) noise: the codes are then prior samples by construction, so there is
    nothing for a discriminator to match and ``use_discriminator`` defaults to (and must be)
    False; ``noise_dim`` is unused.

    **Sampling.** :meth:`sample_params` draws fresh noise from torch's global RNG. In
    training mode the mixer's BatchNorm uses the statistics of the S draws (S >= 2), in eval
    mode (prediction) its running averages (see :class:`Mixer`).

    **Optimiser** (:meth:`configure_optimizer`): Adam with betas (0.5, 0.9); learning rates
    1e-4 generators, 5e-4 mixer, 1e-4 discriminator. A given ``lr`` replaces the generators'
    rate; the others keep their ratio to it.

    ``beta`` defaults to 1 (setting it without a discriminator is an error), the value that
    gave the most diverse nets in our runs on the sigma = 3 toy (500 steps, narrow widths,
    two seeds; HyperGAN's weight-norm diversity std / mean): 0.03 without discriminator,
    0.05-0.11 at beta = 0.1, 0.11-0.25 at 1, 0.07-0.08 at 10, with the same fit (RMSE
    2.2-3.2) throughout.

    Note on the game (our runs: adversarial terms alone, 2,000 steps, S = 32, a 32-dim
    latent): at the paper's rate ratio (mixer 5x faster than D) D stays at chance while the
    codes' mean wanders, its squared norm 13-26 at lr 1e-3 and 60-230 at the paper's 1e-4
    (0 for the prior); with D 5x faster than the mixer it stays near 1. The adversarial term
    is thus a loose pull towards the prior that keeps the codes moving, not a tight
    constraint; :meth:`pretrain_mixer` matches the codes' first two moments directly.
    """

    default_lr = 1e-4
    default_train_samples = 32

    def __init__(self, target: TargetNet, likelihood: Likelihood, *, noise_dim: int = 256,
                 code_dim: int = 128, hidden: int = 512, beta: float | None = None,
                 use_discriminator: bool | None = None, use_mixer: bool = True,
                 train_samples: int | None = None):
        super().__init__(target, likelihood, train_samples)
        check_positive_int("noise_dim", noise_dim)
        check_positive_int("code_dim", code_dim)
        check_positive_int("hidden", hidden)
        if use_discriminator is None:
            use_discriminator = use_mixer
        if use_discriminator and not use_mixer:
            raise ValueError("use_discriminator=True needs use_mixer=True: without a mixer the "
                             "codes are N(0, I) prior samples and there is nothing to match")
        if not use_discriminator and beta is not None:
            raise ValueError(f"beta={beta!r} weighs the adversarial term, which "
                             "use_discriminator=False removes; leave beta unset")
        beta = 1.0 if beta is None else beta
        if use_discriminator and not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta must be a finite number > 0 with a discriminator, got {beta!r}"
                             " (beta = 0 is the ablation use_discriminator=False)")
        if use_mixer and self.train_samples < 2:
            raise ValueError(f"train_samples must be >= 2 with a mixer (BatchNorm statistics over "
                             f"the samples), got {self.train_samples}")
        self.noise_dim = noise_dim
        self.code_dim = code_dim
        self.beta = float(beta) if use_discriminator else 0.0
        self.generators = LayerGenerators(target, code_dim, (hidden, hidden))
        n_layers = self.generators.n_layers
        self.mixer = Mixer(noise_dim, (hidden, hidden), n_layers, code_dim) if use_mixer else None
        self.discriminator = (mlp_block([n_layers * code_dim, hidden, hidden, 1], nn.ReLU)
                              if use_discriminator else None)

    @property
    def latent_dim(self) -> int:
        """N * code_dim: the size of one sample's mixed latent vector."""
        return self.generators.n_layers * self.code_dim

    def codes(self, n_samples: int) -> Tensor:
        """S layer codes [S, N, code_dim] from fresh noise (the mixer output, or pure noise)."""
        check_positive_int("n_samples", n_samples)
        if self.mixer is None:
            return torch.randn(n_samples, self.generators.n_layers, self.code_dim,
                               device=self.device)
        return self.mixer(torch.randn(n_samples, self.noise_dim, device=self.device))

    def sample_params(self, n_samples: int) -> Params:
        return self.generators(self.codes(n_samples))

    def adversarial_terms(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """(mixer's term BCE(D(codes), 1), D's term BCE(D(prior), 1) + BCE(D(codes), 0)).

        The first reaches the mixer only (D detached), the second D only (codes detached).
        The prior samples come from torch's global RNG.
        """
        if self.discriminator is None:
            raise ValueError("this HyperGAN has no discriminator (use_discriminator=False)")
        latent = codes.flatten(1)
        prior = torch.randn_like(latent)
        fake_logits = call_detached(self.discriminator, latent)
        mixer_term = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        real_logits = self.discriminator(prior)
        detached_logits = self.discriminator(latent.detach())
        bce = F.binary_cross_entropy_with_logits
        critic_term = (bce(real_logits, torch.ones_like(real_logits))
                       + bce(detached_logits, torch.zeros_like(detached_logits)))
        return mixer_term, critic_term

    def training_loss(self, x, y, *, n_train, epoch):
        codes = self.codes(self.train_samples)
        nll = self.expected_nll(self.generators(codes), x, y)
        if self.discriminator is None:
            return nll, {"nll": nll.detach()}
        mixer_term, critic_term = self.adversarial_terms(codes)
        loss = nll + self.beta * mixer_term + critic_term
        return loss, {"nll": nll.detach(), "adversarial": mixer_term.detach(),
                      "discriminator": critic_term.detach()}

    def pretrain_mixer(self, steps: int, n_samples: int | None = None,
                       lr: float | None = None) -> list[float]:
        """Fit the mixer alone so its codes have mean 0 and covariance I; return the losses.

        The loss is ||mean||^2 + ||cov - I||_F^2 of the flattened codes (dimension
        L = N * code_dim) of ``n_samples`` noise draws per step, minimised by Adam at the
        mixer's learning rate (``lr`` as in :meth:`configure_optimizer`). Even exact N(0, I)
        codes score about L (L + 1) / n_samples from sampling error alone; the default
        n_samples = 10 L keeps that floor at L / 10, below the deviations worth fixing.
        Noise comes from torch's global RNG.
        """
        if self.mixer is None:
            raise ValueError("pretrain_mixer needs a mixer (use_mixer=True)")
        check_positive_int("steps", steps)
        n_samples = 10 * self.latent_dim if n_samples is None else n_samples
        if check_positive_int("n_samples", n_samples) < 2:
            raise ValueError(f"n_samples must be >= 2 for a covariance, got {n_samples}")
        base_lr = self.default_lr if lr is None else lr
        optimizer = adam_groups([(self.mixer, MIXER_LR_RATIO * base_lr)])
        was_training = self.training
        self.train()
        eye = torch.eye(self.latent_dim, device=self.device)
        losses = []
        for _ in range(steps):
            latent = self.codes(n_samples).flatten(1)
            mean = latent.mean(0)
            loss = mean.pow(2).sum() + (torch.cov(latent.T) - eye).pow(2).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        self.train(was_training)
        return losses

    def configure_optimizer(self, lr=None):
        base_lr = self.default_lr if lr is None else lr
        return adam_groups([(self.generators, base_lr),
                            (self.mixer, MIXER_LR_RATIO * base_lr),
                            (self.discriminator, CRITIC_LR_RATIO * base_lr)])
