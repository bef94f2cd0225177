import math

import pytest
import torch

from hypernets.likelihoods import Categorical, Gaussian
from hypernets.methods import MAP
from hypernets.targets import get_target, mlp
from hypernets.training import autocast, fit, predict


def _toy(seed=0, n=20):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=gen) * 8 - 4
    return x, x**3 + 3 * torch.randn(n, 1, generator=gen)


def _map(seed=0):
    return MAP(get_target("toy_bbh"), Gaussian(3.0), generator=torch.Generator().manual_seed(seed))


def test_history_records_and_predict_shapes():
    x, y = _toy()
    method = _map()
    history = fit(method, x, y, steps=5, batch_size=8, progress=False,
                  evaluate=lambda m: {"train_rmse": float((m.predict(x, 1)[0] - y).pow(2).mean().sqrt())})
    assert [r["epoch"] for r in history] == [1, 2]  # 3 batches per epoch, the last epoch partial
    assert history[-1]["step"] == 5
    assert {"loss", "nll", "prior", "time_epoch_s", "time_total_s", "train_rmse"} <= set(history[0])
    assert predict(method, x, n_samples=4, batch_size=7).shape == (4, 20, 1)


def test_same_seed_same_numbers_and_other_seed_differs():
    x, y = _toy()
    runs = []
    for seed in (0, 0, 1):
        method = _map()
        runs.append(fit(method, x, y, epochs=3, batch_size=8, seed=seed, progress=False)[-1]["loss"])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path):
    x, y = _toy()
    straight = _map()
    fit(straight, x, y, epochs=4, batch_size=8, progress=False)
    interrupted = _map()
    fit(interrupted, x, y, epochs=2, batch_size=8, progress=False, checkpoint=tmp_path / "ck.pt")
    resumed = _map(seed=5)  # different init: everything must come from the checkpoint
    history = fit(resumed, x, y, epochs=4, batch_size=8, progress=False,
                  checkpoint=tmp_path / "ck.pt", resume=True)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_non_finite_loss_names_the_step():
    x, y = _toy()
    y[3] = float("nan")
    with pytest.raises(FloatingPointError, match=r"epoch 0, step 0"):
        fit(_map(), x, y, epochs=1, batch_size=20, progress=False)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of epochs or steps"),
    ({"epochs": 1, "steps": 1}, "exactly one of epochs or steps"),
    ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
    ({"epochs": 2.5}, "epochs must be an integer >= 1, got 2.5"),
    ({"epochs": True}, "epochs must be an integer >= 1, got True"),
    ({"steps": 0}, "steps must be an integer >= 1, got 0"),
    ({"steps": "3"}, "steps must be an integer >= 1, got '3'"),
    ({"epochs": 1, "batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"epochs": 1, "batch_size": True}, "batch_size must be an integer >= 1, got True"),
    ({"epochs": 1, "batch_size": 8.0}, "batch_size must be an integer >= 1, got 8.0"),
    ({"epochs": 1, "lr": "1e-3"}, r"lr must be a finite number\b.*, got '1e-3'"),
    ({"epochs": 1, "lr": 0}, r"lr must be a finite number\b.*, got 0"),
    ({"epochs": 1, "lr": -1e-3}, r"lr must be a finite number\b.*"),
    ({"epochs": 1, "lr": float("nan")}, r"lr must be a finite number\b.*"),
    ({"epochs": 1, "eval_every": 0}, "eval_every must be an integer >= 1, got 0"),
    ({"epochs": 1, "eval_every": -2}, "eval_every must be an integer >= 1, got -2"),
    ({"epochs": 1, "seed": 1.5}, "seed must be an integer, got 1.5"),
    ({"epochs": 1, "resume": True}, "resume=True needs a checkpoint"),
    ({"epochs": 1, "resume": "yes", "checkpoint": "ck.pt"}, "resume must be True or False"),
    ({"epochs": 1, "checkpoint": 3}, "checkpoint must be a path or None, got 3"),
    ({"epochs": 1, "transform": "crop"}, "transform must be callable"),
    ({"epochs": 1, "evaluate": {"rmse": 1.0}}, "evaluate must be callable"),
    ({"epochs": 1, "precision": "fp16"}, "precision must be 'fp32' or 'bf16', got 'fp16'"),
    ({"epochs": 1, "precision": "bf16", "device": "meta"}, "precision='bf16' runs on the CPU or CUDA"),
])
def test_bad_arguments(kwargs, message):
    x, y = _toy()
    method = _map()
    initial = [p.detach().clone() for p in method.parameters()]
    with pytest.raises(ValueError, match=message):
        fit(method, x, y, progress=False, **kwargs)
    for a, b in zip(initial, method.parameters()):
        assert torch.equal(a, b)  # refused before the first step


