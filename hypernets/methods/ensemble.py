"""Deep ensemble (Lakshminarayanan et al. 2017) trained as one batched model."""

from __future__ import annotations

import torch

from hypernets.likelihoods import Likelihood
from hypernets.methods.base import Method, StackedParams, check_prior_std
from hypernets.targets import Params, TargetNet
from hypernets.validation import check_positive_int


class DeepEnsemble(Method):
    """M independently initialised MAP networks, trained simultaneously in one batched call.

    The members live in one ``StackedParams(target, M)`` and run as the S = M nets of the
    target's batched forward. The loss is the sum over members of each member's MAP loss
    (mean NLL + ||w_m||^2 / (2 prior_std^2 n_train)), so every member receives exactly the
    gradient it would get if trained alone; the logged ``nll`` and ``prior`` are means over
    members. All members see the same mini-batches: their diversity comes from the
    independent initialisations, which Lakshminarayanan et al. found sufficient (random
    shuffling per member added little). Adam's per-parameter statistics keep the members'
    updates independent too.
    """

    def __init__(self, target: TargetNet, likelihood: Likelihood, *, n_members: int = 5,
                 prior_std: float = 1.0, generator: torch.Generator | None = None):
        n_members = check_positive_int("n_members", n_members)
        # Every training step runs all members: S per step is M.
        super().__init__(target, likelihood, train_samples=n_members)
        self.n_members = n_members
        self.prior_std = check_prior_std(prior_std)
        self.members = StackedParams(target, n_members, generator)

    @property
    def max_distinct_nets(self) -> int:
        return self.n_members

    def sample_params(self, n_samples: int) -> Params:
        if n_samples > self.n_members:
            raise ValueError(f"an ensemble of {self.n_members} members cannot give "
                             f"n_samples={n_samples} distinct nets; use n_samples <= "
                             f"{self.n_members}")
        return {n: w[:n_samples] for n, w in self.members.as_dict().items()}

    def training_loss(self, x, y, *, n_train, epoch):
        outputs = self.target(self.members.as_dict(), x)
        nll = self.likelihood.nll(outputs, y).mean(1)  # [M]
        prior = self.members.squared_norm() / (2 * self.prior_std**2 * n_train)  # [M]
        loss = (nll + prior).sum()
        return loss, {"nll": nll.mean().detach(), "prior": prior.mean().detach()}
