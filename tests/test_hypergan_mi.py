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
    toy_rmse,
    toy_std_ratio,
)

from hypernets.likelihoods import Categorical, Gaussian
from hypernets.methods import HyperGANMI
from hypernets.methods.hypergan_mi import _corrected_log_term, standardise_one_hot
from hypernets.targets import get_target

# Most tests use narrow widths; test_bound_takes_off_at_the_paper_widths uses the paper's.
SMALL = dict(noise_dim=32, code_dim=16, hidden=64)


def _toy_method(**kwargs):
    return HyperGANMI(get_target("toy_bbh"), Gaussian(3.0), **{**SMALL, **kwargs})


@pytest.fixture(scope="module")
def toy_model():
    torch.manual_seed(0)
    method = _toy_method()
    history = fit_toy(method, 500, lr=1e-3)
    return method, history


def test_learns_the_toy_with_growing_uncertainty(toy_model):
    method, _ = toy_model
    assert toy_rmse(method) < TOY_RMSE_BOUND
    assert toy_std_ratio(method) >= 2.0


def test_statistics_network_finds_the_information(toy_model):
    _, history = toy_model
    # At most log(10) = 2.3 nats; an untrained T starts near 0.
    assert abs(history[0]["mi"]) < 0.1
    assert sum(r["mi"] for r in history[-50:]) / 50 > 0.5


def test_bound_takes_off_at_the_paper_widths():
    # The paper's widths (noise 256, code 128, hidden 512, T 400-400, S = 32, beta 25) on
    # the 1-100-1 toy net (toy_mi's 1-100-100-1 costs twice as much per step). Fed raw, the
    # one-hot is 0.3% of the codes' variance and the task's drift of the codes' mean kills
    # T's ReLUs: over the last 20 of these steps the estimate averaged -0.0003 nats. With the
    # standardised inputs it averages about 0.4.
    torch.manual_seed(0)
    method = HyperGANMI(get_target("toy_bbh"), Gaussian(3.0))
    history = fit_toy(method, 60, lr=1e-3)
    assert sum(r["mi"] for r in history[-20:]) / 20 > 0.2


def test_statistics_network_ignores_shift_and_scale_of_the_latent():
    # T standardises each latent coordinate over the samples, so a drift of the codes' mean
    # or scale (what the task does to them) leaves its scores unchanged.
    torch.manual_seed(0)
    statistics = _toy_method().statistics
    latent, one_hot = torch.randn(16, 32), _toy_method().draw_categories(16)
    moved = 50.0 + latent * torch.linspace(0.1, 10.0, 32)
    torch.testing.assert_close(statistics(moved, one_hot), statistics(latent, one_hot),
                               rtol=1e-4, atol=1e-4)
    standardised = (latent - latent.mean(0)) / latent.std(0, unbiased=False)
    expected = statistics.net(torch.cat([standardised, standardise_one_hot(one_hot)], 1))
    torch.testing.assert_close(statistics(latent, one_hot), expected.squeeze(1),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="at least 2"):
        statistics(latent[:1], one_hot[:1])


def test_one_hot_is_standardised_for_the_mixer():
    one_hot = torch.eye(10)[[0, 3, 3, 9]]
    # Coordinates of a uniform one-hot over 10 classes: mean 0.1, variance 0.09.
    expected = torch.where(one_hot == 1, torch.tensor(3.0), torch.tensor(-1.0 / 3.0))
    torch.testing.assert_close(standardise_one_hot(one_hot), expected)
    method = _toy_method()
    method.eval()
    torch.manual_seed(0)
    codes = method.codes(4, one_hot)
    torch.manual_seed(0)
    noise = torch.randn(4, SMALL["noise_dim"])
    torch.testing.assert_close(codes, method.mixer(torch.cat([noise, expected], 1)))


def test_mnist_subset_accuracy():
    torch.manual_seed(0)
    method = HyperGANMI(mnist_tiny_conv(), Categorical(), **SMALL, train_samples=8)
    fit_mnist(method, epochs=8, batch_size=100, lr=5e-3)
    assert mnist_accuracy(method) > 0.90


