"""The CIFAR-5 chapter's library: data, augmentation, training with it, evaluation, figures."""

import functools
import math

import matplotlib
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")

from hypernets import data as datasets  # noqa: E402
from hypernets import evaluation, runs  # noqa: E402
from hypernets.data import PixelRange, load_cifar5_splits  # noqa: E402
from hypernets.experiments import cifar  # noqa: E402
from hypernets.targets import cifar_resnet, get_target  # noqa: E402

CIFAR_RANGE = PixelRange(datasets.CIFAR10_MEAN, datasets.CIFAR10_STD)


@functools.lru_cache(maxsize=1)
def small_data():
    return load_cifar5_splits(n_train=60, n_test=40, seed=0)


def tiny_resnet():
    """The CIFAR-5 ResNet's design at 4 filters and one unit per stage: trains in a blink."""
    return cifar_resnet(filters=(4, 4, 4, 4), units_per_stage=1, groups=2)


@functools.lru_cache(maxsize=1)
def trained_runs():
    data = small_data()
    return runs.train_methods(["map", "ensemble", "bbb"], tiny_resnet(), data.train.x,
                               data.train.y, epochs=2, batch_size=20,
                               transform=cifar.RandomCropFlip(), seed=0,
                               options={"ensemble": {"n_members": 2}})


# -- data --------------------------------------------------------------------------------------


def test_data_note_flags_the_lossy_copy():
    data = small_data()
    note = cifar.data_note(data)
    if data.lossy:
        assert note.startswith("**Deviation from the paper:**") and "JPEG" in note
    else:
        assert "official" in note and "Deviation" not in note


# -- augmentation -------------------------------------------------------------------------------


def position_images(batch=64, size=32):
    """Images whose every pixel holds its position, row * size + col, in all three channels."""
    grid = torch.arange(size * size, dtype=torch.float32).reshape(1, 1, size, size)
    return grid.expand(batch, 3, size, size).clone()


