"""Building blocks shared by HyperGAN and HyperGAN-MI: mixer, layer generators, optimiser.

:class:`Mixer` maps noise to one code per target layer, :class:`LayerGenerators` maps each
code to its layer's tensors, :func:`call_detached` lets one loss train two players with one
optimiser, and :func:`adam_groups` gives each player its learning rate with the HyperGAN
code's Adam betas.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from hypernets.methods.base import adam
from hypernets.targets import Params, TargetNet

# Adam betas of the HyperGAN code for every player (mixer, generators, discriminator).
ADAM_BETAS = (0.5, 0.9)
# The paper's learning rates relative to the generators' 1e-4: mixer 5e-4, discriminator 1e-4.
MIXER_LR_RATIO = 5.0
CRITIC_LR_RATIO = 1.0


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
    """One (fused) Adam over several modules, each at its own learning rate, all with ``ADAM_BETAS``."""
    return adam([{"params": list(module.parameters()), "lr": lr}
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

    Offset and scale are the centre and half-width of the tensor's default initialisation
    (:meth:`~hypernets.targets.TargetNet.init_ranges`): 0 and 1/sqrt(fan_in) for linear and
    convolution weights and biases, so a generator whose raw outputs are O(1) starts with
    weights of a sensible size (without it a 784-input layer starts 28 times too large and
    training diverges). Constant-initialised tensors (GroupNorm's gain and shift) are centred
    at their constant with scale 1.
    """
    return {name: (centre, half_width if half_width > 0 else 1.0)
            for name, (centre, half_width) in target.init_ranges().items()}


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
