import pytest
import torch

from hypernets.likelihoods import Categorical, Gaussian
from hypernets.methods import MAP
from hypernets.targets import get_target, mlp
from hypernets.training import fit, predict


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
    ({"epochs": 0}, "epochs/steps must be >= 1"),
    ({"epochs": 1, "batch_size": 0}, "batch_size"),
    ({"epochs": 1, "resume": True}, "resume=True needs a checkpoint"),
    ({"epochs": 1, "precision": "fp16"}, "precision must be"),
])
def test_bad_arguments(kwargs, message):
    x, y = _toy()
    with pytest.raises(ValueError, match=message):
        fit(_map(), x, y, progress=False, **kwargs)


def test_map_learns_a_separable_classification_problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).long()
    method = MAP(mlp([2, 16, 2]), Categorical(), generator=gen)
    fit(method, x, y, epochs=30, batch_size=50, lr=1e-2, progress=False)
    accuracy = (predict(method, x, 1).mean(0).argmax(-1) == y).float().mean()
    assert accuracy > 0.95