def test_random_crop_flip_takes_padded_windows_and_flips_half():
    x = position_images()
    out = cifar.RandomCropFlip()(x, torch.Generator().manual_seed(0))
    assert out.shape == (64, 3, cifar.CROP_SIZE, cifar.CROP_SIZE)
    black, _ = CIFAR_RANGE.bounds(out)
    flipped = 0
    for image in out:
        for channel in range(3):
            tile = image[channel]
            is_pad = tile == black[channel, 0, 0]
            inside = tile[~is_pad]
            # What is not padding is one contiguous window of the original: rows step by 32.
            rows = (inside // 32).reshape(-1)
            assert (rows.max() - rows.min()) <= cifar.CROP_SIZE - 1
        body = image[0]
        interior = body[body != black[0, 0, 0]].reshape(-1)
        assert len(interior) >= (cifar.CROP_SIZE - 2 * cifar.PADDING) ** 2
        # Horizontal neighbours in the crop differ by +1 (kept) or -1 (flipped) inside the image.
        row = body[cifar.CROP_SIZE // 2]
        row = row[row != black[0, 0, 0]]
        steps = set((row[1:] - row[:-1]).tolist())
        assert steps in ({1.0}, {-1.0})
        flipped += steps == {-1.0}
    assert 16 < flipped < 48
    # Some crops reach into the black border.
    assert (out == black[0, 0, 0]).any()


def test_random_crop_flip_is_seeded_and_identity_without_padding_or_flips():
    x = position_images(8)
    augment = cifar.RandomCropFlip()
    first = augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(first, augment(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, augment(x, torch.Generator().manual_seed(4)))
    identity = cifar.RandomCropFlip(size=32, padding=0, flip=False)
    assert torch.equal(identity(x, torch.Generator()), x)


def test_random_crop_flip_checks_its_arguments():
    with pytest.raises(ValueError, match="size"):
        cifar.RandomCropFlip(size=0)
    with pytest.raises(ValueError, match="padding"):
        cifar.RandomCropFlip(padding=-1)
    with pytest.raises(ValueError, match="do not fit"):
        cifar.RandomCropFlip(size=40)(position_images(2), torch.Generator())
    with pytest.raises(ValueError, match="images"):
        cifar.RandomCropFlip()(torch.zeros(2, 1, 32, 32), torch.Generator())


def test_centre_crop_is_the_middle():
    x = position_images(2)
    crop = cifar.centre_crop(x)
    assert crop.shape == (2, 3, 24, 24)
    assert crop[0, 0, 0, 0].item() == 4 * 32 + 4
    assert crop[0, 0, -1, -1].item() == 27 * 32 + 27
    with pytest.raises(ValueError, match="does not fit"):
        cifar.centre_crop(x, size=33)


def test_make_target_is_the_papers_resnet_or_a_shallower_one():
    assert cifar.make_target().param_shapes == get_target("cifar_resnet").param_shapes
    small = cifar.make_target(1)
    assert small.input_shape == (3, cifar.CROP_SIZE, cifar.CROP_SIZE)
    assert small.num_params < get_target("cifar_resnet").num_params
    with pytest.raises(ValueError, match="units_per_stage"):
        cifar.make_target(0)


# -- training -----------------------------------------------------------------------------------


def test_train_methods_applies_the_augmentation_to_every_batch():
    data = small_data()
    seen = []

    def recording(x, generator):
        seen.append(tuple(x.shape))
        return cifar.RandomCropFlip()(x, generator)

    trained = runs.train_methods(["map"], tiny_resnet(), data.train.x, data.train.y, epochs=2,
                                  batch_size=25, transform=recording, seed=0, store=None)
    assert seen == [(25, 3, 32, 32), (25, 3, 32, 32), (10, 3, 32, 32)] * 2
    run = trained["map"]
    assert isinstance(run, runs.TrainedMethod) and run.label == "MAP"
    assert len(run.history) == 2 and run.train_time_s > 0


# -- evaluation ---------------------------------------------------------------------------------


def test_evaluate_cifar5_gives_the_table_and_the_entropy_curves():
    trained = trained_runs()
    data = small_data()
    table, ecdf = cifar.evaluate_cifar5(trained, data, n_samples=3, batch_size=16, n_points=50)
    assert list(table["method"]) == ["map", "ensemble", "bbb"]
    assert list(table["n_nets"]) == [1, 2, 3]
    assert list(table.columns) == ["method", "label", "n_nets", "error_pct", "entropy_auc_in",
                                   "entropy_auc_out", "nll", "ece", "brier", "ood_auroc",
                                   "train_time_s"]
    assert table["error_pct"].between(0, 100).all()
    assert table[["entropy_auc_in", "entropy_auc_out", "ood_auroc"]].stack().between(0, 1).all()
    for name, run in trained.items():
        assert table.set_index("method").loc[name, "train_time_s"] == run.train_time_s
    # The table's numbers are those of the chapter's building blocks on centre crops.
    probs_in = evaluation.predict_probs(trained["bbb"], cifar.centre_crop(data.test.x), 3, seed=0)
    probs_out = evaluation.predict_probs(trained["bbb"], cifar.centre_crop(data.outliers.x), 3, seed=0)
    expected = evaluation.classification_row(probs_in, data.test.y, probs_out)
    row = table.set_index("method").loc["bbb"]
    for key, value in expected.items():
        assert row[key] == pytest.approx(value)
    assert len(ecdf) == 3 * 2 * 50
    for (_, _), curve in ecdf.groupby(["method", "data"]):
        assert curve["entropy"].iloc[-1] == pytest.approx(math.log(5))
        assert curve["cdf"].is_monotonic_increasing and curve["cdf"].iloc[-1] == 1.0
    with pytest.raises(ValueError, match="at least one"):
        cifar.evaluate_cifar5({}, data, n_samples=2)


def test_plot_entropy_cdfs():
    _, ecdf = cifar.evaluate_cifar5(trained_runs(), small_data(), n_samples=2, n_points=20)
    fig = cifar.plot_entropy_cdfs(ecdf)
    assert [ax.get_title() for ax in fig.axes] == ["CIFAR-5 test (classes 0-4)",
                                                   "outliers (classes 5-9)"]
    assert len(fig.axes[0].get_lines()) == 3


def test_evaluate_seeds_and_the_papers_claims():
    trained = trained_runs()
    table, ecdf = cifar.evaluate_seeds({0: trained, 3: trained}, small_data(), n_samples=2)
    assert sorted(set(table["seed"])) == [0, 3] and sorted(set(ecdf["seed"])) == [0, 3]
    single, _ = cifar.evaluate_cifar5(trained, small_data(), n_samples=2)
    for s in (0, 3):
        part = table[table["seed"] == s].drop(columns="seed").reset_index(drop=True)
        pd.testing.assert_frame_equal(part, single)
    rows = [{"method": m, "label": m, "seed": s, "error_pct": e + 0.1 * s, "entropy_auc_out": a}
            for s in range(3) for m, e, a in (("map", 14.0, 0.60 + 0.01 * s),
                                               ("ensemble", 11.0, 0.62 + 0.01 * s),
                                               ("bbh", 14.2, 0.50 + 0.01 * s))]
    summary = evaluation.seed_summary(pd.DataFrame(rows), ["error_pct", "entropy_auc_out"])
    claims = cifar.table_claims(summary).set_index("claim")["seen"].to_dict()
    assert claims == {"as accurate as map": True, "as accurate as ensemble": False,
                      "less confident than map on the outlier classes, at its accuracy": True,
                      "less confident than ensemble on the outlier classes, at its accuracy": False}

    attack = pd.DataFrame([{"method": m, "label": m, "seed": s, "epsilon": eps,
                            "retained_accuracy": 1.0 if eps == 0 else r + 0.01 * s}
                           for s in range(3) for eps in (0.0, 0.1)
                           for m, r in (("map", 0.3), ("ensemble", 0.5), ("bbh", 0.6))])
    text = cifar.conclusion(summary, cifar.table_claims(summary), attack, epochs=6)
    assert f"every run trained 6 epochs, the paper's {cifar.PAPER_EPOCHS}" in text
    assert ("lowest first: ensemble 11.10 ± 0.10 % (paper 10.18 %), map 14.10 ± 0.10 % "
            "(paper 13.58 %) and bbh 14.30 ± 0.10 % (paper 13.62 %). bbh ranks 3 of 3.") in text
    assert "seen: *as accurate as map* and *less confident than map on the outlier classes" in text
    # The clean point (epsilon 0) is left out of the retained accuracy.
    assert "highest first: bbh 0.61 ± 0.01, ensemble 0.51 ± 0.01 and map 0.31 ± 0.01." in text