@pytest.mark.parametrize("make, message", [
    (lambda x, y: (x.numpy(), y), "x must be a torch.Tensor, got ndarray"),
    (lambda x, y: (x, y.tolist()), "y must be a torch.Tensor, got list"),
    (lambda x, y: (x[:10], y), "same length, got 10 and 20"),
    (lambda x, y: (x[:0], y[:0]), "training data is empty"),
    (lambda x, y: (x.long(), y), "x must be a floating-point tensor, got torch.int64"),
])
def test_bad_training_data(make, message):
    x, y = make(*_toy())
    with pytest.raises(ValueError, match=message):
        fit(_map(), x, y, epochs=1, batch_size=8, progress=False)


def _classifier(n_classes=3):
    return MAP(mlp([2, 8, n_classes]), Categorical(), generator=torch.Generator().manual_seed(0))


def _labels(n=40, n_classes=3):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 2, generator=gen), torch.randint(0, n_classes, (n,), generator=gen)


@pytest.mark.parametrize("bad, message", [
    (3, r"y must hold class indices in \[0, 2\] for a target with 3 outputs, got values "
        r"from 0 to 3"),
    (-1, r"y must hold class indices in \[0, 2\] .* got values from -1 to 2"),
    (-100, r"y must hold class indices in \[0, 2\] .*-100 is torch's ignore_index"),
])
def test_out_of_range_labels_are_refused_before_training(bad, message):
    x, y = _labels()
    y[-1] = bad
    method = _classifier()
    batches = []
    loss = method.training_loss
    method.training_loss = lambda xb, yb, **kwargs: batches.append(yb) or loss(xb, yb, **kwargs)
    with pytest.raises(ValueError, match=message):
        fit(method, x, y, epochs=1, batch_size=8, progress=False)
    assert batches == []  # the whole set is checked before the first batch


@pytest.mark.parametrize("convert, message", [
    (lambda y: y.float(),
     r"torch.int64 \(torch.long\), got torch.float32 \(integer class labels given as floats\?\)"),
    (lambda y: y.int(), r"torch.int64 \(torch.long\), got torch.int32; convert with y.long\(\)"),
    (lambda y: y.bool(), r"torch.int64 \(torch.long\), got torch.bool"),
    (lambda y: y[:, None], r"one class index per example \(shape \[40\]\)"),
])
def test_class_labels_of_the_wrong_type_are_refused(convert, message):
    x, y = _labels()
    with pytest.raises(ValueError, match=message):
        fit(_classifier(), x, convert(y), epochs=1, batch_size=8, progress=False)


@pytest.mark.parametrize("bad", [-100, -1, 4])
def test_categorical_nll_refuses_labels_out_of_range(bad):
    outputs = torch.randn(2, 5, 4)
    y = torch.tensor([0, 1, 2, 3, 0])
    y[2] = bad
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 3\]"):
        Categorical().nll(outputs, y)
    with pytest.raises(ValueError, match=r"torch.int64"):
        Categorical().nll(outputs, y.abs().clamp(max=3).float())


