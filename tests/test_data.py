"""Tests of hypernets.data on the real staged files (HYPERNETS_DATA), never on synthetic stand-ins,
except where a test needs a file that is not staged (the official CIFAR-10 batches)."""

import gzip
import hashlib
import io
import pathlib
import pickle
import re
import shutil
import tarfile
import warnings
import zipfile

import numpy as np
import pooch
import pytest
import requests
import torch
from PIL import Image

from hypernets import data
from hypernets.data import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    MNIST_MEAN,
    MNIST_STD,
    DataError,
    DownloadError,
    ImageData,
    ToyRegression,
    data_root,
    load_cifar5,
    load_cifar10,
    load_mnist,
    load_notmnist,
    toy_regression,
)

MNIST_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
JPEG_TARBALL = "CIFAR10-jpeg/CIFAR-10-images.tar.gz"
JPEG_ORDER = "CIFAR10-jpeg/cifar10_official_label_order.npz"


@pytest.fixture(scope="session")
def staged() -> pathlib.Path:
    return data_root()


def copy_staged(staged: pathlib.Path, root: pathlib.Path, relpath: str) -> pathlib.Path:
    target = root / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(staged / relpath, target)
    return target


def md5(path: pathlib.Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# Toy regression
# --------------------------------------------------------------------------------------------


def test_toy_shapes_and_fields():
    toy = toy_regression(noise_std=9.0, n_points=30, seed=4, n_grid=50)
    assert toy.x.shape == (30, 1) and toy.y.shape == (30, 1) and toy.x_grid.shape == (50, 1)
    assert toy.x.dtype == toy.y.dtype == toy.x_grid.dtype == torch.float32
    assert toy.noise_std == 9.0 and toy.seed == 4
    assert toy.x_grid[0, 0] == -6.0 and toy.x_grid[-1, 0] == 6.0


def test_toy_inputs_inside_range():
    toy = toy_regression(n_points=500, x_range=(-1.0, 2.0))
    assert toy.x.min() >= -1.0 and toy.x.max() <= 2.0
    assert toy.x.max() - toy.x.min() > 2.9  # spread over the whole range


def test_toy_seed_determinism():
    first, again, other = toy_regression(seed=7), toy_regression(seed=7), toy_regression(seed=8)
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    assert not torch.equal(first.x, other.x) and not torch.equal(first.y, other.y)


def test_toy_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    toy_regression(n_points=100)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("noise_std", [3.0, 9.0])
def test_toy_residual_std_matches_noise(noise_std):
    toy = toy_regression(noise_std=noise_std, n_points=20_000, seed=1)
    residual = toy.y - ToyRegression.true_function(toy.x)
    assert residual.mean().abs() < 0.05 * noise_std
    assert abs(residual.std().item() / noise_std - 1) < 0.03


def test_true_function_on_class_and_instance():
    x = torch.tensor([[-2.0], [0.5], [3.0]])
    expected = torch.tensor([[-8.0], [0.125], [27.0]])
    assert torch.equal(ToyRegression.true_function(x), expected)
    assert torch.equal(toy_regression().true_function(x), expected)


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        ({"noise_std": 0.0}, "noise_std"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"n_points": 0}, "n_points"),
        ({"n_points": 2.5}, "n_points"),
        ({"x_range": (4.0, -4.0)}, "x_range"),
        ({"grid_range": (1.0, 1.0)}, "grid_range"),
        ({"n_grid": 1}, "n_grid"),
        ({"seed": -1}, "seed"),
    ],
)
def test_toy_rejects_bad_arguments(kwargs, parameter):
    with pytest.raises(ValueError, match=parameter):
        toy_regression(**kwargs)


# --------------------------------------------------------------------------------------------
# Roots and caches
# --------------------------------------------------------------------------------------------


def test_data_root_precedence(monkeypatch, tmp_path):
    (tmp_path / "from_env").mkdir()
    (tmp_path / "given").mkdir()
    monkeypatch.setenv("HYPERNETS_DATA", str(tmp_path / "from_env"))
    assert data_root(tmp_path / "given") == tmp_path / "given"
    assert data_root() == tmp_path / "from_env"
    monkeypatch.setenv("HYPERNETS_DATA", "")  # empty counts as unset
    assert data_root() == pathlib.Path(pooch.os_cache("hypernets"))
    monkeypatch.delenv("HYPERNETS_DATA")
    assert data_root() == pathlib.Path(pooch.os_cache("hypernets"))


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HYPERNETS_CACHE", str(tmp_path))
    assert data._cache_dir() == tmp_path
    monkeypatch.delenv("HYPERNETS_CACHE")
    assert data._cache_dir() == pathlib.Path(pooch.os_cache("hypernets")) / "cache"


# --------------------------------------------------------------------------------------------
# MNIST and notMNIST
# --------------------------------------------------------------------------------------------


