"""Functional target networks: a parameter spec plus pure forward functions.

A :class:`TargetNet` is an ordered list of layers. Its parameters are a plain ``dict`` of
tensors (names such as ``"fc1.weight"``); nothing is stored in the network itself, so any
method — a hypernetwork, a variational posterior, an ensemble — can supply them.

Every parameter tensor carries a leading sample dimension ``S``. :meth:`TargetNet.__call__`
runs all ``S`` networks in one batched call: linear layers as ``baddbmm`` and convolutions as
one grouped convolution over the ``S`` weight sets (faster than ``torch.func.vmap``, whose
batching rule for convolutions adds transposes). :meth:`TargetNet.forward_single` is the
plain one-network forward used as the reference in tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from hypernets.validation import check_int, check_int_list

Params = dict[str, Tensor]

# Layouts of the hidden state while S nets run together (see TargetNet.__call__):
SHARED = "shared"    # [B, ...]: an input common to all nets, not yet copied per net
GROUPED = "grouped"  # [B, S * C, H, W]: feature maps of the S nets as channel groups
STACKED = "stacked"  # [S, B, ...]: one slice per net

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "elu": F.elu,
    "leaky_relu": F.leaky_relu,
    "tanh": torch.tanh,
}


def _activation(name: str) -> Callable[[Tensor], Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def to_stacked(h: Tensor, layout: str, n_samples: int) -> Tensor:
    """Any layout -> [S, B, ...] (a view where possible)."""
    if layout == SHARED:
        return h.unsqueeze(0).expand(n_samples, *h.shape)
    if layout == GROUPED:
        batch, channels = h.shape[:2]
        return h.reshape(batch, n_samples, channels // n_samples, *h.shape[2:]).transpose(0, 1)
    return h


def _shared(params: Mapping[str, Tensor]) -> bool:
    """Whether every tensor is one tensor expanded along S (stride 0): the same for all nets."""
    return all(t.stride(0) == 0 for t in params.values())


def to_grouped(h: Tensor, layout: str, n_samples: int) -> Tensor:
    """Feature maps in any layout -> [B, S * C, H, W]."""
    if layout == SHARED:
        return h.repeat(1, n_samples, 1, 1)
    if layout == STACKED:
        return h.transpose(0, 1).reshape(h.shape[1], n_samples * h.shape[2], *h.shape[3:])
    return h


class Layer:
    """One layer: its parameter shapes and initialisation, a single-net and an S-nets forward.

    ``init_ranges`` gives each tensor's default initialisation as U(centre +- half_width)
    (half-width 0: the constant centre); :meth:`init` draws from it, and the hypernetworks
    scale their outputs by it. ``forward_layout`` runs S nets on a hidden state in one of the
    layouts above and returns the new state and its layout; the default suits parameter-free
    per-example operations. ``forward_batched`` is the same on ``[S, B, ...]`` in and out.
    """

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def init_ranges(self) -> dict[str, tuple[float, float]]:
        return {}

    def init(self, n_samples: int, generator) -> Params:
        """Independent draws of the default initialisation: each tensor [n_samples, *shape]."""
        shapes, params = self.param_shapes(), {}
        for key, (centre, half_width) in self.init_ranges().items():
            shape = (n_samples, *shapes[key])
            if half_width == 0:
                params[key] = torch.full(shape, float(centre))
            else:
                params[key] = centre + (torch.rand(shape, generator=generator) * 2 - 1) * half_width
        return params

    def forward_single(self, p: Params, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_layout(self, p: Params, h: Tensor, layout: str, n_samples: int) -> tuple[Tensor, str]:
        if layout == SHARED:
            return self.forward_single(p, h), SHARED
        h = to_stacked(h, layout, n_samples)
        folded = h.reshape(n_samples * h.shape[1], *h.shape[2:])
        out = self.forward_single(p, folded)
        return out.reshape(n_samples, h.shape[1], *out.shape[1:]), STACKED

    def forward_batched(self, p: Params, x: Tensor) -> Tensor:
        n_samples = x.shape[0]
        return to_stacked(*self.forward_layout(p, x, STACKED, n_samples), n_samples)


@dataclass(frozen=True)
class Linear(Layer):
    in_features: int
    out_features: int
    bias: bool = True

    def param_shapes(self):
        shapes = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    @property
    def fan_in(self) -> int:
        return self.in_features

    def init_ranges(self):
        # PyTorch's default: U(+-1/sqrt(fan_in)) for weight and bias.
        return {key: (0.0, 1.0 / math.sqrt(self.fan_in)) for key in self.param_shapes()}

    def forward_single(self, p, x):
        return F.linear(x, p["weight"], p.get("bias"))

    def forward_layout(self, p, h, layout, n_samples):
        weight = p["weight"]
        if layout == SHARED:
            # One GEMM against the S weight matrices side by side: [B, in] @ [in, S * out].
            side_by_side = weight.permute(2, 0, 1).reshape(self.in_features, -1)
            out = (h @ side_by_side).reshape(h.shape[0], n_samples, self.out_features).transpose(0, 1)
            return (out + p["bias"].unsqueeze(1) if "bias" in p else out), STACKED
        h = to_stacked(h, layout, n_samples)
        if "bias" in p:
            return torch.baddbmm(p["bias"].unsqueeze(1), h, weight.transpose(1, 2)), STACKED
        return torch.bmm(h, weight.transpose(1, 2)), STACKED


@dataclass(frozen=True)
class Conv2d(Layer):
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    bias: bool = True

    def param_shapes(self):
        k = self.kernel_size
        shapes = {"weight": (self.out_channels, self.in_channels, k, k)}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    @property
    def fan_in(self) -> int:
        return self.in_channels * self.kernel_size**2

    def init_ranges(self):
        return {key: (0.0, 1.0 / math.sqrt(self.fan_in)) for key in self.param_shapes()}

    def forward_single(self, p, x):
        return F.conv2d(x, p["weight"], p.get("bias"), stride=self.stride, padding=self.padding)

    def forward_layout(self, p, h, layout, n_samples):
        # A shared input needs no groups: one convolution with the S * C_out filters side by
        # side. Otherwise the S nets are the groups of one grouped convolution.
        groups = 1 if layout == SHARED else n_samples
        if layout == STACKED:
            h = to_grouped(h, layout, n_samples)
        weight = p["weight"].reshape(n_samples * self.out_channels, *p["weight"].shape[2:])
        bias = p["bias"].reshape(-1) if "bias" in p else None
        out = F.conv2d(h, weight, bias, stride=self.stride, padding=self.padding, groups=groups)
        if h.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # The CPU's bf16 path keeps feature maps channels-last: oneDNN's channels-last kernels
            # for the convolutions and the max-pooling after them beat the NCHW ones on the CPU
            # (benchmarks/README.md). A one-channel input is NCHW either way, so the output
            # is converted rather than the input.
            out = out.contiguous(memory_format=torch.channels_last)
        return out, GROUPED


@dataclass(frozen=True)
class GroupNorm(Layer):
    """Per-example normalisation: no running statistics, so sampled weights need none."""

    num_groups: int
    num_channels: int

    def param_shapes(self):
        return {"weight": (self.num_channels,), "bias": (self.num_channels,)}

    def init_ranges(self):
        return {"weight": (1.0, 0.0), "bias": (0.0, 0.0)}

    def forward_single(self, p, x):
        return F.group_norm(x, self.num_groups, p["weight"], p["bias"])

    def forward_layout(self, p, h, layout, n_samples):
        # The S nets' channel groups are contiguous, so S * G groups normalise each net apart.
        h = to_grouped(h, layout, n_samples)
        return F.group_norm(h, n_samples * self.num_groups, p["weight"].reshape(-1),
                            p["bias"].reshape(-1)), GROUPED


@dataclass(frozen=True)
class Activation(Layer):
    name: str

    def __post_init__(self):
        _activation(self.name)

    def forward_single(self, p, x):
        return ACTIVATIONS[self.name](x)

    def forward_layout(self, p, h, layout, n_samples):
        return ACTIVATIONS[self.name](h), layout  # element-wise: any layout


@dataclass(frozen=True)
class MaxPool2d(Layer):
    kernel_size: int

    def forward_single(self, p, x):
        return F.max_pool2d(x, self.kernel_size)

    def forward_layout(self, p, h, layout, n_samples):
        if layout == STACKED:
            return super().forward_layout(p, h, layout, n_samples)
        return F.max_pool2d(h, self.kernel_size), layout  # per channel: any channel grouping


@dataclass(frozen=True)
class Flatten(Layer):
    def forward_single(self, p, x):
        return x.flatten(1)

    def forward_layout(self, p, h, layout, n_samples):
        if layout == GROUPED:
            return h.reshape(h.shape[0], n_samples, -1).transpose(0, 1), STACKED
        return h.flatten(1 if layout == SHARED else 2), layout


@dataclass(frozen=True)
class GlobalAveragePool(Layer):
    def forward_single(self, p, x):
        return x.mean(dim=(-2, -1))

    def forward_layout(self, p, h, layout, n_samples):
        pooled = h.mean(dim=(-2, -1))
        if layout == GROUPED:
            return pooled.reshape(h.shape[0], n_samples, -1).transpose(0, 1), STACKED
        return pooled, layout


@dataclass(frozen=True)
class Dropout(Layer):
    """Marks where MC dropout acts: on the input units of the next linear layer."""

    def forward_single(self, p, x):
        return x

    def forward_layout(self, p, h, layout, n_samples):
        return h, layout


@dataclass(frozen=True)
class ResidualBlock(Layer):
    """Basic block: conv-norm-relu-conv-norm, plus shortcut, relu.

    Channel or resolution changes use the parameter-free shortcut of the original CIFAR
    ResNet (option A: stride-2 subsampling and zero-padded channels), so every parameter is a
    convolution or a normalisation a hypernetwork can generate.
    """

    in_channels: int
    out_channels: int
    stride: int
    groups: int

    def sublayers(self) -> dict[str, Layer]:
        return {
            "conv1": Conv2d(self.in_channels, self.out_channels, 3, self.stride, 1, bias=False),
            "norm1": GroupNorm(self.groups, self.out_channels),
            "conv2": Conv2d(self.out_channels, self.out_channels, 3, 1, 1, bias=False),
            "norm2": GroupNorm(self.groups, self.out_channels),
        }

    def param_shapes(self):
        return {f"{name}.{k}": s for name, layer in self.sublayers().items()
                for k, s in layer.param_shapes().items()}

    def init_ranges(self):
        return {f"{name}.{k}": v for name, layer in self.sublayers().items()
                for k, v in layer.init_ranges().items()}

    @staticmethod
    def _local(p, name):
        return {k.split(".", 1)[1]: v for k, v in p.items() if k.startswith(name + ".")}

    def _shortcut(self, x):
        if self.stride != 1:
            x = x[..., :: self.stride, :: self.stride]
        pad = self.out_channels - self.in_channels
        # F.pad counts dimensions from the last: (W, W, H, H, C, C).
        return F.pad(x, (0, 0, 0, 0, 0, pad)) if pad else x

    def forward_single(self, p, x):
        layers = self.sublayers()
        h = x
        for name in ("conv1", "norm1"):
            h = layers[name].forward_single(self._local(p, name), h)
        h = F.relu(h)
        for name in ("conv2", "norm2"):
            h = layers[name].forward_single(self._local(p, name), h)
        return F.relu(h + self._shortcut(x))

    def forward_layout(self, p, h, layout, n_samples):
        layers = self.sublayers()
        x = to_grouped(h, layout, n_samples)
        h = x
        for name in ("conv1", "norm1"):
            h, _ = layers[name].forward_layout(self._local(p, name), h, GROUPED, n_samples)
        h = F.relu(h)
        for name in ("conv2", "norm2"):
            h, _ = layers[name].forward_layout(self._local(p, name), h, GROUPED, n_samples)
        per_net = x.reshape(x.shape[0], n_samples, self.in_channels, *x.shape[2:])
        shortcut = self._shortcut(per_net).reshape(h.shape)
        return F.relu(h + shortcut), GROUPED


#: The layers :meth:`TargetNet.walk_mlp` can walk.
MLP_LAYERS = (Linear, Activation, Flatten, Dropout)


class TargetNet:
    """A target network: ordered named layers, their parameter spec, pure forwards.

    Parameters are ``dict[str, Tensor]`` with a leading sample dimension ``S`` (shape
    ``[S, *spec_shape]``). Call the network with such a dict and inputs ``[B, *input_shape]``
    (shared by all nets) or ``[S, B, *input_shape]`` (one batch per net); it returns
    ``[S, B, n_outputs]``.
    """

    def __init__(self, name: str, layers: list[tuple[str, Layer]],
                 input_shape: tuple[int, ...], n_outputs: int):
        names = [n for n, _ in layers]
        if len(set(names)) != len(names):
            raise ValueError(f"layer names must be unique, got {names}")
        self.name = name
        self.layers = list(layers)
        self.input_shape = tuple(input_shape)
        self.n_outputs = n_outputs
        self.param_shapes: dict[str, tuple[int, ...]] = {
            f"{layer_name}.{k}": shape
            for layer_name, layer in self.layers
            for k, shape in layer.param_shapes().items()
        }
        for layer_name, layer in self.layers:
            if set(layer.init_ranges()) != set(layer.param_shapes()):
                raise ValueError(f"layer {layer_name!r} of type {type(layer).__name__} must give "
                                 f"an initialisation range (init_ranges) for each of its "
                                 f"parameters {sorted(layer.param_shapes())}")

    def __repr__(self):
        return (f"TargetNet({self.name!r}, {len(self.param_shapes)} tensors, "
                f"{self.num_params:,} parameters)")

    @property
    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes.values())

    def layer_groups(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """Parameters grouped by the layer that owns them (one generator per group)."""
        groups: dict[str, dict[str, tuple[int, ...]]] = {}
        for layer_name, layer in self.layers:
            shapes = layer.param_shapes()
            if shapes:
                groups[layer_name] = {f"{layer_name}.{k}": s for k, s in shapes.items()}
        return groups

    def init_ranges(self) -> dict[str, tuple[float, float]]:
        """(centre, half-width) of every tensor's default initialisation U(centre +- half-width)."""
        return {f"{layer_name}.{k}": v for layer_name, layer in self.layers
                for k, v in layer.init_ranges().items()}

    def require_mlp(self, purpose: str) -> None:
        """Refuse a target that :meth:`walk_mlp` cannot walk, naming ``purpose`` and the layers."""
        unsupported = [f"{name} ({type(layer).__name__})" for name, layer in self.layers
                       if not isinstance(layer, MLP_LAYERS)]
        if unsupported:
            raise ValueError(f"{purpose} needs a target of Linear, Activation, Flatten and Dropout "
                             f"layers only; {self.name!r} has {', '.join(unsupported)}")

    def walk_mlp(self, x: Tensor, linear: Callable[[str, Linear, Tensor], Tensor]) -> Tensor:
        """Inputs ``[..., *input_shape]`` through an MLP target, every Linear layer by a hook.

        ``linear(name, layer, h)`` computes each linear layer (e.g. from a distribution over
        its pre-activations) on hidden states with any leading dimensions; activations and
        flattening act as usual and Dropout markers pass through.
        """
        self.require_mlp("walk_mlp")
        feature_dims = len(self.input_shape)
        h = x
        for layer_name, layer in self.layers:
            if isinstance(layer, Linear):
                h = linear(layer_name, layer, h)
            elif isinstance(layer, Flatten):
                h = h.flatten(h.dim() - feature_dims)
                feature_dims = 1
            elif isinstance(layer, Activation):
                h = ACTIVATIONS[layer.name](h)
        return h

    def dropout_weights(self) -> list[str]:
        """Weights of the linear layers whose inputs MC dropout masks (after a Dropout marker)."""
        names, after_dropout = [], False
        for layer_name, layer in self.layers:
            if isinstance(layer, Dropout):
                after_dropout = True
            elif isinstance(layer, Linear) and after_dropout:
                names.append(f"{layer_name}.weight")
                after_dropout = False
        return names

    # -- spec helpers -------------------------------------------------------------------
    def check_params(self, params: Mapping[str, Tensor]) -> int:
        """Validate names and shapes; return the number of samples S."""
        missing = [n for n in self.param_shapes if n not in params]
        extra = [n for n in params if n not in self.param_shapes]
        if missing or extra:
            raise ValueError(f"{self.name}: parameters missing {missing}, unexpected {extra}")
        n_samples = None
        for name, shape in self.param_shapes.items():
            got = tuple(params[name].shape)
            if got[1:] != shape:
                raise ValueError(f"{self.name}: parameter {name!r} has shape {got}, expected "
                                 f"[S, {', '.join(map(str, shape))}] = (S, *{shape})")
            if n_samples is None:
                n_samples = got[0]
            elif got[0] != n_samples:
                raise ValueError(f"{self.name}: parameter {name!r} has {got[0]} samples, "
                                 f"the others have {n_samples}")
        return n_samples

    def init(self, n_samples: int = 1, generator: torch.Generator | None = None) -> Params:
        """Independent draws of PyTorch's default initialisation, one per sample."""
        params = {}
        for layer_name, layer in self.layers:
            for k, v in layer.init(n_samples, generator).items():
                params[f"{layer_name}.{k}"] = v
        return params

    def flatten(self, params: Mapping[str, Tensor]) -> Tensor:
        """[S, P] in spec order."""
        n_samples = self.check_params(params)
        return torch.cat([params[n].reshape(n_samples, -1) for n in self.param_shapes], dim=1)

    def unflatten(self, flat: Tensor) -> Params:
        """Inverse of :meth:`flatten`: views into ``flat`` of shape [S, P]."""
        if flat.dim() != 2 or flat.shape[1] != self.num_params:
            raise ValueError(f"{self.name}: flat parameters must have shape [S, {self.num_params}],"
                             f" got {tuple(flat.shape)}")
        sizes = [math.prod(s) for s in self.param_shapes.values()]
        chunks = flat.split(sizes, dim=1)
        return {n: c.reshape(flat.shape[0], *s)
                for (n, s), c in zip(self.param_shapes.items(), chunks)}

    # -- forwards -----------------------------------------------------------------------
    def _check_input(self, x: Tensor, batched_dims: int):
        if tuple(x.shape[batched_dims:]) != self.input_shape:
            raise ValueError(f"{self.name}: input x has shape {tuple(x.shape)}, expected "
                             f"[{'S, ' if batched_dims == 2 else ''}B, *{self.input_shape}]")

    def forward_single(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """One network (parameters without S) on x [B, *input_shape] -> [B, n_outputs]."""
        self._check_input(x, 1)
        h = x
        for layer_name, layer in self.layers:
            local = {k: params[f"{layer_name}.{k}"] for k in layer.param_shapes()}
            h = layer.forward_single(local, h)
        return h

    def __call__(self, params: Mapping[str, Tensor], x: Tensor, *, dropout: float = 0.0) -> Tensor:
        """All S networks at once -> [S, B, n_outputs].

        A shared input stays uncopied until the first layer whose parameters differ between
        the nets (layers whose parameters are one tensor expanded along S run once), which runs
        all S nets as one wide convolution or matmul; feature maps then travel as channel groups
        ([B, S * C, H, W]) through grouped convolutions until the flatten.

        ``dropout`` > 0 applies (training-mode) dropout at each :class:`Dropout` marker,
        independently per sample and input: the stochastic forward of MC dropout.
        """
        n_samples = self.check_params(params)
        if x.dim() == len(self.input_shape) + 1:
            self._check_input(x, 1)
            h, layout = x, SHARED
        else:
            self._check_input(x, 2)
            if x.shape[0] != n_samples:
                raise ValueError(f"{self.name}: per-sample inputs have {x.shape[0]} samples, "
                                 f"the parameters {n_samples}")
            h, layout = x, STACKED
        for layer_name, layer in self.layers:
            if isinstance(layer, Dropout) and dropout > 0:
                if layout == SHARED:  # each net needs its own mask
                    h, layout = to_stacked(h, layout, n_samples), STACKED
                h = F.dropout(h, dropout, training=True)
                continue
            local = {k: params[f"{layer_name}.{k}"] for k in layer.param_shapes()}
            if layout == SHARED and local and n_samples > 1 and _shared(local):
                # The same weights for all S nets (MC dropout's layers before its first mask):
                # one net's forward serves them all, and the input stays shared.
                h = layer.forward_single({k: v[0] for k, v in local.items()}, h)
                continue
            h, layout = layer.forward_layout(local, h, layout, n_samples)
        return to_stacked(h, layout, n_samples)


# -- the papers' architectures --------------------------------------------------------------

def mlp(sizes: list[int], activation: str = "relu", bias: bool = True,
        dropout: bool = False, name: str | None = None) -> TargetNet:
    """Fully connected net ``sizes[0] -> ... -> sizes[-1]``; ``dropout`` marks hidden inputs."""
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ValueError(f"sizes must list at least two positive widths, got {sizes}")
    layers: list[tuple[str, Layer]] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        if i > 1:
            layers.append((f"act{i - 1}", Activation(activation)))
            if dropout:
                layers.append((f"drop{i - 1}", Dropout()))
        layers.append((f"fc{i}", Linear(n_in, n_out, bias)))
    return TargetNet(name or f"mlp{'-'.join(map(str, sizes))}", layers,
                     (sizes[0],), sizes[-1])


def toy_mlp_bbh() -> TargetNet:
    """Bayes by Hypernet's toy net: 1-100-1, ReLU."""
    return mlp([1, 100, 1], "relu", dropout=True, name="toy_bbh")


def toy_mlp_mi() -> TargetNet:
    """HyperGAN-MI's toy net: 1-100-100-1, ReLU."""
    return mlp([1, 100, 100, 1], "relu", dropout=True, name="toy_mi")


def toy_mlp_hypergan() -> TargetNet:
    """HyperGAN's toy net: 1-200-1, ELU, no biases."""
    return mlp([1, 200, 1], "elu", bias=False, dropout=True, name="toy_hypergan")


def mnist_mlp(n_classes: int = 10, hidden: Sequence[int] = (256, 256, 256)) -> TargetNet:
    """Bayesian Hypernetworks' anomaly-detection MLP: 784-256-256-256-10, ReLU.

    ``n_classes`` sets the output width (9 when a digit is held out), ``hidden`` the widths.
    """
    n_classes = check_int("n_classes", n_classes, minimum=2)
    hidden = check_int_list("hidden", hidden, minimum=1)
    name = ("mnist_mlp" if (n_classes, hidden) == (10, (256, 256, 256))
            else f"mnist_mlp{'-'.join(map(str, hidden))}-{n_classes}")
    net = mlp([28 * 28, *hidden, n_classes], "relu", dropout=True, name=name)
    return TargetNet(net.name, [("flatten", Flatten())] + net.layers, (1, 28, 28), n_classes)


def mnist_small_conv() -> TargetNet:
    """HyperGAN's MNIST net: conv5x5 1->32, pool, conv5x5 32->32, pool, linear 512->10."""
    return TargetNet("mnist_small_conv", [
        ("conv1", Conv2d(1, 32, 5)), ("act1", Activation("leaky_relu")), ("pool1", MaxPool2d(2)),
        ("conv2", Conv2d(32, 32, 5)), ("act2", Activation("leaky_relu")), ("pool2", MaxPool2d(2)),
        ("flatten", Flatten()), ("drop", Dropout()), ("fc", Linear(512, 10)),
    ], (1, 28, 28), 10)


def lenet() -> TargetNet:
    """Bayes by Hypernet's MNIST LeNet: conv5x5 1->20, pool, conv5x5 20->50, pool, 800-500-10."""
    return TargetNet("lenet", [
        ("conv1", Conv2d(1, 20, 5)), ("act1", Activation("relu")), ("pool1", MaxPool2d(2)),
        ("conv2", Conv2d(20, 50, 5)), ("act2", Activation("relu")), ("pool2", MaxPool2d(2)),
        ("flatten", Flatten()), ("drop1", Dropout()), ("fc1", Linear(800, 500)),
        ("act3", Activation("relu")), ("drop2", Dropout()), ("fc2", Linear(500, 10)),
    ], (1, 28, 28), 10)


def mnist_al_cnn() -> TargetNet:
    """Gal et al.'s active-learning CNN (the Bayesian Hypernetworks AL code's): conv4x4 1->32,
    conv4x4 32->32, max-pool, linear 3872->128, linear 128->10; dropout before each linear."""
    return TargetNet("mnist_al_cnn", [
        ("conv1", Conv2d(1, 32, 4)), ("act1", Activation("relu")),
        ("conv2", Conv2d(32, 32, 4)), ("act2", Activation("relu")), ("pool", MaxPool2d(2)),
        ("flatten", Flatten()), ("drop1", Dropout()), ("fc1", Linear(11 * 11 * 32, 128)),
        ("act3", Activation("relu")), ("drop2", Dropout()), ("fc2", Linear(128, 10)),
    ], (1, 28, 28), 10)


def cifar_small_conv() -> TargetNet:
    """HyperGAN's CIFAR net: conv3x3 3->16->32->32, each + max-pool, linear 128->64->10."""
    return TargetNet("cifar_small_conv", [
        ("conv1", Conv2d(3, 16, 3)), ("act1", Activation("leaky_relu")), ("pool1", MaxPool2d(2)),
        ("conv2", Conv2d(16, 32, 3)), ("act2", Activation("leaky_relu")), ("pool2", MaxPool2d(2)),
        ("conv3", Conv2d(32, 32, 3)), ("act3", Activation("leaky_relu")), ("pool3", MaxPool2d(2)),
        ("flatten", Flatten()), ("drop1", Dropout()), ("fc1", Linear(128, 64)),
        ("act4", Activation("leaky_relu")), ("drop2", Dropout()), ("fc2", Linear(64, 10)),
    ], (3, 32, 32), 10)


def cifar_resnet(filters: tuple[int, int, int, int] = (16, 16, 32, 64), units_per_stage: int = 5,
                 n_outputs: int = 5, input_size: int = 24, groups: int = 8) -> TargetNet:
    """Bayes by Hypernet's CIFAR-5 ResNet: a 16-filter stem, three stages of basic blocks.

    Normalisation is GroupNorm (per example, affine parameters part of the spec) instead of
    BatchNorm: running statistics are undefined for a distribution over weights, and batch
    statistics at test time would let a batch of outliers normalise itself away.
    """
    stem, *stages = filters
    layers: list[tuple[str, Layer]] = [
        ("stem", Conv2d(3, stem, 3, padding=1, bias=False)),
        ("stem_norm", GroupNorm(min(groups, stem), stem)),
        ("stem_act", Activation("relu")),
    ]
    channels = stem
    for stage, width in enumerate(stages, start=1):
        for unit in range(units_per_stage):
            stride = 2 if (unit == 0 and stage > 1) else 1
            layers.append((f"stage{stage}.unit{unit}",
                           ResidualBlock(channels, width, stride, min(groups, width))))
            channels = width
    layers += [("pool", GlobalAveragePool()), ("drop", Dropout()),
               ("fc", Linear(channels, n_outputs))]
    return TargetNet("cifar_resnet", layers, (3, input_size, input_size), n_outputs)


ARCHITECTURES: dict[str, Callable[[], TargetNet]] = {
    "toy_bbh": toy_mlp_bbh,
    "toy_mi": toy_mlp_mi,
    "toy_hypergan": toy_mlp_hypergan,
    "mnist_mlp": mnist_mlp,
    "mnist_small_conv": mnist_small_conv,
    "lenet": lenet,
    "mnist_al_cnn": mnist_al_cnn,
    "cifar_small_conv": cifar_small_conv,
    "cifar_resnet": cifar_resnet,
}


def get_target(name: str) -> TargetNet:
    """Build one of the papers' target networks by name (see ``ARCHITECTURES``)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"target must be one of {sorted(ARCHITECTURES)}, got {name!r}")
    return ARCHITECTURES[name]()
