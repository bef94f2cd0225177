"""FGSM on the sample-averaged predictive: exactness on tiny nets, budget, range, effect."""

import functools
import math

import pandas as pd
import pytest
import torch
from method_checks import mnist_subset

from hypernets import data
from hypernets.adversarial import ATTACKS, attack_curve, bim, fgsm, mean_predictive_nll
from hypernets.data import PixelRange
from hypernets.likelihoods import Categorical, Gaussian
from hypernets.methods import MAP
from hypernets.targets import Flatten, TargetNet, mlp
from hypernets.training import fit

MNIST_RANGE = PixelRange((data.MNIST_MEAN,), (data.MNIST_STD,))
CIFAR_RANGE = PixelRange(data.CIFAR10_MEAN, data.CIFAR10_STD)


def flat_classifier(shape, hidden, n_classes) -> TargetNet:
    """Flatten then an MLP: a tiny image classifier."""
    net = mlp([math.prod(shape), *hidden, n_classes], "relu")
    return TargetNet("tiny", [("flatten", Flatten())] + net.layers, shape, n_classes)


def normalised_images(n, shape, pixel_range, seed=0):
    """Random images with pixels k/255 (as the loaders make them), normalised like the loaders."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, *shape), generator=generator).to(torch.float32).div_(255.0)
    mean = torch.tensor(pixel_range.mean).view(1, -1, 1, 1)
    std = torch.tensor(pixel_range.std).view(1, -1, 1, 1)
    return pixels.sub_(mean).div_(std)


def tiny_setup(n_samples=3, seed=0):
    target = flat_classifier((1, 4, 4), [8], 3)
    params = target.init(n_samples, torch.Generator().manual_seed(seed))
    x = normalised_images(12, (1, 4, 4), MNIST_RANGE, seed)
    y = torch.arange(12) % 3
    return target, params, x, y


def test_bounds_are_the_normalised_images_of_black_and_white():
    x = CIFAR_RANGE.bounds(torch.zeros(1))
    low, high = x
    assert low.shape == high.shape == (3, 1, 1)
    for channel, (mean, std) in enumerate(zip(data.CIFAR10_MEAN, data.CIFAR10_STD)):
        assert low[channel].item() == pytest.approx(-mean / std, rel=1e-6)
        assert high[channel].item() == pytest.approx((1 - mean) / std, rel=1e-6)
    # The loaders' own arithmetic puts pixel 0 and 255 exactly on the bounds.
    clean = normalised_images(200, (3, 2, 2), CIFAR_RANGE)
    assert (clean >= low).all() and (clean <= high).all()
    assert torch.equal(clean.amin(dim=(0, 2, 3)), low.flatten())


def test_pixel_range_rejects_bad_statistics():
    with pytest.raises(ValueError, match="one value per channel"):
        PixelRange((0.5, 0.5), (0.2,))
    with pytest.raises(ValueError, match="std"):
        PixelRange((0.5,), (0.0,))


def test_mean_predictive_nll_is_the_nll_of_the_averaged_softmax():
    target, params, x, y = tiny_setup()
    probs = torch.softmax(target(params, x), -1).mean(0)
    expected = -probs[torch.arange(len(y)), y].log()
    torch.testing.assert_close(mean_predictive_nll(target, params, x, y), expected)


def test_fgsm_steps_along_the_sign_of_the_averaged_predictive_gradient():
    target, params, x, y = tiny_setup()
    inputs = x.clone().requires_grad_(True)
    probs = torch.softmax(target(params, inputs), -1).mean(0)
    (-probs[torch.arange(len(y)), y].log()).sum().backward()
    epsilon = 0.05
    adversarial = fgsm(target, params, x, y, epsilon, MNIST_RANGE)
    low, high = MNIST_RANGE.bounds(x)
    expected = (x + epsilon / data.MNIST_STD * inputs.grad.sign()).clamp(low.item(), high.item())
    torch.testing.assert_close(adversarial, expected)
    # The single-net gradients disagree with the averaged one somewhere: S really is averaged.
    first_net = {name: value[:1] for name, value in params.items()}
    assert not torch.equal(fgsm(target, first_net, x, y, epsilon, MNIST_RANGE), adversarial)


def test_fgsm_with_zero_budget_returns_the_input_unchanged():
    target, params, x, y = tiny_setup()
    assert torch.equal(fgsm(target, params, x, y, 0.0, MNIST_RANGE), x)


@pytest.mark.parametrize("epsilon", [0.01, 0.1, 0.4])
def test_fgsm_stays_within_budget_and_valid_pixels(epsilon):
    target = flat_classifier((3, 4, 4), [8], 5)
    params = target.init(4, torch.Generator().manual_seed(1))
    x = normalised_images(50, (3, 4, 4), CIFAR_RANGE, seed=1)
    y = torch.arange(50) % 5
    adversarial = fgsm(target, params, x, y, epsilon, CIFAR_RANGE)
    low, high = CIFAR_RANGE.bounds(x)
    assert (adversarial >= low).all() and (adversarial <= high).all()
    change = (CIFAR_RANGE.to_pixels(adversarial) - CIFAR_RANGE.to_pixels(x)).abs()
    assert change.max() <= epsilon + 1e-5
    # Unclipped pixels with a non-zero gradient move by the full budget.
    pixels = CIFAR_RANGE.to_pixels(adversarial)
    interior = (pixels > 1e-4) & (pixels < 1 - 1e-4)
    assert interior.float().mean() > 0.3
    torch.testing.assert_close(change[interior], torch.full_like(change[interior], epsilon),
                               atol=1e-5, rtol=0)
    pixels_in = CIFAR_RANGE.to_pixels(adversarial)
    assert pixels_in.min() >= -1e-5 and pixels_in.max() <= 1 + 1e-5


def test_fgsm_gives_weights_no_gradient_and_checks_its_inputs():
    target, params, x, y = tiny_setup()
    params = {name: value.requires_grad_(True) for name, value in params.items()}
    fgsm(target, params, x, y, 0.1, MNIST_RANGE)
    assert all(value.grad is None for value in params.values())
    with pytest.raises(ValueError, match="epsilon"):
        fgsm(target, params, x, y, -0.1, MNIST_RANGE)
    with pytest.raises(ValueError, match="channels"):
        fgsm(target, params, x, y, 0.1, CIFAR_RANGE)


@functools.lru_cache(maxsize=1)
def trained_linear_mnist():
    """A softmax regression on 2,000 MNIST digits (a few CPU seconds), and 500 test digits."""
    torch.manual_seed(0)
    target = flat_classifier((1, 28, 28), [], 10)
    method = MAP(target, Categorical(), generator=torch.Generator().manual_seed(0))
    x_train, y_train, x_test, y_test = mnist_subset()
    fit(method, x_train, y_train, epochs=3, batch_size=64, progress=False, seed=0)
    return method, x_test[:500], y_test[:500]


def test_attack_curve_accuracy_falls_with_the_budget():
    method, x, y = trained_linear_mnist()
    curve = attack_curve(method, x, y, [0.0, 0.05, 0.1, 0.2], n_samples=1,
                         pixel_range=MNIST_RANGE, batch_size=200)
    assert list(curve.columns) == ["epsilon", "accuracy", "entropy", "entropy_auc"]
    accuracy = curve["accuracy"].tolist()
    assert accuracy[0] > 0.8
    assert accuracy[0] > accuracy[1] > accuracy[2] > accuracy[3]
    assert accuracy[3] < 0.2
    assert ((curve["entropy_auc"] >= 0) & (curve["entropy_auc"] <= 1)).all()


def test_attack_curve_at_zero_budget_is_the_clean_evaluation():
    method, x, y = trained_linear_mnist()
    curve = attack_curve(method, x, y, [0.0], n_samples=1, pixel_range=MNIST_RANGE)
    with torch.no_grad():
        probs = method.predict(x, 1)
    assert curve["accuracy"].item() == float((probs.mean(0).argmax(-1) == y).double().mean())


def test_attack_curve_is_seeded_and_leaves_the_global_rng_alone():
    target = flat_classifier((1, 4, 4), [8], 3)
    from hypernets.methods import BayesByBackprop

    method = BayesByBackprop(target, Categorical(), init_std=0.3,
                             generator=torch.Generator().manual_seed(0))
    _, _, x, y = tiny_setup()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = attack_curve(method, x, y, [0.0, 0.2], n_samples=4, pixel_range=MNIST_RANGE, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    second = attack_curve(method, x, y, [0.0, 0.2], n_samples=4, pixel_range=MNIST_RANGE, seed=5)
    pd.testing.assert_frame_equal(first, second)
    other = attack_curve(method, x, y, [0.0, 0.2], n_samples=4, pixel_range=MNIST_RANGE, seed=6)
    assert not first.equals(other)


def test_attack_curve_rejects_regression_and_bad_arguments():
    regression = MAP(mlp([1, 4, 1]), Gaussian(1.0))
    with pytest.raises(ValueError, match="classifier"):
        attack_curve(regression, torch.zeros(2, 1, 1, 1), torch.zeros(2, dtype=torch.long), [0.1],
                     n_samples=1, pixel_range=MNIST_RANGE)
    target, _, x, y = tiny_setup()
    method = MAP(target, Categorical())
    with pytest.raises(ValueError, match="n_samples"):
        attack_curve(method, x, y, [0.1], n_samples=0, pixel_range=MNIST_RANGE)
    with pytest.raises(ValueError, match="epsilon"):
        attack_curve(method, x, y, [1.5], n_samples=1, pixel_range=MNIST_RANGE)
    with pytest.raises(ValueError, match="y must have shape"):
        attack_curve(method, x, y[:3], [0.1], n_samples=1, pixel_range=MNIST_RANGE)


@pytest.mark.parametrize("epsilon", [0.05, 0.3])
def test_bim_stays_within_budget_and_beats_one_step(epsilon):
    method, x, y = trained_linear_mnist()
    params = method.sample_params(1)
    x, y = x[:200], y[:200]
    iterative = bim(method.target, params, x, y, epsilon, MNIST_RANGE)
    low, high = MNIST_RANGE.bounds(x)
    assert (iterative >= low - 1e-6).all() and (iterative <= high + 1e-6).all()
    change = (MNIST_RANGE.to_pixels(iterative) - MNIST_RANGE.to_pixels(x)).abs()
    assert change.max() <= epsilon + 1e-5
    one_step = fgsm(method.target, params, x, y, epsilon, MNIST_RANGE)

    def loss(images):
        return mean_predictive_nll(method.target, params, images, y).mean()

    # Ten projected steps climb the same loss at least as high as FGSM's single one.
    assert loss(iterative) >= loss(one_step) - 1e-4 and loss(iterative) > loss(x)
    assert torch.equal(bim(method.target, params, x, y, 0.0, MNIST_RANGE), x)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        bim(method.target, params, x, y, 0.1, MNIST_RANGE, steps=0)
    assert set(ATTACKS) == {"fgsm", "bim"}