def test_mnist_train():
    mnist = load_mnist("train", download=False)
    assert mnist.x.shape == (60_000, 1, 28, 28) and mnist.x.dtype == torch.float32
    assert mnist.y.shape == (60_000,) and mnist.y.dtype == torch.int64
    assert (mnist.y == 0).sum() == 5_923
    assert torch.bincount(mnist.y).tolist()[:3] == [5_923, 6_742, 5_958]
    assert mnist.name == "MNIST" and mnist.split == "train" and mnist.normalized
    assert mnist.classes == tuple("0123456789") and not mnist.lossy and "IDX" in mnist.source
    assert abs(mnist.x.mean().item()) < 0.01 and abs(mnist.x.std().item() - 1) < 0.01


def test_mnist_test_raw_pixels():
    mnist = load_mnist("test", normalize=False, download=False)
    assert len(mnist) == 10_000 and not mnist.normalized
    assert mnist.x.min() == 0.0 and mnist.x.max() == 1.0
    assert torch.bincount(mnist.y, minlength=10).sum() == 10_000
    normalized = load_mnist("test", download=False)
    assert torch.allclose(normalized.x, (mnist.x - MNIST_MEAN) / MNIST_STD, atol=1e-6)


def test_notmnist():
    letters = load_notmnist(download=False)
    assert letters.x.shape == (10_000, 1, 28, 28) and letters.y.dtype == torch.int64
    assert torch.bincount(letters.y).tolist() == [1_000] * 10
    assert letters.classes == tuple("ABCDEFGHIJ") and letters.name == "notMNIST"
    assert letters.split == "test" and not letters.lossy
    raw = load_notmnist(normalize=False, download=False)
    assert torch.allclose(letters.x, (raw.x - MNIST_MEAN) / MNIST_STD, atol=1e-6)


@pytest.mark.parametrize("loader", [load_mnist, load_cifar10, load_cifar5])
def test_bad_split_is_rejected(loader):
    with pytest.raises(ValueError, match="split must be one of .*'train'.*got 'validation'"):
        loader("validation", download=False)


@pytest.mark.parametrize("loader", [load_mnist, load_notmnist, load_cifar10, load_cifar5])
@pytest.mark.parametrize("flag", ["normalize", "download"])
def test_flags_must_be_booleans(loader, flag):
    with pytest.raises(ValueError, match=f"{flag} must be True or False, got 'no'"):
        loader(**{"download": False, flag: "no"})


def test_subset_is_deterministic_and_without_replacement():
    mnist = load_mnist("test", download=False)
    part = mnist.subset(500, seed=3)
    assert len(part) == 500 and part.name == "MNIST" and part.x.shape[1:] == (1, 28, 28)
    assert torch.equal(part.y, mnist.subset(500, seed=3).y)
    assert not torch.equal(part.x, mnist.subset(500, seed=4).x)
    # The MNIST test images are all different, so drawing without replacement gives 500 distinct.
    assert len(torch.unique(part.x.flatten(1), dim=0)) == 500
    with pytest.raises(ValueError, match="n must be at most"):
        mnist.subset(10_001)
    with pytest.raises(ValueError, match="n must be"):
        mnist.subset(0)


def test_image_data_checks_shapes():
    with pytest.raises(ValueError, match="N, C, H, W"):
        ImageData(torch.zeros(3, 28, 28), torch.zeros(3, dtype=torch.int64), "MNIST", "test",
                  ("0",), "test", False, False)


# --------------------------------------------------------------------------------------------
# Broken and missing files (always on copies in tmp_path)
# --------------------------------------------------------------------------------------------


def copy_mnist_test(staged, root):
    return [copy_staged(staged, root, f"MNIST/raw/{name}") for name in MNIST_TEST_FILES]


def test_corrupt_file_names_path_and_checksums(staged, tmp_path):
    images, _ = copy_mnist_test(staged, tmp_path)
    expected = md5(images)
    content = bytearray(images.read_bytes())
    content[5_000] ^= 0xFF
    images.write_bytes(bytes(content))
    with pytest.raises(DataError) as error:
        load_mnist("test", root=tmp_path, download=False)
    message = str(error.value)
    assert str(images) in message and expected in message and md5(images) in message
    assert "Delete it" in message
    assert isinstance(error.value, ValueError)


def test_truncated_file_is_an_error(staged, tmp_path):
    _, labels = copy_mnist_test(staged, tmp_path)
    expected = md5(labels)
    labels.write_bytes(labels.read_bytes()[:1_000])
    with pytest.raises(DataError, match=expected) as error:
        load_mnist("test", root=tmp_path, download=False)
    assert str(labels) in str(error.value)


def test_missing_file_without_download(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_notmnist(root=tmp_path, download=False)
    message = str(error.value)
    assert "t10k-images-idx3-ubyte.gz" in message and "HYPERNETS_DATA" in message
    assert "download=True" in message


def test_missing_cifar_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="No CIFAR-10 files") as error:
        load_cifar10(root=tmp_path, download=False)
    assert "cifar-10-batches-py" in str(error.value) and "HYPERNETS_DATA" in str(error.value)


def test_jpeg_copy_without_label_order_is_missing(staged, tmp_path):
    copy_staged(staged, tmp_path, JPEG_TARBALL)
    with pytest.raises(FileNotFoundError, match="label_order.npz not found.*never downloaded"):
        load_cifar10(root=tmp_path, download=True)


