"""Your own images in the ImageFolder layout: every supported layout, the decode cache
(reused, invalidated), each bad case's one-line message; on small PNGs the test writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import service.training.imagefolder as imagefolder
from service.core.api import ConfigError
from service.core.config import build_config
from service.training.data import DataError, load_splits
from service.training.imagefolder import ImageFolderError, read_image_folder, scan

CLASSES = ("cat", "dog", "eel")


def write_images(folder: Path, per_class: int, *, size: tuple[int, int] = (12, 12),
                 mode: str = "RGB", seed: int = 0, classes: tuple[str, ...] = CLASSES) -> None:
    """`per_class` random images per class under folder/<class>/ (class i's pixels ~ 80 i)."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            pixels = np.clip(rng.normal(80 * label, 10, shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode=None).convert(mode).save(folder / name / f"{i}.png")


def test_train_val_test_folders_are_the_splits(tmp_path: Path) -> None:
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        write_images(tmp_path / split, n, seed=len(split))
    splits = load_splits("imagefolder", root=str(tmp_path), seed=0)
    assert splits.num_classes == 3 and splits.in_channels == 3 and splits.image_size == 12
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (18, 6, 9)
    assert splits.train_y.tolist() == [0] * 6 + [1] * 6 + [2] * 6  # sorted class names
    assert splits.train_x.dtype == torch.float32 and 0.0 <= float(splits.train_x.min())
    # class 2's pixels are brighter: the images are the files, in class order
    assert float(splits.test_x[splits.test_y == 2].mean()) > float(
        splits.test_x[splits.test_y == 0].mean())


def test_one_folder_is_split_by_seed_with_a_fixed_test_split(tmp_path: Path) -> None:
    write_images(tmp_path, 10, size=(20, 14))  # not square: resized
    with pytest.raises(DataError, match="not square; set dataset.image_size"):
        load_splits("imagefolder", root=str(tmp_path))
    a = load_splits("imagefolder", root=str(tmp_path), seed=0, image_size=8)
    b = load_splits("imagefolder", root=str(tmp_path), seed=1, image_size=8)
    assert a.image_size == 8 and (len(a.train_y), len(a.val_y), len(a.test_y)) == (18, 6, 6)
    assert torch.equal(a.test_x, b.test_x)  # the test split does not move with the seed
    assert not torch.equal(a.val_x, b.val_x)
    assert sorted(a.val_y.tolist()) == [0, 0, 1, 1, 2, 2]  # stratified


def test_train_and_test_only_takes_val_from_train(tmp_path: Path) -> None:
    write_images(tmp_path / "train", 5)
    write_images(tmp_path / "test", 2, mode="RGB")
    splits = load_splits("imagefolder", root=str(tmp_path), val_fraction=0.2)
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (12, 3, 6)


def test_grey_images_have_one_channel(tmp_path: Path) -> None:
    write_images(tmp_path, 3, mode="L")
    classes, parts = read_image_folder(tmp_path, None)
    assert classes == list(CLASSES) and parts["train"][0].shape == (9, 1, 12, 12)


def test_the_decoded_tensors_are_cached_and_invalidated_when_files_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_images(tmp_path / "train", 2)
    decoded = []
    real = imagefolder._decode
    monkeypatch.setattr(imagefolder, "_decode",
                        lambda folder, size: decoded.append(folder.split) or real(folder, size))
    first = read_image_folder(tmp_path, 8)[1]["train"]
    again = read_image_folder(tmp_path, 8)[1]["train"]
    assert decoded == ["train"] and torch.equal(first[0], again[0])  # the second run: no decode
    assert len(list((tmp_path / imagefolder.CACHE_DIR).glob("train-*.pt"))) == 1
    read_image_folder(tmp_path, 10)  # another size: decoded again
    assert decoded == ["train", "train"]
    image = tmp_path / "train" / "dog" / "0.png"
    Image.fromarray(np.full((12, 12, 3), 255, np.uint8)).save(image)
    os.utime(image, ns=(1, 1))  # a changed file, whatever its time stamp
    changed = read_image_folder(tmp_path, 8)[1]["train"]
    assert decoded == ["train"] * 3 and not torch.equal(changed[0], first[0])
    assert len(list((tmp_path / imagefolder.CACHE_DIR).glob("train-*.pt"))) == 1  # replaced


@pytest.mark.parametrize("case", ["empty_class", "unreadable", "mixed", "sizes", "unknown_class",
                                  "too_large", "no_classes", "missing"])
def test_bad_folders_get_one_line_naming_the_problem(tmp_path: Path, case: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    write_images(tmp_path / "train", 2)
    expected = {
        "empty_class": "class 'fox' in .* has no images",
        "unreadable": "cannot read image .*broken.png",
        "mixed": "has 1 channel\\(s\\) but .* has 3; convert the images",
        "sizes": "is 9x9 but the first image is 12x12; set dataset.image_size",
        "unknown_class": "class 'yak' in .*test is not a class of",
        "too_large": "6 images of 3x12x12 need 9.66e-06 GiB as float32 in memory, above the "
                     "in-memory trainer's limit of 9.31e-08 GiB",
        "no_classes": "no class folders in",
        "missing": "folder .* not found",
    }[case]
    root = tmp_path
    if case == "empty_class":
        (tmp_path / "train" / "fox").mkdir()
    elif case == "unreadable":
        (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    elif case == "mixed":
        Image.fromarray(np.zeros((12, 12), np.uint8)).save(tmp_path / "train" / "eel" / "g.png")
    elif case == "sizes":
        Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "train" / "eel" / "s.png")
    elif case == "unknown_class":
        write_images(tmp_path / "test", 1, classes=("yak",))
    elif case == "too_large":
        monkeypatch.setattr(imagefolder, "MAX_BYTES", 100)
    elif case == "no_classes":
        root = tmp_path / "train" / "cat"
    else:
        root = tmp_path / "nowhere"
    with pytest.raises(ImageFolderError, match=expected) as info:
        read_image_folder(root, None)
    assert "\n" not in str(info.value)


def test_config_checks_the_layout_before_anything_runs(tmp_path: Path) -> None:
    """The schema wants a root; the check every command runs on a config it builds
    (service.checks.check_config) reads the layout."""
    from service.checks import check_config

    write_images(tmp_path, 1)
    cfg = build_config({"dataset": {"name": "imagefolder", "root": str(tmp_path)}})
    check_config(cfg)
    assert cfg.dataset.name == "imagefolder"
    assert scan(tmp_path)[0] == list(CLASSES)
    with pytest.raises(ConfigError, match="dataset.root: no class folders"):
        check_config(build_config({"dataset": {"name": "imagefolder",
                                               "root": str(tmp_path / "cat")}}))
    with pytest.raises(ConfigError, match="set dataset.root"):
        build_config({"dataset": {"name": "imagefolder"}})


def test_an_image_folder_trains_an_epoch(tmp_path: Path) -> None:
    from service.training.trainer import HParams, Trainer

    write_images(tmp_path, 8)
    splits = load_splits("imagefolder", root=str(tmp_path), image_size=16)
    trainer = Trainer.build("resnet18@0.0625", splits, HParams(batch_size=8), seed=0)
    metrics = trainer.train_epoch()
    assert metrics.images_per_s > 0 and np.isfinite(metrics.train_loss)
    acc, _ = trainer.evaluate(splits.val_x, splits.val_y)
    assert 0.0 <= acc <= 1.0
