"""HyperGAN-MI: HyperGAN's mixer with linear generators, diversified by a MINE bound."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hypernets.likelihoods import Likelihood
from hypernets.methods.base import Method, full_precision, init_linear_layers
from hypernets.methods.hypergan_blocks import (
    CRITIC_LR_RATIO,
    MIXER_LR_RATIO,
    LayerGenerators,
    Mixer,
    adam_groups,
    call_detached,
    mlp_block,
)
from hypernets.targets import Params, TargetNet
from hypernets.validation import (
    check_int,
    check_int_list,
    check_positive_int,
    check_real,
)


def standardise_one_hot(one_hot: Tensor) -> Tensor:
    """One-hot codes [S, K] of a uniform category -> each coordinate with mean 0, variance 1.

    A coordinate of a uniform one-hot has mean 1/K and variance (1/K)(1 - 1/K) (0.09 for
    K = 10); after this map it is on the same footing as a coordinate of N(0, I) noise.
    """
    n_categories = one_hot.shape[1]
    mean = 1.0 / n_categories
    return (one_hot - mean) / math.sqrt(mean * (1.0 - mean))


class StatisticsNetwork(nn.Module):
    """MINE's T(z, c): latent [S, L] and one-hot [S, K] -> a score [S] (ReLU MLP).

    The inputs are standardised before the MLP: the latent per coordinate with the mean and
    variance of the S samples at hand (``F.batch_norm`` without running statistics or
    learnable scale), the one-hot with :func:`standardise_one_hot`. Why: the task moves the
    mixer output's mean, shared by all samples, far more than its spread across samples
    (which alone carries c); on the raw latent that shift kills T's ReLUs (see
    :class:`HyperGANMI`). A per-coordinate affine map is invertible, so I(z; c) is unchanged;
    the joint and the shuffled marginal pairs share z and so share the map. Needs S >= 2.
    """

    def __init__(self, latent_dim: int, n_categories: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = mlp_block([latent_dim + n_categories, *hidden, 1], nn.ReLU)

    def forward(self, latent: Tensor, one_hot: Tensor) -> Tensor:
        if latent.shape[0] < 2:
            raise ValueError("the statistics network standardises the latent with the statistics"
                             f" of the samples, so it needs at least 2, got {latent.shape[0]}")
        standardised = F.batch_norm(latent, None, None, training=True)
        return self.net(torch.cat([standardised, standardise_one_hot(one_hot)], dim=1)).squeeze(1)


def _log_mean_exp(t: Tensor) -> Tensor:
    return torch.logsumexp(t, dim=0) - math.log(t.shape[0])


def _corrected_log_term(log_mean: Tensor, log_moving_average: Tensor) -> Tensor:
    """Value log E[e^T]; gradient E[e^T grad T] / m with m the moving average, not E[e^T]."""
    ratio = torch.exp(log_mean - log_moving_average)
    return log_mean.detach() + ratio - ratio.detach()


class HyperGANMI(Method):
    """HyperGAN-MI: [noise, one-hot code] -> mixer -> N layer codes -> N linear generators.

    **Model.** Noise s ~ N(0, I) of size ``noise_dim`` and a uniformly drawn one-hot code c of
    ``n_categories`` classes, standardised (:func:`standardise_one_hot`), are concatenated and
    mixed (:class:`~hypernets.methods.hypergan.Mixer`: ``hidden``-``hidden`` with BatchNorm
    and ReLU) into one code of size ``code_dim`` per layer group of the target; a linear
    generator per layer maps its code to the layer's weights and biases (scaled as in
    :func:`~hypernets.methods.hypergan.init_scales`).

    **Diversity** comes from maximising the mutual information between the mixer output z
    (all N codes, flattened) and c, estimated with MINE (Belghazi et al. 2018) via the
    Donsker-Varadhan bound

        I(z; c) >= E_joint[T(z, c)] - log E_marginal[exp T(z, c')],

    where the joint pairs each z with its own c and the marginal with c' = the one-hot codes
    shuffled across the S samples of the step. T is a statistics network (``stats_hidden``,
    default 400-400, ReLU, on the standardised z and c: :class:`StatisticsNetwork`). A c the
    mixer forgets cannot be recovered from z, so a high bound forces the codes, and through
    them the generated nets, to vary with the input.

    **Both inputs of T are standardised** (:class:`StatisticsNetwork`): fed raw, the bound
    never left 0 at the paper's widths, because the one-hot was drowned in the noise and the
    task's shift of the codes' mean killed T's ReLUs (measurements in
    ``benchmarks/method_notes.md``).

    **Loss** (one scalar, one optimiser; per data point):

        mean NLL over the S nets and the batch
        - beta * MI(z; T detached)     -- trains the mixer only
        - MI(z detached; T)            -- trains T only (T maximises the bound)

    **Gradient estimator.** With ``ma_rate=None`` both MI terms are the plain DV bound, whose
    mini-batch gradient is biased (the log of a sample mean). With ``ma_rate`` = r (default
    0.01), MINE's correction: the denominator of the gradient of the log-term,
    E[exp(T) grad T] / E[exp(T)], uses an exponential moving average m of E_marginal[exp(T)]
    (m <- (1 - r) m + r * batch mean, kept in log space for stability and initialised with the
    first batch) instead of the batch mean: the term is written with the value of the DV bound
    and the gradient of batch_mean / m.detach(). The moving average is a buffer (saved with
    checkpoints) updated once per training step; outside training mode the terms use the
    average updated with the batch at hand without storing it. The logged ``mi`` is always
    the plain DV estimate of the step, in nats. The true value is at most log(n_categories),
    but one step's estimate is noisy (the shuffled marginal of S = 32 samples): once the
    bound saturates, a quarter of the steps log more than log 10 (up to 3.9), so average
    over steps.

    ``beta`` defaults to 25, the low end of the public code's 25-50; on the toy, beta buys
    weight diversity while the bound saturates already at beta = 1 (the sweep is in
    ``benchmarks/method_notes.md``). ``beta = 0`` is the ablation without the regulariser:
    the mixer then learns from the task alone, while T still trains, so the logged ``mi``
    still measures how much of c the codes keep.

    Learning rates and Adam betas are HyperGAN's (generators 1e-4, mixer 5e-4, T 1e-4; betas
    (0.5, 0.9); a given ``lr`` replaces the generators' rate and the others keep their
    ratio). As in HyperGAN the mixer's BatchNorm uses batch statistics during training
    (S >= 2) and running averages in eval mode. ``generator`` draws the initial weights of
    every module (torch's global RNG when None).
    """

    default_lr = 1e-4
    default_train_samples = 32

    def __init__(self, target: TargetNet, likelihood: Likelihood, *, noise_dim: int = 256,
                 n_categories: int = 10, code_dim: int = 128, hidden: int = 512,
                 beta: float = 25.0, stats_hidden: tuple[int, ...] = (400, 400),
                 ma_rate: float | None = 0.01, train_samples: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(target, likelihood, train_samples=train_samples)
        check_positive_int("noise_dim", noise_dim)
        check_positive_int("code_dim", code_dim)
        check_positive_int("hidden", hidden)
        stats_hidden = check_int_list("stats_hidden", stats_hidden, minimum=1, allow_empty=True)
        # One category carries no information.
        check_int("n_categories", n_categories, minimum=2)
        beta = check_real("beta", beta, minimum=0.0)
        if ma_rate is not None:
            ma_rate = check_real("ma_rate", ma_rate, minimum=0.0, maximum=1.0,
                                 exclusive_minimum=True)
        if self.train_samples < 2:
            raise ValueError(f"train_samples must be >= 2 (BatchNorm statistics and the shuffled "
                             f"marginal need several samples), got {self.train_samples}")
        self.noise_dim = noise_dim
        self.n_categories = n_categories
        self.code_dim = code_dim
        self.beta = float(beta)
        self.ma_rate = ma_rate
        self.generators = LayerGenerators(target, code_dim, hidden=())
        n_layers = self.generators.n_layers
        self.mixer = Mixer(noise_dim + n_categories, (hidden, hidden), n_layers, code_dim)
        self.statistics = StatisticsNetwork(n_layers * code_dim, n_categories, stats_hidden)
        # log of the moving average of E_marginal[exp(T)]; -inf until the first training step.
        self.register_buffer("log_moving_average", torch.tensor(float("-inf")))
        init_linear_layers(self, generator)

    def draw_categories(self, n_samples: int) -> Tensor:
        """S one-hot codes [S, n_categories], uniform over the categories (global RNG)."""
        labels = torch.randint(self.n_categories, (n_samples,), device=self.device)
        return F.one_hot(labels, self.n_categories).float()

    def codes(self, n_samples: int, one_hot: Tensor | None = None) -> Tensor:
        """Layer codes [S, N, code_dim] from fresh noise and ``one_hot`` (drawn if None)."""
        check_positive_int("n_samples", n_samples)
        if one_hot is None:
            one_hot = self.draw_categories(n_samples)
        elif tuple(one_hot.shape) != (n_samples, self.n_categories):
            raise ValueError(f"one_hot must have shape [{n_samples}, {self.n_categories}], "
                             f"got {tuple(one_hot.shape)}")
        noise = torch.randn(n_samples, self.noise_dim, device=self.device)
        return self.mixer(torch.cat([noise, standardise_one_hot(one_hot)], dim=1))

    def sample_params(self, n_samples: int) -> Params:
        return self.generators(self.codes(n_samples))

    def mine_terms(self, codes: Tensor, one_hot: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(DV estimate, mixer's MI term, T's MI term) for codes [S, N, d] and one-hot [S, K].

        The mixer's term has T's parameters detached, T's term the codes detached; with
        ``ma_rate`` both use the moving-average gradient correction, and in training mode the
        call updates the stored moving average. The shuffle forming the marginal uses the
        global RNG.
        """
        latent = codes.flatten(1).float()
        shuffled = one_hot[torch.randperm(one_hot.shape[0], device=one_hot.device)]

        def terms(statistics, z):
            return statistics(z, one_hot).mean(), _log_mean_exp(statistics(z, shuffled))

        with full_precision(latent.device):  # the bound is a difference of logs: float32
            joint_t, log_marginal_t = terms(self.statistics, latent.detach())
            joint_m, log_marginal_m = terms(lambda *a: call_detached(self.statistics, *a), latent)
        estimate = (joint_t - log_marginal_t).detach()
        if self.ma_rate is None:
            return estimate, joint_m - log_marginal_m, joint_t - log_marginal_t
        batch = log_marginal_t.detach()
        previous = self.log_moving_average
        log_ma = batch if torch.isinf(previous) else torch.logaddexp(
            math.log1p(-self.ma_rate) + previous, math.log(self.ma_rate) + batch)
        if self.training:
            self.log_moving_average.copy_(log_ma)
        return (estimate, joint_m - _corrected_log_term(log_marginal_m, log_ma),
                joint_t - _corrected_log_term(log_marginal_t, log_ma))

    def training_loss(self, x, y, *, n_train, epoch):
        one_hot = self.draw_categories(self.train_samples)
        codes = self.codes(self.train_samples, one_hot)
        nll = self.expected_nll(self.generators(codes), x, y)
        estimate, mixer_mi, statistics_mi = self.mine_terms(codes, one_hot)
        loss = nll - self.beta * mixer_mi - statistics_mi
        return loss, {"nll": nll.detach(), "mi": estimate}

    def configure_optimizer(self, lr=None):
        base_lr = self.default_lr if lr is None else lr
        return adam_groups([(self.generators, base_lr),
                            (self.mixer, MIXER_LR_RATIO * base_lr),
                            (self.statistics, CRITIC_LR_RATIO * base_lr)])
