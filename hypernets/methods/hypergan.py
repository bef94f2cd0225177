"""HyperGAN (Ratzlaff & Fuxin, ICML 2019): noise -> mixer -> one generator per target layer.

The building blocks it shares with HyperGAN-MI are in :mod:`hypernets.methods.hypergan_blocks`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hypernets.likelihoods import Likelihood
from hypernets.methods.base import Method, init_linear_layers
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
from hypernets.validation import check_bool, check_positive, check_positive_int


class HyperGAN(Method):
    """HyperGAN: s ~ N(0, I) -> mixer Q -> N layer codes -> N generators -> S target nets.

    **Model.** Noise s in R^noise_dim goes through the mixer (:class:`Mixer`: hidden layers of
    ``hidden`` units with BatchNorm and ReLU) to N * code_dim numbers, split into one code per
    layer group of the target (N groups). Generator i (``hidden``-``hidden`` ELU MLP) maps
    code i to that layer's weights and biases, scaled by :func:`init_scales`.

    **Loss** (one scalar, one optimiser; per data point):

        mean NLL over the S nets and the batch
        + beta * BCE(D(codes), 1)      -- D's parameters detached: trains mixer only
        + BCE(D(prior), 1) + BCE(D(codes.detach()), 0)  -- trains D only

    The task loss is the mean of the S nets' losses, not the loss of an averaged net. The
    adversarial term is the non-saturating GAN loss pulling Q(s) towards the prior
    P = N(0, I) of dimension N * code_dim: D (``hidden``-``hidden`` ReLU MLP, logits) sees the
    whole mixed latent vector of a sample. It is not divided by ``n_train``: HyperGAN's
    objective is not a bound on the evidence, and beta weighs it against the per-example task
    loss. Logged: ``nll``, ``adversarial`` (the mixer's term before beta) and
    ``discriminator`` (D's loss).

    **Ablations.** ``use_discriminator=False`` is beta = 0: no discriminator module, no
    adversarial terms. ``use_mixer=False`` feeds each generator its own independent
    N(0, I_code_dim) noise: the codes are then prior samples by construction, so there is
    nothing for a discriminator to match and ``use_discriminator`` defaults to (and must be)
    False; ``noise_dim`` is unused.

    **Sampling.** :meth:`sample_params` draws fresh noise from torch's global RNG. In
    training mode the mixer's BatchNorm uses the statistics of the S draws (S >= 2), in eval
    mode (prediction) its running averages (see :class:`Mixer`).

    **Optimiser** (:meth:`configure_optimizer`): Adam with betas (0.5, 0.9); learning rates
    1e-4 generators, 5e-4 mixer, 1e-4 discriminator. A given ``lr`` replaces the generators'
    rate; the others keep their ratio to it.

    ``beta`` defaults to 1 (setting it without a discriminator is an error): the value that
    gave the most diverse nets in our toy runs (``benchmarks/method_notes.md``, which also
    records how loosely the adversarial game holds the codes to the prior; hence
    :meth:`pretrain_mixer`, which matches the codes' first two moments directly).

    ``generator`` draws the initial weights of every module (torch's global RNG when None).
    """

    default_lr = 1e-4
    default_train_samples = 32

    def __init__(self, target: TargetNet, likelihood: Likelihood, *, noise_dim: int = 256,
                 code_dim: int = 128, hidden: int = 512, beta: float | None = None,
                 use_discriminator: bool | None = None, use_mixer: bool = True,
                 train_samples: int | None = None, generator: torch.Generator | None = None):
        super().__init__(target, likelihood, train_samples=train_samples)
        check_positive_int("noise_dim", noise_dim)
        check_positive_int("code_dim", code_dim)
        check_positive_int("hidden", hidden)
        check_bool("use_mixer", use_mixer)
        if use_discriminator is None:
            use_discriminator = use_mixer
        check_bool("use_discriminator", use_discriminator)
        if use_discriminator and not use_mixer:
            raise ValueError("use_discriminator=True needs use_mixer=True: without a mixer the "
                             "codes are N(0, I) prior samples and there is nothing to match")
        if not use_discriminator and beta is not None:
            raise ValueError(f"beta={beta!r} weighs the adversarial term, which "
                             "use_discriminator=False removes; leave beta unset")
        beta = 1.0 if beta is None else beta
        if use_discriminator:
            try:
                beta = check_positive("beta", beta)
            except ValueError as error:
                raise ValueError(f"{error} (beta = 0 is the ablation use_discriminator=False)") from None
        if use_mixer and self.train_samples < 2:
            raise ValueError(f"train_samples must be >= 2 with a mixer (BatchNorm statistics over "
                             f"the samples), got {self.train_samples}")
        self.noise_dim = noise_dim
        self.code_dim = code_dim
        self.beta = float(beta) if use_discriminator else 0.0
        self.generators = LayerGenerators(target, code_dim, (hidden, hidden))
        n_layers = self.generators.n_layers
        self.mixer = Mixer(noise_dim, (hidden, hidden), n_layers, code_dim) if use_mixer else None
        self.discriminator = (mlp_block([n_layers * code_dim, hidden, hidden, 1], nn.ReLU)
                              if use_discriminator else None)
        init_linear_layers(self, generator)

    @property
    def latent_dim(self) -> int:
        """N * code_dim: the size of one sample's mixed latent vector."""
        return self.generators.n_layers * self.code_dim

    def codes(self, n_samples: int) -> Tensor:
        """S layer codes [S, N, code_dim] from fresh noise (the mixer output, or pure noise)."""
        check_positive_int("n_samples", n_samples)
        if self.mixer is None:
            return torch.randn(n_samples, self.generators.n_layers, self.code_dim,
                               device=self.device)
        return self.mixer(torch.randn(n_samples, self.noise_dim, device=self.device))

    def sample_params(self, n_samples: int) -> Params:
        return self.generators(self.codes(n_samples))

    def adversarial_terms(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """(mixer's term BCE(D(codes), 1), D's term BCE(D(prior), 1) + BCE(D(codes), 0)).

        The first reaches the mixer only (D detached), the second D only (codes detached).
        The prior samples come from torch's global RNG.
        """
        if self.discriminator is None:
            raise ValueError("this HyperGAN has no discriminator (use_discriminator=False)")
        latent = codes.flatten(1)
        prior = torch.randn_like(latent)
        fake_logits = call_detached(self.discriminator, latent)
        mixer_term = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        real_logits = self.discriminator(prior)
        detached_logits = self.discriminator(latent.detach())
        bce = F.binary_cross_entropy_with_logits
        critic_term = (bce(real_logits, torch.ones_like(real_logits))
                       + bce(detached_logits, torch.zeros_like(detached_logits)))
        return mixer_term, critic_term

    def training_loss(self, x, y, *, n_train, epoch):
        codes = self.codes(self.train_samples)
        nll = self.expected_nll(self.generators(codes), x, y)
        if self.discriminator is None:
            return nll, {"nll": nll.detach()}
        mixer_term, critic_term = self.adversarial_terms(codes)
        loss = nll + self.beta * mixer_term + critic_term
        return loss, {"nll": nll.detach(), "adversarial": mixer_term.detach(),
                      "discriminator": critic_term.detach()}

    def pretrain_mixer(self, steps: int, n_samples: int | None = None,
                       lr: float | None = None) -> list[float]:
        """Fit the mixer alone so its codes have mean 0 and covariance I; return the losses.

        The loss is ||mean||^2 + ||cov - I||_F^2 of the flattened codes (dimension
        L = N * code_dim) of ``n_samples`` noise draws per step, minimised by Adam at the
        mixer's learning rate (``lr`` as in :meth:`configure_optimizer`). Even exact N(0, I)
        codes score about L (L + 1) / n_samples from sampling error alone; the default
        n_samples = 10 L keeps that floor at L / 10, below the deviations worth fixing.
        Noise comes from torch's global RNG.
        """
        if self.mixer is None:
            raise ValueError("pretrain_mixer needs a mixer (use_mixer=True)")
        check_positive_int("steps", steps)
        n_samples = 10 * self.latent_dim if n_samples is None else n_samples
        if check_positive_int("n_samples", n_samples) < 2:
            raise ValueError(f"n_samples must be >= 2 for a covariance, got {n_samples}")
        base_lr = self.default_lr if lr is None else lr
        optimizer = adam_groups([(self.mixer, MIXER_LR_RATIO * base_lr)])
        was_training = self.training
        self.train()
        eye = torch.eye(self.latent_dim, device=self.device)
        losses = []
        for _ in range(steps):
            latent = self.codes(n_samples).flatten(1)
            mean = latent.mean(0)
            loss = mean.pow(2).sum() + (torch.cov(latent.T) - eye).pow(2).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        self.train(was_training)
        return losses

    def configure_optimizer(self, lr=None):
        base_lr = self.default_lr if lr is None else lr
        return adam_groups([(self.generators, base_lr),
                            (self.mixer, MIXER_LR_RATIO * base_lr),
                            (self.discriminator, CRITIC_LR_RATIO * base_lr)])
