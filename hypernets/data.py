"""Data sets of the book: the 1-D toy regression, MNIST, notMNIST, CIFAR-10 and CIFAR-5.

Every image file is checked against its published MD5 before it is parsed. Missing files are
downloaded with pooch from their canonical hosts when ``download=True``; nothing is ever replaced
by synthetic data. The root folder is the ``root`` argument, else ``$HYPERNETS_DATA``, else pooch's
per-user cache (see :func:`data_root`). An explicit folder (argument or variable) must exist: it
is never created, and a download into it that fails says which file to put where
(:class:`DownloadError`). Its layout is::

    MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    notMNIST/raw/t10k-{images-idx3,labels-idx1}-ubyte.gz
    cifar-10-batches-py/                 official python batches, else
    cifar-10-python.tar.gz               the official tarball (read in place, downloaded if missing)
    CIFAR10-jpeg/CIFAR-10-images.tar.gz  lossy JPEG copy, used only without the official files
    CIFAR10-jpeg/cifar10_official_label_order.npz

The JPEG copy is decoded once and the uint8 pixels are cached as an .npz under ``$HYPERNETS_CACHE``
(else ``pooch.os_cache("hypernets")/cache``), never inside the data root, which may be read-only.
The cache records the SHA-256 of its arrays, the archive's MD5 and a format version; a cache
that does not match them is decoded again and rewritten (with a warning), never used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import io
import math
import os
import pathlib
import pickle
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import pooch
import torch
from PIL import Image

from hypernets.validation import check_bool, check_choice, check_int, check_positive

__all__ = [
    "MNIST_MEAN",
    "MNIST_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_CLASSES",
    "DataError",
    "DownloadError",
    "ToyRegression",
    "toy_regression",
    "describe_images",
    "describe_toys",
    "ImageData",
    "ImageSplits",
    "PixelRange",
    "MNIST_PIXELS",
    "CIFAR10_PIXELS",
    "data_root",
    "load_mnist",
    "load_notmnist",
    "noise_images",
    "NOISE_KINDS",
    "load_cifar10",
    "load_cifar5",
    "load_mnist_splits",
    "load_cifar5_splits",
]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
MNIST_CLASSES = tuple(str(digit) for digit in range(10))
NOTMNIST_CLASSES = tuple("ABCDEFGHIJ")
SPLITS = ("train", "test")

_CIFAR5_CLASSES_IN = 5  # classes 0-4 are in-distribution, 5-9 are the outliers
_JPEG_SOURCE = (
    "lossy JPEG copy of CIFAR-10 (not the official batches; mean abs pixel error ~5.8/255)"
)


class DataError(ValueError):
    """A data file is present but corrupt, truncated or not in the expected format."""


class DownloadError(OSError):
    """A missing data file could not be downloaded (offline, host unreachable, bad download).

    The message names the missing local path and how to provide the file; the original error is
    chained as ``__cause__``.
    """


# --------------------------------------------------------------------------------------------
# Toy regression
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ToyRegression:
    """The cubic toy problem y = x**3 + eps with eps ~ N(0, noise_std**2).

    ``noise_std=3`` is the setting of Hernandez-Lobato & Adams (2015) and HyperGAN;
    ``noise_std=9`` the one of Bayes by Hypernet.
    """

    x: torch.Tensor  # [n, 1] training inputs
    y: torch.Tensor  # [n, 1] noisy targets
    x_grid: torch.Tensor  # [n_grid, 1] evaluation grid
    noise_std: float
    seed: int
    x_range: tuple[float, float]  # the interval the inputs are drawn from: "the data"

    @staticmethod
    def true_function(x: torch.Tensor) -> torch.Tensor:
        """The noise-free target x**3."""
        return x**3

    def inside(self, x: torch.Tensor) -> torch.Tensor:
        """Which inputs lie inside the data, the closed interval ``x_range``: a bool mask of x's shape."""
        low, high = self.x_range
        return (x >= low) & (x <= high)


def toy_regression(
    noise_std: float = 3.0,
    n_points: int = 20,
    seed: int = 0,
    x_range: tuple[float, float] = (-4.0, 4.0),
    grid_range: tuple[float, float] = (-6.0, 6.0),
    n_grid: int = 200,
) -> ToyRegression:
    """Draw ``n_points`` inputs uniformly on ``x_range`` and noisy cubic targets.

    A private ``torch.Generator`` seeded with ``seed`` makes the draw reproducible without
    touching the global random state. ``x_grid`` spans ``grid_range`` (wider than the training
    range by default, to show how uncertainty grows away from the data).
    """
    noise_std = check_positive("noise_std", noise_std)
    n_points = check_int("n_points", n_points, minimum=1)
    n_grid = check_int("n_grid", n_grid, minimum=2)
    seed = check_int("seed", seed, minimum=0)
    x_low, x_high = _check_range("x_range", x_range)
    grid_low, grid_high = _check_range("grid_range", grid_range)

    generator = torch.Generator().manual_seed(seed)
    x = x_low + (x_high - x_low) * torch.rand(n_points, 1, generator=generator)
    noise = noise_std * torch.randn(n_points, 1, generator=generator)
    y = ToyRegression.true_function(x) + noise
    x_grid = torch.linspace(grid_low, grid_high, n_grid).unsqueeze(1)
    return ToyRegression(x=x, y=y, x_grid=x_grid, noise_std=noise_std, seed=seed,
                         x_range=(x_low, x_high))


