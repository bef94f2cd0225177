import math

import pytest
import torch
from method_checks import (
    TOY_RMSE_BOUND,
    assert_deterministic,
    fit_mnist,
    fit_toy,
    mnist_accuracy,
    mnist_tiny_conv,
    sample_diversity,
    toy,
    toy_rmse,
    toy_std_ratio,
)

from hypernets.likelihoods import Categorical, Gaussian
from hypernets.methods import BayesianHypernetwork
from hypernets.methods.bayesian_hypernetwork import ScaleFlow
from hypernets.targets import ARCHITECTURES, Flatten, TargetNet, get_target, mlp


def random_flow(dim, n_couplings=3, seed=0):
    """A float64 flow with every parameter random, so no coupling is the identity."""
    gen = torch.Generator().manual_seed(seed)
    flow = ScaleFlow(dim, n_couplings, 16, torch.ones(dim), 0.5, gen).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return flow


def test_log_determinant_matches_autograd_jacobian():
    flow = random_flow(5)
    transform = flow.transform()
    eps = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _, log_det = transform.call_and_ladj(eps)
    for i in range(3):
        jacobian = torch.autograd.functional.jacobian(lambda e: transform(e), eps[i])
        assert not torch.allclose(jacobian, torch.diag(torch.diagonal(jacobian)))  # couplings mix
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(jacobian).logabsdet)


def test_log_q_of_a_sample_matches_a_numerical_density():
    flow = random_flow(2, n_couplings=2).requires_grad_(False)
    torch.manual_seed(2)
    g, log_q = flow.rsample_and_log_prob((4,))
    # Change of variables with a finite-difference Jacobian of the inverse map g -> ε.
    inverse = flow.transform().inv
    step = 1e-6
    for i in range(4):
        columns = [(inverse(g[i] + step * e) - inverse(g[i] - step * e)) / (2 * step)
                   for e in torch.eye(2, dtype=torch.float64)]
        log_det_inverse = torch.linalg.slogdet(torch.stack(columns, dim=1)).logabsdet
        eps = inverse(g[i])
        numerical = -0.5 * (eps**2).sum() - math.log(2 * math.pi) + log_det_inverse
        assert float(log_q[i]) == pytest.approx(float(numerical), abs=1e-6)
    torch.testing.assert_close(flow.log_prob(g), log_q)
    # The density integrates to one (midpoint rule on a grid holding nearly all of the mass).
    samples, _ = flow.rsample_and_log_prob((20000,))
    low, high = samples.min(0).values - 1, samples.max(0).values + 1
    n = 400
    axes = [torch.linspace(lo, hi, n + 1, dtype=torch.float64) for lo, hi in zip(low, high)]
    mids = [(a[1:] + a[:-1]) / 2 for a in axes]
    grid = torch.stack(torch.meshgrid(*mids, indexing="ij"), dim=-1).reshape(-1, 2)
    cell = float((high[0] - low[0]) * (high[1] - low[1])) / n**2
    mass = float(flow.log_prob(grid).exp().sum()) * cell
    assert mass == pytest.approx(1.0, abs=0.01)


def test_weights_are_scales_times_unit_directions():
    torch.manual_seed(0)
    method = BayesianHypernetwork(get_target("mnist_small_conv"), Categorical())
    with torch.no_grad():
        g, _ = method.flow.rsample_and_log_prob((3,))
        params = method.params_from_scales(g)
    assert method.normalised == ["conv1.weight", "conv2.weight", "fc.weight"]
    assert g.shape == (3, 32 + 32 + 10)
    for name, units in method.units.items():
        norms = params[name].flatten(2).norm(dim=2)
        torch.testing.assert_close(norms, g[:, units].abs())
    for name in ("conv1.bias", "conv2.bias", "fc.bias"):  # point estimates
        assert torch.equal(params[name][0], params[name][2])
    # At initialisation the mean scale is the norm of V, so the nets start at V itself.
    torch.testing.assert_close(method.flow.shift.detach(),
                               torch.cat([method.point.as_dict()[n][0].flatten(1).norm(dim=1)
                                          for n in method.normalised]))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_samples_fit_every_architecture(name):
    target = get_target(name)
    torch.manual_seed(0)
    method = BayesianHypernetwork(target, Categorical(), n_couplings=1, coupling_hidden=8)
    with torch.no_grad():
        assert target.check_params(method.sample_params(2)) == 2


@pytest.fixture(scope="module")
def toy_model():
    torch.manual_seed(0)
    method = BayesianHypernetwork(get_target("toy_bbh"), Gaussian(3.0), train_samples=10)
    history = fit_toy(method, steps=1000, lr=1e-2)
    return method, history


