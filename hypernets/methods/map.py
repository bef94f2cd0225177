"""Maximum a posteriori: one network, weight decay as a Gaussian prior."""

from __future__ import annotations

import torch

from hypernets.likelihoods import Likelihood
from hypernets.methods.base import Method, StackedParams, check_prior_std
from hypernets.targets import Params, TargetNet


class MAP(Method):
    """Point estimate maximising log p(y | x, w) + log N(w; 0, prior_std^2 I).

    Per data point the loss is the mean NLL plus ||w||^2 / (2 prior_std^2 n_train), i.e.
    weight decay 1 / (prior_std^2 n_train) written as the prior it is.
    """

    max_distinct_nets = 1

    def __init__(self, target: TargetNet, likelihood: Likelihood, *, prior_std: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__(target, likelihood)
        self.prior_std = check_prior_std(prior_std)
        self.weights = StackedParams(target, 1, generator)

    def sample_params(self, n_samples: int) -> Params:
        return {n: w.expand(n_samples, *w.shape[1:]) for n, w in self.weights.as_dict().items()}

    def training_loss(self, x, y, *, n_train, epoch):
        nll = self.expected_nll(self.weights.as_dict(), x, y)
        prior = self.weights.squared_norm().sum() / (2 * self.prior_std**2 * n_train)
        return nll + prior, {"nll": nll.detach(), "prior": prior.detach()}
