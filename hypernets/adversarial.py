"""Fast gradient sign attacks (Goodfellow et al., 2015) and their iterative form (BIM; Kurakin
et al., 2017) on the sample-averaged predictive.

A method's prediction is the mean over S sampled networks of their softmax outputs. The attack
here differentiates the negative log-likelihood of that *mean* predictive, so it attacks the
model the method actually predicts with, and it uses the same fixed set of S sampled networks
for building the adversarial inputs and for scoring them (a white-box attack on one draw of the
predictive). Bayes by Hypernet's reference code instead took the gradient through one sampled
network at a time and did not clip the perturbed images to the valid pixel range.

Inputs are normalised images (``(pixel - mean) / std`` per channel, pixels in [0, 1]). The
budget ``epsilon`` is in raw pixel units, as in the papers, so a step of ``epsilon`` becomes
``epsilon / std`` in normalised units, and adversarial inputs are clipped to the image of
[0, 1] under the normalisation (:class:`hypernets.data.PixelRange`).

FGSM is a one-line formula on top of autograd; it is written here rather than taken from an
attack library (torchattacks, ART) because those wrap ``nn.Module`` classifiers with one set of
weights and cannot average the predictive over S functional weight samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from hypernets import metrics
from hypernets.data import MNIST_PIXELS, PixelRange
from hypernets.likelihoods import Categorical
from hypernets.methods.base import Method
from hypernets.runs import TrainedMethod
from hypernets.seeding import seeded
from hypernets.targets import Params, TargetNet
from hypernets.training import tensor_digest
from hypernets.validation import check_positive_int, check_real

__all__ = [
    "ATTACKS",
    "adversarial_curves",
    "attack_curve",
    "attack_seeds",
    "bim",
    "fgsm",
    "mean_predictive_nll",
]


def _check_images(x: Tensor, pixel_range: PixelRange) -> None:
    if x.dim() < 3 or x.shape[-3] != pixel_range.n_channels:
        raise ValueError(f"x must be images [B, C, H, W] with C = {pixel_range.n_channels} channels "
                         f"(as pixel_range); got shape {tuple(x.shape)}")


def _check_epsilon(epsilon) -> float:
    return check_real("epsilon (a pixel distance)", epsilon, minimum=0.0, maximum=1.0)


def mean_predictive_nll(target: TargetNet, params: Params, x: Tensor, y: Tensor) -> Tensor:
    """``-log mean_s softmax(f_s(x))[y]`` per input, shape ``[B]``.

    The NLL of the sample-averaged predictive (the Bayesian model average), computed in log space
    with ``logsumexp`` over the S nets so that confident wrong predictions stay finite.
    """
    log_probs = F.log_softmax(target(params, x), dim=-1)  # [S, B, C]
    n_samples = log_probs.shape[0]
    log_mean = torch.logsumexp(log_probs, dim=0) - math.log(n_samples)  # [B, C]
    return -log_mean.gather(1, y[:, None])[:, 0]


def fgsm_direction(target: TargetNet, params: Params, x: Tensor, y: Tensor) -> Tensor:
    """``sign(grad_x)`` of :func:`mean_predictive_nll` for the S nets ``params``: FGSM's step direction.

    The gradient is taken at the clean ``x``, so one direction serves every budget. The weights
    ``params`` receive no gradient.
    """
    frozen = {name: value.detach() for name, value in params.items()}
    inputs = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = mean_predictive_nll(target, frozen, inputs, y).sum()
        (gradient,) = torch.autograd.grad(loss, inputs)
    return gradient.sign()


def fgsm_step(x: Tensor, direction: Tensor, epsilon: float, pixel_range: PixelRange) -> Tensor:
    """``x + step * direction`` for a budget of ``epsilon`` raw pixels, clipped to the valid range."""
    epsilon = _check_epsilon(epsilon)
    low, high = pixel_range.bounds(x)
    perturbed = x.detach() + pixel_range.step(epsilon, x) * direction
    return torch.maximum(torch.minimum(perturbed, high), low)


def fgsm(target: TargetNet, params: Params, x: Tensor, y: Tensor, epsilon: float,
         pixel_range: PixelRange) -> Tensor:
    """FGSM images for the mean predictive of the S nets ``params``: ``x + step * sign(grad)``.

    ``x`` are normalised images ``[B, C, H, W]``, ``y`` their labels ``[B]``, ``epsilon`` the
    L-infinity budget in raw pixel units. The gradient is that of
    :func:`mean_predictive_nll` with respect to ``x``; the result is clipped to the valid range of
    ``pixel_range``, so in raw pixels it differs from ``x`` by at most ``epsilon`` and stays in
    [0, 1]. The weights ``params`` receive no gradient.
    """
    _check_images(x, pixel_range)
    _check_epsilon(epsilon)  # before the gradient is computed
    return fgsm_step(x, fgsm_direction(target, params, x, y), epsilon, pixel_range)


#: BIM's steps, and its step as a multiple of epsilon / steps (Madry et al.'s heuristic for
#: reaching the border of the ball and moving along it; no random start).
BIM_STEPS = 10
BIM_STEP_FACTOR = 2.5


def bim(target: TargetNet, params: Params, x: Tensor, y: Tensor, epsilon: float,
        pixel_range: PixelRange, *, steps: int = BIM_STEPS) -> Tensor:
    """The basic iterative method: ``steps`` signed-gradient steps of ``2.5 epsilon / steps``
    raw pixels on :func:`mean_predictive_nll` of the S nets ``params``, each projected back onto
    the L-infinity ball of radius ``epsilon`` around ``x`` and onto the valid pixels.

    ``epsilon`` 0 returns ``x``. The weights receive no gradient.
    """
    _check_images(x, pixel_range)
    epsilon = _check_epsilon(epsilon)
    steps = check_positive_int("steps", steps)
    low, high = pixel_range.bounds(x)
    radius = pixel_range.step(epsilon, x)
    low, high = torch.maximum(low, x - radius), torch.minimum(high, x + radius)
    adversarial = x.detach()
    for _ in range(steps if epsilon > 0 else 0):
        direction = fgsm_direction(target, params, adversarial, y)
        step = adversarial + pixel_range.step(BIM_STEP_FACTOR * epsilon / steps, x) * direction
        adversarial = torch.maximum(torch.minimum(step, high), low)
    return adversarial


#: The attacks by name: (target, params, x, y, epsilon, pixel_range) -> adversarial images.
ATTACKS = {"fgsm": fgsm, "bim": bim}


def attack_curve(method: Method, x: Tensor, y: Tensor, epsilons: Sequence[float], *,
                 n_samples: int, pixel_range: PixelRange, seed: int = 0,
                 batch_size: int = 500) -> pd.DataFrame:
    """Accuracy and uncertainty of ``method`` under FGSM, one row per ``epsilon``.

    S = ``n_samples`` weight sets are drawn once (with torch's RNG seeded by ``seed`` inside a
    forked RNG state, so the caller's random stream is untouched); the same S nets build every
    adversarial batch and score it. ``x`` ``[N, C, H, W]`` (normalised) and ``y`` ``[N]`` are
    processed in chunks of ``batch_size`` on the method's device.

    Columns: ``epsilon``, ``accuracy`` (of the mean predictive), ``entropy`` (mean predictive
    entropy, nats), ``entropy_auc`` (:func:`hypernets.metrics.entropy_auc`, high = confident).
    """
    if not isinstance(method.likelihood, Categorical):
        raise ValueError(f"attack_curve needs a classifier (Categorical likelihood); "
                         f"{type(method).__name__} has {type(method.likelihood).__name__}")
    _check_images(x, pixel_range)
    if y.shape != (len(x),):
        raise ValueError(f"y must have shape [N] = [{len(x)}] to match x; got {tuple(y.shape)}")
    check_positive_int("n_samples", n_samples)
    check_positive_int("batch_size", batch_size)
    epsilons = [_check_epsilon(epsilon) for epsilon in epsilons]
    if not epsilons:
        raise ValueError("epsilons must list at least one budget")

    method.eval()
    device = method.device
    with seeded(seed, device), torch.no_grad():
        params = method.sample_params(n_samples)

    chunks_per_epsilon: list[list[Tensor]] = [[] for _ in epsilons]
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device)
        yb = y[start:start + batch_size].to(device)
        direction = fgsm_direction(method.target, params, xb, yb)  # one gradient for every budget
        for epsilon, chunks in zip(epsilons, chunks_per_epsilon):
            adversarial = fgsm_step(xb, direction, epsilon, pixel_range)
            with torch.no_grad():
                chunks.append(method.predict(adversarial, n_samples, params=params).float().cpu())
    rows = []
    for epsilon, chunks in zip(epsilons, chunks_per_epsilon):
        probs = torch.cat(chunks, dim=1)
        rows.append({
            "epsilon": epsilon,
            "accuracy": metrics.accuracy(probs, y.cpu()),
            "entropy": float(metrics.predictive_entropy(probs).mean()),
            "entropy_auc": metrics.entropy_auc(probs),
        })
    return pd.DataFrame(rows)


#: Versions of the evaluations here that a run's record keeps (see
#: :meth:`~hypernets.runs.TrainedMethod.evaluated`; ``tests/test_records.py`` pins the code).
EVALUATION_VERSIONS = {"fgsm_curve": 1}


def adversarial_curves(trained: Mapping[str, TrainedMethod], x: Tensor, y: Tensor,
                       epsilons: Sequence[float], *, n_samples: int,
                       pixel_range: PixelRange = MNIST_PIXELS, batch_size: int = 500,
                       seed: int = 0) -> pd.DataFrame:
    """FGSM curves of every trained method on the images ``x`` (normalised) with labels ``y``.

    Each method is attacked and scored with S sampled nets, S =
    ``method.n_distinct_nets(n_samples)`` (1 for MAP, the members of an ensemble). Returns one row per (method,
    epsilon): ``method, label, n_nets, epsilon, accuracy, entropy, entropy_auc,
    retained_accuracy``. ``retained_accuracy`` is the accuracy above chance relative to the
    clean one, (accuracy - 1/K) / (clean accuracy - 1/K): 1 without effect, 0 at chance; NaN
    for a net whose clean accuracy is not above chance (it has nothing to keep). A net near
    chance can still score high on it, so the robustness claims require comparable clean
    accuracy first (:func:`robustness_claims`).
    """
    if not trained:
        raise ValueError("trained must hold at least one trained method")
    if not any(float(eps) == 0.0 for eps in epsilons):
        raise ValueError(f"epsilons must include 0, the clean evaluation that "
                         f"retained_accuracy is relative to; got {list(epsilons)}")
    arguments = {"x": tensor_digest(x)["sha256"], "y": tensor_digest(y)["sha256"],
                 "epsilons": [float(eps) for eps in epsilons], "n_samples": n_samples,
                 "pixel_range": [list(pixel_range.mean), list(pixel_range.std)],
                 "batch_size": batch_size, "seed": seed}
    tables = []
    for name, run in trained.items():
        def compute(run=run) -> dict:
            n_nets = run.method.n_distinct_nets(n_samples)
            curve = attack_curve(run.method, x, y, epsilons, n_samples=n_nets,
                                 pixel_range=pixel_range, seed=seed, batch_size=batch_size)
            return {"n_nets": n_nets, "n_outputs": run.method.target.n_outputs,
                    "curve": curve.to_dict("records")}

        kept = run.evaluated("fgsm_curve", arguments, EVALUATION_VERSIONS["fgsm_curve"], compute)
        curve, n_nets = pd.DataFrame(kept["curve"]), kept["n_nets"]
        chance = 1.0 / kept["n_outputs"]
        clean = float(curve.loc[curve["epsilon"] == 0.0, "accuracy"].iloc[0])
        # Undefined (NaN) for a net with no clean accuracy above chance to keep.
        curve["retained_accuracy"] = ((curve["accuracy"] - chance) / (clean - chance)
                                      if clean > chance else float("nan"))
        curve.insert(0, "n_nets", n_nets)
        curve.insert(0, "label", run.label)
        curve.insert(0, "method", name)
        tables.append(curve)
    return pd.concat(tables, ignore_index=True)


def attack_seeds(trained: Mapping[int, Mapping[str, TrainedMethod]], x: Tensor, y: Tensor,
                 epsilons: Sequence[float], **kwargs) -> pd.DataFrame:
    """:func:`adversarial_curves` of the runs of every training seed, with a ``seed`` column.

    ``trained`` maps a training seed to its runs; ``kwargs`` go to :func:`adversarial_curves`.
    """
    if not trained:
        raise ValueError("trained must hold the runs of at least one seed")
    return pd.concat([adversarial_curves(runs, x, y, epsilons, **kwargs).assign(seed=s)
                      for s, runs in trained.items()], ignore_index=True)
