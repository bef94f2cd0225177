"""The interface every method implements, hypernetworks and baselines alike."""

from __future__ import annotations

from typing import Any

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from hypernets.likelihoods import Likelihood
from hypernets.targets import Params, TargetNet
from hypernets.validation import check_positive, check_positive_int


def check_prior_std(prior_std) -> float:
    """The standard deviation of a N(0, prior_std^2) weight prior: a finite number > 0."""
    return check_positive("prior_std", prior_std)


def adam(params, **options) -> torch.optim.Adam:
    """Adam with its fused implementation: one pass over parameters, gradients and state.

    On the CPU the default single-tensor Adam makes several passes with temporaries per
    tensor (about ten times the fused cost on HyperGAN's 205 M generator parameters, see
    ``benchmarks/README.md``); the fused kernel computes the same update up to rounding.
    """
    return torch.optim.Adam(params, fused=True, **options)


def full_precision(device: torch.device):
    """Autocast switched off: flows, log-densities and KL estimates compute in float32 inside.

    Under :func:`hypernets.training.autocast` with bf16 the matrix work of a step runs in
    bfloat16; the terms whose precision decides the objective use this context (and float32
    inputs) instead.
    """
    return torch.autocast(torch.device(device).type, enabled=False)


def init_linear_layers(module: nn.Module, generator: torch.Generator | None) -> None:
    """Redraw every ``nn.Linear`` of ``module`` from ``generator`` with PyTorch's default law.

    ``nn.Linear`` draws its initial weights from torch's global RNG; methods built of such
    layers call this when given a ``generator``, so that one generator fixes the whole
    initialisation. The law is the default's, U(+-1/sqrt(fan_in)) for weights and biases.
    Without a generator nothing is redrawn.
    """
    if generator is None:
        return
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                bound = 1.0 / math.sqrt(layer.in_features)
                for tensor in (layer.weight, layer.bias):
                    if tensor is not None:
                        tensor.copy_((torch.rand(tensor.shape, generator=generator) * 2 - 1) * bound)


def annealing_weight(epoch: float, start: float, length: float) -> float:
    """KL weight at fractional ``epoch``: 0 before ``start``, rising linearly to 1 over ``length``.

    ``length`` 0 switches the KL on at full weight at ``start``. The weight never decreases.
    """
    if length == 0:
        return 1.0 if epoch >= start else 0.0
    return min(max((epoch - start) / length, 0.0), 1.0)


class Method(nn.Module, ABC):
    """A distribution over the weights of ``target`` (a point mass for MAP).

    Subclasses implement :meth:`sample_params` (S weight sets with a leading sample
    dimension) and :meth:`training_loss`. Prediction is shared: sample once, run all S nets in
    one batched call of the target.

    Class attributes give the papers' optimiser defaults; :meth:`configure_optimizer`
    builds it (override for per-module learning rates).
    """

    default_lr: float = 1e-3
    default_train_samples: int = 1
    #: Version of the method's training: a change that can change what a trained run learns
    #: must increase it, so that stored runs of the old version are not returned
    #: (``tests/test_store.py`` checks the code against ``tests/training_code.json``).
    training_version: int = 1
    #: How many different nets :meth:`sample_params` can give (None: unbounded). A point
    #: estimate gives one, an ensemble its members.
    max_distinct_nets: int | None = None
    #: Settings added after runs were stored whose default reproduces those runs exactly:
    #: left out of the store key and the checkpoint fingerprint at that default
    #: (:func:`hypernets.training.plain_settings`), so the stored runs stay valid.
    key_neutral_defaults: dict[str, Any] = {}

    def __init__(self, target: TargetNet, likelihood: Likelihood, *,
                 train_samples: int | None = None):
        super().__init__()
        self.target = target
        self.likelihood = likelihood
        self.train_samples = (self.default_train_samples if train_samples is None
                              else check_positive_int("train_samples", train_samples))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def n_distinct_nets(self, n_samples: int) -> int:
        """How many of ``n_samples`` requested nets differ: fewer for MAP and ensembles."""
        n_samples = check_positive_int("n_samples", n_samples)
        return n_samples if self.max_distinct_nets is None else min(n_samples,
                                                                    self.max_distinct_nets)

    @abstractmethod
    def sample_params(self, n_samples: int) -> Params:
        """S weight sets for the target, each tensor of shape [S, *spec_shape]."""

    @abstractmethod
    def training_loss(self, x: Tensor, y: Tensor, *, n_train: int,
                      epoch: float) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss for one mini-batch (per data point: data term + regulariser / n_train).

        ``epoch`` is the fractional epoch, for annealing schedules. Returns the loss and
        detached scalars to log.
        """

    def expected_nll(self, params: Params, x: Tensor, y: Tensor, **forward_kwargs) -> Tensor:
        """Mean over the S nets and the batch of the negative log-likelihood."""
        return self.likelihood.nll(self.target(params, x, **forward_kwargs), y).mean()

    def predict(self, x: Tensor, n_samples: int, params: Params | None = None) -> Tensor:
        """Probabilities [S, B, C] (classification) or outputs [S, B, 1] (regression)."""
        if params is None:
            params = self.sample_params(check_positive_int("n_samples", n_samples))
        return self.likelihood.predictive(self.target(params, x))

    def configure_optimizer(self, lr: float | None = None) -> torch.optim.Optimizer:
        return adam(self.parameters(), lr=self.default_lr if lr is None else lr)


class StackedParams(nn.Module):
    """Learnable weight sets in spec order with a leading dimension (1 for MAP, M members).

    ``nn.ParameterDict`` keys may not contain dots, so the tensors live in a list and
    :meth:`as_dict` restores the target's names.
    """

    def __init__(self, target: TargetNet, n_sets: int, generator: torch.Generator | None = None):
        super().__init__()
        self.names = list(target.param_shapes)
        init = target.init(n_sets, generator)
        self.tensors = nn.ParameterList([nn.Parameter(init[n]) for n in self.names])

    def as_dict(self) -> Params:
        return dict(zip(self.names, self.tensors))

    def squared_norm(self) -> Tensor:
        """Sum of squares per set: [n_sets]."""
        return sum(t.pow(2).flatten(1).sum(1) for t in self.tensors)