def test_samples_are_diverse_and_depend_on_the_category(toy_model):
    method, _ = toy_model
    method.eval()
    assert sample_diversity(method) > 0.01
    with torch.no_grad():
        categories = torch.eye(method.n_categories)
        torch.manual_seed(0)
        first = method.codes(10, categories)
        torch.manual_seed(0)
        second = method.codes(10, categories.roll(1, dims=0))  # same noise, other categories
    assert (first - second).abs().max() > 0.1


def test_gradients_reach_each_player_only_from_its_own_term():
    method = _toy_method()
    x, y = torch.randn(8, 1), torch.randn(8, 1)

    def grads(module):
        return [p.grad for p in module.parameters()]

    one_hot = method.draw_categories(8)
    codes = method.codes(8, one_hot)
    _, mixer_mi, statistics_mi = method.mine_terms(codes, one_hot)
    mixer_mi.backward(retain_graph=True)
    assert all(g is None for g in grads(method.statistics))
    assert all(g is not None for g in grads(method.mixer))
    method.zero_grad(set_to_none=True)
    statistics_mi.backward()
    assert all(g is None for g in grads(method.mixer) + grads(method.generators))
    assert all(g is not None for g in grads(method.statistics))

    # The full loss: T's gradient is that of -MI (T ascends the bound), the rest task - beta MI.
    for ma_rate in (None, 0.01):
        torch.manual_seed(0)
        method = _toy_method(ma_rate=ma_rate)
        torch.manual_seed(1)
        loss, _ = method.training_loss(x, y, n_train=8, epoch=0.0)
        loss.backward()
        full = {n: p.grad.clone() for n, p in method.named_parameters()}
        torch.manual_seed(0)
        method = _toy_method(ma_rate=ma_rate)  # the same init, a fresh moving average
        torch.manual_seed(1)
        one_hot = method.draw_categories(method.train_samples)
        codes = method.codes(method.train_samples, one_hot)
        nll = method.expected_nll(method.generators(codes), x, y)
        _, mixer_mi, statistics_mi = method.mine_terms(codes, one_hot)
        (nll - method.beta * mixer_mi).backward(retain_graph=True)
        for name, p in method.named_parameters():
            if not name.startswith("statistics"):
                torch.testing.assert_close(full[name], p.grad)
        method.zero_grad(set_to_none=True)
        (-statistics_mi).backward()
        for name, p in method.statistics.named_parameters():
            torch.testing.assert_close(full[f"statistics.{name}"], p.grad)


def test_beta_zero_trains_the_mixer_on_the_task_alone():
    x, y = torch.randn(8, 1), torch.randn(8, 1)
    method = _toy_method(beta=0.0)
    torch.manual_seed(1)
    loss, logs = method.training_loss(x, y, n_train=8, epoch=0.0)
    loss.backward()
    with_mi = [p.grad.clone() for p in method.mixer.parameters()]
    assert "mi" in logs
    assert all(p.grad is not None for p in method.statistics.parameters())  # T still learns
    method.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    one_hot = method.draw_categories(method.train_samples)
    codes = method.codes(method.train_samples, one_hot)
    method.expected_nll(method.generators(codes), x, y).backward()
    for grad, p in zip(with_mi, method.mixer.parameters()):
        torch.testing.assert_close(grad, p.grad)


def test_dv_estimate_and_its_shuffled_marginal():
    method = _toy_method(ma_rate=None)
    one_hot = method.draw_categories(6)
    codes = method.codes(6, one_hot)
    torch.manual_seed(2)
    estimate, mixer_mi, statistics_mi = method.mine_terms(codes, one_hot)
    torch.manual_seed(2)
    shuffled = one_hot[torch.randperm(6)]
    latent = codes.flatten(1)
    joint = method.statistics(latent, one_hot).mean()
    marginal = method.statistics(latent, shuffled)
    expected = joint - (marginal.exp().mean()).log()
    torch.testing.assert_close(estimate, expected.detach())
    torch.testing.assert_close(mixer_mi, expected)
    torch.testing.assert_close(statistics_mi, expected)


