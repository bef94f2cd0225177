"""Fast gradient sign attacks (Goodfellow et al., 2015) on the sample-averaged predictive.

A method's prediction is the mean over S sampled networks of their softmax outputs. The attack
here differentiates the negative log-likelihood of that *mean* predictive, so it attacks the
model the method actually predicts with, and it uses the same fixed set of S sampled networks
for building the adversarial inputs and for scoring them (a white-box attack on one draw of the
predictive). Bayes by Hypernet's reference code instead took the gradient through one sampled
network at a time and did not clip the perturbed images to the valid pixel range.

Inputs are normalised images (``(pixel - mean) / std`` per channel, pixels in [0, 1]). The
budget ``epsilon`` is in raw pixel units, as in the papers, so a step of ``epsilon`` becomes
``epsilon / std`` in normalised units, and adversarial inputs are clipped to the image of
[0, 1] under the normalisation (:class:`PixelRange`).

FGSM is a one-line formula on top of autograd; it is written here rather than taken from an
attack library (torchattacks, ART) because those wrap ``nn.Module`` classifiers with one set of
weights and cannot average the predictive over S functional weight samples.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from hypernets import metrics
from hypernets.likelihoods import Categorical
from hypernets.methods.base import Method
from hypernets.targets import Params, TargetNet

__all__ = [
    "PixelRange",
    "attack_curve",
    "fgsm",
    "mean_predictive_nll",
]


@dataclass(frozen=True)
class PixelRange:
    """The per-channel normalisation ``(pixel - mean) / std`` of inputs whose pixels lie in [0, 1].

    ``mean`` and ``std`` hold one value per channel (e.g. ``(MNIST_MEAN,)`` and
    ``(MNIST_STD,)`` from :mod:`hypernets.data`). :meth:`bounds` gives the valid range of the
    normalised inputs, computed with the same float32 arithmetic as the data loaders so that
    every clean image lies exactly inside it.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        mean, std = tuple(self.mean), tuple(self.std)
        if not mean or len(mean) != len(std):
            raise ValueError(f"mean and std need one value per channel each; got mean {self.mean!r}, "
                             f"std {self.std!r}")
        if not all(s > 0 and math.isfinite(s) for s in std):
            raise ValueError(f"std must hold finite values > 0; got {self.std!r}")
        object.__setattr__(self, "mean", tuple(float(m) for m in mean))
        object.__setattr__(self, "std", tuple(float(s) for s in std))

    @property
    def n_channels(self) -> int:
        return len(self.mean)

    def _per_channel(self, values: tuple[float, ...], like: Tensor) -> Tensor:
        return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1).to(like.device, like.dtype)

    def bounds(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """Lowest and highest normalised value per channel, shaped ``[C, 1, 1]`` like ``like``."""
        mean = torch.tensor(self.mean, dtype=torch.float32)
        std = torch.tensor(self.std, dtype=torch.float32)
        low = (torch.zeros(self.n_channels) - mean) / std
        high = (torch.ones(self.n_channels) - mean) / std
        return (low.view(-1, 1, 1).to(like.device, like.dtype),
                high.view(-1, 1, 1).to(like.device, like.dtype))

    def step(self, epsilon: float, like: Tensor) -> Tensor:
        """A raw-pixel distance ``epsilon`` in normalised units, per channel ``[C, 1, 1]``."""
        return epsilon / self._per_channel(self.std, like)

    def to_pixels(self, x: Tensor) -> Tensor:
        """Normalised images ``[..., C, H, W]`` back to raw pixels."""
        return x * self._per_channel(self.std, x) + self._per_channel(self.mean, x)


def _check_images(x: Tensor, pixel_range: PixelRange) -> None:
    if x.dim() < 3 or x.shape[-3] != pixel_range.n_channels:
        raise ValueError(f"x must be images [B, C, H, W] with C = {pixel_range.n_channels} channels "
                         f"(as pixel_range); got shape {tuple(x.shape)}")


def _check_epsilon(epsilon) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not math.isfinite(epsilon) \
            or not 0 <= epsilon <= 1:
        raise ValueError(f"epsilon must be a pixel distance in [0, 1]; got {epsilon!r}")
    return float(epsilon)


def mean_predictive_nll(target: TargetNet, params: Params, x: Tensor, y: Tensor) -> Tensor:
    """``-log mean_s softmax(f_s(x))[y]`` per input, shape ``[B]``.

    The NLL of the sample-averaged predictive (the Bayesian model average), computed in log space
    with ``logsumexp`` over the S nets so that confident wrong predictions stay finite.
    """
    log_probs = F.log_softmax(target(params, x), dim=-1)  # [S, B, C]
    n_samples = log_probs.shape[0]
    log_mean = torch.logsumexp(log_probs, dim=0) - math.log(n_samples)  # [B, C]
    return -log_mean.gather(1, y[:, None])[:, 0]


def fgsm_direction(target: TargetNet, params: Params, x: Tensor, y: Tensor) -> Tensor:
    """``sign(grad_x)`` of :func:`mean_predictive_nll` for the S nets ``params``: FGSM's step direction.

    The gradient is taken at the clean ``x``, so one direction serves every budget. The weights
    ``params`` receive no gradient.
    """
    frozen = {name: value.detach() for name, value in params.items()}
    inputs = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = mean_predictive_nll(target, frozen, inputs, y).sum()
        (gradient,) = torch.autograd.grad(loss, inputs)
    return gradient.sign()


def fgsm_step(x: Tensor, direction: Tensor, epsilon: float, pixel_range: PixelRange) -> Tensor:
    """``x + step * direction`` for a budget of ``epsilon`` raw pixels, clipped to the valid range."""
    epsilon = _check_epsilon(epsilon)
    low, high = pixel_range.bounds(x)
    perturbed = x.detach() + pixel_range.step(epsilon, x) * direction
    return torch.maximum(torch.minimum(perturbed, high), low)


def fgsm(target: TargetNet, params: Params, x: Tensor, y: Tensor, epsilon: float,
         pixel_range: PixelRange) -> Tensor:
    """FGSM images for the mean predictive of the S nets ``params``: ``x + step * sign(grad)``.

    ``x`` are normalised images ``[B, C, H, W]``, ``y`` their labels ``[B]``, ``epsilon`` the
    L-infinity budget in raw pixel units. The gradient is that of
    :func:`mean_predictive_nll` with respect to ``x``; the result is clipped to the valid range of
    ``pixel_range``, so in raw pixels it differs from ``x`` by at most ``epsilon`` and stays in
    [0, 1]. The weights ``params`` receive no gradient.
    """
    _check_images(x, pixel_range)
    _check_epsilon(epsilon)  # before the gradient is computed
    return fgsm_step(x, fgsm_direction(target, params, x, y), epsilon, pixel_range)


def attack_curve(method: Method, x: Tensor, y: Tensor, epsilons: Sequence[float], *,
                 n_samples: int, pixel_range: PixelRange, seed: int = 0,
                 batch_size: int = 500) -> pd.DataFrame:
    """Accuracy and uncertainty of ``method`` under FGSM, one row per ``epsilon``.

    S = ``n_samples`` weight sets are drawn once (with torch's RNG seeded by ``seed`` inside a
    forked RNG state, so the caller's random stream is untouched); the same S nets build every
    adversarial batch and score it. ``x`` ``[N, C, H, W]`` (normalised) and ``y`` ``[N]`` are
    processed in chunks of ``batch_size`` on the method's device.

    Columns: ``epsilon``, ``accuracy`` (of the mean predictive), ``entropy`` (mean predictive
    entropy, nats), ``entropy_auc`` (:func:`hypernets.metrics.entropy_auc`, high = confident).
    """
    if not isinstance(method.likelihood, Categorical):
        raise ValueError(f"attack_curve needs a classifier (Categorical likelihood); "
                         f"{type(method).__name__} has {type(method.likelihood).__name__}")
    _check_images(x, pixel_range)
    if y.shape != (len(x),):
        raise ValueError(f"y must have shape [N] = [{len(x)}] to match x; got {tuple(y.shape)}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1; got {n_samples!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    epsilons = [_check_epsilon(epsilon) for epsilon in epsilons]
    if not epsilons:
        raise ValueError("epsilons must list at least one budget")

    method.eval()
    device = method.device
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices), torch.no_grad():
        torch.manual_seed(seed)
        params = method.sample_params(n_samples)

    chunks_per_epsilon: list[list[Tensor]] = [[] for _ in epsilons]
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device)
        yb = y[start:start + batch_size].to(device)
        direction = fgsm_direction(method.target, params, xb, yb)  # one gradient for every budget
        for epsilon, chunks in zip(epsilons, chunks_per_epsilon):
            adversarial = fgsm_step(xb, direction, epsilon, pixel_range)
            with torch.no_grad():
                chunks.append(method.predict(adversarial, n_samples, params=params).float().cpu())
    rows = []
    for epsilon, chunks in zip(epsilons, chunks_per_epsilon):
        probs = torch.cat(chunks, dim=1)
        rows.append({
            "epsilon": epsilon,
            "accuracy": metrics.accuracy(probs, y.cpu()),
            "entropy": float(metrics.predictive_entropy(probs).mean()),
            "entropy_auc": metrics.entropy_auc(probs),
        })
    return pd.DataFrame(rows)
