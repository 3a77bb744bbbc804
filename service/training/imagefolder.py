"""Your own images: the `ImageFolder` layout every vision tool reads, decoded once.

Layouts (``root`` is `dataset.root`):

* ``root/train/<class>/*.png`` with optional ``root/val/<class>/...`` and ``root/test/...``;
* ``root/<class>/*.png``: one folder, split like the bundled data sets.

Class names are the train folder's sub-folders in sorted order (torchvision's
``find_classes``); val and test may hold a subset of them. Images are decoded with PIL
(torchvision's reader), converted to 1 channel (grey modes) or 3 (colour modes, alpha
dropped), resized to `dataset.image_size` (PIL's bilinear filter, antialiased) and stored
as uint8 in one cached tensor file per split under ``root/.emerald-cache/``: a second run
loads that file instead of decoding again, and a change to any image (name, size or
modification time) or to ``image_size`` makes a new one. Errors name the folder or file
and the fix, in one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

SPLITS: tuple[str, ...] = ("train", "val", "test")
EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif",
                               ".tiff", ".webp")
"""torchvision's IMG_EXTENSIONS (the suffixes its ImageFolder reads), lower case."""
CACHE_DIR = ".emerald-cache"
MAX_BYTES = 8 * 2**30
"""Largest data set the in-memory trainer takes: every split is held as float32 tensors in
each worker (and on its GPU), so more than 8 GiB does not fit a typical worker."""
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


class ImageFolderError(ValueError):
    """A folder of images that cannot be read as a data set; the message is one line."""


@dataclass(frozen=True)
class Folder:
    """The image files of one split: (path, class index) in a fixed order."""

    split: str
    path: Path
    files: tuple[tuple[Path, int], ...]


def _classes(folder: Path) -> list[str]:
    names = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise ImageFolderError(f"dataset.root: no class folders in {folder}; expected "
                               f"{folder}/<class>/<image>.png")
    return names


def scan(root: str | Path) -> tuple[list[str], list[Folder]]:
    """The layout under `root`: class names and each present split's files, checked
    (no decoding): the root exists, every class has images, val/test classes are known."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise ImageFolderError(f"dataset.root: folder {str(base)!r} not found; give the folder "
                               f"holding train/<class>/ (or <class>/) image folders")
    train = base / "train" if (base / "train").is_dir() else base
    classes = _classes(train)
    if len(classes) < 2:
        raise ImageFolderError(f"dataset.root: {train} holds one class folder ({classes[0]!r}); "
                               f"a classifier needs at least 2, one folder per class")
    index = {name: i for i, name in enumerate(classes)}
    folders = []
    for split in SPLITS:
        path = train if split == "train" else base / split
        if split != "train" and (train is base or not path.is_dir()):
            continue
        files: list[tuple[Path, int]] = []
        for name in _classes(path):
            if name not in index:
                raise ImageFolderError(f"dataset.root: class {name!r} in {path} is not a class "
                                       f"of {train} ({', '.join(classes)})")
            # in subfolders too, as torchvision's ImageFolder walks a class folder
            found = sorted(p for p in (path / name).rglob("*")
                           if p.is_file() and p.suffix.lower() in EXTENSIONS)
            if not found:
                raise ImageFolderError(f"dataset.root: class {name!r} in {path} has no images "
                                       f"({', '.join(EXTENSIONS)})")
            files += [(p, index[name]) for p in found]
        folders.append(Folder(split, path, tuple(files)))
    return classes, folders


def _channels(mode: str) -> int:
    return 1 if mode in GREY_MODES else 3


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Any]:
    """PIL's image at `path`, or ImageFolderError naming it: a file that is empty, not an
    image, cut, or so large that PIL takes it for a decompression bomb (its warning too)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                yield img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageFolderError(f"dataset.root: image {path} is too large to decode safely "
                               f"({str(err).split('could')[0].strip()}); shrink or remove it"
                               ) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise ImageFolderError(f"dataset.root: cannot read image {path}: "
                               f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
                               "; remove or replace it") from None


def _check_memory(folders: list[Folder], image_size: int | None) -> None:
    """Refuse, before decoding, a data set the in-memory trainer cannot hold."""
    first = folders[0].files[0][0]
    with _opened(first) as img:
        channels, (w, h) = _channels(img.mode), img.size
    side_w, side_h = (image_size, image_size) if image_size else (w, h)
    count = sum(len(f.files) for f in folders)
    need = count * channels * side_w * side_h * 4
    if need > MAX_BYTES:
        raise ImageFolderError(
            f"dataset.root: {count:,} images of {channels}x{side_h}x{side_w} need "
            f"{_gib(need)} as float32 in memory, above the in-memory trainer's limit of "
            f"{_gib(MAX_BYTES)}; set a smaller dataset.image_size")


