import pytest
import torch

from hypernets import targets
from hypernets.targets import ARCHITECTURES, get_target
from hypernets.training import autocast


def _inputs(net, batch, generator, dtype=torch.float32):
    return torch.randn((batch, *net.input_shape), generator=generator).to(dtype)


# The equality tests run in float64: a batched and a single convolution sum in different orders
# (which order depends on the CPU's kernels), and in float32 a LeNet logit of scale 30 differs by
# up to 3e-5 between them; in float64 that rounding stays below 1e-12.
EXACT = dict(rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("n_samples", [1, 3])
def test_batched_call_equals_per_sample_loop(name, n_samples):
    gen = torch.Generator().manual_seed(0)
    net = get_target(name)
    params = net.init(n_samples, gen)
    # GroupNorm affine parameters start at 1/0; perturb them so the test sees their use.
    params = {k: (v + 0.1 * torch.randn(v.shape, generator=gen)).double() for k, v in params.items()}
    x = _inputs(net, 4, gen, torch.float64)
    batched = net(params, x)
    assert batched.shape == (n_samples, 4, net.n_outputs)
    looped = torch.stack([net.forward_single({k: v[s] for k, v in params.items()}, x)
                          for s in range(n_samples)])
    torch.testing.assert_close(batched, looped, **EXACT)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("shared_layers", [1, 2, "all"])
def test_layers_shared_by_all_nets_run_once_and_give_the_per_sample_loop(name, shared_layers):
    """Parameters expanded along S (one tensor for all nets, as MC dropout's before its masks)
    take the single-net path until the first per-net layer; the result is the loop's."""
    gen = torch.Generator().manual_seed(0)
    net = get_target(name)
    params = {k: (v + 0.1 * torch.randn(v.shape, generator=gen)).double() for k, v in net.init(3, gen).items()}
    layers = [layer_name for layer_name, layer in net.layers if layer.param_shapes()]
    shared = layers if shared_layers == "all" else layers[:shared_layers]
    params = {k: (v[:1].expand_as(v) if k.split(".")[0] in shared else v) for k, v in params.items()}
    x = _inputs(net, 4, gen, torch.float64)
    looped = torch.stack([net.forward_single({k: v[s] for k, v in params.items()}, x)
                          for s in range(3)])
    torch.testing.assert_close(net(params, x), looped, **EXACT)
    materialised = {k: v.contiguous() for k, v in params.items()}
    torch.testing.assert_close(net(params, x), net(materialised, x), **EXACT)


#: bf16 keeps 8 bits of mantissa (relative rounding 2^-8 = 0.4 %); through a few layers the
#: outputs of a bf16 forward lie within about 5 % of their scale of the float32 ones.
BF16_TOLERANCE = 0.05


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("n_samples", [1, 3])
def test_bf16_batched_call_equals_the_float32_loop_within_bf16_precision(name, n_samples):
    gen = torch.Generator().manual_seed(2)
    net = get_target(name)
    params = {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in net.init(n_samples, gen).items()}
    x = _inputs(net, 4, gen)
    with autocast("cpu", "bf16"):  # the CPU's fast path: bf16 and channels-last feature maps
        batched = net(params, x).float()
    looped = torch.stack([net.forward_single({k: v[s] for k, v in params.items()}, x)
                          for s in range(n_samples)])
    scale = looped.abs().max()
    torch.testing.assert_close(batched, looped, rtol=0, atol=BF16_TOLERANCE * float(scale))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_per_sample_inputs_match_single_nets(name):
    gen = torch.Generator().manual_seed(1)
    net = get_target(name)
    # Perturbed so that no two samples share a tensor (GroupNorm starts at gain 1, shift 0 in all).
    params = {k: (v + 0.1 * torch.randn(v.shape, generator=gen)).double() for k, v in net.init(3, gen).items()}
    x = _inputs(net, 5, gen, torch.float64)
    x_per_sample = torch.stack([x, x.flip(0), 2 * x])
    out = net(params, x_per_sample)
    for s, xs in enumerate(x_per_sample):
        torch.testing.assert_close(out[s], net.forward_single({k: v[s] for k, v in params.items()}, xs),
                                   **EXACT)


def test_batched_layers_on_stacked_inputs_equal_single_layers():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 2, 6, 6, generator=gen, dtype=torch.float64)
    for layer in (targets.Activation("elu"), targets.MaxPool2d(2), targets.Flatten(),
                  targets.GlobalAveragePool(), targets.Conv2d(2, 5, 3), targets.GroupNorm(1, 2)):
        params = {k: (v + 0.1 * torch.randn(v.shape, generator=gen)).double()
                  for k, v in layer.init(3, gen).items()}
        out = layer.forward_batched(params, x)
        for s in range(3):
            torch.testing.assert_close(out[s], layer.forward_single({k: v[s] for k, v in params.items()}, x[s]),
                                       **EXACT)


