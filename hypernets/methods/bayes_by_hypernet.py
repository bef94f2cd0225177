"""Bayes by Hypernet (Pawlowski et al., 2017): an implicit posterior drawn by a hypernetwork.

A noise vector z ~ N(0, I) is shared by all layers. Hypernetworks map it, together with a
one-hot code of what to generate, through hidden layers of 64, 256 and 512 units (leaky ReLU,
slope 0.1) to target weights. The posterior q(w) is implicit, so KL(q || p) to the prior
N(0, prior_std^2 I) is estimated from samples with a 1-nearest-neighbour estimator: by
default jointly over the whole weight vector (:func:`nearest_neighbour_kl`), optionally summed
over the weights one at a time (:func:`per_weight_nearest_neighbour_kl`).

Three architectures (``architecture``), the rows of the paper's table of hypernetworks:

* ``"layer_wise"`` (the default; the published runs' ``--layer_wise_gen``): one hypernetwork
  per weight tensor, which emits the whole tensor at once. Its output layer has as many units
  as the tensor has weights, so a wide layer makes it large (LeNet's 800 x 500 ``fc1`` weight
  needs 512 x 400,000 = 205 M hypernetwork parameters).
* ``"sliced"`` (the reference's ``--slice_last_dim``, the paper's "sliced layer-wise G"): one
  hypernetwork per layer of the target that generates the layer one output unit at a time (a
  row of a linear weight, a filter of a convolution, together with the unit's bias and, in
  residual blocks, its normalisation gain and shift), conditioned on the unit's one-hot index;
  its output layer maps the last hidden features to one unit's parameters. The reference
  sliced each tensor separately (a bias one value at a time); here a unit's tensors share one
  hypernetwork.
* ``"single"``: a single hypernetwork for the whole target. It generates the flat parameter
  vector in ``n_chunks`` equal chunks, conditioned on the chunk's one-hot index (the reference
  code cut LeNet's 431,080 weights into 130 chunks of 3,316; the default here is about sqrt(P)
  chunks of about sqrt(P) weights); the last chunk's surplus outputs are dropped.

Each generated weight is ``offset + scale * output``. ``offset`` is learnable, one per target
weight, initialised to a draw of the target's default initialisation: it is the output-layer
bias an unchunked hypernetwork has for every weight, which chunking would otherwise share
between all chunks (without it all units of a layer start almost identical). ``scale`` is fixed
per tensor, the standard deviation of its default initialisation U(+-b), b / sqrt(3) (1 for
constant-initialised tensors, GroupNorm's gain and shift), so the noise-dependent part is on
the scale of each tensor's weights. The hidden layers start at He initialisation and the output
layer at N(0, 0.01 / fan_in), so sampled nets start as small noise around the offsets.

The loss per data point is the negative log-likelihood averaged over all S sampled nets plus
``anneal * KL / n_train``. ``anneal`` rises linearly from 0 at ``anneal_start`` over
``anneal_epochs`` epochs (the paper's MNIST schedule: from epoch 5 over 15 epochs); the default
(0, 0) keeps the KL on at full weight from the first step to the last. The estimate scales with
the number of weights d, so KL / n_train dominates when d / n_train is large (7.8 for LeNet on
the paper's 55,000 images); the paper anneals it in.

``kl_estimator`` chooses the estimate. ``"joint"`` (the default) is the estimate in d
dimensions over the flattened weight vector, the paper's formula. ``"per_weight"`` sums
one-dimensional estimates, one per weight coordinate (the reference code's ``full_kernel=False``).
For a factorised prior that is the KL of the weights' marginals, which leaves out their
dependence, so it is at most the joint KL. How each behaves on LeNet and the MNIST MLP at the
book's budgets, and why the default learning rate is the reference's 1e-4, is measured in
``benchmarks/method_notes.md``.

``optimizer``: ``"rmsprop"`` (the default) is the optimiser the published runs fell back to,
TensorFlow 1's RMSProp with epsilon 1e-5 (:class:`TensorFlowRMSProp`); ``"adam"`` is Adam with
PyTorch's defaults, as every baseline.

Deviation from the reference code, on purpose: the likelihood averages all S samples (the
reference by default used one).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hypernets.likelihoods import Likelihood
from hypernets.methods.base import (  # annealing_weight: the schedule, shared with MNF
    Method,
    StackedParams,
    annealing_weight,
    check_prior_std,
    full_precision,
)
from hypernets.targets import Params, TargetNet
from hypernets.validation import (
    check_bool,
    check_choice,
    check_int,
    check_int_list,
    check_real,
)

NOISE_DIMS = (1, 8, 64)
HYPERNET_ARCHITECTURES = ("layer_wise", "sliced", "single")
OPTIMIZERS = ("rmsprop", "adam")
# TensorFlow 1's RMSProp (the reference's optimiser): decay 0.9, epsilon 1e-5 inside the root.
RMSPROP_DECAY = 0.9
RMSPROP_EPSILON = 1e-5
LEAKY_SLOPE = 0.1
OUTPUT_GAIN = 0.1


def _check_kl_inputs(samples: Tensor, prior_samples: Tensor) -> tuple[int, int, int]:
    """Shapes [n, d] and [m, d] with n >= 2, m >= 1 -> (n, d, m)."""
    if samples.dim() != 2 or prior_samples.dim() != 2:
        raise ValueError(f"samples and prior_samples must be [n, d] and [m, d], got "
                         f"{tuple(samples.shape)} and {tuple(prior_samples.shape)}")
    n, d = samples.shape
    m = prior_samples.shape[0]
    if prior_samples.shape[1] != d:
        raise ValueError(f"prior_samples must have d = {d} columns like samples, got "
                         f"{prior_samples.shape[1]}")
    if n < 2 or m < 1:
        raise ValueError(f"need at least 2 samples and 1 prior sample, got n = {n}, m = {m}")
    return n, d, m


def nearest_neighbour_kl(samples: Tensor, prior_samples: Tensor) -> Tensor:
    """1-nearest-neighbour estimate of KL(q || p) from samples of q and of p.

    ``samples`` [n, d] are draws from q, ``prior_samples`` [m, d] from p. With ρ_i the
    distance from sample i to its nearest prior sample and ν_i to its nearest other sample,

        KL ≈ d · mean_i log(ρ_i / ν_i) + log(m / (n − 1))

    (Wang, Kulkarni & Verdú, 2009; Pérez-Cruz, 2008): consistent as n, m grow, with gradients
    through both distances. Written here because no maintained library offers it with autograd.
    """
    n, d, m = _check_kl_inputs(samples, prior_samples)
    # The direct (non-matmul) distance avoids cancellation between close, high-dimensional points.
    mode = "donot_use_mm_for_euclid_dist"
    to_prior = torch.cdist(samples, prior_samples, compute_mode=mode).min(dim=1).values
    within = torch.cdist(samples, samples, compute_mode=mode)
    within = within.masked_fill(torch.eye(n, dtype=torch.bool, device=samples.device), math.inf)
    to_other = within.min(dim=1).values
    return d * torch.log(to_prior / to_other).mean() + math.log(m / (n - 1))


def per_weight_nearest_neighbour_kl(samples: Tensor, prior_samples: Tensor, *,
                                    min_distance: float = 1e-4) -> Tensor:
    """Sum over coordinates of the one-dimensional 1-nearest-neighbour KL estimate.

    ``samples`` [n, d] are draws from q, ``prior_samples`` [m, d] from p. Each coordinate j is
    treated as a one-dimensional problem: with ρ_ij the distance from w_ij to the nearest
    prior value in column j and ν_ij to the nearest other sample's value in column j,

        KL ≈ Σ_j [ mean_i log(ρ_ij / ν_ij) + log(m / (n − 1)) ]

    which is :func:`nearest_neighbour_kl` applied to every column on its own and summed. It
    ignores the dependence between weights (it estimates the sum of the marginals' KLs), but
    unlike the joint estimate in d dimensions its bias per weight does not grow with d.

    Distances are sqrt(difference² + min_distance²), so that identical values (a collapsed q)
    give a large but finite estimate instead of log(0); the reference code guarded the same
    way with a floor of sqrt(1e-8) = 1e-4. ``min_distance`` 0 gives plain absolute
    differences. The floor biases the estimate down where neighbours are closer than it: with
    hundreds of samples per coordinate, or for a marginal of q narrower than about 1e-4.

    Nearest neighbours come from sorting each coordinate: the nearest other sample is a
    neighbour in the sorted column, the nearest prior value one of the two around the
    sample's place in the sorted prior column (a binary search). Time is O((n + m) log(n + m)
    d) and memory a few [d, n] and [d, m] tensors, also for the gradient (for n = m = 5 and
    d = 500,000, about 140 MB at the peak of forward and backward on the CPU, against 380 MB
    through the [n, m, d] differences). The gradient reaches both ends of each distance, like
    a minimum's. Written here because no maintained library offers it with autograd.
    """
    n, d, m = _check_kl_inputs(samples, prior_samples)
    if not min_distance >= 0:
        raise ValueError(f"min_distance must be >= 0, got {min_distance}")

    def log_distance(difference: Tensor) -> Tensor:
        return 0.5 * (difference.square() + min_distance**2).log()

    columns = samples.t()  # [d, n]
    with torch.no_grad():
        prior_sorted = prior_samples.t().sort(dim=1).values.contiguous()  # [d, m]
        values = columns.contiguous()
        place = torch.searchsorted(prior_sorted, values)
        below = prior_sorted.gather(1, (place - 1).clamp(min=0))
        above = prior_sorted.gather(1, place.clamp(max=m - 1))
        nearest_prior = torch.where(values - below <= above - values, below, above)
        del values, place, below, above  # free them before the autograd part
    # In a sorted column the nearest other sample is the left or the right neighbour, so
    # every ν is one of the n − 1 gaps; the sum of log ν counts each gap as often as it is
    # used (0, 1 or 2 times), which needs neither the [n, n, d] differences nor a gather.
    gaps = columns.sort(dim=1).values.diff(dim=1)  # [d, n - 1], differentiable
    with torch.no_grad():
        padded = F.pad(gaps, (1, 1), value=math.inf)
        takes_left = padded[:, :-1] <= padded[:, 1:]  # [d, n]: position k uses gap k − 1
        uses = takes_left[:, 1:].to(gaps.dtype) + (~takes_left[:, :-1]).to(gaps.dtype)
        del padded, takes_left
    log_ratios = log_distance(columns - nearest_prior).sum() - (uses * log_distance(gaps)).sum()
    return log_ratios / n + d * math.log(m / (n - 1))


KL_ESTIMATORS = {"per_weight": per_weight_nearest_neighbour_kl, "joint": nearest_neighbour_kl}


def gaussian_marginal_kl_bound(samples: Tensor, prior_std: float = 1.0) -> Tensor:
    """A lower bound on KL(q || N(0, prior_std^2 I)) from samples [n, d] of q, per coordinate [d].

    Summed over the coordinates it bounds the KL from below: for a factorised prior the KL is
    the sum of the marginals' KLs plus q's total correlation (>= 0), and each marginal's KL is
    at least that of the Gaussian with the marginal's mean and variance (the Gaussian has the
    largest entropy for its variance, and the prior's cross-entropy depends only on the first
    two moments). It checks the nearest-neighbour estimates, which with a few samples in many
    dimensions can fall far below it. Means and variances are the samples' (unbiased).
    """
    if samples.dim() != 2 or samples.shape[0] < 2:
        raise ValueError(f"samples must be [n, d] with n >= 2, got {tuple(samples.shape)}")
    prior_std = check_prior_std(prior_std)
    samples = samples.double()
    variance = samples.var(dim=0) / prior_std**2
    mean_square = samples.mean(dim=0).square() / prior_std**2
    return 0.5 * (variance + mean_square - variance.log() - 1)


def _init_normal(tensor: Tensor, std: float, generator) -> None:
    with torch.no_grad():
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)


class TensorFlowRMSProp(torch.optim.Optimizer):
    """TensorFlow 1's ``RMSPropOptimizer(lr, decay, momentum=0, epsilon)``, the reference's optimiser.

    ms = decay * ms + (1 - decay) * g^2, then w -= lr * g / sqrt(ms + epsilon), with every ms
    starting at 1. Written here because PyTorch's RMSprop differs in both places that matter
    at lr 1e-4: it starts ms at 0 (its first steps move every coordinate by about lr * 3) and
    adds eps outside the root, which changes the step wherever |g| is near sqrt(epsilon).
    """

    SLICE = 1 << 18

    def __init__(self, params, lr: float, decay: float = RMSPROP_DECAY,
                 epsilon: float = RMSPROP_EPSILON):
        super().__init__(params, {"lr": lr, "decay": decay, "epsilon": epsilon})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["mean_square"] = torch.ones_like(param)
                # In slices, so that the root's temporary stays small and in cache: a
                # generator's output layer has up to 205 M entries.
                for weight, grad, mean_square in zip(*(t.view(-1).split(self.SLICE) for t in
                                                       (param, param.grad, state["mean_square"]))):
                    mean_square.mul_(group["decay"]).addcmul_(grad, grad, value=1 - group["decay"])
                    weight.addcdiv_(grad, mean_square.add(group["epsilon"]).sqrt_(),
                                    value=-group["lr"])
        return loss


class ChunkHypernet(nn.Module):
    """Noise z [S, noise_dim] -> parameters [S, n_chunks, chunk_size], one chunk per code.

    The first layer acts on the concatenation [z, one-hot(chunk)]; a one-hot input times a
    weight matrix selects a column, so the chunk part is stored as a code per chunk and added
    (the same function without materialising the one-hot matrix).
    """

    def __init__(self, noise_dim: int, n_chunks: int, chunk_size: int,
                 hidden: tuple[int, ...], generator: torch.Generator | None = None):
        super().__init__()
        self.noise_in = nn.Linear(noise_dim, hidden[0])
        self.chunk_code = nn.Parameter(torch.empty(n_chunks, hidden[0]))
        self.body = nn.ModuleList(nn.Linear(a, b) for a, b in zip(hidden[:-1], hidden[1:]))
        self.out = nn.Linear(hidden[-1], chunk_size, bias=False)
        self._init(generator)

    def _init(self, generator):
        # He initialisation for leaky ReLU, so that noise and chunk code both reach the last
        # hidden layer at unit scale; the output layer is scaled down so that sampled nets
        # start as small noise around the per-weight offsets of the method.
        gain = math.sqrt(2 / (1 + LEAKY_SLOPE**2))
        _init_normal(self.noise_in.weight, 1 / math.sqrt(self.noise_in.in_features), generator)
        _init_normal(self.chunk_code, 1.0, generator)
        nn.init.zeros_(self.noise_in.bias)
        for layer in self.body:
            _init_normal(layer.weight, gain / math.sqrt(layer.in_features), generator)
            nn.init.zeros_(layer.bias)
        _init_normal(self.out.weight, OUTPUT_GAIN / math.sqrt(self.out.in_features), generator)

    def forward(self, z: Tensor) -> Tensor:
        h = self.noise_in(z).unsqueeze(1) + self.chunk_code  # [S, n_chunks, hidden[0]]
        h = F.leaky_relu(h, LEAKY_SLOPE)
        for layer in self.body:
            h = F.leaky_relu(layer(h), LEAKY_SLOPE)
        return self.out(h)


def _init_scales(target: TargetNet) -> dict[str, float]:
    """Standard deviation of each tensor's default initialisation U(centre +- b): b / sqrt(3).

    1 for constant-initialised tensors (GroupNorm gains and shifts).
    """
    return {name: half_width / math.sqrt(3) if half_width > 0 else 1.0
            for name, (_, half_width) in target.init_ranges().items()}


class BayesByHypernet(Method):
    """Implicit weight posterior from hypernetworks, KL to N(0, prior_std^2) by 1-NN estimation.

    ``noise_dim``: size of the noise z (the paper tried 1, 8 and 64), shared by every
    hypernetwork, or with ``independent_noise`` drawn for each (the reference's
    ``--independent_noise``; the same as shared for the single hypernetwork). ``hidden``: the
    hypernetworks' hidden widths. ``architecture``: ``"layer_wise"`` (one hypernetwork per
    tensor), ``"sliced"`` (one per layer, a unit at a time) or ``"single"`` (one for the whole
    target, generating ``n_chunks`` chunks). ``optimizer``: ``"rmsprop"`` or ``"adam"``. ``anneal_start`` and
    ``anneal_epochs``: the KL schedule (see :func:`annealing_weight`). ``kl_estimator``:
    ``"joint"`` (default, the paper's formula over the whole weight vector,
    :func:`nearest_neighbour_kl`) or ``"per_weight"`` (the reference code's ``full_kernel=False``,
    :func:`per_weight_nearest_neighbour_kl`). ``train_samples`` (S,
    default 5, the paper's n) nets per step serve both the likelihood, averaged over all of
    them, and the KL estimate, with as many prior samples. ``generator`` seeds every
    initialisation (torch's global generator when None).
    """

    default_lr = 1e-4  # the reference run script's; at 1e-3 the KL collapses LeNet
    default_train_samples = 5
    training_version = 2  # 2: the layer-wise architecture and RMSProp became the defaults
    # Shared noise draws exactly the numbers the method drew before the option existed.
    key_neutral_defaults = {"independent_noise": False}

    def __init__(self, target: TargetNet, likelihood: Likelihood, *, noise_dim: int = 8,
                 hidden: tuple[int, ...] = (64, 256, 512), architecture: str = "layer_wise",
                 n_chunks: int | None = None, prior_std: float = 1.0, optimizer: str = "rmsprop",
                 anneal_start: float = 0.0, anneal_epochs: float = 0.0,
                 kl_estimator: str = "joint", independent_noise: bool = False,
                 train_samples: int | None = None, generator: torch.Generator | None = None):
        super().__init__(target, likelihood, train_samples=train_samples)
        check_choice("noise_dim (the paper's settings)", noise_dim, NOISE_DIMS)
        self.independent_noise = check_bool("independent_noise", independent_noise)
        hidden = check_int_list("hidden", hidden, minimum=1)
        check_choice("architecture", architecture, HYPERNET_ARCHITECTURES)
        check_choice("optimizer", optimizer, OPTIMIZERS)
        prior_std = check_prior_std(prior_std)
        anneal_start = check_real("anneal_start", anneal_start, minimum=0.0)
        anneal_epochs = check_real("anneal_epochs", anneal_epochs, minimum=0.0)
        check_choice("kl_estimator", kl_estimator, KL_ESTIMATORS)
        if self.train_samples < 2:
            raise ValueError(f"train_samples must be >= 2: the KL estimate needs each sample's "
                             f"nearest other sample, got {self.train_samples}")
        if architecture != "single" and n_chunks is not None:
            raise ValueError(f"n_chunks is for architecture='single'; the {architecture!r} "
                             "hypernetworks generate whole tensors or single units")
        self.noise_dim = noise_dim
        self.architecture = architecture
        self.optimizer = optimizer
        self.prior_std = float(prior_std)
        self.anneal_start = float(anneal_start)
        self.anneal_epochs = float(anneal_epochs)
        self.kl_estimator = kl_estimator

        self.base = StackedParams(target, 1, generator)
        scales = _init_scales(target)
        self.register_buffer("scales", torch.tensor([scales[n] for n in target.param_shapes]))
        if architecture == "layer_wise":
            self.hypernets = nn.ModuleList(
                ChunkHypernet(noise_dim, 1, math.prod(shape), hidden, generator)
                for shape in target.param_shapes.values())
        elif architecture == "sliced":
            self.groups = target.layer_groups()
            self.hypernets = nn.ModuleList()
            for shapes in self.groups.values():
                n_units = next(iter(shapes.values()))[0]
                if any(s[0] != n_units for s in shapes.values()):
                    raise ValueError(f"{target.name}: architecture='sliced' generates a layer one output "
                                     f"unit at a time, but its tensors {shapes} do not share "
                                     f"the leading (unit) dimension")
                unit_size = sum(math.prod(s[1:]) for s in shapes.values())
                self.hypernets.append(ChunkHypernet(noise_dim, n_units, unit_size, hidden,
                                                    generator))
        else:
            n_params = target.num_params
            if n_chunks is None:
                n_chunks = max(1, round(math.sqrt(n_params)))
            n_chunks = check_int("n_chunks (at most the number of target parameters)",
                                 n_chunks, minimum=1, maximum=n_params)
            chunk_size = math.ceil(n_params / n_chunks)
            self.hypernets = nn.ModuleList(
                [ChunkHypernet(noise_dim, n_chunks, chunk_size, hidden, generator)])

    def _raw_params(self, z: Tensor) -> Params:
        """Generated tensors from noise ``z`` [H, S, noise_dim]: one draw per hypernetwork (H of
        them, independent noise) or one for all (H = 1, shared)."""
        n_samples = z.shape[1]

        def noise(i: int) -> Tensor:
            return z[i if z.shape[0] > 1 else 0]

        if self.architecture == "layer_wise":
            return {name: hypernet(noise(i)).reshape(n_samples, *shape) for i, ((name, shape), hypernet)
                    in enumerate(zip(self.target.param_shapes.items(), self.hypernets))}
        if self.architecture == "single":
            flat = self.hypernets[0](noise(0)).reshape(n_samples, -1)[:, :self.target.num_params]
            return self.target.unflatten(flat)
        params = {}
        for i, (shapes, hypernet) in enumerate(zip(self.groups.values(), self.hypernets)):
            units = hypernet(noise(i))  # [S, n_units, unit_size]
            sizes = [math.prod(s[1:]) for s in shapes.values()]
            for (name, shape), part in zip(shapes.items(), units.split(sizes, dim=2)):
                params[name] = part.reshape(n_samples, *shape)
        return params

    def sample_params(self, n_samples: int) -> Params:
        n_draws = len(self.hypernets) if self.independent_noise else 1
        z = torch.randn(n_draws, n_samples, self.noise_dim, device=self.scales.device)
        raw = self._raw_params(z)
        return {name: base + scale * raw[name] for (name, base), scale
                in zip(self.base.as_dict().items(), self.scales)}

    def kl_estimate(self, params: Params) -> Tensor:
        """1-NN estimate of KL(q || N(0, prior_std^2 I)) from the S weight sets in ``params``."""
        flat = self.target.flatten(params).float()
        prior = torch.randn_like(flat) * self.prior_std
        with full_precision(flat.device):
            return KL_ESTIMATORS[self.kl_estimator](flat, prior)

    def training_loss(self, x, y, *, n_train, epoch):
        params = self.sample_params(self.train_samples)
        nll = self.expected_nll(params, x, y)
        kl = self.kl_estimate(params)
        anneal = annealing_weight(epoch, self.anneal_start, self.anneal_epochs)
        loss = nll + anneal * kl / n_train
        return loss, {"nll": nll.detach(), "kl": kl.detach(),
                      "anneal": torch.tensor(anneal)}

    def configure_optimizer(self, lr: float | None = None) -> torch.optim.Optimizer:
        lr = self.default_lr if lr is None else lr
        if self.optimizer == "rmsprop":
            return TensorFlowRMSProp(self.parameters(), lr)
        return super().configure_optimizer(lr)
