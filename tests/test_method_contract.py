"""The contract every registry method keeps, checked on small synthetic tensors.

One suite parametrised over :data:`hypernets.methods.registry.METHODS` (in the style of
laplace-torch's tests over its flavours): shapes of ``sample_params`` and ``predict``, the
batched forward against a per-sample loop, determinism under a seed and under ``generator=``,
a state_dict round trip, the distinct-nets attribute, a finite loss with finite gradients, and
keyword-only options. Learning on real data is tested per method in its own test file.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from hypernets.likelihoods import Categorical
from hypernets.methods.registry import METHODS, make_method
from hypernets.targets import mlp
from hypernets.training import autocast

N_CLASSES = 3

#: Small options per method, so that every check runs in milliseconds.
SMALL = {
    "map": {},
    "mc_dropout": {},
    "ensemble": {"n_members": 3},
    "bbb": {},
    "bbh": {"hidden": (8, 16), "train_samples": 3},
    "bhn": {"n_couplings": 2, "coupling_hidden": 8},
    "hypergan": {"noise_dim": 8, "code_dim": 8, "hidden": 16, "train_samples": 4},
    "hypergan_mi": {"noise_dim": 8, "code_dim": 8, "hidden": 16, "stats_hidden": (16,),
                    "train_samples": 4},
    "mnf": {"flow_hidden": 8, "aux_flow_hidden": 8, "train_samples": 2},
    "apd": {"noise_dim": 4, "hidden": 8, "burn_in": 1, "thin": 1, "pool_size": 4, "gan_batch": 1},
}


def target():
    return mlp([4, 8, N_CLASSES], "relu", dropout=True, name="contract_mlp")


def inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(6, 4, generator=generator), torch.randint(N_CLASSES, (6,), generator=generator)


def build(name, seed=0, **extra):
    torch.manual_seed(seed)
    return make_method(name, target(), Categorical(), **SMALL[name], **extra)


def n_nets(method, wanted=3):
    return method.n_distinct_nets(wanted)


def test_every_registry_method_is_covered():
    assert set(SMALL) == set(METHODS)


@pytest.fixture(params=sorted(METHODS))
def name(request):
    return request.param


def test_sample_params_have_the_spec_with_a_leading_sample_dimension(name):
    method = build(name).eval()
    count = n_nets(method)
    params = method.sample_params(count)
    assert method.target.check_params(params) == count
    assert all(torch.isfinite(value).all() for value in params.values())


def test_predict_gives_probabilities_per_sample(name):
    method = build(name).eval()
    x, _ = inputs()
    count = n_nets(method)
    probs = method.predict(x, count)
    assert probs.shape == (count, len(x), N_CLASSES)
    torch.testing.assert_close(probs.sum(-1), torch.ones(count, len(x)))
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
        method.predict(x, 0)


def test_batched_forward_equals_a_loop_over_samples(name):
    method = build(name).eval()
    x, _ = inputs()
    with torch.no_grad():
        params = method.sample_params(n_nets(method))
        batched = method.target(params, x)
        for s in range(batched.shape[0]):
            single = method.target.forward_single({k: v[s] for k, v in params.items()}, x)
            torch.testing.assert_close(batched[s], single, rtol=1e-5, atol=1e-6)


def test_same_seed_same_method_and_samples(name):
    first, second = build(name, seed=3).eval(), build(name, seed=3).eval()
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=key)
    torch.manual_seed(1)
    a = first.sample_params(n_nets(first))
    torch.manual_seed(1)
    b = second.sample_params(n_nets(second))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_generator_fixes_the_initialisation_whatever_the_global_rng(name):
    first = build(name, seed=1, generator=torch.Generator().manual_seed(7))
    second = build(name, seed=2, generator=torch.Generator().manual_seed(7))
    other = build(name, seed=1, generator=torch.Generator().manual_seed(8))
    learnable = [key for key, _ in first.named_parameters()]
    states = [dict(m.named_parameters()) for m in (first, second, other)]
    assert all(torch.equal(states[0][key], states[1][key]) for key in learnable)
    assert any(not torch.equal(states[0][key], states[2][key]) for key in learnable)


def test_state_dict_round_trip_restores_the_distribution(name):
    x, y = inputs()
    trained = build(name, seed=0)
    optimizer = trained.configure_optimizer()
    loss, _ = trained.training_loss(x, y, n_train=60, epoch=0.0)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    restored = build(name, seed=5)
    restored.load_state_dict(trained.state_dict())
    trained.eval(), restored.eval()
    torch.manual_seed(2)
    expected = trained.predict(x, n_nets(trained))
    torch.manual_seed(2)
    torch.testing.assert_close(restored.predict(x, n_nets(restored)), expected, rtol=0, atol=0)


def test_distinct_nets_attribute_matches_the_samples(name):
    method = build(name).eval()
    bound = method.max_distinct_nets
    assert bound == {"map": 1, "ensemble": SMALL["ensemble"].get("n_members")}.get(name)
    assert method.n_distinct_nets(10) == (10 if bound is None else min(10, bound))
    flat = method.target.flatten(method.sample_params(method.n_distinct_nets(4)))
    distinct = len({tuple(row.tolist()) for row in flat})
    assert distinct == method.n_distinct_nets(4)


def test_training_loss_is_finite_with_finite_gradients(name):
    method = build(name).train()
    x, y = inputs()
    loss, logs = method.training_loss(x, y, n_train=60, epoch=0.5)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert "nll" in logs and all(value.dim() == 0 and torch.isfinite(value) for value in logs.values())
    loss.backward()
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_options_are_keyword_only_and_generator_is_accepted(name):
    cls = type(build(name))
    parameters = list(inspect.signature(cls.__init__).parameters.values())[3:]  # self, target, likelihood
    assert parameters and all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters)
    assert "generator" in {p.name for p in parameters}


#: How far a bf16 training loss may lie from the fp32 one (relative): bfloat16 keeps 8 bits of
#: mantissa, about 0.4 % per rounding, and the losses sum many of them.
BF16_LOSS_TOLERANCE = 0.05


def test_bf16_training_loss_is_close_to_fp32(name):
    x, y = inputs()
    method = build(name).train()
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(4)
        with autocast("cpu", precision):
            loss, logs = method.training_loss(x, y, n_train=60, epoch=0.5)
        assert loss.dtype == torch.float32 and all(v.dtype == torch.float32 for v in logs.values())
        losses[precision] = float(loss.detach())
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=BF16_LOSS_TOLERANCE)