@pytest.mark.parametrize("broken", [JPEG_TARBALL, JPEG_ORDER])
def test_corrupt_cifar_files(staged, tmp_path, broken):
    for relpath in (JPEG_TARBALL, JPEG_ORDER):
        copy_staged(staged, tmp_path, relpath)
    path = tmp_path / broken
    expected = md5(path)
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))
    with pytest.raises(DataError, match=expected) as error:
        load_cifar10(root=tmp_path, download=False)
    assert str(path) in str(error.value)


def idx_gz(magic: bytes, dims: tuple[int, ...], payload: bytes) -> bytes:
    header = magic + b"".join(d.to_bytes(4, "big") for d in dims)
    return gzip.compress(header + payload)


def test_idx_parser_checks_magic_and_size():
    good = data._parse_idx(idx_gz(bytes((0, 0, 8, 1)), (3,), b"\x01\x02\x03"), "f", ())
    assert good.tolist() == [1, 2, 3]
    with pytest.raises(DataError, match="labels.gz.*magic number 00000803"):
        data._parse_idx(idx_gz(bytes((0, 0, 8, 3)), (3,), b"\x01\x02\x03"), "labels.gz", ())
    with pytest.raises(DataError, match="images.gz.*expected items of shape"):
        data._parse_idx(idx_gz(bytes((0, 0, 8, 3)), (2, 28, 28), bytes(28 * 28)), "images.gz",
                        (28, 28))
    with pytest.raises(DataError, match="junk.gz.*gzip"):
        data._parse_idx(b"not gzip at all", "junk.gz", ())


# --------------------------------------------------------------------------------------------
# Downloads (pooch.retrieve replaced: no network)
# --------------------------------------------------------------------------------------------


def test_mnist_download_uses_canonical_mirror(staged, tmp_path, monkeypatch):
    calls = []

    def fake_retrieve(url, known_hash, path, fname):
        calls.append((url, known_hash, pathlib.Path(path), fname))
        pathlib.Path(path).mkdir(parents=True, exist_ok=True)  # as pooch does
        shutil.copyfile(staged / "MNIST/raw" / fname, pathlib.Path(path) / fname)
        return str(pathlib.Path(path) / fname)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    mnist = load_mnist("test", root=tmp_path, download=True)
    assert len(mnist) == 10_000
    assert calls == [
        ("https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
         "md5:9fb629c4189551a2d022fa330f9573f3", tmp_path / "MNIST/raw",
         "t10k-images-idx3-ubyte.gz"),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
         "md5:ec29112dd5afa0611ce80d1b7f02629c", tmp_path / "MNIST/raw",
         "t10k-labels-idx1-ubyte.gz"),
    ]


class NoNetwork(Exception):
    pass


def recording_retrieve(calls):
    def fake_retrieve(url, known_hash, path, fname):
        calls.append((url, known_hash, pathlib.Path(path), fname))
        raise NoNetwork

    return fake_retrieve


def test_notmnist_download_url(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pooch, "retrieve", recording_retrieve(calls))
    with pytest.raises(DownloadError) as error:
        load_notmnist(root=tmp_path)
    assert isinstance(error.value.__cause__, NoNetwork)
    assert calls == [(
        "https://github.com/davidflanagan/notMNIST-to-MNIST/raw/master/t10k-images-idx3-ubyte.gz",
        "md5:2c87c839a4ef9b238846600eec8c35b7", tmp_path / "notMNIST/raw",
        "t10k-images-idx3-ubyte.gz",
    )]


def test_cifar_download_fetches_official_tarball(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pooch, "retrieve", recording_retrieve(calls))
    with pytest.raises(DownloadError) as error:
        load_cifar10(root=tmp_path)
    assert isinstance(error.value.__cause__, NoNetwork)
    assert calls == [(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5:c58f30108f718f92721af3b95e74349a", tmp_path, "cifar-10-python.tar.gz",
    )]


# --------------------------------------------------------------------------------------------
# An explicitly named data folder must exist: never created, never a silent download
# --------------------------------------------------------------------------------------------


def refuse_downloads(monkeypatch):
    calls = []
    monkeypatch.setattr(pooch, "retrieve", recording_retrieve(calls))
    return calls


def missing_folder(tmp_path):
    return tmp_path / "typo", tmp_path / "typo", FileNotFoundError, "does not exist"


