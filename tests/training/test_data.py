"""Tests for service.training.data: bundled datasets, CIFAR-10 / Fashion-MNIST parsing, splits,
errors."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from service.training import data
from service.training.data import DATASETS, DataError, Splits, load_splits

N_PER_BATCH = 20  # CIFAR fixture: 5 x 20 training images, 30 test images
N_CIFAR_TEST = 30


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Fixture files change between and within tests, so never reuse cached splits."""
    data._load_cached.cache_clear()


def _rows(x: torch.Tensor) -> list[bytes]:
    """Each image as bytes, for set/multiset comparisons between splits."""
    return [row.numpy().tobytes() for row in x.reshape(len(x), -1)]


def _check_splits(s: Splits, channels: int, size: int) -> None:
    for x, y in ((s.train_x, s.train_y), (s.val_x, s.val_y), (s.test_x, s.test_y)):
        assert x.dtype == torch.float32
        assert y.dtype == torch.int64
        assert x.shape[1:] == (channels, size, size)
        assert len(x) == len(y)
        if len(x):
            assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
            assert 0 <= int(y.min()) and int(y.max()) < s.num_classes
    assert s.in_channels == channels
    assert s.image_size == size
    assert s.num_classes == 10


def _assert_same_splits(a: Splits, b: Splits) -> None:
    for field in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


# --------------------------------------------------------------------------- fixture writers


def _write_cifar(
    folder: Path, protocol: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A tiny CIFAR-10 'python version' folder; returns train/test images and labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, size=(N_PER_BATCH, 3072), dtype=np.uint8)
        y = [int(v) for v in (np.arange(N_PER_BATCH) + i) % 10]
        batch = {b"batch_label": f"training batch {i} of 5".encode(), b"labels": y, b"data": x,
                 b"filenames": [f"img_{i}_{j}.png".encode() for j in range(N_PER_BATCH)]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=protocol))
        train_x.append(x)
        train_y.extend(y)
    test_x = rng.integers(0, 256, size=(N_CIFAR_TEST, 3072), dtype=np.uint8)
    test_y = [int(v) for v in np.arange(N_CIFAR_TEST) % 10]
    test = {b"batch_label": b"testing batch 1 of 1", b"labels": test_y, b"data": test_x}
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=protocol))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    meta = {b"label_names": names, b"num_cases_per_batch": N_PER_BATCH, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return (np.concatenate(train_x).reshape(-1, 3, 32, 32), np.array(train_y),
            test_x.reshape(-1, 3, 32, 32), np.array(test_y))


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_fmnist(
    folder: Path, gz: bool, n_train: int = 40, n_test: int = 20
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tiny Fashion-MNIST IDX files (plain or .gz); returns train/test images and labels."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": (rng.integers(0, 256, (n_train, 28, 28)), 0x803),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10, 0x801),
        "t10k-images-idx3-ubyte": (rng.integers(0, 256, (n_test, 28, 28)), 0x803),
        "t10k-labels-idx1-ubyte": ((np.arange(n_test) * 3) % 10, 0x801),
    }
    for name, (arr, magic) in arrays.items():
        raw = _idx_bytes(arr, magic)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return tuple(arrays[k][0] for k in arrays)  # type: ignore[return-value]


# --------------------------------------------------------------------------- argument checks


def test_datasets_constant() -> None:
    assert DATASETS == ("digits", "synthetic", "cifar10", "fashion_mnist", "cifar100",
                        "imagefolder")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": "imagenet"}, "expected one of digits"),
        ({"name": "digits", "val_fraction": 1.0}, "val_fraction must be in [0, 1)"),
        ({"name": "digits", "test_fraction": -0.1}, "test_fraction must be in [0, 1)"),
        ({"name": "digits", "val_fraction": 0.5, "test_fraction": 0.5}, "must be < 1"),
        ({"name": "digits", "image_size": 0}, "image_size must be a positive int"),
        ({"name": "digits", "max_train": 0}, "max_train must be a positive int"),
    ],
)
def test_bad_arguments(kwargs: dict, fragment: str) -> None:
    kwargs = dict(kwargs)
    name = kwargs.pop("name")
    with pytest.raises(DataError) as info:
        load_splits(name, **kwargs)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- digits / synthetic


