"""A gold-standard posterior over a target network's weights, drawn with NUTS (pyro).

The model is the one every method approximates: a Gaussian prior N(0, prior_std^2) on every
parameter of the target and the method's likelihood, p(w | D) ∝ p(w) prod_i p(y_i | x_i, w).
Samples come back as a parameter dict with a leading sample dimension, so the predictive goes
through the same batched target call as every method's (``target(posterior.params, x)``).

Chains run as ONE pyro NUTS chain on the product space of ``num_chains`` independent copies
of the posterior: the potential is the sum of the copies' potentials, evaluated in one
batched target call (the copies are the S networks). The stationary distribution is the
product of posteriors, so every copy's draws are exact posterior draws; the copies start
from different initialisations and serve as the chains of the convergence diagnostics
(split R-hat and effective sample size from pyro). The price is a shared step size and
trajectory length (for C copies the step size shrinks about as C^(-1/4)); the gain is that C
chains cost about as much wall time as one, where per-chain NUTS in Python would spend most
of its time in interpreter overhead and multiprocessing would make runs depend on the
machine. Computation is in float64 for accurate Hamiltonian energies; samples are returned in
the default dtype.

Sampling runs with one intra-op thread: the tensors are tiny, and on a busy machine the
thread pool's synchronisation made NUTS on the toy network 20 times slower (2 threads on 2
cores shared with other work) without changing a single draw.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import torch
from pyro.infer.mcmc import MCMC, NUTS
from pyro.infer.mcmc.util import diagnostics
from torch import Tensor

from hypernets.likelihoods import Likelihood
from hypernets.seeding import seeded
from hypernets.targets import Params, TargetNet
from hypernets.validation import check_int, check_positive, check_real

#: The label of the NUTS reference in tables and figures.
REFERENCE_LABEL = "NUTS"


@dataclass(frozen=True, eq=False)
class ReferencePosterior:
    """NUTS draws: ``params`` [C * N, ...] in chain-major order (chain c holds rows c*N..c*N+N-1)."""

    target: TargetNet
    params: Params
    num_chains: int
    num_samples: int
    warmup_steps: int
    step_size: float
    divergences: int
    wall_time_s: float

    def by_chain(self, values: Tensor) -> Tensor:
        """Per-sample ``values`` [C * N, ...] (e.g. predictions) reshaped to [C, N, ...]."""
        expected = self.num_chains * self.num_samples
        if values.shape[0] != expected:
            raise ValueError(f"values must have a leading dimension of C * N = {expected} posterior samples, "
                             f"got shape {tuple(values.shape)}")
        return values.reshape(self.num_chains, self.num_samples, *values.shape[1:])

    def convergence(self, quantities: dict[str, Tensor] | None = None) -> pd.DataFrame:
        """Split R-hat and effective sample size (pyro's diagnostics) of each quantity.

        ``quantities`` maps names to per-sample values [C * N, ...] (default: the flat
        weights). One row per quantity: the worst (largest) R-hat, the smallest and median
        effective sample size over its scalar components, and the number of draws. Weights of
        neural networks are not identifiable (hidden units can swap, signs can flip), so chains
        in different symmetric modes show a large weight R-hat while agreeing on every
        prediction; the predictive's R-hat is the one that tells whether the posterior over
        functions converged.
        """
        if quantities is None:
            quantities = {"weights": self.target.flatten(self.params)}
        rows = []
        for name, values in quantities.items():
            chains = self.by_chain(values.detach().to("cpu", torch.float64)).flatten(2)
            stats = diagnostics({name: chains})[name]
            rows.append({
                "quantity": name,
                "components": chains.shape[2],
                "max r_hat": float(stats["r_hat"].max()),
                "min ess": float(stats["n_eff"].min()),
                "median ess": float(stats["n_eff"].median()),
                "draws": chains.shape[0] * chains.shape[1],
            })
        return pd.DataFrame(rows).set_index("quantity")


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def log_joint(target: TargetNet, likelihood: Likelihood, params: Params, x: Tensor, y: Tensor,
              prior_std: float) -> Tensor:
    """log p(y | x, w) + log N(w; 0, prior_std^2 I) per weight set, up to a constant: [S]."""
    log_likelihood = -likelihood.nll(target(params, x), y).sum(1)
    squared_norm = target.flatten(params).pow(2).sum(1)
    return log_likelihood - squared_norm / (2 * prior_std**2)


def nuts_posterior(target: TargetNet, likelihood: Likelihood, x: Tensor, y: Tensor, *,
                   prior_std: float = 1.0, num_chains: int = 4, num_samples: int = 500,
                   warmup_steps: int = 500, max_tree_depth: int = 10,
                   target_accept_prob: float = 0.8, init_params: Params | None = None,
                   seed: int = 0) -> ReferencePosterior:
    """Draw ``num_chains`` x ``num_samples`` posterior samples of ``target``'s weights with NUTS.

    The posterior is N(0, prior_std^2 I) times ``likelihood`` on all of (x, y) (full batch).
    ``init_params`` ([C, ...] per parameter) start the chains; the default is C independent
    draws of the target's initialisation from a generator seeded by ``seed``. Warm-up adapts
    the step size (dual averaging to ``target_accept_prob``) and a diagonal mass matrix, as
    pyro's NUTS does by default. Runs on the CPU, reproducibly for a given ``seed``, without
    touching the caller's random state. See the module docstring for how chains are run.
    """
    # pyro's diagnostics (split R-hat) need at least 4 draws per chain.
    for name, value, minimum in (("num_chains", num_chains, 1), ("num_samples", num_samples, 4),
                                 ("max_tree_depth", max_tree_depth, 1), ("warmup_steps", warmup_steps, 0)):
        check_int(name, value, minimum=minimum)
    check_positive("prior_std", prior_std)
    check_real("target_accept_prob", target_accept_prob, minimum=0.0, maximum=1.0,
               exclusive_minimum=True, exclusive_maximum=True)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must hold the same, non-zero number of examples, got {len(x)} and {len(y)}")

    generator = torch.Generator().manual_seed(seed)
    if init_params is None:
        init_params = target.init(num_chains, generator)
    elif target.check_params(init_params) != num_chains:
        raise ValueError(f"init_params must hold one weight set per chain (num_chains={num_chains}), "
                         f"got {target.check_params(init_params)}")
    init = target.flatten({name: value.detach().cpu() for name, value in init_params.items()})
    init = init.to(torch.float64).reshape(-1)
    x64, y64 = x.detach().cpu(), y.detach().cpu()
    x64 = x64.to(torch.float64) if x64.is_floating_point() else x64
    y64 = y64.to(torch.float64) if y64.is_floating_point() else y64
    n_params = target.num_params

    def potential(sites: dict[str, Tensor]) -> Tensor:
        params = target.unflatten(sites["w"].reshape(num_chains, n_params))
        return -log_joint(target, likelihood, params, x64, y64, prior_std).sum()

    kernel = NUTS(potential_fn=potential, max_tree_depth=max_tree_depth,
                  target_accept_prob=target_accept_prob)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps,
                initial_params={"w": init}, disable_progbar=True)
    started = time.perf_counter()
    with seeded(seed), _one_thread():
        mcmc.run()
    wall_time_s = time.perf_counter() - started

    draws = mcmc.get_samples()["w"].reshape(num_samples, num_chains, n_params).transpose(0, 1)
    flat = draws.reshape(num_chains * num_samples, n_params).to(torch.get_default_dtype())
    divergences = sum(len(steps) for steps in mcmc.diagnostics()["divergences"].values())
    return ReferencePosterior(
        target=target, params=target.unflatten(flat.contiguous()), num_chains=num_chains,
        num_samples=num_samples, warmup_steps=warmup_steps, step_size=float(kernel.step_size),
        divergences=divergences, wall_time_s=wall_time_s,
    )