def test_learns_the_toy_with_growing_uncertainty(toy_model):
    method, _ = toy_model
    assert toy_rmse(method) < TOY_RMSE_BOUND
    assert toy_std_ratio(method) >= 2.0


def test_weight_samples_are_diverse(toy_model):
    method, _ = toy_model
    assert sample_diversity(method) > 0.01


def test_mnist_subset_accuracy():
    torch.manual_seed(0)
    method = BayesianHypernetwork(mnist_tiny_conv(), Categorical())
    fit_mnist(method, epochs=8, batch_size=100, lr=3e-3)
    assert mnist_accuracy(method) > 0.90


def test_loss_is_the_negative_elbo_per_data_point():
    torch.manual_seed(0)
    method = BayesianHypernetwork(get_target("toy_bbh"), Gaussian(3.0), prior_std=2.0,
                                  train_samples=3)
    data = toy()
    torch.manual_seed(1)
    loss, logs = method.training_loss(data.x, data.y, n_train=20, epoch=0.0)
    torch.manual_seed(1)
    g, log_q = method.flow.rsample_and_log_prob((3,))
    log_prior = torch.distributions.Normal(0.0, 2.0).log_prob(g).sum(1)
    torch.testing.assert_close(logs["kl"], (log_q - log_prior).mean().detach())
    nll = method.likelihood.nll(method.target(method.params_from_scales(g), data.x), data.y)
    torch.testing.assert_close(logs["nll"], nll.mean().detach())
    torch.testing.assert_close(loss.detach(), logs["nll"] + logs["kl"] / 20)


def small_mlp():
    net = mlp([16, 8, 3])
    return TargetNet("small", [("flatten", Flatten())] + net.layers, (1, 4, 4), 3)


def test_per_datapoint_gives_each_example_its_own_scales():
    torch.manual_seed(0)
    method = BayesianHypernetwork(small_mlp(), Categorical(), per_datapoint=True,
                                  train_samples=2)
    x = torch.randn(5, 1, 4, 4)
    with torch.no_grad():
        g, _ = method.flow.rsample_and_log_prob((2, 5))
        outputs = method.forward_per_example(x, g)
        assert outputs.shape == (2, 5, 3)
        for s in range(2):
            for b in range(5):
                single = method.target(method.params_from_scales(g[s, b:b + 1]), x[b:b + 1])
                torch.testing.assert_close(outputs[s, b], single[0, 0])
    torch.manual_seed(1)
    loss, logs = method.training_loss(x, torch.randint(0, 3, (5,)), n_train=100, epoch=0.0)
    loss.backward()
    assert method.flow.shift.grad is not None and torch.isfinite(loss)
    shared = BayesianHypernetwork(small_mlp(), Categorical())
    assert not shared.per_datapoint and method.per_datapoint


def test_per_datapoint_needs_a_fully_connected_target_and_matching_shapes():
    with pytest.raises(ValueError, match=r"per_datapoint=True needs .*conv \(Conv2d\)"):
        BayesianHypernetwork(mnist_tiny_conv(), Categorical(), per_datapoint=True)
    shared = BayesianHypernetwork(mnist_tiny_conv(), Categorical())
    with pytest.raises(ValueError, match=r"walk_mlp needs .*conv \(Conv2d\)"):
        shared.forward_per_example(torch.zeros(2, 1, 28, 28), torch.ones(1, 2, shared.flow.dim))
    method = BayesianHypernetwork(small_mlp(), Categorical(), per_datapoint=True)
    with pytest.raises(ValueError, match=r"g \[S, B, 11\]"):
        method.forward_per_example(torch.zeros(2, 1, 4, 4), torch.ones(1, 3, 11))


def test_two_runs_with_one_seed_are_identical():
    assert_deterministic(lambda: BayesianHypernetwork(get_target("toy_bbh"), Gaussian(3.0)),
                         lambda method: fit_toy(method, steps=15, lr=1e-2))


@pytest.mark.parametrize("kwargs, message", [
    ({"n_couplings": -1}, "n_couplings must be an integer >= 0"),
    ({"coupling_hidden": 0}, "coupling_hidden must be an integer >= 1"),
    ({"prior_std": -1.0}, "prior_std must be a finite number > 0"),
    ({"init_std": 0.0}, "init_std must be a finite number > 0"),
    ({"train_samples": 0}, "train_samples must be an integer >= 1"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BayesianHypernetwork(get_target("toy_bbh"), Gaussian(3.0), **kwargs)


def test_couplings_need_two_units():
    one_unit = mlp([3, 1], name="one_unit")
    with pytest.raises(ValueError, match="at least 2 weight-normalised units"):
        BayesianHypernetwork(one_unit, Gaussian(1.0))
    assert BayesianHypernetwork(one_unit, Gaussian(1.0), n_couplings=0).flow.dim == 1
