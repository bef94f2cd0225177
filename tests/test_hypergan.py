import math

import pytest
import torch
import torch.nn.functional as F
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
from hypernets.methods import HyperGAN
from hypernets.methods.hypergan_blocks import init_scales
from hypernets.targets import Flatten, Layer, TargetNet, get_target

# Paper widths (256 / 128 / 512) cost seconds per step on a CPU; the tests use narrow ones.
SMALL = dict(noise_dim=32, code_dim=16, hidden=64)


def _toy_method(**kwargs):
    return HyperGAN(get_target("toy_bbh"), Gaussian(3.0), **{**SMALL, **kwargs})


@pytest.fixture(scope="module")
def toy_model():
    torch.manual_seed(0)
    method = _toy_method()
    history = fit_toy(method, 500, lr=1e-3)
    return method, history


def test_learns_the_toy_with_growing_uncertainty(toy_model):
    method, history = toy_model
    assert {"nll", "adversarial", "discriminator"} <= set(history[-1])
    assert toy_rmse(method) < TOY_RMSE_BOUND
    assert toy_std_ratio(method) >= 2.0


def test_mnist_subset_accuracy():
    torch.manual_seed(0)
    method = HyperGAN(mnist_tiny_conv(), Categorical(), **SMALL, train_samples=4)
    fit_mnist(method, epochs=8, batch_size=100, lr=1e-3)
    assert mnist_accuracy(method) > 0.90


def test_eval_mode_samples_are_diverse_and_match_training_mode(toy_model):
    method, _ = toy_model
    method.eval()
    eval_diversity = sample_diversity(method)
    method.train()
    train_diversity = sample_diversity(method)
    method.eval()
    assert eval_diversity > 0.01
    # Eval mode uses BatchNorm's running averages: the same distribution as in training.
    assert 0.5 < eval_diversity / train_diversity < 2.0
    with torch.no_grad():
        single = method.sample_params(1)  # no batch statistics needed in eval mode
    assert get_target("toy_bbh").check_params(single) == 1


def test_training_mode_needs_two_samples():
    method = _toy_method()
    with pytest.raises(ValueError, match="at least 2 samples"):
        method.sample_params(1)


def test_task_loss_is_the_mean_of_the_sampled_nets_losses():
    method = _toy_method(use_discriminator=False)
    x, y = torch.randn(5, 1), torch.randn(5, 1)
    torch.manual_seed(3)
    loss, logs = method.training_loss(x, y, n_train=5, epoch=0.0)
    torch.manual_seed(3)
    params = method.sample_params(method.train_samples)
    per_net = [method.likelihood.nll(method.target.forward_single(
        {n: p[s] for n, p in params.items()}, x).unsqueeze(0), y).mean()
        for s in range(method.train_samples)]
    torch.testing.assert_close(loss, torch.stack(per_net).mean())
    assert set(logs) == {"nll"}


def test_adversarial_term_pulls_codes_towards_what_d_calls_real():
    method = _toy_method()
    codes = method.codes(16).detach().requires_grad_()
    mixer_term, _ = method.adversarial_terms(codes)
    logits = method.discriminator(codes.flatten(1))
    # Non-saturating generator loss: -log sigmoid(D(codes)), minimised by raising D's logits.
    torch.testing.assert_close(mixer_term, F.softplus(-logits).mean())
    mixer_term.backward()
    with torch.no_grad():
        moved = method.discriminator((codes - 0.1 * codes.grad).flatten(1))
    assert moved.mean() > logits.mean()


def test_gradients_reach_each_player_only_from_its_own_term():
    method = _toy_method()
    x, y = torch.randn(8, 1), torch.randn(8, 1)

    def grads(module):
        return [p.grad for p in module.parameters()]

    codes = method.codes(8)
    mixer_term, critic_term = method.adversarial_terms(codes)
    mixer_term.backward(retain_graph=True)
    assert all(g is None for g in grads(method.discriminator))
    assert all(g is not None for g in grads(method.mixer))
    method.zero_grad(set_to_none=True)
    critic_term.backward()
    assert all(g is None for g in grads(method.mixer) + grads(method.generators))
    assert all(g is not None and g.abs().sum() > 0 for g in grads(method.discriminator))

    # The full loss: D's gradient is that of its own term, the mixer's that of task + beta * adv.
    method.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    loss, _ = method.training_loss(x, y, n_train=8, epoch=0.0)
    loss.backward()
    full = {n: p.grad.clone() for n, p in method.named_parameters()}
    method.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    codes = method.codes(method.train_samples)
    nll = method.expected_nll(method.generators(codes), x, y)
    mixer_term, critic_term = method.adversarial_terms(codes)
    (nll + method.beta * mixer_term).backward(retain_graph=True)
    for name, p in method.named_parameters():
        if not name.startswith("discriminator"):
            torch.testing.assert_close(full[name], p.grad)
    method.zero_grad(set_to_none=True)
    critic_term.backward()
    for name, p in method.discriminator.named_parameters():
        torch.testing.assert_close(full[f"discriminator.{name}"], p.grad)


