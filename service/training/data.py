"""Image datasets as in-memory float tensors split into train/val/test.

Every dataset comes back as a :class:`Splits` of ``float32`` images ``(N, C, H, W)`` in ``[0, 1]``
and ``int64`` labels. Nothing is downloaded unless ``download=True`` is passed explicitly; the
files of CIFAR-10 and CIFAR-100 (python version) and Fashion-MNIST (IDX) are parsed here, with
a restricted unpickler for the CIFAR pickles so that a hostile pickle cannot run code.

Split rules (all deterministic):

* ``cifar10`` / ``cifar100`` / ``fashion_mnist``: the official test set is the test split
  (``test_fraction`` is ignored); ``val_fraction`` of the official training set, stratified
  and chosen by ``seed``, is the val split; the rest is train.
* ``digits`` / ``synthetic`` (no official test set): ``test_fraction`` of all samples, stratified
  and chosen with a fixed seed (so the test split is the same for every ``seed`` and never
  depends on ``val_fraction``), is the test split; ``val_fraction`` of all samples, stratified
  and chosen by ``seed`` from the rest, is the val split; the rest is train.
* ``imagefolder`` (``service.training.imagefolder``): a ``test/`` folder is the test split, else as
  digits; a ``val/`` folder is the val split, else ``val_fraction`` of the rest, by ``seed``.
* ``max_train`` then keeps a stratified, ``seed``-chosen subset of the train split.

Within each split samples keep their source order. Results are cached per process (see
:func:`load_splits`); callers must not modify the returned tensors in place.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib
import importlib.util
import os
import pickle
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DATASETS", "DataError", "Splits", "load_splits"]


class DataError(ValueError):
    """A dataset could not be loaded; the one-line message says what was expected and where."""


@dataclass(frozen=True)
class Splits:
    """One dataset's train/val/test tensors: images float32 (N, C, H, W) in [0, 1], labels int64."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    name: str

    @property
    def in_channels(self) -> int:
        """Number of image channels (1 for grey, 3 for RGB), for building the model's stem."""
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        """Side length in pixels of the (square) images."""
        return int(self.train_x.shape[-1])


from service.core.api import DATASETS  # noqa: E402 - the one catalogue, cheap for config

"""Names accepted by :func:`load_splits`."""

# Seeds that fix dataset *content* and the test split of datasets without an official test set.
_TEST_SPLIT_SEED = 20_240_917
_SYNTHETIC_SEED = 1_234_567

_DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "data"
_CACHE_SIZE = 4

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_META = "batches.meta"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
_CIFAR_EXPECTED = "expected data_batch_1..5 and test_batch (CIFAR-10 'python version')"
_CIFAR100_DIR = "cifar-100-python"
_CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
_CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
_CIFAR100_EXPECTED = "expected train and test (CIFAR-100 'python version')"
_NO_FILES_HINT = "pass download=True on a machine with internet or copy the files there"

_FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FMNIST_MD5 = {  # of the .gz files, as published by Zalando (same as torchvision's)
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
_FMNIST_SUBDIRS = ("", "FashionMNIST/raw", "fashion_mnist")
_FMNIST_EXPECTED = (
    "expected train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
    "t10k-labels-idx1-ubyte (Fashion-MNIST IDX, plain or .gz)"
)
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801


# --------------------------------------------------------------------------- public entry point


def load_splits(
    name: str,
    *,
    root: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    image_size: int | None = None,
    max_train: int | None = None,
    download: bool = False,
) -> Splits:
    """Load dataset ``name`` as train/val/test tensors, deterministic in ``seed``.

    ``root`` is the folder holding the files of ``cifar10``/``fashion_mnist`` (default: the
    repository's ``data/`` folder); ``image_size`` resizes bilinearly (defaults: digits 32,
    synthetic 16, cifar10 32, fashion_mnist 28); ``max_train`` truncates the train split.
    Results are cached per process (Ray reuses workers across trials), keyed on all arguments.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"dataset {name!r}: seed must be an int, got {seed!r}")
    for label, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(frac, (int, float)) or not 0.0 <= float(frac) < 1.0:
            raise DataError(f"dataset {name!r}: {label} must be in [0, 1), got {frac!r}")
    if name in ("digits", "synthetic") and float(val_fraction) + float(test_fraction) >= 1.0:
        raise DataError(
            f"dataset {name!r}: val_fraction + test_fraction must be < 1 so that training data "
            f"remains, got {val_fraction} + {test_fraction}"
        )
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer))
        or image_size < 1
    ):
        raise DataError(f"dataset {name!r}: image_size must be a positive int, got {image_size!r}")
    if max_train is not None and (
        isinstance(max_train, bool) or not isinstance(max_train, (int, np.integer))
        or max_train < 1
    ):
        raise DataError(f"dataset {name!r}: max_train must be a positive int, got {max_train!r}")
    root_key = os.path.abspath(os.path.expanduser(root if root is not None else _DEFAULT_ROOT))
    try:
        return _load_cached(name, root_key, int(seed), float(val_fraction),
                            float(test_fraction), None if image_size is None else int(image_size),
                            None if max_train is None else int(max_train), bool(download))
    except DataError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, EOFError,
            pickle.UnpicklingError, OSError) as err:
        from service.training.imagefolder import ImageFolderError

        if isinstance(err, ImageFolderError):
            raise
        text = str(err).splitlines()[0] if str(err) else ""
        raise DataError(f"dataset.root: {root_key} holds files {name} cannot read "
                        f"({type(err).__name__}: {text[:200]}); give the published format's "
                        "files") from None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _load_cached(
    name: str,
    root: str,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    image_size: int | None,
    max_train: int | None,
    download: bool,
) -> Splits:
    """Build the splits; memoised so trials in a reused worker process skip the disk and parsing."""
    images: np.ndarray | torch.Tensor
    if name in ("digits", "synthetic"):
        if name == "digits":
            images, labels, default_size = _digits_source()
        else:
            images, labels, default_size = _synthetic_source()
        test_idx, rest = _fixed_test_split(labels, test_fraction)
        val_idx, train_idx = _val_split(labels, rest, val_fraction, seed)
        train_images = val_images = test_images = images
        train_labels = val_labels = test_labels = labels
        num_classes = 10
    elif name == "imagefolder":
        from service.training.imagefolder import ImageFolderError, read_image_folder

        try:
            classes, parts = read_image_folder(root, image_size)
        except ImageFolderError as err:
            raise DataError(str(err)) from None
        num_classes = len(classes)
        train_images, train_labels = parts["train"]
        default_size = int(train_images.shape[-1])
        if "test" in parts:
            test_images, test_labels = parts["test"]
            test_idx, rest = np.arange(len(test_labels)), np.arange(len(train_labels))
        else:  # as digits: a fixed test split, the same for every seed
            test_images, test_labels = train_images, train_labels
            test_idx, rest = _fixed_test_split(train_labels, test_fraction)
        if "val" in parts:
            val_images, val_labels = parts["val"]
            val_idx, train_idx = np.arange(len(val_labels)), rest
        else:
            val_images, val_labels = train_images, train_labels
            val_idx, train_idx = _val_split(train_labels, rest, val_fraction, seed)
    else:
        num_classes = 10
        if name == "cifar10":
            train_images, train_labels, test_images, test_labels = _cifar10_source(
                Path(root), download
            )
            default_size = 32
        elif name == "cifar100":
            train_images, train_labels, test_images, test_labels = _cifar100_source(
                Path(root), download
            )
            default_size, num_classes = 32, 100
        else:
            train_images, train_labels, test_images, test_labels = _fashion_mnist_source(
                Path(root), download
            )
            default_size = int(train_images.shape[-1])
        test_idx = np.arange(len(test_labels))
        val_idx, train_idx = _val_split(train_labels, np.arange(len(train_labels)),
                                        val_fraction, seed)
        val_images, val_labels = train_images, train_labels

    if len(train_idx) == 0:
        raise DataError(f"dataset {name!r}: the train split is empty; lower val/test fractions")
    for split, idx, field in (("validation", val_idx, "val_fraction"),
                              ("test", test_idx, "test_fraction")):
        if len(idx) == 0:  # a score over no image would read 0 and end the run as a success
            raise DataError(f"dataset.{field}: the {split} split of {name!r} holds no image; "
                            f"raise {field} or add images")
    if max_train is not None and max_train < len(train_idx):
        train_idx = train_idx[_stratified_pick(train_labels[train_idx], max_train, _rng(seed, 2))]

    size = image_size if image_size is not None else default_size

    def take(src: np.ndarray | torch.Tensor, lab: np.ndarray, idx: np.ndarray) -> tuple[
        torch.Tensor, torch.Tensor
    ]:
        return _to_float_images(src, idx, size), torch.from_numpy(lab[idx].astype(np.int64))

    train_x, train_y = take(train_images, train_labels, train_idx)
    val_x, val_y = take(val_images, val_labels, val_idx)
    test_x, test_y = take(test_images, test_labels, test_idx)
    return Splits(train_x, train_y, val_x, val_y, test_x, test_y, num_classes, name)


# --------------------------------------------------------------------------- split helpers


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent numpy generator per (seed, purpose) so one split never shifts another."""
    return np.random.default_rng([seed & 0xFFFF_FFFF_FFFF_FFFF, stream])


def _fixed_test_split(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(test, rest) positions: a stratified `fraction` chosen with a fixed seed, so the test
    split is the same for every run seed (data sets without an official test set)."""
    test = _stratified_pick(labels, round(len(labels) * fraction), _rng(_TEST_SPLIT_SEED, 0))
    return test, np.setdiff1d(np.arange(len(labels)), test)


def _val_split(labels: np.ndarray, rest: np.ndarray, fraction: float, seed: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(val, train) positions out of `rest`: `fraction` of all `labels`, stratified and
    chosen by `seed`; the remainder of `rest` trains."""
    val = rest[_stratified_pick(labels[rest], round(len(labels) * fraction), _rng(seed, 1))]
    return val, np.setdiff1d(rest, val)


def _stratified_pick(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of ``k`` samples whose class mix follows ``labels`` (largest remainder)."""
    n = len(labels)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (k / n)
    quota = np.floor(exact).astype(np.int64)
    remainder = k - int(quota.sum())
    if remainder > 0:
        # Largest fractional part first; random tie-break so no class is systematically favoured.
        order = np.lexsort((rng.random(len(classes)), -(exact - quota)))
        quota[order[:remainder]] += 1
    picked = []
    for cls, q in zip(classes, quota, strict=True):
        members = np.flatnonzero(labels == cls)
        picked.append(rng.permutation(members)[:q])
    return np.sort(np.concatenate(picked)).astype(np.int64)


def _to_float_images(
    src: np.ndarray | torch.Tensor, idx: np.ndarray, size: int
) -> torch.Tensor:
    """Select ``idx`` from uint8 or [0, 1] float images (N, C, H, W) and resize to ``size``."""
    if isinstance(src, np.ndarray):
        sel = torch.from_numpy(np.ascontiguousarray(src[idx]))
    else:
        sel = src[torch.from_numpy(idx)]
    x = sel.to(torch.float32)
    if sel.dtype == torch.uint8:
        x = x / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        if x.shape[0] == 0:
            x = x.new_zeros((0, x.shape[1], size, size))
        else:
            x = F.interpolate(
                x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            ).clamp_(0.0, 1.0)
    return x.contiguous()


# --------------------------------------------------------------------------- bundled sources


def _digits_source() -> tuple[torch.Tensor, np.ndarray, int]:
    """scikit-learn's bundled 8x8 digits (1797 samples), scaled from 0..16 to [0, 1].

    Read from the package's own file as `sklearn.datasets.load_digits` reads it (the same
    array), without importing scikit-learn: that import costs a fresh trial process about a
    second of CPU (issue: time goes into training)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset digits: scikit-learn is not installed; pip install "
                        "scikit-learn (its bundled digits are the data)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    images = torch.from_numpy((data[:, :-1] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8))
    return images.clamp_(0.0, 1.0), data[:, -1].astype(np.int64), 32


def _synthetic_source(
    n: int = 600, num_classes: int = 10, channels: int = 3, size: int = 16
) -> tuple[torch.Tensor, np.ndarray, int]:
    """Fixed-seed class prototypes (smooth random patterns) plus shift, contrast and noise.

    Easy enough that a small CNN beats chance within a few epochs, noisy enough not to be
    solved by one pixel; content is the same for every ``seed`` like a bundled dataset.
    """
    g = torch.Generator().manual_seed(_SYNTHETIC_SEED)
    coarse = torch.rand(num_classes, channels, 4, 4, generator=g)
    pattern = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    # Half class-specific colour, half spatial pattern: pooled features already separate classes.
    colour = torch.rand(num_classes, channels, 1, 1, generator=g)
    protos = 0.5 * pattern + 0.5 * colour
    labels = torch.arange(n) % num_classes
    x = protos[labels]
    # Small random circular shifts (per sample) so the task needs some spatial invariance.
    shifts = torch.randint(-1, 2, (n, 2), generator=g)
    x = torch.stack([torch.roll(img, (int(s[0]), int(s[1])), dims=(1, 2)) for img, s in
                     zip(x, shifts, strict=True)])
    contrast = 0.8 + 0.2 * torch.rand(n, 1, 1, 1, generator=g)
    brightness = 0.1 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    noise = 0.15 * torch.randn(n, channels, size, size, generator=g)
    x = (0.5 + contrast * (x - 0.5) + brightness + noise).clamp_(0.0, 1.0)
    return x, labels.numpy().astype(np.int64), size


# --------------------------------------------------------------------------- CIFAR-10


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a CIFAR-10 batch needs (numpy array rebuild)."""

    def find_class(self, module: str, name: str) -> Any:
        factory = _ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise DataError(
                f"refusing to unpickle global {module}.{name}; expected only numpy array data "
                "(CIFAR-10 'python version' batch)"
            )
        return factory()


def _numpy_attr(modules: tuple[str, ...], name: str) -> Callable[[], Any]:
    """Lazily resolve ``name`` from the first importable module (numpy 2 ``_core`` or 1.x)."""

    def resolve() -> Any:
        for mod in modules:
            try:
                return getattr(importlib.import_module(mod), name)
            except (ImportError, AttributeError):
                continue
        raise DataError(f"numpy provides no {name} in {' or '.join(modules)}")

    return resolve


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode`` (bytes in protocol-2 pickles written by Python 3)."""
    if encoding not in ("latin1", "latin-1"):
        raise DataError(f"refusing _codecs.encode with encoding {encoding!r}; expected latin1")
    return text.encode("latin1")


_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")
_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_attr(_MULTIARRAY, "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_attr(_MULTIARRAY, "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): _numpy_attr(_NUMERIC, "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): _numpy_attr(_NUMERIC, "_frombuffer"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
    ("builtins", "list"): lambda: list,
    ("builtins", "dict"): lambda: dict,
    ("__builtin__", "list"): lambda: list,
    ("__builtin__", "dict"): lambda: dict,
}


def _safe_unpickle(path: Path, what: str) -> Any:
    """Load a pickle file through :class:`_RestrictedUnpickler` (``encoding='bytes'``)."""
    try:
        with path.open("rb") as fh:
            return _RestrictedUnpickler(fh, encoding="bytes").load()
    except DataError as exc:
        raise DataError(f"{what}: file {path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, UnicodeDecodeError, MemoryError) as exc:
        raise DataError(
            f"{what}: file {path} is truncated or not a valid pickle "
            f"({type(exc).__name__}: {exc}); {_CIFAR_EXPECTED}"
        ) from None
    except OSError as exc:
        raise DataError(f"{what}: cannot read {path} ({exc})") from None


def _get_key(d: dict, key: str) -> Any:
    """Value for ``key`` given as bytes (Python 2 pickles) or str (Python 3 pickles)."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _read_cifar_batch(path: Path, *, dataset: str = "cifar10", label_key: str = "labels",
                      classes: int = 10, expected: str = _CIFAR_EXPECTED
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file -> uint8 images (N, 3, 32, 32) and int64 labels (N,): CIFAR-10's
    `labels`, or CIFAR-100's `fine_labels` (100 classes)."""
    what = f"dataset {dataset!r}"
    if not path.is_file():
        raise DataError(f"{what}: file {path} not found; {expected}; {_NO_FILES_HINT}")
    obj = _safe_unpickle(path, what)
    if not isinstance(obj, dict):
        raise DataError(
            f"{what}: file {path} holds {type(obj).__name__}; expected a dict with keys "
            "b'data' and b'labels'"
        )
    data, labels = _get_key(obj, "data"), _get_key(obj, label_key)
    if data is None or labels is None:
        raise DataError(f"{what}: file {path} lacks b'data' or b'{label_key}'; expected both "
                        "keys")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        desc = (f"{data.dtype} array {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise DataError(f"{what}: file {path} b'data' is {desc}; expected uint8 array (N, 3072)")
    try:
        labels_arr = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{what}: file {path} b'{label_key}' is not a list of ints") from None
    if len(labels_arr) != data.shape[0]:
        raise DataError(
            f"{what}: file {path} has {data.shape[0]} images but {len(labels_arr)} labels; "
            "expected one label per image"
        )
    if len(labels_arr) and (labels_arr.min() < 0 or labels_arr.max() > classes - 1):
        raise DataError(f"{what}: file {path} has labels outside 0..{classes - 1}; expected "
                        f"{classes} classes")
    return data.reshape(-1, 3, 32, 32), labels_arr


def _cifar10_folder(root: Path) -> Path:
    """The folder holding the batches: ``root/cifar-10-batches-py`` or ``root`` itself."""
    for folder in (root / _CIFAR_DIR, root):
        if (folder / _CIFAR_TRAIN[0]).is_file():
            return folder
    nested = root / _CIFAR_DIR
    if nested.is_dir():
        return nested  # per-file errors below name the missing file
    if not root.is_dir():
        raise DataError(
            f"dataset 'cifar10': folder {nested} not found; {_CIFAR_EXPECTED}; {_NO_FILES_HINT}"
        )
    raise DataError(
        f"dataset 'cifar10': no {_CIFAR_TRAIN[0]} in {root} or {nested}; {_CIFAR_EXPECTED}; "
        f"{_NO_FILES_HINT}"
    )


def _cifar10_source(
    root: Path, download: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Official CIFAR-10 train (50k) and test (10k) arrays, read with the restricted unpickler."""
    if download:
        _download_cifar10(root)
    folder = _cifar10_folder(root)
    parts = [_read_cifar_batch(folder / f) for f in _CIFAR_TRAIN]
    test_x, test_y = _read_cifar_batch(folder / _CIFAR_TEST)
    meta_path = folder / _CIFAR_META
    if meta_path.is_file():
        meta = _safe_unpickle(meta_path, "dataset 'cifar10'")
        names = _get_key(meta, "label_names") if isinstance(meta, dict) else None
        if names is not None and len(names) != 10:
            raise DataError(
                f"dataset 'cifar10': {meta_path} lists {len(names)} label_names; expected 10"
            )
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    return train_x, train_y, test_x, test_y


def _cifar100_source(
    root: Path, download: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Official CIFAR-100 train (50k) and test (10k) arrays with the 100 fine labels (document
    001's Table V data), read with the restricted unpickler."""
    if download:
        _download_archive(root, _CIFAR100_DIR, ("train", "test"), _CIFAR100_URL,
                          _CIFAR100_MD5, "cifar-100-python.tar.gz")
    folder = next((f for f in (root / _CIFAR100_DIR, root) if (f / "train").is_file()),
                  root / _CIFAR100_DIR)
    if not folder.is_dir():
        raise DataError(f"dataset 'cifar100': folder {folder} not found; {_CIFAR100_EXPECTED}; "
                        f"{_NO_FILES_HINT}")
    read = {"dataset": "cifar100", "label_key": "fine_labels", "classes": 100,
            "expected": _CIFAR100_EXPECTED}
    train_x, train_y = _read_cifar_batch(folder / "train", **read)
    test_x, test_y = _read_cifar_batch(folder / "test", **read)
    return train_x, train_y, test_x, test_y


def _download(url: str, dest: Path, md5: str | None) -> None:
    """Fetch ``url`` to ``dest`` via a temporary file, checking the md5 when one is known."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, tmp.open("wb") as out:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed ({exc}); expected internet access") from None
    if md5 is not None and digest.hexdigest() != md5:
        tmp.unlink(missing_ok=True)
        raise DataError(f"download of {url} has md5 {digest.hexdigest()}; expected {md5}")
    if tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        raise DataError(f"download of {url} is empty; expected a non-empty file")
    tmp.replace(dest)


def _safe_members(tar: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:
    """Archive members that are plain files/folders staying inside ``dest``; else DataError."""
    dest = dest.resolve()
    members = []
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if m.name.startswith(("/", "\\")) or os.path.isabs(m.name) or ".." in parts:
            raise DataError(f"archive member {m.name!r} escapes {dest}; expected relative paths")
        if not (m.isfile() or m.isdir()):
            raise DataError(f"archive member {m.name!r} is a link or device; expected plain files")
        if not (dest / m.name).resolve().is_relative_to(dest):
            raise DataError(f"archive member {m.name!r} escapes {dest}; expected relative paths")
        members.append(m)
    return members


def _download_cifar10(root: Path) -> None:
    """Opt-in: fetch, md5-check and safely extract the CIFAR-10 python archive into ``root``."""
    _download_archive(root, _CIFAR_DIR, (*_CIFAR_TRAIN, _CIFAR_TEST), _CIFAR_URL, _CIFAR_MD5,
                      "cifar-10-python.tar.gz")


def _download_archive(root: Path, folder: str, files: tuple[str, ...], url: str, md5: str,
                      name: str) -> None:
    """Fetch, md5-check and safely extract a CIFAR archive into ``root`` unless its files
    are there."""
    if all((root / folder / f).is_file() for f in files):
        return
    archive = root / name
    if not archive.is_file():
        _download(url, archive, md5)
    elif _md5(archive) != md5:  # one copied there by hand: the published one, or refused
        raise DataError(f"dataset.root: {archive} is not the published archive (md5 "
                        f"{_md5(archive)}, expected {md5}); delete it to download again, or "
                        f"copy the published file there")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _safe_members(tar, root)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(root, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(root, members=members)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"dataset.root: {archive} cannot be extracted ({err}); delete it "
                        "to download again") from None


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- Fashion-MNIST


def _fmnist_file(folder: Path, base: str) -> Path | None:
    """Path of IDX file ``base`` in ``folder``, plain preferred over ``.gz``; None if absent."""
    for candidate in (folder / base, folder / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Parse an IDX file (plain or gzip) of unsigned bytes, checking magic and exact length."""
    what = "dataset 'fashion_mnist'"
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(
            f"{what}: cannot read {path} ({type(exc).__name__}: {exc}); expected a complete "
            "IDX file, plain or gzip"
        ) from None
    header = 4 + 4 * ndim
    if len(raw) < 4:
        raise DataError(f"{what}: file {path} is truncated ({len(raw)} bytes); expected IDX header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(
            f"{what}: file {path} has magic 0x{found:08x}; expected 0x{magic:08x} "
            f"(IDX {'images' if ndim == 3 else 'labels'}, unsigned bytes, {ndim} dims)"
        )
    if len(raw) < header:
        raise DataError(
            f"{what}: file {path} is truncated ({len(raw)} bytes); expected a {header}-byte header"
        )
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "too long"
        raise DataError(
            f"{what}: file {path} is {state} ({len(raw)} bytes); expected {expected} bytes "
            f"for dims {dims}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _fashion_mnist_folder(root: Path) -> Path:
    """First of ``root``, ``root/FashionMNIST/raw``, ``root/fashion_mnist`` holding the files."""
    candidates = [root / sub if sub else root for sub in _FMNIST_SUBDIRS]
    for folder in candidates:
        if _fmnist_file(folder, _FMNIST_FILES["train_images"]) is not None:
            return folder
    if not root.is_dir():
        raise DataError(
            f"dataset 'fashion_mnist': folder {root} not found; {_FMNIST_EXPECTED}; "
            f"{_NO_FILES_HINT}"
        )
    return root  # per-file errors below name the missing file


def _download_fashion_mnist(root: Path) -> None:
    """Opt-in: fetch the four missing ``.gz`` IDX files into ``root``, md5-checked."""
    for base, md5 in _FMNIST_MD5.items():
        if _fmnist_file(root, base) is None:
            _download(f"{_FMNIST_URL}{base}.gz", root / f"{base}.gz", md5)


def _fashion_mnist_source(
    root: Path, download: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Official Fashion-MNIST train and test arrays: uint8 images (N, 1, H, W), int64 labels."""
    what = "dataset 'fashion_mnist'"
    if download:
        _download_fashion_mnist(root)
    folder = _fashion_mnist_folder(root)
    arrays: dict[str, np.ndarray] = {}
    for key, base in _FMNIST_FILES.items():
        path = _fmnist_file(folder, base)
        if path is None:
            raise DataError(
                f"{what}: file {folder / base}[.gz] not found; {_FMNIST_EXPECTED}; {_NO_FILES_HINT}"
            )
        is_images = key.endswith("images")
        arrays[key] = _read_idx(
            path, _IDX_IMAGES_MAGIC if is_images else _IDX_LABELS_MAGIC, 3 if is_images else 1
        )
    for part in ("train", "test"):
        n_img, n_lab = len(arrays[f"{part}_images"]), len(arrays[f"{part}_labels"])
        if n_img != n_lab:
            raise DataError(
                f"{what}: {part} has {n_img} images but {n_lab} labels in {folder}; "
                "expected equal counts"
            )
        labels = arrays[f"{part}_labels"]
        if len(labels) and labels.max() > 9:
            raise DataError(f"{what}: {part} labels exceed 9 in {folder}; expected 10 classes")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataError(
            f"{what}: train images are {arrays['train_images'].shape[1:]} but test images are "
            f"{arrays['test_images'].shape[1:]}; expected the same size (28x28)"
        )
    if min(arrays["train_images"].shape[1:], default=0) < 1:
        raise DataError(f"{what}: images in {folder} have zero size; expected 28x28")

    def imgs(a: np.ndarray) -> np.ndarray:
        return a[:, None, :, :]

    return (
        imgs(arrays["train_images"]),
        arrays["train_labels"].astype(np.int64),
        imgs(arrays["test_images"]),
        arrays["test_labels"].astype(np.int64),
    )