def test_moving_average_correction():
    # The corrected log-term keeps the value log mean e^t but its gradient is e^t / (n m).
    t = torch.tensor([0.3, -1.0, 2.0, 0.5], requires_grad=True)
    log_mean = torch.logsumexp(t, 0) - math.log(4)
    log_m = torch.tensor(1.7)
    term = _corrected_log_term(log_mean, log_m)
    torch.testing.assert_close(term, log_mean)
    term.backward()
    torch.testing.assert_close(t.grad, t.detach().exp() / (4 * log_m.exp()))


def test_moving_average_is_updated_in_training_mode_only():
    method = _toy_method(ma_rate=0.25)
    assert torch.isinf(method.log_moving_average)
    one_hot = method.draw_categories(8)
    codes = method.codes(8, one_hot).detach()

    def batch_log_mean(seed):
        torch.manual_seed(seed)
        shuffled = one_hot[torch.randperm(8)]
        with torch.no_grad():
            return torch.logsumexp(method.statistics(codes.flatten(1), shuffled), 0) - math.log(8)

    first, second = batch_log_mean(0), batch_log_mean(1)
    torch.manual_seed(0)
    method.mine_terms(codes, one_hot)
    torch.testing.assert_close(method.log_moving_average, first)  # initialised by a batch
    torch.manual_seed(1)
    method.mine_terms(codes, one_hot)
    expected = torch.logaddexp(math.log(0.75) + first, math.log(0.25) + second)
    torch.testing.assert_close(method.log_moving_average, expected)
    method.eval()
    method.mine_terms(codes, one_hot)
    torch.testing.assert_close(method.log_moving_average, expected)
    assert "log_moving_average" in method.state_dict()


def test_same_seed_same_result():
    assert_deterministic(_toy_method, lambda method: fit_toy(method, 10, lr=1e-3))


def test_structure_and_optimizer():
    method = _toy_method()
    assert [len(net) for net in method.generators.nets] == [1, 1]  # one linear map per layer
    assert method.mixer.net[0].in_features == SMALL["noise_dim"] + 10
    assert method.statistics.net[0].in_features == 2 * SMALL["code_dim"] + 10
    assert [m.out_features for m in method.statistics.net if hasattr(m, "out_features")] == \
        [400, 400, 1]
    one_hot = method.draw_categories(500)
    assert torch.equal(one_hot.sum(1), torch.ones(500))
    assert set(one_hot.argmax(1).tolist()) == set(range(10))
    groups = method.configure_optimizer().param_groups
    assert [g["lr"] for g in groups] == [1e-4, 5e-4, 1e-4]
    assert all(g["betas"] == (0.5, 0.9) for g in groups)
    in_groups = [id(p) for g in groups for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in method.parameters())


@pytest.mark.parametrize("kwargs, message", [
    ({"noise_dim": 0}, "noise_dim must be an integer >= 1"),
    ({"n_categories": 1}, "n_categories must be an integer >= 2"),
    ({"beta": -1.0}, "beta must be a finite number >= 0"),
    ({"beta": float("inf")}, "beta must be a finite number >= 0"),
    ({"ma_rate": 0.0}, r"ma_rate must be a finite number in \(0, 1\]"),
    ({"ma_rate": 1.5}, r"ma_rate must be a finite number in \(0, 1\]"),
    ({"stats_hidden": (400, 0)}, "every entry of stats_hidden must be an integer >= 1"),
    ({"train_samples": 1}, "train_samples must be >= 2"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _toy_method(**kwargs)


def test_bad_one_hot():
    with pytest.raises(ValueError, match=r"one_hot must have shape \[4, 10\]"):
        _toy_method().codes(4, torch.zeros(4, 3))
