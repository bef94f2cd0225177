"""Bayes by Backprop (Blundell et al. 2015): a mean-field Gaussian posterior over weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence

from hypernets.likelihoods import Likelihood
from hypernets.methods.base import Method, StackedParams, check_prior_std
from hypernets.targets import Linear, Params, TargetNet
from hypernets.validation import check_bool, check_choice, check_positive, check_real

PRIORS = ("gaussian", "scale_mixture")

# Added under the square root of the pre-activation variance: where every input of a unit is
# zero (a dead ReLU layer, an input of 0 in a bias-free net) the variance is 0 and the
# derivative of sqrt would be infinite.
_VARIANCE_FLOOR = 1e-16


def _normal(loc, scale) -> Normal:
    # Argument validation checks every element on each call, costing more than the density.
    return Normal(loc, scale, validate_args=False)


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class BayesByBackprop(Method):
    """q(w) = prod_i N(w_i; mu_i, sigma_i^2) with sigma_i = softplus(rho_i), fit by the ELBO.

    The loss per data point is the mean NLL over the S weight samples and the batch plus
    KL(q || p) / n_train: the negative ELBO of the whole training set divided by n_train. (Next
    to a batch-mean NLL, a KL divided by the number of batches weights the prior batch_size
    times too strongly, and an undivided KL n_train times; implementations get this wrong.)

    Priors (``prior``):

    - ``"gaussian"``: N(0, prior_std^2) on every weight; the KL is in closed form.
    - ``"scale_mixture"``: mixture_weight N(0, s1^2) + (1 - mixture_weight) N(0, s2^2) with
      (s1, s2) = ``mixture_stds``, Blundell et al.'s prior (their grid had mixture_weight in
      {1/4, 1/2, 3/4}, -log s1 in {0, 1, 2}, -log s2 in {6, 7, 8}). It has no closed-form
      KL, so the KL is the Monte Carlo estimate mean_s [log q(w_s) - log p(w_s)] over the
      step's S weight samples.

    Initialisation: the means are the target's default initialisation, U(+-1/sqrt(fan_in)),
    and every rho is softplus^-1(``init_std``). ``init_std = 1e-3`` starts near a point
    estimate, so the network learns its fit first and the KL then widens sigma (at Adam's lr
    1e-3, rho moves about 1e-3 per step); common choices lie between 1e-3 and 0.05
    (rho = -3, as in several libraries, gives 0.049). Small values also keep the gradient
    noise of the first steps low.

    ``local_reparameterization=True`` (Kingma et al. 2015) samples each linear layer's
    pre-activations from their Gaussian given the layer's input instead of sampling the
    weights, independently per example: the same per-example marginal with lower-variance
    gradients. It needs a target made only of Linear, Activation, Flatten and Dropout layers
    (no closed form for pooled convolutions here) and applies during training only;
    :meth:`sample_params` always samples weights. With the scale-mixture prior the Monte Carlo
    KL then uses its own S weight samples, an equally unbiased estimate.
    """

    def __init__(self, target: TargetNet, likelihood: Likelihood, *, prior: str = "gaussian",
                 prior_std: float = 1.0, mixture_weight: float = 0.5,
                 mixture_stds: tuple[float, float] = (1.0, math.exp(-6)),
                 init_std: float = 1e-3, local_reparameterization: bool = False,
                 train_samples: int | None = None, generator: torch.Generator | None = None):
        super().__init__(target, likelihood, train_samples=train_samples)
        check_choice("prior", prior, PRIORS)
        prior_std = check_prior_std(prior_std)
        mixture_weight = check_real("mixture_weight", mixture_weight, minimum=0.0, maximum=1.0,
                                    exclusive_minimum=True, exclusive_maximum=True)
        if isinstance(mixture_stds, (str, bytes)) or len(mixture_stds) != 2:
            raise ValueError(f"mixture_stds must be two stds > 0, got {mixture_stds!r}")
        mixture_stds = tuple(check_positive("every entry of mixture_stds", s) for s in mixture_stds)
        init_std = check_positive("init_std", init_std)
        check_bool("local_reparameterization", local_reparameterization)
        if local_reparameterization:
            target.require_mlp("local_reparameterization")
        self.prior = prior
        self.prior_std = prior_std
        self.mixture_weight = mixture_weight
        self.mixture_stds = tuple(mixture_stds)
        self.init_std = init_std
        self.local_reparameterization = local_reparameterization
        self.mean = StackedParams(target, 1, generator)
        rho = _inverse_softplus(init_std)
        self.rho = nn.ParameterList([nn.Parameter(torch.full_like(t, rho))
                                     for t in self.mean.tensors])

    # -- posterior ----------------------------------------------------------------------
    def posterior_std(self) -> Params:
        """sigma = softplus(rho) per weight, each [1, *spec_shape]."""
        return {n: F.softplus(r) for n, r in zip(self.mean.names, self.rho)}

    def sample_params(self, n_samples: int) -> Params:
        return self._sample(n_samples, self.posterior_std())

    def _sample(self, n_samples: int, stds: Params) -> Params:
        return {n: mu + stds[n] * torch.randn(n_samples, *mu.shape[1:], device=mu.device)
                for n, mu in self.mean.as_dict().items()}

    # -- KL(q || p) -----------------------------------------------------------------------
    def kl_closed_form(self, stds: Params | None = None) -> Tensor:
        """KL(q || N(0, prior_std^2)) summed over all weights (Gaussian prior only).

        ``stds`` are the posterior's standard deviations (:meth:`posterior_std`, computed when
        None), passed in by a training step that has them already.
        """
        if self.prior != "gaussian":
            raise ValueError(f"the KL has a closed form only for prior='gaussian', "
                             f"not {self.prior!r}")
        stds = self.posterior_std() if stds is None else stds
        return sum(kl_divergence(_normal(mu, stds[n]),
                                 _normal(torch.zeros_like(mu), self.prior_std)).sum()
                   for n, mu in self.mean.as_dict().items())

    def log_prior(self, params: Params) -> Tensor:
        """log p(w) summed over the weights of each sample: [S]."""
        total = 0.0
        for w in params.values():
            if self.prior == "gaussian":
                log_p = _normal(0.0, self.prior_std).log_prob(w)
            else:
                s1, s2 = self.mixture_stds
                log_p = torch.logaddexp(
                    math.log(self.mixture_weight) + _normal(0.0, s1).log_prob(w),
                    math.log1p(-self.mixture_weight) + _normal(0.0, s2).log_prob(w))
            total = total + log_p.flatten(1).sum(1)
        return total

    def _log_posterior(self, params: Params, stds: Params) -> Tensor:
        """log q(w) under the posterior with standard deviations ``stds``, per sample: [S]."""
        return sum(_normal(mu, stds[n]).log_prob(params[n]).flatten(1).sum(1)
                   for n, mu in self.mean.as_dict().items())

    def kl_monte_carlo(self, params: Params, stds: Params | None = None) -> Tensor:
        """Mean over the S samples of log q(w_s) - log p(w_s): an unbiased KL estimate.

        ``stds`` as in :meth:`kl_closed_form`.
        """
        stds = self.posterior_std() if stds is None else stds
        return (self._log_posterior(params, stds) - self.log_prior(params)).mean()

    # -- training -----------------------------------------------------------------------
    def _local_reparameterized_outputs(self, x: Tensor, n_samples: int, stds: Params) -> Tensor:
        """[S, B, out]: each linear layer's pre-activations drawn given its input."""
        means = self.mean.as_dict()

        def linear(layer_name: str, layer: Linear, h: Tensor) -> Tensor:
            weight, weight_std = means[f"{layer_name}.weight"][0], stds[f"{layer_name}.weight"][0]
            bias, bias_std = ((means[f"{layer_name}.bias"][0], stds[f"{layer_name}.bias"][0])
                              if layer.bias else (None, None))
            mean = F.linear(h, weight, bias)
            variance = F.linear(h.pow(2), weight_std.pow(2),
                                None if bias_std is None else bias_std.pow(2))
            return mean + (variance + _VARIANCE_FLOOR).sqrt() * torch.randn_like(mean)

        return self.target.walk_mlp(x.unsqueeze(0).expand(n_samples, *x.shape), linear)

    def training_loss(self, x, y, *, n_train, epoch):
        n_samples, stds = self.train_samples, self.posterior_std()
        params = None
        if self.local_reparameterization:
            outputs = self._local_reparameterized_outputs(x, n_samples, stds)
            nll = self.likelihood.nll(outputs, y).mean()
        else:
            params = self._sample(n_samples, stds)
            nll = self.expected_nll(params, x, y)
        if self.prior == "gaussian":
            kl = self.kl_closed_form(stds)
        else:
            if params is None:
                params = self._sample(n_samples, stds)
            kl = self.kl_monte_carlo(params, stds)
        return nll + kl / n_train, {"nll": nll.detach(), "kl": kl.detach()}