def test_wrong_parameter_shape_names_parameter_and_both_shapes():
    net = get_target("lenet")
    params = net.init(2)
    params["fc1.weight"] = torch.zeros(2, 500, 799)
    with pytest.raises(ValueError, match=r"'fc1.weight' has shape \(2, 500, 799\).*\(500, 800\)"):
        net(params, torch.zeros(1, 1, 28, 28))


def test_missing_and_mismatched_sample_counts_are_errors():
    net = get_target("toy_bbh")
    params = net.init(2)
    with pytest.raises(ValueError, match="missing"):
        net({k: v for k, v in params.items() if k != "fc2.bias"}, torch.zeros(3, 1))
    params["fc2.bias"] = torch.zeros(3, 1)
    with pytest.raises(ValueError, match="3 samples"):
        net(params, torch.zeros(3, 1))
    with pytest.raises(ValueError, match="input x has shape"):
        net(net.init(2), torch.zeros(3, 2))


def test_flatten_unflatten_round_trip_and_spec():
    net = get_target("cifar_small_conv")
    params = net.init(2)
    flat = net.flatten(params)
    assert flat.shape == (2, net.num_params)
    back = net.unflatten(flat)
    for name in net.param_shapes:
        assert torch.equal(back[name], params[name])
    with pytest.raises(ValueError, match="flat parameters must have shape"):
        net.unflatten(flat[:, 1:])


def test_architectures_have_the_papers_sizes():
    assert get_target("mnist_small_conv").param_shapes["fc.weight"] == (10, 512)
    assert get_target("lenet").param_shapes["fc1.weight"] == (500, 800)
    assert get_target("cifar_small_conv").param_shapes["fc1.weight"] == (64, 128)
    toy = get_target("toy_hypergan")
    assert list(toy.param_shapes) == ["fc1.weight", "fc2.weight"]  # no biases
    assert toy.param_shapes["fc1.weight"] == (200, 1)
    assert get_target("mnist_mlp").num_params == 784 * 256 + 256 + 2 * (256 * 256 + 256) + 2570
    resnet = get_target("cifar_resnet")
    convs = [n for n in resnet.param_shapes if n.endswith("conv1.weight") or n.endswith("conv2.weight")]
    assert len(convs) == 30  # 3 stages x 5 units x 2 convolutions
    assert resnet.param_shapes["fc.weight"] == (5, 64)
    assert resnet.input_shape == (3, 24, 24)


def test_layer_groups_and_dropout_weights():
    net = get_target("lenet")
    assert list(net.layer_groups()) == ["conv1", "conv2", "fc1", "fc2"]
    assert net.layer_groups()["fc1"] == {"fc1.weight": (500, 800), "fc1.bias": (500,)}
    assert net.dropout_weights() == ["fc1.weight", "fc2.weight"]
    assert get_target("mnist_mlp").dropout_weights() == ["fc2.weight", "fc3.weight", "fc4.weight"]


def test_dropout_is_random_per_sample_and_off_by_default():
    net = get_target("mnist_mlp")
    params = net.init(1)
    params = {k: v.expand(2, *v.shape[1:]) for k, v in params.items()}
    x = torch.randn(3, 1, 28, 28)
    plain = net(params, x)
    torch.testing.assert_close(plain[0], plain[1])
    dropped = net(params, x, dropout=0.5)
    assert not torch.allclose(dropped[0], dropped[1])


def test_unknown_architecture_and_activation():
    with pytest.raises(ValueError, match="target must be one of"):
        get_target("vgg")
    with pytest.raises(ValueError, match="activation must be one of"):
        targets.mlp([1, 2, 1], activation="swish")