def test_categorical_nll_is_the_cross_entropy_of_every_sample():
    outputs = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 3])
    expected = torch.stack([torch.nn.functional.cross_entropy(o, y, reduction="none")
                            for o in outputs])
    torch.testing.assert_close(Categorical().nll(outputs, y), expected, rtol=0, atol=0)


@pytest.mark.parametrize("noise_std", [0, -1.0, float("inf"), float("nan"), "3", True])
def test_gaussian_refuses_a_bad_noise_std(noise_std):
    with pytest.raises(ValueError, match=r"noise_std must be a finite number\b.*, got"):
        Gaussian(noise_std)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_samples": 0}, "n_samples must be an integer >= 1, got 0"),
    ({"n_samples": 2.0}, "n_samples must be an integer >= 1, got 2.0"),
    ({"n_samples": True}, "n_samples must be an integer >= 1, got True"),
    ({"n_samples": 2, "batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"n_samples": 2, "batch_size": -5}, "batch_size must be an integer >= 1, got -5"),
    ({"n_samples": 2, "batch_size": 7.5}, "batch_size must be an integer >= 1, got 7.5"),
])
def test_predict_bad_arguments(kwargs, message):
    x, _ = _toy()
    with pytest.raises(ValueError, match=message):
        predict(_map(), x, **kwargs)


def test_predict_bad_inputs_and_empty_input():
    x, _ = _toy()
    with pytest.raises(ValueError, match="x must be a floating-point tensor, got torch.int64"):
        predict(_map(), x.long(), 2)
    with pytest.raises(ValueError, match="x must be a torch.Tensor, got ndarray"):
        predict(_map(), x.numpy(), 2)
    assert predict(_map(), x[:0], 3).shape == (3, 0, 1)


def test_map_learns_a_separable_classification_problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).long()
    method = MAP(mlp([2, 16, 2]), Categorical(), generator=gen)
    fit(method, x, y, epochs=30, batch_size=50, lr=1e-2, progress=False)
    accuracy = (predict(method, x, 1).mean(0).argmax(-1) == y).float().mean()
    assert accuracy > 0.95


def test_bf16_on_the_cpu_keeps_float32_parameters_losses_and_predictions():
    x, y = _labels(n=64)
    method = _classifier()
    history = fit(method, x, y, epochs=3, batch_size=16, progress=False, precision="bf16")
    assert all(p.dtype == torch.float32 for p in method.parameters())
    assert all(math.isfinite(record["loss"]) for record in history)
    assert history[-1]["loss"] < history[0]["loss"]
    probs = predict(method, x, 1, precision="bf16")
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs, predict(method, x, 1), rtol=0.05, atol=0.02)


def test_bf16_autocast_runs_the_matrix_work_in_bf16_and_the_loss_in_float32():
    x, y = _labels(n=8)
    method = _classifier()
    with autocast("cpu", "bf16"):
        outputs = method.target(method.sample_params(1), x)
        nll = method.likelihood.nll(outputs, y)
    assert outputs.dtype == torch.bfloat16 and nll.dtype == torch.float32
    with autocast("cpu", "fp32"):
        assert method.target(method.sample_params(1), x).dtype == torch.float32


def test_likelihoods_raise_low_precision_to_float32_and_keep_float64():
    y_class, y_value = torch.tensor([0, 2]), torch.zeros(2, 1)
    for dtype, expected in ((torch.bfloat16, torch.float32), (torch.float32, torch.float32),
                            (torch.float64, torch.float64)):
        logits = torch.randn(3, 2, 3).to(dtype)
        assert Categorical().nll(logits, y_class).dtype == expected
        assert Categorical().predictive(logits).dtype == expected
        outputs = torch.randn(3, 2, 1).to(dtype)
        assert Gaussian(1.0).nll(outputs, y_value.to(expected)).dtype == expected
        assert Gaussian(1.0).predictive(outputs).dtype == expected