def test_digits_shapes_and_partition() -> None:
    from sklearn.datasets import load_digits

    s = load_splits("digits")
    _check_splits(s, channels=1, size=32)
    assert s.name == "digits"
    assert len(s.train_y) + len(s.val_y) + len(s.test_y) == 1797
    assert len(s.test_y) == round(1797 * 0.2) and len(s.val_y) == round(1797 * 0.2)
    # Stratified: every class present in every split in roughly its share.
    for y in (s.train_y, s.val_y, s.test_y):
        counts = torch.bincount(y, minlength=10)
        assert int(counts.min()) >= 0.8 * len(y) / 10

    # At native size the three splits are exactly a partition of the scaled source images.
    native = load_splits("digits", image_size=8)
    source = np.asarray(load_digits().images, dtype=np.float32)[:, None] / 16.0
    got = sorted(_rows(torch.cat([native.train_x, native.val_x, native.test_x])))
    assert got == sorted(_rows(torch.from_numpy(source)))


def test_digits_deterministic_in_seed_and_test_independent_of_val() -> None:
    a = load_splits("digits", seed=3)
    data._load_cached.cache_clear()
    _assert_same_splits(a, load_splits("digits", seed=3))
    b = load_splits("digits", seed=4)
    assert not torch.equal(a.val_y, b.val_y) or not torch.equal(a.val_x, b.val_x)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
    c = load_splits("digits", seed=3, val_fraction=0.1)
    assert torch.equal(a.test_x, c.test_x) and len(c.val_y) == round(1797 * 0.1)


def test_max_train_is_stratified_subset() -> None:
    full = load_splits("synthetic", seed=1)
    small = load_splits("synthetic", seed=1, max_train=50)
    assert len(small.train_y) == 50
    assert torch.bincount(small.train_y, minlength=10).tolist() == [5] * 10
    assert set(_rows(small.train_x)) <= set(_rows(full.train_x))
    _assert_same_splits(
        Splits(full.train_x[:0], full.train_y[:0], full.val_x, full.val_y, full.test_x,
               full.test_y, 10, "synthetic"),
        Splits(small.train_x[:0], small.train_y[:0], small.val_x, small.val_y, small.test_x,
               small.test_y, 10, "synthetic"),
    )
    assert load_splits("synthetic", seed=1, max_train=10_000).train_y.shape == full.train_y.shape


def test_synthetic_shapes_disjoint_and_learnable() -> None:
    s = load_splits("synthetic")
    _check_splits(s, channels=3, size=16)
    assert len(s.train_y) + len(s.val_y) + len(s.test_y) == 600
    train, val, test = set(_rows(s.train_x)), set(_rows(s.val_x)), set(_rows(s.test_x))
    assert not (train & val) and not (train & test) and not (val & test)
    # Learnable: a nearest-class-mean classifier is far above chance (10%).
    means = torch.stack([s.train_x[s.train_y == c].mean(0) for c in range(10)])
    dist = torch.cdist(s.val_x.flatten(1), means.flatten(1))
    assert (dist.argmin(1) == s.val_y).float().mean() > 0.5
    resized = load_splits("synthetic", image_size=24)
    _check_splits(resized, channels=3, size=24)


def test_cache_returns_same_object() -> None:
    a = load_splits("synthetic", seed=5)
    assert load_splits("synthetic", seed=5) is a
    assert load_splits("synthetic", seed=6) is not a


# --------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_reads_python_version(tmp_path: Path, nested: bool, protocol: int) -> None:
    folder = tmp_path / "cifar-10-batches-py" if nested else tmp_path
    train_x, train_y, test_x, test_y = _write_cifar(folder, protocol=protocol)
    s = load_splits("cifar10", root=str(tmp_path), seed=0)
    _check_splits(s, channels=3, size=32)
    # The official test batch is the test split, unchanged and in order.
    assert torch.equal(s.test_x, torch.from_numpy(test_x).float() / 255.0)
    assert torch.equal(s.test_y, torch.from_numpy(test_y))
    # Train + val partition the five training batches; val is stratified.
    assert len(s.val_y) == 20 and len(s.train_y) == 80
    assert torch.bincount(s.val_y, minlength=10).tolist() == [2] * 10
    got = sorted(_rows(torch.cat([s.train_x, s.val_x])))
    assert got == sorted(_rows(torch.from_numpy(train_x).float() / 255.0))
    assert not set(_rows(s.train_x)) & set(_rows(s.val_x))
    source_rows = _rows(torch.from_numpy(train_x).float() / 255.0)
    lookup = dict(zip(source_rows, train_y.tolist(), strict=True))
    assert [lookup[r] for r in _rows(s.val_x)] == s.val_y.tolist()


