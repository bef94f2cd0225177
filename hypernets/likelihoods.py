"""Observation models: how a target network's outputs explain the labels."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

from hypernets.validation import check_positive


class Likelihood(ABC):
    """Per-sample, per-example negative log-likelihood and the predictive it implies.

    Both compute in at least float32 (:func:`at_least_float32`), so that a bf16 forward
    (:func:`hypernets.training.autocast`) still gives float32 losses and probabilities, and a
    float64 one (the NUTS reference) stays in float64.
    """

    task: str

    @abstractmethod
    def nll(self, outputs: Tensor, y: Tensor) -> Tensor:
        """outputs [S, B, out], targets for B examples -> NLL [S, B]."""

    @abstractmethod
    def predictive(self, outputs: Tensor) -> Tensor:
        """What the metrics take: probabilities [S, B, C] or regression outputs [S, B, 1]."""


def at_least_float32(outputs: Tensor) -> Tensor:
    """``outputs`` in float32 if they are in a lower precision (bf16, fp16), else unchanged."""
    return outputs.float() if outputs.dtype in (torch.bfloat16, torch.float16) else outputs


class Categorical(Likelihood):
    """Softmax over logits; targets are class indices [B]."""

    task = "classification"

    def nll(self, outputs, y):
        if y.dim() != 1 or y.shape[0] != outputs.shape[1]:
            raise ValueError(f"labels y must have shape [B={outputs.shape[1]}], got {tuple(y.shape)}")
        n_samples, batch, n_classes = outputs.shape
        check_class_labels("y", y, n_classes)
        flat = F.cross_entropy(at_least_float32(outputs).reshape(-1, n_classes), y.repeat(n_samples),
                               reduction="none")
        return flat.reshape(n_samples, batch)

    def predictive(self, outputs):
        return at_least_float32(outputs).softmax(-1)


def check_class_labels(name: str, y: Tensor, n_classes: int) -> None:
    """Refuse labels that are not int64 class indices in [0, n_classes - 1].

    torch's cross-entropy skips the label -100 (its ``ignore_index``) without a word, so a
    label outside the range must fail here, naming the range. The value check is one min/max
    reduction over ``y``.
    """
    if not isinstance(y, Tensor):
        raise ValueError(f"{name} must be a tensor of class indices, got {type(y).__name__}")
    if y.dtype != torch.long:
        hint = (" (integer class labels given as floats?)" if y.is_floating_point() else "")
        raise ValueError(f"{name} must hold class indices as torch.int64 (torch.long), got "
                         f"{y.dtype}{hint}; convert with {name}.long()")
    if y.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(y))
    if low < 0 or high >= n_classes:
        note = (" (-100 is torch's ignore_index: those examples would be skipped silently)"
                if low == -100 or bool((y == -100).any()) else "")
        raise ValueError(f"{name} must hold class indices in [0, {n_classes - 1}] for a target "
                         f"with {n_classes} outputs, got values from {low} to {high}{note}")


class Gaussian(Likelihood):
    """Homoscedastic Gaussian noise of known standard deviation; targets are [B, 1]."""

    task = "regression"

    def __init__(self, noise_std: float):
        self.noise_std = check_positive("noise_std", noise_std)

    def nll(self, outputs, y):
        if y.shape != outputs.shape[1:]:
            raise ValueError(f"targets y must have shape {tuple(outputs.shape[1:])}, got {tuple(y.shape)}")
        z = (at_least_float32(outputs) - y) / self.noise_std
        return (0.5 * z**2 + math.log(self.noise_std) + 0.5 * math.log(2 * math.pi)).sum(-1)

    def predictive(self, outputs):
        return at_least_float32(outputs)
