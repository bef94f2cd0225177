"""NUTS reference posterior: exactness on Bayesian linear regression, shapes, seeds, diagnostics."""

import math

import pytest
import torch

from hypernets.likelihoods import Gaussian
from hypernets.reference_posterior import ReferencePosterior, log_joint, nuts_posterior
from hypernets.targets import mlp

NOISE_STD = 0.5
PRIOR_STD = 1.0


def linear_problem(n_points=30, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_points, 2, generator=generator)
    y = x @ torch.tensor([[1.5], [-0.5]]) + 0.3 + NOISE_STD * torch.randn(n_points, 1, generator=generator)
    return mlp([2, 1], name="linear"), x, y


def exact_posterior(x, y):
    """Mean and covariance of [weight_1, weight_2, bias] under N(0, PRIOR_STD^2 I) and Gaussian noise."""
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    precision = design.T @ design / NOISE_STD**2 + torch.eye(3, dtype=torch.float64) / PRIOR_STD**2
    covariance = torch.linalg.inv(precision)
    mean = covariance @ design.T @ y.double() / NOISE_STD**2
    return mean.flatten(), covariance


@pytest.fixture(scope="module")
def linear_posterior():
    target, x, y = linear_problem()
    posterior = nuts_posterior(target, Gaussian(NOISE_STD), x, y, prior_std=PRIOR_STD, num_chains=4,
                               num_samples=300, warmup_steps=200, seed=0)
    return target, x, y, posterior


def test_matches_the_closed_form_posterior_of_bayesian_linear_regression(linear_posterior):
    target, x, y, posterior = linear_posterior
    mean, covariance = exact_posterior(x, y)
    draws = target.flatten(posterior.params).double()  # spec order: weight (1 x 2), then bias
    exact_std = covariance.diagonal().sqrt()
    ess = torch.tensor(posterior.convergence().loc["weights", "min ess"])
    # Means within 4 Monte Carlo standard errors; stds within 15%.
    assert ((draws.mean(0) - mean).abs() < 4 * exact_std / ess.sqrt()).all(), (draws.mean(0), mean)
    assert ((draws.std(0) / exact_std - 1).abs() < 0.15).all(), (draws.std(0), exact_std)
    # The correlation between the two weights is part of the exact posterior too.
    exact_corr = covariance[0, 1] / (exact_std[0] * exact_std[1])
    sample_corr = torch.corrcoef(draws.T)[0, 1]
    assert abs(sample_corr - exact_corr) < 0.1


def test_chains_converge_on_the_linear_problem(linear_posterior):
    *_, posterior = linear_posterior
    table = posterior.convergence()
    assert table.loc["weights", "max r_hat"] < 1.05
    assert table.loc["weights", "min ess"] > 200
    assert table.loc["weights", "draws"] == 4 * 300
    assert posterior.divergences == 0
    assert posterior.step_size > 0


def test_samples_have_a_leading_sample_dimension_and_run_through_the_target(linear_posterior):
    target, x, _, posterior = linear_posterior
    assert isinstance(posterior, ReferencePosterior)
    assert target.check_params(posterior.params) == 4 * 300
    assert posterior.params["fc1.weight"].dtype == torch.get_default_dtype()
    assert target(posterior.params, x).shape == (1200, len(x), 1)
    per_chain = posterior.by_chain(target.flatten(posterior.params))
    assert per_chain.shape == (4, 300, 3)
    assert torch.equal(per_chain[1, 0], target.flatten(posterior.params)[300])


def test_chains_start_from_the_given_weights_and_seed_reproduces_the_run():
    target, x, y = linear_problem(n_points=10)
    start = target.init(2, torch.Generator().manual_seed(5))

    def run(seed):
        return nuts_posterior(target, Gaussian(NOISE_STD), x, y, num_chains=2, num_samples=5, warmup_steps=5,
                              init_params=start, seed=seed)

    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first = run(seed=1)
    after = torch.rand(3)
    assert torch.equal(before, after), "nuts_posterior must not consume the caller's random state"
    second = run(seed=1)
    for name in first.params:
        assert torch.equal(first.params[name], second.params[name])
    third = run(seed=2)
    assert not torch.equal(first.params["fc1.weight"], third.params["fc1.weight"])


def test_log_joint_is_log_likelihood_plus_gaussian_log_prior_up_to_a_constant():
    target, x, y = linear_problem(n_points=8)
    params = target.init(3, torch.Generator().manual_seed(0))
    value = log_joint(target, Gaussian(NOISE_STD), params, x, y, prior_std=2.0)
    flat = target.flatten(params)
    mean = target(params, x)[..., 0]
    expected = (torch.distributions.Normal(mean, NOISE_STD).log_prob(y[:, 0]).sum(1)
                + torch.distributions.Normal(0.0, 2.0).log_prob(flat).sum(1))
    # The Gaussian prior's normaliser is the constant log_joint leaves out.
    prior_normaliser = flat.shape[1] * (-math.log(2.0) - 0.5 * math.log(2 * math.pi))
    assert torch.allclose(value, expected - prior_normaliser, atol=1e-4)


def test_convergence_of_other_quantities_and_bad_shapes(linear_posterior):
    target, x, _, posterior = linear_posterior
    outputs = target(posterior.params, x)[..., 0]
    table = posterior.convergence({"f(x)": outputs})
    assert list(table.index) == ["f(x)"]
    assert table.loc["f(x)", "components"] == len(x)
    with pytest.raises(ValueError, match="C \\* N = 1200"):
        posterior.by_chain(outputs[:10])


@pytest.mark.parametrize("kwargs, message", [
    ({"num_chains": 0}, "num_chains"),
    ({"num_samples": 2.5}, "num_samples"),
    ({"num_samples": 3}, "num_samples must be an integer >= 4"),
    ({"warmup_steps": -1}, "warmup_steps"),
    ({"prior_std": 0.0}, "prior_std"),
    ({"target_accept_prob": 1.0}, "target_accept_prob"),
    ({"num_chains": 3, "init_params": "two"}, "init_params"),
])
def test_bad_arguments_are_named(kwargs, message):
    target, x, y = linear_problem(n_points=5)
    if kwargs.get("init_params") == "two":
        kwargs["init_params"] = target.init(2)
    with pytest.raises(ValueError, match=message):
        nuts_posterior(target, Gaussian(NOISE_STD), x, y, **kwargs)


def test_sampling_leaves_the_thread_count_as_it_was():
    target, x, y = linear_problem(n_points=5)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        nuts_posterior(target, Gaussian(NOISE_STD), x, y, num_chains=1, num_samples=4, warmup_steps=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
