"""Adversarial posterior distillation (APD; Wang, Vicol, Lucas, Gu, Grosse and Zemel, ICML 2018):
a stochastic gradient Langevin chain samples the target's weight posterior, and a Wasserstein GAN
with gradient penalty distils its samples into a generator of weights.

Every training step, on one mini-batch:

1. **Teacher (SGLD).** The chain's weights θ move by Langevin dynamics on the posterior with
   prior N(0, prior_std² I), written per data point: θ ← θ − η ∇[NLL(θ) + ||θ||² / (2
   prior_std² n_train)] + sqrt(2η / n_train) ξ, ξ ~ N(0, I), with the constant step η
   (``sgld_lr``). The update is applied inside :meth:`training_loss` (the optimiser that
   :func:`~hypernets.training.fit` builds trains the GAN only), so the step is deterministic
   under a seed and resumes from a checkpoint.
2. **Pool.** After ``burn_in`` steps every ``thin``-th state of the chain enters a ring buffer
   of the last ``pool_size`` samples (a buffer of the module: it is checkpointed).
3. **Distillation (WGAN-GP).** Once the pool holds ``gan_batch`` samples: the critic D
   (``hidden``-``hidden`` ReLU MLP on the flattened weights) minimises E D(G(z)) − E D(θ_pool)
   + ``gp_weight`` · E(||∇D(θ̂)|| − 1)² on interpolates θ̂; the generator G (an MLP from
   z ~ N(0, I_noise_dim)) minimises −E D(G(z)) every ``n_critic``-th step. One loss trains
   both, each player's term seeing the other with detached parameters.

Prediction samples nets from G. Before the pool fills, G is untrained: the book's runs are
long enough for it to fill early (``burn_in + thin * gan_batch`` steps).

Defaults: η = 0.05 per data point (sum-loss step 2η / n_train, about 1.7e-6 on MNIST), prior
std 1, burn-in 1,000 steps, thinning 10, a pool of 1,000 samples, batches of 64 samples for the
GAN, Adam (0.5, 0.9) at 1e-4 for both players, 5 critic steps per generator step, penalty 10
(Gulrajani et al.'s WGAN-GP settings). The paper's exact schedule is not reproduced here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hypernets.likelihoods import Likelihood
from hypernets.methods.base import Method, check_prior_std, init_linear_layers
from hypernets.methods.hypergan_blocks import adam_groups, call_detached, mlp_block
from hypernets.targets import Params, TargetNet
from hypernets.validation import check_positive, check_positive_int


class AdversarialPosteriorDistillation(Method):
    """APD: an SGLD teacher chain and a WGAN-GP generator of its weights (see the module)."""

    default_lr = 1e-4  # the GAN's; the chain's step is ``sgld_lr``

    def __init__(self, target: TargetNet, likelihood: Likelihood, *, noise_dim: int = 64,
                 hidden: int = 256, prior_std: float = 1.0, sgld_lr: float = 0.05,
                 burn_in: int = 1000, thin: int = 10, pool_size: int = 1000, gan_batch: int = 64,
                 n_critic: int = 5, gp_weight: float = 10.0, train_samples: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(target, likelihood, train_samples=train_samples)
        self.noise_dim = check_positive_int("noise_dim", noise_dim)
        self.prior_std = check_prior_std(prior_std)
        self.sgld_lr = check_positive("sgld_lr", sgld_lr)
        self.burn_in = check_positive_int("burn_in", burn_in)
        self.thin = check_positive_int("thin", thin)
        self.pool_size = check_positive_int("pool_size", pool_size)
        self.gan_batch = check_positive_int("gan_batch", gan_batch)
        if self.gan_batch > self.pool_size:
            raise ValueError(f"gan_batch ({gan_batch}) must be at most pool_size ({pool_size})")
        self.n_critic = check_positive_int("n_critic", n_critic)
        self.gp_weight = check_positive("gp_weight", gp_weight)
        hidden = check_positive_int("hidden", hidden)
        n_weights = target.num_params
        self.chain = nn.Parameter(target.flatten(target.init(1, generator))[0])
        self.weight_generator = mlp_block([noise_dim, hidden, hidden, n_weights], nn.ReLU)
        self.critic = mlp_block([n_weights, hidden, hidden, 1], nn.ReLU)
        init_linear_layers(self.weight_generator, generator)
        init_linear_layers(self.critic, generator)
        self.register_buffer("pool", torch.zeros(pool_size, n_weights))
        self.register_buffer("pool_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))

    def sample_params(self, n_samples: int) -> Params:
        z = torch.randn(check_positive_int("n_samples", n_samples), self.noise_dim,
                        device=self.device)
        return self.target.unflatten(self.weight_generator(z))

    def chain_params(self) -> Params:
        """The teacher chain's current weights as one net (a leading sample dimension of 1)."""
        return self.target.unflatten(self.chain[None])

    def _sgld_step(self, x: Tensor, y: Tensor, n_train: int) -> Tensor:
        with torch.enable_grad():  # the chain steps even where the caller counts FLOPs without grad
            nll = self.expected_nll(self.chain_params(), x, y)
            loss = nll + self.chain.pow(2).sum() / (2 * self.prior_std**2 * n_train)
            (gradient,) = torch.autograd.grad(loss, self.chain)
        with torch.no_grad():
            noise = torch.randn_like(self.chain) * math.sqrt(2 * self.sgld_lr / n_train)
            self.chain.add_(-self.sgld_lr * gradient + noise)
        return nll.detach()

    def _collect(self) -> None:
        step = int(self.step_count)
        if step >= self.burn_in and (step - self.burn_in) % self.thin == 0:
            with torch.no_grad():
                self.pool[int(self.pool_count) % self.pool_size] = self.chain.detach()
            self.pool_count += 1

    def _gradient_penalty(self, real: Tensor, fake: Tensor) -> Tensor:
        mix = torch.rand(len(real), 1, device=real.device)
        training = torch.is_grad_enabled()  # the penalty's gradient trains the critic
        with torch.enable_grad():
            between = (mix * real + (1 - mix) * fake.detach()).requires_grad_(True)
            (gradient,) = torch.autograd.grad(self.critic(between).sum(), between,
                                              create_graph=training)
        return (gradient.norm(dim=1) - 1).pow(2).mean()

    def training_loss(self, x, y, *, n_train, epoch):
        chain_nll = self._sgld_step(x, y, n_train)
        self.step_count += 1
        self._collect()
        filled = min(int(self.pool_count), self.pool_size)
        zero = self.chain.new_zeros(())
        if filled < self.gan_batch:
            # Nothing to distil yet: a zero loss that still reaches the GAN's parameters.
            loss = zero + 0.0 * sum(p.sum() for p in self.parameters() if p is not self.chain)
            return loss.float(), {"nll": chain_nll.float(), "critic": zero, "generator": zero}
        real = self.pool[torch.randint(filled, (self.gan_batch,), device=self.pool.device)]
        fake = self.weight_generator(torch.randn(self.gan_batch, self.noise_dim, device=self.device))
        critic_loss = (self.critic(fake.detach()).mean() - self.critic(real).mean()
                       + self.gp_weight * self._gradient_penalty(real, fake))
        generator_loss = -call_detached(self.critic, fake).mean()
        weight = 1.0 if int(self.step_count) % self.n_critic == 0 else 0.0
        loss = (critic_loss + weight * generator_loss).float()
        return loss, {"nll": chain_nll.float(), "critic": critic_loss.detach().float(),
                      "generator": generator_loss.detach().float()}

    def configure_optimizer(self, lr=None):
        base_lr = self.default_lr if lr is None else lr
        return adam_groups([(self.weight_generator, base_lr), (self.critic, base_lr)])