def test_cifar10_seed_changes_val_not_test(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py")
    a = load_splits("cifar10", root=str(tmp_path), seed=0)
    data._load_cached.cache_clear()
    _assert_same_splits(a, load_splits("cifar10", root=str(tmp_path), seed=0))
    b = load_splits("cifar10", root=str(tmp_path), seed=1, val_fraction=0.3)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
    assert set(_rows(a.val_x)) != set(_rows(b.val_x))
    small = load_splits("cifar10", root=str(tmp_path), seed=0, image_size=16, max_train=30)
    _check_splits(small, channels=3, size=16)
    assert len(small.train_y) == 30 and len(small.test_y) == N_CIFAR_TEST


def test_cifar10_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_splits("cifar10", root=str(tmp_path / "nowhere"))
    msg = str(info.value)
    assert "cifar-10-batches-py not found" in msg
    assert "data_batch_1..5 and test_batch" in msg and "download=True" in msg


def test_cifar10_empty_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data_batch_1..5 and test_batch"):
        load_splits("cifar10", root=str(tmp_path))


@pytest.mark.parametrize("missing", ["data_batch_3", "test_batch"])
def test_cifar10_missing_file(tmp_path: Path, missing: str) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    (folder / missing).unlink()
    with pytest.raises(DataError) as info:
        load_splits("cifar10", root=str(tmp_path))
    assert f"{missing} not found" in str(info.value)
    assert "expected data_batch_1..5 and test_batch" in str(info.value)


def test_cifar10_truncated_file(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    raw = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as info:
        load_splits("cifar10", root=str(tmp_path))
    assert "data_batch_2 is truncated or not a valid pickle" in str(info.value)


def test_cifar10_count_mismatch(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    bad = {b"data": np.zeros((5, 3072), np.uint8), b"labels": [0, 1, 2, 3]}
    (folder / "data_batch_4").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match="5 images but 4 labels; expected one label per image"):
        load_splits("cifar10", root=str(tmp_path))


def test_cifar10_wrong_array_shape(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    bad = {b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError, match=r"expected uint8 array \(N, 3072\)"):
        load_splits("cifar10", root=str(tmp_path))


def test_cifar10_reads_legacy_numpy_module_names(tmp_path: Path) -> None:
    # Files written by numpy 1.x (the official archive) name numpy.core.multiarray.
    folder = tmp_path / "cifar-10-batches-py"
    _, _, test_x, _ = _write_cifar(folder, protocol=2)
    raw = (folder / "test_batch").read_bytes()
    assert b"cnumpy._core.multiarray\n" in raw
    legacy = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    (folder / "test_batch").write_bytes(legacy)
    s = load_splits("cifar10", root=str(tmp_path))
    assert torch.equal(s.test_x, torch.from_numpy(test_x).float() / 255.0)


class _Evil:
    """Pickles to a call of os.system: what a hostile 'dataset' file would contain."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_refuses_code_execution(tmp_path: Path, protocol: int) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    marker = tmp_path / "pwned"
    evil = {b"data": _Evil(f"echo hi > {marker}"), b"labels": [0]}
    (folder / "data_batch_1").write_bytes(pickle.dumps(evil, protocol=protocol))
    with pytest.raises(DataError) as info:
        load_splits("cifar10", root=str(tmp_path))
    assert "refusing to unpickle global" in str(info.value)
    assert "system" in str(info.value)
    assert not marker.exists()


def test_restricted_unpickler_refuses_other_globals(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({b"data": Path("/etc")}))
    with pytest.raises(DataError, match="refusing to unpickle global"):
        data._safe_unpickle(path, "test")


# --------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("subdir", ["", "FashionMNIST/raw", "fashion_mnist"])
def test_fashion_mnist_reads_idx(tmp_path: Path, gz: bool, subdir: str) -> None:
    train_x, train_y, test_x, test_y = _write_fmnist(tmp_path / subdir, gz=gz)
    s = load_splits("fashion_mnist", root=str(tmp_path), seed=2)
    assert sorted(torch.cat([s.train_y, s.val_y]).tolist()) == sorted(train_y.tolist())
    _check_splits(s, channels=1, size=28)
    assert s.name == "fashion_mnist"
    assert torch.equal(s.test_x, torch.from_numpy(test_x[:, None].astype(np.uint8)).float() / 255)
    assert torch.equal(s.test_y, torch.from_numpy(test_y).long())
    assert len(s.val_y) == 8 and len(s.train_y) == 32
    got = sorted(_rows(torch.cat([s.train_x, s.val_x])))
    want = torch.from_numpy(train_x[:, None].astype(np.uint8)).float() / 255
    assert got == sorted(_rows(want))
    resized = load_splits("fashion_mnist", root=str(tmp_path), image_size=32)
    _check_splits(resized, channels=1, size=32)


def test_fashion_mnist_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_splits("fashion_mnist", root=str(tmp_path / "absent"))
    assert "not found" in str(info.value)
    assert "expected train-images-idx3-ubyte" in str(info.value)


def test_fashion_mnist_missing_file(tmp_path: Path) -> None:
    _write_fmnist(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        load_splits("fashion_mnist", root=str(tmp_path))
    assert "t10k-labels-idx1-ubyte[.gz] not found" in str(info.value)
    assert "Fashion-MNIST IDX" in str(info.value)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("train-images-idx3-ubyte", "0x00000803"), ("t10k-labels-idx1-ubyte", "0x00000801")],
)
def test_fashion_mnist_bad_magic(tmp_path: Path, name: str, expected: str) -> None:
    _write_fmnist(tmp_path, gz=False)
    raw = bytearray((tmp_path / name).read_bytes())
    raw[2:4] = b"\x08\x02"
    (tmp_path / name).write_bytes(bytes(raw))
    with pytest.raises(DataError) as info:
        load_splits("fashion_mnist", root=str(tmp_path))
    assert f"has magic 0x00000802; expected {expected}" in str(info.value)


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_truncated(tmp_path: Path, gz: bool) -> None:
    _write_fmnist(tmp_path, gz=gz)
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(DataError) as info:
        load_splits("fashion_mnist", root=str(tmp_path))
    msg = str(info.value)
    assert "train-images-idx3-ubyte" in msg
    assert ("truncated" in msg) if not gz else ("expected a complete IDX file" in msg)


def test_fashion_mnist_count_mismatch(tmp_path: Path) -> None:
    _write_fmnist(tmp_path, gz=False)
    labels = np.arange(39) % 10
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(labels, 0x801))
    with pytest.raises(DataError, match="train has 40 images but 39 labels"):
        load_splits("fashion_mnist", root=str(tmp_path))


def test_fashion_mnist_header_count_disagrees_with_length(tmp_path: Path) -> None:
    _write_fmnist(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[4:8] = struct.pack(">I", 21)  # header claims one more image than stored
    path.write_bytes(bytes(raw))
    pattern = r"is truncated .*expected \d+ bytes for dims \[21, 28, 28\]"
    with pytest.raises(DataError, match=pattern):
        load_splits("fashion_mnist", root=str(tmp_path))


def _write_cifar100(folder: Path, n_train: int = 300, n_test: int = 100) -> None:
    """A tiny CIFAR-100 'python version' folder (train, test, meta; 100 fine labels)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = [int(v) for v in np.arange(n) % 100]
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 b"fine_labels": fine, b"coarse_labels": [v // 5 for v in fine],
                 b"batch_label": name.encode()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"fine_label_names": [f"c{i}".encode() for i in range(100)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))


def test_cifar100_reads_python_version_with_fine_labels(tmp_path: Path) -> None:
    _write_cifar100(tmp_path / "cifar-100-python")
    s = load_splits("cifar100", root=str(tmp_path), seed=0, val_fraction=0.5)
    assert s.num_classes == 100 and tuple(s.train_x.shape[1:]) == (3, 32, 32)
    assert len(s.test_y) == 100 and sorted(set(s.test_y.tolist())) == list(range(100))
    assert len(s.train_y) + len(s.val_y) == 300
    assert int(s.train_y.max()) <= 99


def test_cifar100_errors_name_the_file_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar-100-python not found"):
        load_splits("cifar100", root=str(tmp_path / "nowhere"))
    folder = tmp_path / "cifar-100-python"
    _write_cifar100(folder)
    bad = {b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 100]}
    (folder / "test").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match="outside 0..99"):
        load_splits("cifar100", root=str(tmp_path), seed=1)
    (folder / "train").unlink()
    with pytest.raises(DataError, match="train not found"):
        load_splits("cifar100", root=str(tmp_path), seed=2)
