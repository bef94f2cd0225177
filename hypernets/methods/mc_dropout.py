"""MC dropout (Gal & Ghahramani 2016): dropout at training and at test time."""

from __future__ import annotations

import torch

from hypernets.likelihoods import Likelihood
from hypernets.methods.base import Method, StackedParams, check_prior_std
from hypernets.targets import Params, TargetNet
from hypernets.validation import check_probability


class MCDropout(Method):
    """One network trained with dropout and a Gaussian prior; S dropout masks at test time.

    Training runs the target's functional dropout (``target(params, x, dropout=p)``), drawn
    per example and per training sample at the target's :class:`~hypernets.targets.Dropout`
    markers, i.e. on the inputs of the hidden linear layers. The regulariser is the Gaussian
    prior of :class:`~hypernets.methods.MAP`, ||w||^2 / (2 prior_std^2 n_train): the weight
    decay of Gal's variational reading of dropout.

    :meth:`sample_params` turns S dropout masks into S weight sets: dropping a linear layer's
    input unit is the same as zeroing that column of its weight matrix, so each sample zeroes
    the input columns of every matrix in ``target.dropout_weights()`` with probability ``p``
    and scales the kept ones by 1 / (1 - p). Prediction then is the shared batched call of all
    methods. At test time one mask is shared by a whole batch (each of the S weight sets is one
    dropout net) rather than drawn per example as in training; every example still sees S
    independent masks, so its predictive distribution is the same.

    ``p = 0.5`` is the rate Srivastava et al. recommend for hidden units.
    """

    #: 2: the layers before the first dropout mask run once for all S nets (the same maths,
    #: other rounding).
    training_version = 2

    def __init__(self, target: TargetNet, likelihood: Likelihood, *, p: float = 0.5,
                 prior_std: float = 1.0, train_samples: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(target, likelihood, train_samples=train_samples)
        p = check_probability("dropout probability p", p)
        prior_std = check_prior_std(prior_std)
        if not target.dropout_weights():
            raise ValueError(f"target {target.name!r} has no Dropout markers before a linear "
                             "layer, so MC dropout would have nothing to drop")
        self.p = p
        self.prior_std = prior_std
        self.weights = StackedParams(target, 1, generator)

    def _expanded(self, n_samples: int) -> Params:
        return {n: w.expand(n_samples, *w.shape[1:]) for n, w in self.weights.as_dict().items()}

    def sample_params(self, n_samples: int) -> Params:
        params = self._expanded(n_samples)
        for name in self.target.dropout_weights():
            weight = params[name]  # [S, out, in]: a mask over the `in` columns per sample
            keep = torch.rand(n_samples, 1, weight.shape[2], device=weight.device) >= self.p
            params[name] = weight * keep.to(weight.dtype) / (1 - self.p)
        return params

    def training_loss(self, x, y, *, n_train, epoch):
        nll = self.expected_nll(self._expanded(self.train_samples), x, y, dropout=self.p)
        prior = self.weights.squared_norm().sum() / (2 * self.prior_std**2 * n_train)
        return nll + prior, {"nll": nll.detach(), "prior": prior.detach()}