def _check_range(name: str, bounds) -> tuple[float, float]:
    try:
        low, high = (float(bound) for bound in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {bounds!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{name} must be finite with low < high, got {bounds!r}")
    return low, high


# --------------------------------------------------------------------------------------------
# Image data container
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PixelRange:
    """The per-channel normalisation ``(pixel - mean) / std`` of images whose pixels lie in [0, 1].

    ``mean`` and ``std`` hold one value per channel. :meth:`bounds` gives the valid range of
    the normalised inputs, computed with the same float32 arithmetic as the loaders so that
    every clean image lies exactly inside it.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        mean, std = tuple(self.mean), tuple(self.std)
        if not mean or len(mean) != len(std):
            raise ValueError(f"mean and std need one value per channel each; got mean {self.mean!r}, "
                             f"std {self.std!r}")
        if not all(s > 0 and math.isfinite(s) for s in std):
            raise ValueError(f"std must hold finite values > 0; got {self.std!r}")
        object.__setattr__(self, "mean", tuple(float(m) for m in mean))
        object.__setattr__(self, "std", tuple(float(s) for s in std))

    @property
    def n_channels(self) -> int:
        return len(self.mean)

    def _per_channel(self, values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1).to(like.device, like.dtype)

    def bounds(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lowest and highest normalised value per channel, shaped ``[C, 1, 1]`` like ``like``."""
        mean = torch.tensor(self.mean, dtype=torch.float32)
        std = torch.tensor(self.std, dtype=torch.float32)
        low = (torch.zeros(self.n_channels) - mean) / std
        high = (torch.ones(self.n_channels) - mean) / std
        return (low.view(-1, 1, 1).to(like.device, like.dtype),
                high.view(-1, 1, 1).to(like.device, like.dtype))

    def step(self, epsilon: float, like: torch.Tensor) -> torch.Tensor:
        """A raw-pixel distance ``epsilon`` in normalised units, per channel ``[C, 1, 1]``."""
        return epsilon / self._per_channel(self.std, like)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images ``[..., C, H, W]`` back to raw pixels."""
        return x * self._per_channel(self.std, x) + self._per_channel(self.mean, x)


#: MNIST's normalisation, also used for notMNIST (which is fed to MNIST models).
MNIST_PIXELS = PixelRange((MNIST_MEAN,), (MNIST_STD,))
#: CIFAR-10's normalisation, also used for CIFAR-5 and its outliers.
CIFAR10_PIXELS = PixelRange(CIFAR10_MEAN, CIFAR10_STD)


@dataclass(frozen=True, eq=False)
class ImageData:
    """A labelled image set held in memory, with its provenance and normalisation."""

    x: torch.Tensor  # [N, C, H, W] float32, normalised or raw in [0, 1]
    y: torch.Tensor  # [N] int64 original class ids
    name: str
    split: str
    classes: tuple[str, ...]  # class names indexed by label
    source: str
    lossy: bool
    pixel_range: PixelRange | None  # how x was normalised; None: raw pixels in [0, 1]

    @property
    def normalized(self) -> bool:
        return self.pixel_range is not None

    def __post_init__(self):
        if self.x.ndim != 4 or self.y.ndim != 1 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                "ImageData needs x of shape [N, C, H, W] and y of shape [N], got "
                f"x {tuple(self.x.shape)} and y {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, n: int, seed: int = 0) -> ImageData:
        """``n`` examples drawn without replacement, fixed by ``seed``, in their original order."""
        n = check_int("n", n, minimum=1)
        if n > len(self):
            raise ValueError(f"n must be at most the data set size {len(self)}, got {n}")
        seed = check_int("seed", seed, minimum=0)
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self), generator=generator)[:n].sort().values
        return dataclasses.replace(self, x=self.x[index], y=self.y[index])


# --------------------------------------------------------------------------------------------
# Files, checksums, downloads
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RemoteFile:
    relpath: str  # relative to the data root
    md5: str
    url: str | None  # None: never downloaded (the JPEG copy of CIFAR-10)


class _FileKey(NamedTuple):
    """Identifies one version of a file on disk, so the in-process caches notice a changed file."""

    path: str
    size: int
    mtime_ns: int
    md5: str  # expected


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_NOTMNIST_URL = "https://github.com/davidflanagan/notMNIST-to-MNIST/raw/master/"


def _mnist_file(name: str, md5: str) -> _RemoteFile:
    return _RemoteFile(f"MNIST/raw/{name}", md5, _MNIST_URL + name)


_MNIST_FILES = {
    "train": (
        _mnist_file("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        _mnist_file("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ),
    "test": (
        _mnist_file("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        _mnist_file("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
}
_NOTMNIST_FILES = (
    _RemoteFile(
        "notMNIST/raw/t10k-images-idx3-ubyte.gz",
        "2c87c839a4ef9b238846600eec8c35b7",
        _NOTMNIST_URL + "t10k-images-idx3-ubyte.gz",
    ),
    _RemoteFile(
        "notMNIST/raw/t10k-labels-idx1-ubyte.gz",
        "7ea9118cbafd0f6e3ee2ad771d782a01",
        _NOTMNIST_URL + "t10k-labels-idx1-ubyte.gz",
    ),
)
_CIFAR_TARBALL = _RemoteFile(
    "cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
)
_CIFAR_BATCH_DIR = "cifar-10-batches-py"
_CIFAR_BATCHES = {  # file name and MD5 of each official batch, in the official order
    "train": (
        ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
        ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
        ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
        ("data_batch_4", "634d18415352ddfa80567beed471001a"),
        ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    ),
    "test": (("test_batch", "40351d587109b95175f43aff81a1287e"),),
}
_CIFAR_JPEG_TARBALL = _RemoteFile(
    "CIFAR10-jpeg/CIFAR-10-images.tar.gz", "596482b5dfaa6072d134d7bc8b671530", None
)
_CIFAR_JPEG_ORDER = _RemoteFile(
    "CIFAR10-jpeg/cifar10_official_label_order.npz", "666ff66f038b708d3af2d86b96305388", None
)


_LAYOUT = "a folder laid out as MNIST/raw/, notMNIST/raw/, cifar-10-batches-py/ or CIFAR10-jpeg/"


class _Root(NamedTuple):
    """The data folder and who chose it."""

    path: pathlib.Path
    explicit: str | None  # "env" (HYPERNETS_DATA), "arg" (root=...), None: the per-user cache

    def named_by(self) -> str:
        """Who named an explicit folder."""
        if self.explicit == "env":
            return "the environment variable HYPERNETS_DATA"
        return "the root argument"

    def described(self) -> str:
        if self.explicit is None:
            return f"the per-user cache {self.path}"
        return f"the data folder {self.path} (named by {self.named_by()})"

    def use_cache_instead(self) -> str:
        """How to fall back to the per-user cache (and the downloads into it)."""
        cache = _user_cache()
        if self.explicit == "env":
            return f"unset HYPERNETS_DATA to use the per-user cache {cache}"
        return f"leave root unset (and HYPERNETS_DATA unset) to use the per-user cache {cache}"


def _user_cache() -> pathlib.Path:
    return pathlib.Path(pooch.os_cache("hypernets"))


def _resolve_root(root) -> _Root:
    """The data folder; an explicitly named one must be an existing folder (never created)."""
    if root is not None:
        resolved = _Root(pathlib.Path(root).expanduser(), "arg")
    else:
        from_env = os.environ.get("HYPERNETS_DATA")
        if not from_env:
            return _Root(_user_cache(), None)
        resolved = _Root(pathlib.Path(from_env).expanduser(), "env")
    path = resolved.path
    if path.is_dir():
        return resolved
    error_type = FileNotFoundError
    if path.is_symlink() and not path.exists():
        problem = f"is a symbolic link to {os.readlink(path)}, which does not exist"
    elif path.exists():
        problem, error_type = "is not a folder", NotADirectoryError
    else:
        problem = "does not exist"
    raise error_type(
        f"The data folder {path}, named by {resolved.named_by()}, {problem}. Expected {_LAYOUT}. "
        f"Correct the path, or {resolved.use_cache_instead()} (missing files are downloaded "
        "there). An explicitly named data folder is never created."
    )


def data_root(root: str | os.PathLike | None = None) -> pathlib.Path:
    """The data folder: ``root`` if given, else ``$HYPERNETS_DATA``, else pooch's user cache.

    An explicit ``root`` or ``$HYPERNETS_DATA`` must name an existing folder, else
    FileNotFoundError (NotADirectoryError for a file); it is never created. An empty
    ``$HYPERNETS_DATA`` counts as unset.
    """
    return _resolve_root(root).path


def _cache_dir() -> pathlib.Path:
    """Folder of decoded arrays: ``$HYPERNETS_CACHE``, else ``os_cache("hypernets")/cache``."""
    from_env = os.environ.get("HYPERNETS_CACHE")
    if from_env:
        return pathlib.Path(from_env).expanduser()
    return _user_cache() / "cache"


def _check_split(split) -> str:
    return check_choice("split", split, SPLITS)


def _check_flags(normalize, download) -> None:
    check_bool("normalize", normalize)
    check_bool("download", download)


def _missing_file_error(path: pathlib.Path, root: _Root, downloadable: bool) -> FileNotFoundError:
    fix = "or allow download=True" if downloadable else "it is never downloaded"
    return FileNotFoundError(
        f"Data file {path} not found in {root.described()}. Point the loaders at a folder "
        "that holds it (set the environment variable HYPERNETS_DATA or pass root=...); "
        f"{fix}."
    )


def _fetch(
    root: _Root, remote: _RemoteFile, download: bool, alternatives: str = ""
) -> pathlib.Path:
    """Path of ``remote`` under ``root``, downloading it (MD5-checked by pooch) when missing.

    ``alternatives`` names other files that would do instead, for the message of a failure.
    """
    path = root.path / remote.relpath
    if path.is_file():
        return path
    if not download or remote.url is None:
        raise _missing_file_error(path, root, downloadable=remote.url is not None)
    _download(root, remote, path, alternatives)
    return path


def _download(root: _Root, remote: _RemoteFile, path: pathlib.Path, alternatives: str) -> None:
    """Download ``remote`` to ``path``; on failure remove what it created, raise DownloadError."""
    created = []  # folders this download creates, deepest first
    folder = path.parent
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    existed = path.exists() or path.is_symlink()
    try:
        pooch.retrieve(
            remote.url, known_hash=f"md5:{remote.md5}", path=path.parent, fname=path.name
        )
        if not path.is_file():
            raise FileNotFoundError(f"pooch reported success but {path} is not a file")
    except Exception as error:
        _remove_partial(path, existed, created)
        raise DownloadError(_download_failure(root, remote, path, alternatives, error)) from error


def _remove_partial(path: pathlib.Path, existed: bool, created: list[pathlib.Path]) -> None:
    """Remove a file left by a failed download, and the (empty) folders it created."""
    if not existed and (path.is_file() or path.is_symlink()):
        with contextlib.suppress(OSError):
            path.unlink()
    for folder in created:
        with contextlib.suppress(OSError):  # not empty: another process writes there too
            folder.rmdir()


def _download_failure(
    root: _Root, remote: _RemoteFile, path: pathlib.Path, alternatives: str, error: Exception
) -> str:
    reason = " ".join(f"{type(error).__name__}: {error}".split())
    if len(reason) > 300:
        reason = reason[:297] + "..."
    if root.explicit is None:
        return (
            f"Could not download {remote.url} into the per-user cache {root.path} ({reason}). "
            f"The file {path} is missing. Retry with an internet connection, put the file at "
            f"{path} yourself (MD5 {remote.md5}{alternatives}), or set the environment variable "
            f"HYPERNETS_DATA to {_LAYOUT} that holds the data."
        )
    return (
        f"Data file {path} is missing from {root.described()}, and downloading it from "
        f"{remote.url} failed ({reason}). Put the file there (MD5 {remote.md5}{alternatives}), "
        f"or {root.use_cache_instead()} with an internet connection."
    )


def _file_key(path: pathlib.Path, md5: str) -> _FileKey:
    stat = path.stat()
    return _FileKey(str(path.resolve()), stat.st_size, stat.st_mtime_ns, md5)


def _check_md5(content: bytes, where: str, expected: str) -> None:
    actual = hashlib.md5(content).hexdigest()
    if actual != expected:
        raise DataError(
            f"Data file {where} failed its MD5 check (expected {expected}, got {actual}): "
            "it is corrupt or truncated. Delete it so that it is downloaded again "
            "(download=True), or copy it again from a good source."
        )


def _verified_bytes(key: _FileKey) -> bytes:
    """The file's content, after checking it against the expected MD5."""
    content = pathlib.Path(key.path).read_bytes()
    _check_md5(content, key.path, key.md5)
    return content


# --------------------------------------------------------------------------------------------
# MNIST and notMNIST (IDX format)
# --------------------------------------------------------------------------------------------


def _parse_idx(content: bytes, path: str, shape_tail: tuple[int, ...]) -> np.ndarray:
    """Parse a gzipped IDX file of unsigned bytes whose items have shape ``shape_tail``.

    Written by hand because the format is four lines of numpy and torchvision is not a dependency.
    """
    try:
        raw = gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"Data file {path} is not a readable gzip file ({error}).") from None
    ndim = 1 + len(shape_tail)
    header_size = 4 + 4 * ndim
    # Magic number: two zero bytes, type code 0x08 (unsigned byte), number of dimensions.
    if len(raw) < header_size or raw[:4] != bytes((0, 0, 0x08, ndim)):
        raise DataError(
            f"Data file {path} is not an IDX file of unsigned bytes with {ndim} dimension(s) "
            f"(magic number {raw[:4].hex() or 'missing'}, expected {bytes((0, 0, 8, ndim)).hex()})."
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if dims[1:] != shape_tail or len(raw) != header_size + math.prod(dims):
        raise DataError(
            f"Data file {path} has header dimensions {dims} and {len(raw) - header_size} data "
            f"bytes; expected items of shape {shape_tail} and {math.prod(dims)} data bytes."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


@functools.lru_cache(maxsize=4)
def _idx_images_and_labels(
    images_key: _FileKey, labels_key: _FileKey
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 1, 28, 28] and int64 labels [N] (cached; never modified by callers)."""
    images = _parse_idx(_verified_bytes(images_key), images_key.path, (28, 28))
    labels = _parse_idx(_verified_bytes(labels_key), labels_key.path, ())
    if len(images) != len(labels):
        raise DataError(
            f"{images_key.path} holds {len(images)} images but {labels_key.path} holds "
            f"{len(labels)} labels."
        )
    return (
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
    )


def _load_idx_set(
    files: Sequence[_RemoteFile], root, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    base = _resolve_root(root)
    images_file, labels_file = files
    images_path = _fetch(base, images_file, download)
    labels_path = _fetch(base, labels_file, download)
    return _idx_images_and_labels(
        _file_key(images_path, images_file.md5), _file_key(labels_path, labels_file.md5)
    )


def _to_float(images: torch.Tensor, pixel_range: PixelRange | None) -> torch.Tensor:
    """uint8 [N, C, H, W] to float32 in [0, 1], then standardised per channel by ``pixel_range``."""
    x = images.to(torch.float32).div_(255.0)
    if pixel_range is not None:
        x.sub_(torch.tensor(pixel_range.mean).view(1, -1, 1, 1))
        x.div_(torch.tensor(pixel_range.std).view(1, -1, 1, 1))
    return x


def load_mnist(
    split: str = "train",
    *,
    root: str | os.PathLike | None = None,
    normalize: bool = True,
    download: bool = True,
) -> ImageData:
    """MNIST from the official IDX files: 60,000 training or 10,000 test digits, [N, 1, 28, 28].

    With ``normalize`` the pixels are (x / 255 - 0.1307) / 0.3081, else raw in [0, 1].
    """
    _check_split(split)
    _check_flags(normalize, download)
    images, labels = _load_idx_set(_MNIST_FILES[split], root, download)
    return ImageData(
        x=_to_float(images, MNIST_PIXELS if normalize else None),
        y=labels.clone(),
        name="MNIST",
        split=split,
        classes=MNIST_CLASSES,
        source="official MNIST IDX files",
        lossy=False,
        pixel_range=MNIST_PIXELS if normalize else None,
    )


def load_notmnist(
    *,
    root: str | os.PathLike | None = None,
    normalize: bool = True,
    download: bool = True,
) -> ImageData:
    """The 10,000 notMNIST letters A-J (1,000 each) used as MNIST's out-of-distribution set.

    Normalised with the MNIST statistics, because it is fed to models trained on MNIST.
    """
    _check_flags(normalize, download)
    images, labels = _load_idx_set(_NOTMNIST_FILES, root, download)
    return ImageData(
        x=_to_float(images, MNIST_PIXELS if normalize else None),
        y=labels.clone(),
        name="notMNIST",
        split="test",
        classes=NOTMNIST_CLASSES,
        source="notMNIST_small sample in MNIST's IDX format (notMNIST-to-MNIST repository)",
        lossy=False,
        pixel_range=MNIST_PIXELS if normalize else None,
    )


#: The noise outlier sets of Bayesian Hypernetworks' anomaly detection (its ``noised``).
NOISE_KINDS = ("uniform", "gaussian")


def noise_images(like: ImageData, kind: str, *, seed: int = 0) -> ImageData:
    """As many noise images as ``like`` holds, of its shape and normalisation.

    The Bayesian Hypernetworks reference (``dk_anomaly_detection.py``, ``noised`` at noise
    level 1) draws every raw pixel from U[0, 1] (``uniform``) or N(0, 1) (``gaussian``, not
    clipped to [0, 1]); the pixels are then normalised as ``like``'s. Labels are all 0.
    """
    kind = check_choice("kind (of noise)", kind, NOISE_KINDS)
    generator = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    shape = tuple(like.x.shape)
    pixels = (torch.rand(shape, generator=generator) if kind == "uniform"
              else torch.randn(shape, generator=generator))
    if like.pixel_range is not None:
        channels = (1, -1, 1, 1)
        pixels = ((pixels - torch.tensor(like.pixel_range.mean).view(channels))
                  / torch.tensor(like.pixel_range.std).view(channels))
    name = {"uniform": "uniform noise", "gaussian": "Gaussian noise"}[kind]
    return ImageData(x=pixels, y=torch.zeros(shape[0], dtype=torch.long), name=name,
                     split=like.split, classes=("noise",),
                     source=f"{name} images shaped like {like.name} {like.split} (seed {seed})",
                     lossy=False, pixel_range=like.pixel_range)


# --------------------------------------------------------------------------------------------
# CIFAR-10: official python batches
# --------------------------------------------------------------------------------------------


class _RawImages(NamedTuple):
    # split name: (uint8 images [N, 3, 32, 32], int64 labels [N])
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    source: str
    lossy: bool


def _parse_cifar_batch(content: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, 3, 32, 32] and int64 labels [n] of one official python batch."""
    # Safe to unpickle: callers have matched the content against the official MD5.
    try:
        batch = pickle.loads(content, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
        raise DataError(f"Data file {where} is not a CIFAR-10 python batch ({error!r}).") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise DataError(
            f"Data file {where} holds data of shape {data.shape} and {labels.size} labels; "
            "expected [n, 3072] and n labels."
        )
    # Each row is the red, then green, then blue 32x32 plane.
    return data.reshape(-1, 3, 32, 32), labels


def _assemble_official(batches: dict[str, tuple[np.ndarray, np.ndarray]]) -> _RawImages:
    splits = {}
    for split, names in _CIFAR_BATCHES.items():
        images, labels = zip(*(batches[name] for name, _ in names))
        splits[split] = (
            torch.from_numpy(np.concatenate(images)),
            torch.from_numpy(np.concatenate(labels)),
        )
    return _RawImages(splits, "official CIFAR-10 python batches", lossy=False)


@functools.lru_cache(maxsize=1)
def _official_cifar_from_dir(batch_keys: tuple[tuple[str, _FileKey], ...]) -> _RawImages:
    return _assemble_official(
        {name: _parse_cifar_batch(_verified_bytes(key), key.path) for name, key in batch_keys}
    )


@functools.lru_cache(maxsize=1)
def _official_cifar_from_tarball(tarball_key: _FileKey) -> _RawImages:
    """Read the batches straight out of the tarball, so that the data root is never written to."""
    wanted = {
        f"{_CIFAR_BATCH_DIR}/{name}": (name, md5)
        for batches in _CIFAR_BATCHES.values()
        for name, md5 in batches
    }
    batches = {}
    with tarfile.open(fileobj=io.BytesIO(_verified_bytes(tarball_key)), mode="r:gz") as archive:
        for member in archive:
            if member.name in wanted and member.isfile():
                name, md5 = wanted[member.name]
                where = f"{tarball_key.path}:{member.name}"
                content = archive.extractfile(member).read()
                _check_md5(content, where, md5)
                batches[name] = _parse_cifar_batch(content, where)
    missing = sorted(set(name for name, _ in wanted.values()) - set(batches))
    if missing:
        raise DataError(f"Data file {tarball_key.path} lacks the CIFAR-10 batches {missing}.")
    return _assemble_official(batches)


def _official_cifar_dir_keys(batch_dir: pathlib.Path) -> tuple[tuple[str, _FileKey], ...]:
    keys = []
    for batches in _CIFAR_BATCHES.values():
        for name, md5 in batches:
            path = batch_dir / name
            if not path.is_file():
                raise FileNotFoundError(
                    f"CIFAR-10 batch {path} not found although its folder exists. Copy the "
                    f"complete folder {batch_dir} again, or delete it so that the official "
                    "tarball is used (and downloaded if missing)."
                )
            keys.append((name, _file_key(path, md5)))
    return tuple(keys)


# --------------------------------------------------------------------------------------------
# CIFAR-10: lossy JPEG copy, rebuilt in the official order
# --------------------------------------------------------------------------------------------


def _decode_jpeg_tarball(content: bytes, path: str) -> dict[str, np.ndarray]:
    """Decode ``<split>/<class>/<NNNN>.jpg`` in one pass into uint8 [10, n_per_class, 32, 32, 3]."""
    found: dict[str, dict[int, dict[int, np.ndarray]]] = {
        split: {label: {} for label in range(10)} for split in SPLITS
    }
    with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as archive:
        for member in archive:
            if not (member.isfile() and member.name.endswith(".jpg")):
                continue
            parts = member.name.split("/")
            if (
                len(parts) != 3
                or parts[0] not in SPLITS
                or parts[1] not in CIFAR10_CLASSES
                or not parts[2][:-4].isdigit()
            ):
                raise DataError(f"Data file {path} holds an unexpected image {member.name}.")
            with Image.open(archive.extractfile(member)) as image:
                pixels = np.asarray(image.convert("RGB"))
            if pixels.shape != (32, 32, 3):
                raise DataError(
                    f"Image {member.name} in {path} has shape {pixels.shape}, not 32x32 RGB."
                )
            found[parts[0]][CIFAR10_CLASSES.index(parts[1])][int(parts[2][:-4])] = pixels

    decoded = {}
    for split, per_class in found.items():
        count = len(per_class[0])
        for label, images in per_class.items():
            if sorted(images) != list(range(count)):
                raise DataError(
                    f"Data file {path} does not hold images 0..{count - 1} for every class: "
                    f"{split}/{CIFAR10_CLASSES[label]} has {len(images)} images."
                )
        decoded[split] = np.stack(
            [np.stack([per_class[label][i] for i in range(count)]) for label in range(10)]
        )
    return decoded


_DECODE_CACHE_VERSION = 2  # 1: the arrays alone (no hash); 2: with SHA-256 and source MD5
_DECODE_CACHE_META = ("format_version", "source_md5", "sha256")


def _decode_digest(decoded: dict[str, np.ndarray]) -> str:
    """SHA-256 over every split's name, dtype, shape and pixels."""
    digest = hashlib.sha256()
    for split in SPLITS:
        images = np.ascontiguousarray(decoded[split])
        digest.update(f"{split}:{images.dtype.str}:{images.shape};".encode())
        digest.update(images.data)
    return digest.hexdigest()


def _read_decode_cache(path: pathlib.Path, source_md5: str) -> dict[str, np.ndarray] | None:
    """The cached decode of the archive with MD5 ``source_md5``, or None when it is absent or
    does not match its format version, source or content hash (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as cached:
            if not set(_DECODE_CACHE_META) <= set(cached.files):
                return _stale_cache(path, "it has no content hash (written by an older version)")
            version = int(cached["format_version"])
            stored_md5, stored_sha256 = str(cached["source_md5"]), str(cached["sha256"])
            decoded = {split: cached[split] for split in SPLITS}
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as error:
        return _stale_cache(path, f"it is unreadable ({' '.join(str(error).split())})")
    if version != _DECODE_CACHE_VERSION:
        return _stale_cache(path, f"format version {version}, expected {_DECODE_CACHE_VERSION}")
    if stored_md5 != source_md5:
        return _stale_cache(path, f"built from an archive with MD5 {stored_md5}, not {source_md5}")
    for split, images in decoded.items():
        layout = images.shape[:1] + images.shape[2:]  # classes, then one 32x32 RGB image
        if images.dtype != np.uint8 or images.ndim != 5 or layout != (10, 32, 32, 3):
            return _stale_cache(
                path, f"its {split} array is {images.dtype} {images.shape}, expected uint8 "
                "(10, n, 32, 32, 3)"
            )
    actual = _decode_digest(decoded)
    if actual != stored_sha256:
        return _stale_cache(
            path, f"its arrays have SHA-256 {actual[:16]}..., not the stored "
            f"{stored_sha256[:16]}... (changed on disk)"
        )
    return decoded


def _stale_cache(path: pathlib.Path, reason: str) -> None:
    warnings.warn(f"Rebuilding the CIFAR-10 decode cache {path}: {reason}.", stacklevel=4)
    return None


def _write_decode_cache(
    path: pathlib.Path, decoded: dict[str, np.ndarray], source_md5: str
) -> None:
    """Write atomically (temporary file, then os.replace), with the arrays' SHA-256 and the
    source archive's MD5; a cache that cannot be written only costs a new decode next time."""
    meta = {
        "format_version": np.array(_DECODE_CACHE_VERSION),
        "source_md5": np.array(source_md5),
        "sha256": np.array(_decode_digest(decoded)),
    }
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        ) as handle:
            temporary = handle.name
            np.savez(handle, **{split: decoded[split] for split in SPLITS}, **meta)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        temporary = None
    except OSError as error:
        warnings.warn(f"Could not write the decode cache {path} ({error}).", stacklevel=3)
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def _official_order(per_class: np.ndarray, labels: np.ndarray, where: str) -> np.ndarray:
    """Place the k-th image of class c at the k-th position whose official label is c."""
    counts = np.bincount(labels, minlength=10)
    if len(counts) != 10 or np.any(counts != per_class.shape[1]):
        raise DataError(
            f"{where}: the label order holds {counts.tolist()} images per class but the JPEG "
            f"copy holds {per_class.shape[1]} per class."
        )
    ordered = np.empty((len(labels),) + per_class.shape[2:], dtype=np.uint8)
    # A stable sort by class lists each class's positions in order, matching the NNNN numbering.
    ordered[np.argsort(labels, kind="stable")] = per_class.reshape((-1,) + per_class.shape[2:])
    return ordered


@functools.lru_cache(maxsize=1)
def _jpeg_cifar(tarball_key: _FileKey, order_key: _FileKey) -> _RawImages:
    tarball_content = _verified_bytes(tarball_key)
    order_content = _verified_bytes(order_key)
    try:
        with np.load(io.BytesIO(order_content), allow_pickle=False) as order:
            label_order = {
                "train": np.concatenate([order[f"data_batch_{i}"] for i in range(1, 6)]),
                "test": order["test_batch"],
            }
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise DataError(
            f"Data file {order_key.path} is not a CIFAR-10 label order ({error})."
        ) from None

    cache_path = _cache_dir() / f"cifar10-jpeg-{tarball_key.md5}.npz"
    decoded = _read_decode_cache(cache_path, tarball_key.md5)
    if decoded is None:
        decoded = _decode_jpeg_tarball(tarball_content, tarball_key.path)
        _write_decode_cache(cache_path, decoded, tarball_key.md5)

    splits = {}
    for split in SPLITS:
        labels = label_order[split].astype(np.int64)
        images = _official_order(decoded[split], labels, f"{order_key.path} ({split})")
        splits[split] = (
            torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(labels),
        )
    return _RawImages(splits, _JPEG_SOURCE, lossy=True)


def _cifar10_raw(root, download: bool) -> _RawImages:
    """Pick the CIFAR-10 source: official batches, official tarball, JPEG copy, then download."""
    resolved = _resolve_root(root)
    base = resolved.path
    batch_dir = base / _CIFAR_BATCH_DIR
    tarball = base / _CIFAR_TARBALL.relpath
    jpeg_tarball = base / _CIFAR_JPEG_TARBALL.relpath
    if batch_dir.is_dir():
        return _official_cifar_from_dir(_official_cifar_dir_keys(batch_dir))
    if not tarball.is_file() and jpeg_tarball.is_file():
        order = _fetch(resolved, _CIFAR_JPEG_ORDER, download=False)
        return _jpeg_cifar(
            _file_key(jpeg_tarball, _CIFAR_JPEG_TARBALL.md5),
            _file_key(order, _CIFAR_JPEG_ORDER.md5),
        )
    if not tarball.is_file() and not download:
        raise FileNotFoundError(
            f"No CIFAR-10 files under {base}: expected the official batches {batch_dir}/ "
            f"or tarball {tarball}, or the JPEG copy {jpeg_tarball} with "
            f"{base / _CIFAR_JPEG_ORDER.relpath}. Set the environment variable HYPERNETS_DATA "
            "or pass root=... to a folder that holds them, or allow download=True to fetch "
            "the official tarball."
        )
    alternatives = (
        f"; or, instead of it, the official batches {batch_dir}/, or the JPEG copy "
        f"{jpeg_tarball} with {base / _CIFAR_JPEG_ORDER.relpath}"
    )
    _fetch(resolved, _CIFAR_TARBALL, download, alternatives)
    return _official_cifar_from_tarball(_file_key(tarball, _CIFAR_TARBALL.md5))


def _cifar_image_data(
    split: str, root, normalize: bool, download: bool, labels_kept: range, name: str
) -> ImageData:
    _check_split(split)
    _check_flags(normalize, download)
    raw = _cifar10_raw(root, download)
    images, labels = raw.splits[split]
    if len(labels_kept) < 10:
        keep = (labels >= labels_kept.start) & (labels < labels_kept.stop)
        images, labels = images[keep], labels[keep]
    return ImageData(
        x=_to_float(images, CIFAR10_PIXELS if normalize else None),
        y=labels.clone(),
        name=name,
        split=split,
        classes=CIFAR10_CLASSES,
        source=raw.source,
        lossy=raw.lossy,
        pixel_range=CIFAR10_PIXELS if normalize else None,
    )


def load_cifar10(
    split: str = "train",
    *,
    root: str | os.PathLike | None = None,
    normalize: bool = True,
    download: bool = True,
) -> ImageData:
    """CIFAR-10 in the official order: 50,000 training or 10,000 test images, [N, 3, 32, 32].

    Reads the official python batches (folder or tarball) when present, else the lossy JPEG
    copy (``lossy=True``, stated in ``source``); if neither is there and ``download`` is set,
    downloads the official tarball. With ``normalize`` each channel is standardised with
    CIFAR10_MEAN and CIFAR10_STD, else the pixels are raw in [0, 1].
    """
    return _cifar_image_data(split, root, normalize, download, range(10), "CIFAR-10")


def load_cifar5(
    split: str = "train",
    *,
    outliers: bool = False,
    root: str | os.PathLike | None = None,
    normalize: bool = True,
    download: bool = True,
) -> ImageData:
    """The CIFAR-5 split: classes 0-4 (in-distribution), or with ``outliers`` classes 5-9.

    Labels keep their CIFAR-10 ids (5..9 for the outliers); ``classes`` lists all ten names.
    """
    check_bool("outliers", outliers)
    if outliers:
        return _cifar_image_data(
            split, root, normalize, download, range(_CIFAR5_CLASSES_IN, 10), "CIFAR-5 outliers"
        )
    return _cifar_image_data(split, root, normalize, download, range(_CIFAR5_CLASSES_IN), "CIFAR-5")


@dataclass(frozen=True)
class ImageSplits:
    """The image sets of one benchmark: training and test images, and the outliers of the test set."""

    train: ImageData
    test: ImageData
    outliers: ImageData

    @property
    def source(self) -> str:
        """Where the pixels come from (for CIFAR: the official batches or the lossy JPEG copy)."""
        return self.train.source

    @property
    def lossy(self) -> bool:
        return self.train.lossy

    def subsets(self, n_train: int | None, n_test: int | None, seed: int) -> ImageSplits:
        """Random subsets (:meth:`ImageData.subset`); ``n_test`` applies to test set and outliers."""
        train, test, outliers = self.train, self.test, self.outliers
        if n_train is not None:
            train = train.subset(n_train, seed=seed)
        if n_test is not None:
            test, outliers = test.subset(n_test, seed=seed), outliers.subset(n_test, seed=seed)
        return ImageSplits(train, test, outliers)


def load_mnist_splits(n_train: int | None = None, n_test: int | None = None,
                      seed: int = 0) -> ImageSplits:
    """MNIST train and test, notMNIST as outliers; ``n_train``/``n_test`` draw subsets (None: all).

    ``n_test`` applies to the MNIST test set and to notMNIST alike (10,000 images each).
    """
    return ImageSplits(load_mnist("train"), load_mnist("test"), load_notmnist()).subsets(
        n_train, n_test, seed)


def load_cifar5_splits(n_train: int | None = None, n_test: int | None = None,
                       seed: int = 0) -> ImageSplits:
    """CIFAR-5 train and test (classes 0-4), the test images of classes 5-9 as outliers.

    ``n_test`` applies to the CIFAR-5 test set and to the outliers alike (5,000 images each).
    """
    return ImageSplits(load_cifar5("train"), load_cifar5("test"),
                       load_cifar5("test", outliers=True)).subsets(n_train, n_test, seed)


def describe_images(image_sets: Sequence[ImageData]) -> pd.DataFrame:
    """One row per data set: name, split, size, classes, smallest/largest class, provenance."""
    rows = []
    for d in image_sets:
        counts = d.y.unique(return_counts=True)[1]
        rows.append({"data set": d.name, "split": d.split, "N": len(d), "classes": len(counts),
                     "per class min": int(counts.min()), "per class max": int(counts.max()),
                     "lossy": d.lossy, "source": d.source})
    return pd.DataFrame(rows)


def describe_toys(toys: Sequence[ToyRegression]) -> pd.DataFrame:
    """One row per toy draw: noise level, size, input range, target mean and std."""
    return pd.DataFrame({"noise std": t.noise_std, "N": len(t.x), "x min": t.x.min().item(),
                         "x max": t.x.max().item(), "y mean": t.y.mean().item(),
                         "y std": t.y.std().item()} for t in toys)