def test_no_discriminator_ablation():
    method = _toy_method(use_discriminator=False)
    assert method.discriminator is None and method.beta == 0.0
    assert not any(n.startswith("discriminator") for n, _ in method.named_parameters())
    history = fit_toy(method, 3, lr=1e-3)
    assert "adversarial" not in history[-1] and history[-1]["loss"] == history[-1]["nll"]
    with pytest.raises(ValueError, match="no discriminator"):
        method.adversarial_terms(method.codes(4))


def test_no_mixer_ablation_feeds_each_generator_independent_noise():
    method = _toy_method(use_mixer=False)
    assert method.mixer is None and method.discriminator is None
    assert not any(n.startswith(("mixer", "discriminator")) for n, _ in method.named_parameters())
    torch.manual_seed(0)
    codes = method.codes(4000)  # [S, layers, code_dim]: plain N(0, I) noise
    assert codes.shape == (4000, 2, SMALL["code_dim"])
    flat = codes.flatten(1)
    correlation = torch.corrcoef(flat.T)
    off_diagonal = correlation - torch.diag(torch.diag(correlation))
    assert off_diagonal.abs().max() < 0.08  # across layers too: independent inputs
    torch.testing.assert_close(flat.std(0), torch.ones(flat.shape[1]), atol=0.05, rtol=0)
    assert fit_toy(method, 3, lr=1e-3)[-1]["step"] == 3
    with pytest.raises(ValueError, match="needs a mixer"):
        method.pretrain_mixer(1)


def test_mixer_pretraining_matches_mean_and_covariance():
    torch.manual_seed(0)
    method = _toy_method()

    def deviation():
        with torch.no_grad():
            latent = method.codes(4000).flatten(1)
        identity = torch.eye(latent.shape[1])
        return (float(latent.mean(0).pow(2).sum()),
                float((torch.cov(latent.T) - identity).pow(2).sum() / latent.shape[1]))

    mean_before, cov_before = deviation()
    losses = method.pretrain_mixer(50, lr=1e-3)
    mean_after, cov_after = deviation()
    assert len(losses) == 50 and losses[-1] < 0.5 * losses[0]
    assert mean_before > 1.0 and mean_after < 0.1
    assert cov_before > 0.5 and cov_after < 0.25  # squared deviation per dimension
    assert method.training  # the mode it was in


def test_same_seed_same_result():
    def train(method):
        method.pretrain_mixer(3, lr=1e-3)
        return fit_toy(method, 10, lr=1e-3)

    assert_deterministic(_toy_method, train)


def test_generated_weights_start_at_the_default_initialisation_scale():
    torch.manual_seed(0)
    target = get_target("mnist_mlp")
    method = HyperGAN(target, Categorical(), noise_dim=8, code_dim=8, hidden=16, train_samples=4)
    method.eval()
    with torch.no_grad():
        params = method.sample_params(4)
    assert target.check_params(params) == 4
    for name, shape in target.param_shapes.items():
        if len(shape) == 2:
            bound = 1 / math.sqrt(shape[1])  # PyTorch's U(-bound, bound) init
            assert 0.02 * bound < params[name].std() < bound, name


def test_init_scales():
    scales = init_scales(get_target("cifar_resnet"))
    assert scales["stem.weight"] == (0.0, 1 / math.sqrt(27))
    assert scales["stage1.unit0.norm1.weight"] == (1.0, 1.0)
    assert scales["stage1.unit0.norm1.bias"] == (0.0, 1.0)
    assert scales["fc.bias"] == (0.0, 1 / math.sqrt(64))
    assert set(scales) == set(get_target("cifar_resnet").param_shapes)

    class Scale(Layer):
        def param_shapes(self):
            return {"gain": (1,)}

    with pytest.raises(ValueError, match="'odd' of type Scale must give an initialisation range"):
        TargetNet("t", [("flat", Flatten()), ("odd", Scale())], (2,), 2)


def test_optimizer_uses_the_papers_rates_and_betas():
    method = _toy_method()
    groups = method.configure_optimizer().param_groups
    assert [g["lr"] for g in groups] == [1e-4, 5e-4, 1e-4]
    assert all(g["betas"] == (0.5, 0.9) for g in groups)
    assert [g["lr"] for g in method.configure_optimizer(2e-3).param_groups] == [2e-3, 1e-2, 2e-3]
    in_groups = [id(p) for g in groups for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in method.parameters())


@pytest.mark.parametrize("kwargs, message", [
    ({"noise_dim": 0}, "noise_dim must be an integer >= 1"),
    ({"code_dim": 2.5}, "code_dim must be an integer >= 1"),
    ({"hidden": -1}, "hidden must be an integer >= 1"),
    ({"beta": 0.0}, "beta must be a finite number > 0"),
    ({"beta": float("nan")}, "beta must be a finite number > 0"),
    ({"train_samples": 1}, "train_samples must be >= 2 with a mixer"),
    ({"use_mixer": False, "use_discriminator": True}, "use_discriminator=True needs use_mixer"),
    ({"use_discriminator": False, "beta": 2.0}, "use_discriminator=False removes"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _toy_method(**kwargs)


def test_bad_sampling_arguments():
    method = _toy_method()
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
        method.codes(0)
    with pytest.raises(ValueError, match="n_samples must be >= 2"):
        method.pretrain_mixer(1, n_samples=1)