def _gib(size: float) -> str:
    return f"{size / 2**30:.3g} GiB"


def _decode(folder: Folder, image_size: int | None) -> tuple[torch.Tensor, np.ndarray]:
    """The split's images as uint8 (N, C, S, S) and labels."""
    from PIL import Image

    images, channels, shape = [], None, None
    for path, _ in folder.files:
        with _opened(path) as img:
            img.load()
            grey = _channels(img.mode) == 1
            img = img.convert("L" if grey else "RGB")
            if image_size is not None and img.size != (image_size, image_size):
                # PIL's bilinear filter widens with the scale: antialiased downsizing
                img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
            pixels = np.asarray(img)
        x = torch.from_numpy(pixels.copy()).reshape(pixels.shape[0], pixels.shape[1], -1)
        x = x.permute(2, 0, 1)
        if channels is None:
            channels, first = x.shape[0], path
        elif x.shape[0] != channels:
            raise ImageFolderError(
                f"dataset.root: {path} has {x.shape[0]} channel(s) but {first} has {channels}; "
                f"convert the images to one colour mode (all RGB or all greyscale)")
        if shape is None:
            shape = tuple(x.shape[1:])
            if image_size is None and shape[0] != shape[1]:
                raise ImageFolderError(f"dataset.image_size: {path} is {shape[1]}x{shape[0]}, "
                                       f"not square; set dataset.image_size")
        elif tuple(x.shape[1:]) != shape:
            raise ImageFolderError(
                f"dataset.image_size: {path} is {x.shape[2]}x{x.shape[1]} but the first image "
                f"is {shape[1]}x{shape[0]}; set dataset.image_size to resize them all")
        images.append(x)
    labels = np.array([label for _, label in folder.files], dtype=np.int64)
    return torch.stack(images), labels


def _key(folder: Folder, image_size: int | None) -> str:
    """What the cached file depends on: every file's name, size and modification time."""
    entries = []
    for path, label in folder.files:
        stat = path.stat()
        entries.append([str(path.relative_to(folder.path)), label, stat.st_size,
                        stat.st_mtime_ns])
    text = json.dumps({"image_size": image_size, "files": entries})
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load_folder(folder: Folder, root: Path, image_size: int | None
                ) -> tuple[torch.Tensor, np.ndarray, bool]:
    """The split's uint8 images and labels, from the cache when it is current; whether the
    cache was used. A new cache file replaces the split's older ones (written atomically);
    one that cannot be read back as this split's (cut short, overwritten) is decoded anew."""
    cache = root / CACHE_DIR
    path = cache / f"{folder.split}-{_key(folder, image_size)}.pt"
    cached = _read_cache(path, len(folder.files))
    if cached is not None:
        return cached[0], cached[1], True
    images, labels = _decode(folder, image_size)
    try:
        cache.mkdir(exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"images": images, "labels": torch.from_numpy(labels)}, tmp)
        tmp.replace(path)
        for old in cache.glob(f"{folder.split}-*.pt"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only data folder: decode again next time
    return images, labels, False


def _read_cache(path: Path, count: int) -> tuple[torch.Tensor, np.ndarray] | None:
    """A cache file's images and labels if it holds `count` of each (uint8 N x C x H x W,
    integer labels), else None: the cache is ours to rebuild, never an input to refuse."""
    if not path.is_file():
        return None
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True)
        images, labels = state["images"], state["labels"]
        ok = (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor)
              and images.dtype == torch.uint8 and images.dim() == 4
              and len(images) == len(labels) == count and not labels.is_floating_point())
    except Exception:  # noqa: BLE001 - torch raises many kinds for a damaged file
        ok = False
    if not ok:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only data folder: decoded every time
        return None
    return images, labels.numpy()


def read_image_folder(root: str | Path, image_size: int | None
                      ) -> tuple[list[str], dict[str, tuple[torch.Tensor, np.ndarray]]]:
    """Class names and {split: (uint8 images, labels)} of the present splits."""
    base = Path(root).expanduser()
    classes, folders = scan(base)
    _check_memory(folders, image_size)
    splits = {}
    for folder in folders:
        images, labels, _ = load_folder(folder, base, image_size)
        splits[folder.split] = (images, labels)
    sizes = {tuple(x.shape[1:]) for x, _ in splits.values()}
    if len(sizes) > 1:
        raise ImageFolderError(f"dataset.image_size: the splits differ in image shape "
                               f"{sorted(sizes)}; set dataset.image_size")
    return classes, splits
