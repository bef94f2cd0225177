"""Observation models: how a target network's outputs explain the labels."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch.nn.functional as F
from torch import Tensor


class Likelihood(ABC):
    """Per-sample, per-example negative log-likelihood and the predictive it implies."""

    task: str

    @abstractmethod
    def nll(self, outputs: Tensor, y: Tensor) -> Tensor:
        """outputs [S, B, out], targets for B examples -> NLL [S, B]."""

    @abstractmethod
    def predictive(self, outputs: Tensor) -> Tensor:
        """What the metrics take: probabilities [S, B, C] or regression outputs [S, B, 1]."""


class Categorical(Likelihood):
    """Softmax over logits; targets are class indices [B]."""

    task = "classification"

    def nll(self, outputs, y):
        if y.dim() != 1 or y.shape[0] != outputs.shape[1]:
            raise ValueError(f"labels y must have shape [B={outputs.shape[1]}], got {tuple(y.shape)}")
        n_samples, batch, n_classes = outputs.shape
        flat = F.cross_entropy(outputs.reshape(-1, n_classes), y.repeat(n_samples), reduction="none")
        return flat.reshape(n_samples, batch)

    def predictive(self, outputs):
        return outputs.softmax(-1)


class Gaussian(Likelihood):
    """Homoscedastic Gaussian noise of known standard deviation; targets are [B, 1]."""

    task = "regression"

    def __init__(self, noise_std: float):
        if not noise_std > 0:
            raise ValueError(f"noise_std must be > 0, got {noise_std}")
        self.noise_std = float(noise_std)

    def nll(self, outputs, y):
        if y.shape != outputs.shape[1:]:
            raise ValueError(f"targets y must have shape {tuple(outputs.shape[1:])}, got {tuple(y.shape)}")
        z = (outputs - y) / self.noise_std
        return (0.5 * z**2 + math.log(self.noise_std) + 0.5 * math.log(2 * math.pi)).sum(-1)

    def predictive(self, outputs):
        return outputs


def likelihood_for(task: str, noise_std: float | None = None) -> Likelihood:
    """``"classification"`` -> Categorical; ``"regression"`` -> Gaussian(noise_std)."""
    if task == "classification":
        return Categorical()
    if task == "regression":
        if noise_std is None:
            raise ValueError("regression needs noise_std (the known observation noise)")
        return Gaussian(noise_std)
    raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