def dangling_symlink(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    return tmp_path / "link", tmp_path / "gone", FileNotFoundError, "symbolic link to .*gone"


def a_file(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    return tmp_path / "file", tmp_path / "file", NotADirectoryError, "is not a folder"


@pytest.mark.parametrize("make", [missing_folder, dangling_symlink, a_file])
@pytest.mark.parametrize("via", ["env", "root"])
@pytest.mark.parametrize("loader", [load_mnist, load_notmnist, load_cifar10])
def test_explicit_data_folder_must_exist(tmp_path, monkeypatch, make, via, loader):
    folder, target, error_type, problem = make(tmp_path)
    calls = refuse_downloads(monkeypatch)
    if via == "env":
        monkeypatch.setenv("HYPERNETS_DATA", str(folder))
        kwargs, named_by = {}, "the environment variable HYPERNETS_DATA"
    else:
        kwargs, named_by = {"root": folder}, "the root argument"
    before = sorted(tmp_path.iterdir())
    with pytest.raises(error_type) as error:
        loader(**kwargs)  # download=True: it must not be tried
    message = str(error.value)
    assert f"The data folder {folder}, named by {named_by}," in message
    assert re.search(problem, message)
    for expected in ("MNIST/raw/", "notMNIST/raw/", "cifar-10-batches-py/", "CIFAR10-jpeg/",
                     "never created"):
        assert expected in message
    assert ("unset HYPERNETS_DATA" in message) == (via == "env")
    assert calls == []
    assert sorted(tmp_path.iterdir()) == before  # nothing created, the target neither
    assert not target.is_dir()
    with pytest.raises(error_type):
        data_root(**kwargs)


# --------------------------------------------------------------------------------------------
# Failed downloads (no network in any test: pooch's downloader or pooch.retrieve is replaced)
# --------------------------------------------------------------------------------------------


def offline_retrieve(leave_partial: bool):
    """pooch.retrieve as it fails offline; with ``leave_partial`` it first writes half a file."""
    def fake_retrieve(url, known_hash, path, fname):
        pathlib.Path(path).mkdir(parents=True, exist_ok=True)  # as pooch does
        if leave_partial:
            (pathlib.Path(path) / fname).write_bytes(b"half a file")
        raise requests.exceptions.ConnectionError(
            f"HTTPSConnectionPool: Max retries exceeded with url: {url}")

    return fake_retrieve


def offline_downloader(url, output_file, pooch_instance):
    """pooch's HTTP downloader as it fails offline after writing part of the file."""
    pathlib.Path(output_file).write_bytes(b"the first bytes")
    raise requests.exceptions.ConnectionError("Failed to resolve host (offline)")


@pytest.fixture(params=["pooch temporary file", "partial target file"])
def offline(request, monkeypatch):
    """No network: either real pooch.retrieve with its downloader failing mid-file, or a
    replacement that leaves a partial file at the target path."""
    if request.param == "pooch temporary file":
        monkeypatch.setattr(pooch.core, "choose_downloader",
                            lambda url, progressbar=False: offline_downloader)
    else:
        monkeypatch.setattr(pooch, "retrieve", offline_retrieve(leave_partial=True))


def test_failed_download_into_hypernets_data_says_what_to_do(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("HYPERNETS_DATA", str(tmp_path))
    with pytest.raises(DownloadError) as error:
        load_notmnist()
    missing = tmp_path / "notMNIST/raw/t10k-images-idx3-ubyte.gz"
    message = str(error.value)
    assert message.startswith(
        f"Data file {missing} is missing from the data folder {tmp_path} (named by the "
        "environment variable HYPERNETS_DATA), and downloading it from https://github.com/")
    assert "ConnectionError" in message and "2c87c839a4ef9b238846600eec8c35b7" in message
    assert "Put the file there" in message
    cache = pooch.os_cache("hypernets")
    assert f"unset HYPERNETS_DATA to use the per-user cache {cache} with an internet" in message
    assert isinstance(error.value.__cause__, requests.exceptions.ConnectionError)
    assert isinstance(error.value, OSError)
    assert list(tmp_path.iterdir()) == []  # no partial file, no empty notMNIST/raw/ left


def test_failed_download_into_root_argument_says_what_to_do(tmp_path, monkeypatch, offline):
    (tmp_path / "MNIST/raw").mkdir(parents=True)  # the folder exists: it stays
    with pytest.raises(DownloadError) as error:
        load_mnist("test", root=tmp_path)
    message = str(error.value)
    assert f"Data file {tmp_path / 'MNIST/raw/t10k-images-idx3-ubyte.gz'} is missing" in message
    assert "named by the root argument" in message and "leave root unset" in message
    assert list(tmp_path.rglob("*")) == [tmp_path / "MNIST", tmp_path / "MNIST/raw"]


def test_failed_download_into_user_cache_names_file_and_cache(tmp_path, monkeypatch, offline):
    cache = tmp_path / "user-cache" / "hypernets"
    monkeypatch.delenv("HYPERNETS_DATA")
    monkeypatch.setattr(pooch, "os_cache", lambda project: cache)
    with pytest.raises(DownloadError) as error:
        load_mnist("test")
    message = str(error.value)
    missing = cache / "MNIST/raw/t10k-images-idx3-ubyte.gz"
    assert message.startswith(
        "Could not download https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz"
        f" into the per-user cache {cache} (ConnectionError: ")
    assert f"The file {missing} is missing." in message
    assert "internet connection" in message and "HYPERNETS_DATA" in message
    assert list(tmp_path.rglob("*.gz")) == [] and list(tmp_path.rglob("*tmp*")) == []


def test_failed_cifar_download_names_the_alternatives(tmp_path, monkeypatch):
    monkeypatch.setattr(pooch, "retrieve", offline_retrieve(leave_partial=False))
    with pytest.raises(DownloadError) as error:
        load_cifar5(root=tmp_path)
    message = str(error.value)
    assert f"Data file {tmp_path / 'cifar-10-python.tar.gz'} is missing" in message
    assert f"the official batches {tmp_path / 'cifar-10-batches-py'}/" in message
    assert f"the JPEG copy {tmp_path / JPEG_TARBALL} with {tmp_path / JPEG_ORDER}" in message
    assert list(tmp_path.iterdir()) == []


def test_bad_download_checksum_is_a_download_error(tmp_path, monkeypatch):
    """A host serving other content: pooch's MD5 check fails, nothing is kept."""
    def wrong_content(url, output_file, pooch_instance):
        pathlib.Path(output_file).write_bytes(b"<html>moved</html>")

    monkeypatch.setattr(pooch.core, "choose_downloader",
                        lambda url, progressbar=False: wrong_content)
    with pytest.raises(DownloadError, match="ValueError: MD5 hash of downloaded file"):
        load_notmnist(root=tmp_path)
    assert list(tmp_path.iterdir()) == []

# --------------------------------------------------------------------------------------------
# CIFAR-10 official batches: not staged, so a small tarball in the official format stands in,
# with the module's checksums patched to match it.
# --------------------------------------------------------------------------------------------

BATCH_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


@pytest.fixture
def official_format_tarball(tmp_path, monkeypatch):
    """cifar-10-python.tar.gz holding two random images per batch; returns (path, rows, labels)."""
    rng = np.random.default_rng(0)
    rows = {name: rng.integers(0, 256, size=(2, 3072), dtype=np.uint8) for name in BATCH_NAMES}
    labels = {name: rng.integers(0, 10, size=2).tolist() for name in BATCH_NAMES}
    buffer = io.BytesIO()
    checksums = {}
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in BATCH_NAMES:
            blob = pickle.dumps({b"data": rows[name], b"labels": labels[name]})
            checksums[name] = hashlib.md5(blob).hexdigest()
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    tarball = tmp_path / "official" / "cifar-10-python.tar.gz"
    tarball.parent.mkdir()
    tarball.write_bytes(buffer.getvalue())
    monkeypatch.setattr(data, "_CIFAR_TARBALL", data._RemoteFile(
        "cifar-10-python.tar.gz", md5(tarball), data._CIFAR_TARBALL.url))
    monkeypatch.setattr(data, "_CIFAR_BATCHES", {
        "train": tuple((name, checksums[name]) for name in BATCH_NAMES[:5]),
        "test": (("test_batch", checksums["test_batch"]),),
    })
    return tarball, rows, labels


def check_official_format(root, rows, labels):
    train = load_cifar10("train", root=root, normalize=False, download=False)
    assert not train.lossy and train.source == "official CIFAR-10 python batches"
    assert train.y.tolist() == sum((labels[name] for name in BATCH_NAMES[:5]), [])
    expected = np.concatenate([rows[name] for name in BATCH_NAMES[:5]]).reshape(10, 3, 32, 32)
    assert torch.equal(train.x, torch.from_numpy(expected).float() / 255)
    # A row is the red, green then blue 32x32 plane.
    first_image = (train.x[0] * 255).round().to(torch.uint8)
    assert first_image[0, 0, 1] == rows["data_batch_1"][0, 1]
    assert first_image[1, 0, 0] == rows["data_batch_1"][0, 1024]
    test = load_cifar5("test", outliers=True, root=root, download=False)
    assert test.y.tolist() == [label for label in labels["test_batch"] if label >= 5]


def test_official_cifar_tarball_is_read_in_place(official_format_tarball):
    tarball, rows, labels = official_format_tarball
    check_official_format(tarball.parent, rows, labels)
    assert [path.name for path in tarball.parent.iterdir()] == [tarball.name]  # nothing written


def test_official_cifar_batch_folder(official_format_tarball, tmp_path):
    tarball, rows, labels = official_format_tarball
    root = tmp_path / "extracted"
    with tarfile.open(tarball) as archive:
        archive.extractall(root, filter="data")
    check_official_format(root, rows, labels)
    (root / "cifar-10-batches-py" / "data_batch_2").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_2"):
        load_cifar10(root=root, download=False)


def test_official_cifar_batch_checksum_inside_tarball(official_format_tarball, monkeypatch):
    tarball, _, _ = official_format_tarball
    batches = dict(data._CIFAR_BATCHES)
    batches["test"] = (("test_batch", "0" * 32),)
    monkeypatch.setattr(data, "_CIFAR_BATCHES", batches)
    with pytest.raises(DataError, match="cifar-10-batches-py/test_batch failed its MD5 check"):
        load_cifar10(root=tarball.parent, download=False)


# --------------------------------------------------------------------------------------------
# CIFAR-10 from the staged JPEG copy (decoded once per session, then cached)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cifar_train():
    return load_cifar10("train", normalize=False, download=False)


@pytest.fixture(scope="session")
def cifar_test(cifar_train):  # after cifar_train, so that the JPEG copy is decoded only once
    return load_cifar10("test", normalize=False, download=False)


@pytest.fixture(scope="session")
def label_order(staged):
    with np.load(staged / JPEG_ORDER) as order:
        return {name: order[name].astype(np.int64) for name in order.files}


def test_cifar10_shapes_and_provenance(cifar_train, cifar_test):
    assert cifar_train.x.shape == (50_000, 3, 32, 32) and cifar_train.x.dtype == torch.float32
    assert cifar_test.x.shape == (10_000, 3, 32, 32) and cifar_test.y.dtype == torch.int64
    assert torch.bincount(cifar_train.y).tolist() == [5_000] * 10
    assert torch.bincount(cifar_test.y).tolist() == [1_000] * 10
    for cifar in (cifar_train, cifar_test):
        assert cifar.name == "CIFAR-10" and cifar.classes == CIFAR10_CLASSES
        assert cifar.lossy and "JPEG copy" in cifar.source and "not the official" in cifar.source
        assert cifar.x.min() >= 0 and cifar.x.max() <= 1 and not cifar.normalized


def test_cifar10_labels_follow_official_order(cifar_train, cifar_test, label_order):
    train_labels = np.concatenate([label_order[f"data_batch_{i}"] for i in range(1, 6)])
    assert np.array_equal(cifar_train.y.numpy(), train_labels)
    assert np.array_equal(cifar_test.y.numpy(), label_order["test_batch"])


def test_cifar10_images_follow_official_order(cifar_train, cifar_test, label_order, staged):
    """Position p holds <split>/<class>/NNNN.jpg with NNNN = earlier positions of that class."""
    train_labels = np.concatenate([label_order[f"data_batch_{i}"] for i in range(1, 6)])
    picks = {"train": (cifar_train, train_labels, [0, 1, 12_345, 31_416, 49_999]),
             "test": (cifar_test, label_order["test_batch"], [0, 7_777, 9_999])}
    wanted = {}
    for split, (_, labels, positions) in picks.items():
        for position in positions:
            label = labels[position]
            running_index = int((labels[:position] == label).sum())
            member = f"{split}/{CIFAR10_CLASSES[label]}/{running_index:04d}.jpg"
            wanted[member] = (split, position)
    found = 0
    with tarfile.open(staged / JPEG_TARBALL, "r:gz") as archive:
        for member in archive:
            if member.name in wanted:
                split, position = wanted[member.name]
                with Image.open(archive.extractfile(member)) as image:
                    pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
                assert torch.equal(picks[split][0].x[position], pixels.float() / 255), member.name
                found += 1
    assert found == len(wanted)


def test_cifar10_normalisation(cifar_test):
    normalized = load_cifar10("test", download=False)
    assert normalized.normalized
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    assert torch.allclose(normalized.x, (cifar_test.x - mean) / std, atol=1e-5)
    assert normalized.x.mean(dim=(0, 2, 3)).abs().max() < 0.05
    assert (normalized.x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.05


def test_cifar5_in_distribution_and_outliers(cifar_train, cifar_test):
    for split, full, size in (("train", cifar_train, 25_000), ("test", cifar_test, 5_000)):
        inliers = load_cifar5(split, normalize=False, download=False)
        outliers = load_cifar5(split, outliers=True, normalize=False, download=False)
        assert len(inliers) == len(outliers) == size
        assert inliers.name == "CIFAR-5" and outliers.name == "CIFAR-5 outliers"
        assert inliers.y.unique().tolist() == [0, 1, 2, 3, 4]
        assert outliers.y.unique().tolist() == [5, 6, 7, 8, 9]
        assert inliers.classes == outliers.classes == CIFAR10_CLASSES
        assert inliers.lossy and outliers.split == split
        assert torch.equal(inliers.x, full.x[full.y < 5])
        assert torch.equal(outliers.x, full.x[full.y >= 5])
    with pytest.raises(ValueError, match="outliers"):
        load_cifar5("train", outliers="yes", download=False)


def test_cifar_decode_is_cached(cifar_train):
    cache_file = data._cache_dir() / f"cifar10-jpeg-{data._CIFAR_JPEG_TARBALL.md5}.npz"
    assert cache_file.is_file()
    hits = data._jpeg_cifar.cache_info().hits
    again = load_cifar10("train", normalize=False, download=False)
    assert data._jpeg_cifar.cache_info().hits == hits + 1
    assert torch.equal(again.x[:100], cifar_train.x[:100])


def test_describe_tables_count_classes_and_keep_provenance():
    images = data.ImageData(x=torch.zeros(5, 1, 2, 2), y=torch.tensor([0, 0, 1, 2, 2]), name="toyset",
                            split="test", classes=("a", "b", "c"), source="made here", lossy=False,
                            pixel_range=None)
    table = data.describe_images([images])
    assert table.loc[0, ["N", "classes", "per class min", "per class max"]].tolist() == [5, 3, 1, 2]
    assert table.loc[0, "source"] == "made here"
    toys = [data.toy_regression(noise_std=s, seed=1) for s in (3.0, 9.0)]
    toy_table = data.describe_toys(toys)
    assert toy_table["noise std"].tolist() == [3.0, 9.0]
    assert toy_table.loc[1, "y std"] == pytest.approx(toys[1].y.std().item())


# --------------------------------------------------------------------------------------------
# The decode cache of the JPEG copy: hashed, checked on load, rebuilt when it does not match.
# A tiny JPEG copy in the real layout (one image per class and split) keeps these fast.
# --------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_jpeg_copy(tmp_path, monkeypatch):
    """A data root with a 10+10-image JPEG copy, its label order, and the module's MD5s patched;
    returns (root, expected {split: (images [N, 3, 32, 32] uint8, labels [N])})."""
    rng = np.random.default_rng(5)
    root = tmp_path / "data"
    buffer = io.BytesIO()
    pixels = {}
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for split in ("train", "test"):
            for label, name in enumerate(CIFAR10_CLASSES):
                jpeg = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    jpeg, format="JPEG", quality=90)
                with Image.open(io.BytesIO(jpeg.getvalue())) as image:
                    pixels[split, label] = np.array(image.convert("RGB"))
                info = tarfile.TarInfo(f"{split}/{name}/0000.jpg")
                info.size = len(jpeg.getvalue())
                archive.addfile(info, io.BytesIO(jpeg.getvalue()))
    (root / "CIFAR10-jpeg").mkdir(parents=True)
    (root / JPEG_TARBALL).write_bytes(buffer.getvalue())
    train_labels = rng.permutation(10).astype(np.uint8)
    order = {f"data_batch_{i}": train_labels[2 * i - 2:2 * i] for i in range(1, 6)}
    order["test_batch"] = rng.permutation(10).astype(np.uint8)
    np.savez(root / JPEG_ORDER, **order)
    monkeypatch.setattr(data, "_CIFAR_JPEG_TARBALL",
                        data._RemoteFile(JPEG_TARBALL, md5(root / JPEG_TARBALL), None))
    monkeypatch.setattr(data, "_CIFAR_JPEG_ORDER",
                        data._RemoteFile(JPEG_ORDER, md5(root / JPEG_ORDER), None))
    monkeypatch.setenv("HYPERNETS_CACHE", str(tmp_path / "cache"))
    expected = {}
    for split, labels in (("train", train_labels), ("test", order["test_batch"])):
        images = np.stack([pixels[split, int(label)] for label in labels]).transpose(0, 3, 1, 2)
        expected[split] = (images, labels.astype(np.int64))
    return root, expected


def decode_tiny(root):
    """The JPEG-copy loader itself, past its in-process cache (which is left untouched)."""
    return data._jpeg_cifar.__wrapped__(
        data._file_key(root / JPEG_TARBALL, data._CIFAR_JPEG_TARBALL.md5),
        data._file_key(root / JPEG_ORDER, data._CIFAR_JPEG_ORDER.md5),
    )


def cache_file():
    return data._cache_dir() / f"cifar10-jpeg-{data._CIFAR_JPEG_TARBALL.md5}.npz"


def assert_decoded(raw, expected):
    for split in ("train", "test"):
        images, labels = raw.splits[split]
        assert np.array_equal(images.numpy(), expected[split][0]), split
        assert np.array_equal(labels.numpy(), expected[split][1]), split


def count_decodes(monkeypatch):
    calls = []
    decode = data._decode_jpeg_tarball

    def counting(*args):
        calls.append(args[1])
        return decode(*args)

    monkeypatch.setattr(data, "_decode_jpeg_tarball", counting)
    return calls


def test_decode_cache_stores_hashes_and_is_reused(tiny_jpeg_copy, monkeypatch):
    root, expected = tiny_jpeg_copy
    decodes = count_decodes(monkeypatch)
    assert_decoded(decode_tiny(root), expected)
    assert len(decodes) == 1
    assert [path.name for path in cache_file().parent.iterdir()] == [cache_file().name]
    with np.load(cache_file()) as cached:
        assert int(cached["format_version"]) == data._DECODE_CACHE_VERSION
        assert str(cached["source_md5"]) == md5(root / JPEG_TARBALL)
        assert re.fullmatch("[0-9a-f]{64}", str(cached["sha256"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_decoded(decode_tiny(root), expected)
    assert len(decodes) == 1  # read from the cache, not decoded again


def change_one_pixel(arrays):
    arrays["train"][3, 0, 5, 7, 1] ^= 0x01  # the hash stays the one of the original pixels


def other_source(arrays):
    arrays["source_md5"] = np.array("0" * 32)


def other_version(arrays):
    arrays["format_version"] = np.array(1)


def no_hash(arrays):  # the format of the version before the hash
    for key in ("format_version", "source_md5", "sha256"):
        del arrays[key]


@pytest.mark.parametrize("corrupt, reason", [
    (change_one_pixel, "its arrays have SHA-256 [0-9a-f]{16}..., not the stored [0-9a-f]{16}"),
    (other_source, "built from an archive with MD5 0{32}, not [0-9a-f]{32}"),
    (other_version, "format version 1, expected 2"),
    (no_hash, r"it has no content hash \(written by an older version\)"),
    ("flip a byte of the file", "it is unreadable"),
])
def test_decode_cache_that_does_not_match_is_rebuilt(tiny_jpeg_copy, monkeypatch, corrupt,
                                                     reason):
    root, expected = tiny_jpeg_copy
    decode_tiny(root)
    path = cache_file()
    if callable(corrupt):
        with np.load(path) as cached:
            arrays = {key: cached[key] for key in cached.files}
        corrupt(arrays)
        np.savez(path, **arrays)
    else:  # inside the pixels of the train array: the zip member's CRC no longer matches
        content = bytearray(path.read_bytes())
        content[zipfile.ZipFile(path).getinfo("train.npy").header_offset + 2_000] ^= 0x01
        path.write_bytes(bytes(content))
    decodes = count_decodes(monkeypatch)
    with pytest.warns(UserWarning, match=re.escape(
            f"Rebuilding the CIFAR-10 decode cache {path}: ") + reason) as record:
        raw = decode_tiny(root)
    assert len(record) == 1 and len(decodes) == 1
    assert_decoded(raw, expected)  # the decoded pixels, never the cached ones
    with warnings.catch_warnings():  # rewritten: now valid again
        warnings.simplefilter("error")
        assert_decoded(decode_tiny(root), expected)
    assert len(decodes) == 1


def test_decode_cache_checks(tmp_path):
    cache = tmp_path / "cifar10-jpeg-cache.npz"
    good = {
        "train": np.zeros((10, 2, 32, 32, 3), np.uint8),
        "test": np.ones((10, 1, 32, 32, 3), np.uint8),
    }
    data._write_decode_cache(cache, good, "a" * 32)
    assert np.array_equal(data._read_decode_cache(cache, "a" * 32)["test"], good["test"])
    assert data._read_decode_cache(tmp_path / "absent.npz", "a" * 32) is None
    data._write_decode_cache(cache, dict(good, train=np.zeros((10, 2, 32, 31, 3), np.uint8)),
                             "a" * 32)
    with pytest.warns(UserWarning, match=r"train array is uint8 \(10, 2, 32, 31, 3\), expected"):
        assert data._read_decode_cache(cache, "a" * 32) is None
    cache.write_bytes(b"half-written")
    with pytest.warns(UserWarning, match="it is unreadable"):
        assert data._read_decode_cache(cache, "a" * 32) is None
    with pytest.warns(UserWarning, match="Could not write"):
        data._write_decode_cache(cache / "below-a-file.npz", good, "a" * 32)


def test_decode_cache_write_is_atomic(tmp_path, monkeypatch):
    cache = tmp_path / "cifar10-jpeg-cache.npz"
    good = {"train": np.zeros((10, 1, 32, 32, 3), np.uint8),
            "test": np.ones((10, 1, 32, 32, 3), np.uint8)}
    data._write_decode_cache(cache, good, "a" * 32)
    before = cache.read_bytes()

    def disk_full(file, **arrays):
        file.write(b"PK\x03\x04 the first bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.warns(UserWarning, match="Could not write the decode cache.*No space left"):
        data._write_decode_cache(cache, {k: v + 1 for k, v in good.items()}, "a" * 32)
    assert cache.read_bytes() == before  # the old cache is whole
    assert list(tmp_path.iterdir()) == [cache]  # and no temporary file is left


def test_mnist_splits_draw_reproducible_subsets():
    splits = data.load_mnist_splits(n_train=400, n_test=150, seed=0)
    assert (len(splits.train), len(splits.test), len(splits.outliers)) == (400, 150, 150)
    assert splits.train.name == splits.test.name == "MNIST" and splits.outliers.name == "notMNIST"
    assert splits.train.split == "train" and splits.test.split == "test"
    assert splits.train.pixel_range == splits.outliers.pixel_range == data.MNIST_PIXELS
    again = data.load_mnist_splits(n_train=400, n_test=150, seed=0)
    assert torch.equal(again.train.y, splits.train.y) and torch.equal(again.outliers.x, splits.outliers.x)
    other = data.load_mnist_splits(n_train=400, n_test=150, seed=1)
    assert not torch.equal(other.train.y, splits.train.y)


def test_cifar5_splits_keep_the_classes_apart():
    splits = data.load_cifar5_splits(n_train=60, n_test=40, seed=0)
    assert (len(splits.train), len(splits.test), len(splits.outliers)) == (60, 40, 40)
    assert set(splits.train.y.tolist()) <= {0, 1, 2, 3, 4}
    assert set(splits.test.y.tolist()) <= {0, 1, 2, 3, 4}
    assert set(splits.outliers.y.tolist()) <= {5, 6, 7, 8, 9}
    assert splits.train.x.shape[1:] == (3, 32, 32)
    assert splits.source == splits.train.source and splits.lossy == splits.train.lossy
    assert splits.train.pixel_range == data.CIFAR10_PIXELS


def test_toy_inside_is_the_closed_input_interval():
    toy = data.toy_regression(x_range=(-2.0, 3.0))
    assert toy.x_range == (-2.0, 3.0)
    assert toy.inside(torch.tensor([-2.0, -2.01, 3.0, 3.01, 0.0])).tolist() == [True, False, True, False, True]
    assert bool(toy.inside(toy.x).all())
