"""Checks of a configuration against the world, before Ray starts: the machine and the
cluster's address, the storage path, the data (an image folder's layout, files decoded once),
weights files and user models. The schema (service.core.config) checks the config's own
values without torch; these may load data and build models, so they sit above training and
the CLI calls them (`check_config` with every config it builds, the rest per command)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from service.backends.tune.ray_start import cluster_address
from service.core.backbone_spec import is_user_backbone
from service.core.config import DATASET_SHAPES, ConfigError, ExperimentConfig


def check_config(cfg: ExperimentConfig) -> None:
    """What a config names exists in the right shape: an image folder's layout (its images
    are decoded by `check_data`), and each import-path backbone, imported, built and run on
    a dummy batch of the dataset's shape, so a bad one fails before Ray starts."""
    from service.training.imagefolder import ImageFolderError, scan

    classes = None
    if cfg.dataset.name == "imagefolder" and cfg.dataset.root:
        try:
            classes = len(scan(cfg.dataset.root)[0])
        except ImageFolderError as err:
            raise ConfigError(str(err)) from None
    users = [b for b in cfg.backbones if is_user_backbone(b)]
    if not users:
        return
    from service.training.backbones import BackboneError, check_backbone

    channels, size, default_classes = DATASET_SHAPES.get(cfg.dataset.name, (3, 32, 10))
    size = cfg.dataset.image_size or size
    for backbone in users:
        try:
            check_backbone(backbone, num_classes=classes or default_classes,
                           in_channels=channels, image_size=size)
        except BackboneError as err:  # a model-level check: name the field itself
            raise ConfigError(f"backbones: {err}") from None


def embedded_gpus() -> int:
    """GPUs an embedded Ray would find here, without importing torch: the devices
    CUDA_VISIBLE_DEVICES names, else the NVIDIA device files."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len(list(Path("/dev").glob("nvidia[0-9]*")))


MAX_LOGICAL = 100_000
"""The most logical CPUs or GPUs an embedded Ray is given (Ray fails past 2**53 / 10**4)."""


def check_machine(cfg: ExperimentConfig, args: argparse.Namespace) -> None:
    """Before Ray starts: the embedded Ray's flags are sane and one trial fits it (a trial
    asking more CPUs or GPUs than Ray has would wait forever). A cluster (`--address`,
    RAY_ADDRESS) is checked against its nodes once joined (`init_ray`, `trial_fits`)."""
    if args.num_cpus is not None and not 1 <= args.num_cpus <= MAX_LOGICAL:
        raise ConfigError(f"--num-cpus: {args.num_cpus}; give 1 to {MAX_LOGICAL} (default: "
                          "every core of this machine)")
    if args.num_gpus is not None and not 0 <= args.num_gpus <= MAX_LOGICAL:
        raise ConfigError(f"--num-gpus: {args.num_gpus}; give 0 to {MAX_LOGICAL}")
    check_address(args)
    if cfg.backend == "replay" or cluster_address(args):
        return
    cpus = args.num_cpus if args.num_cpus is not None else (os.cpu_count() or 1)
    gpus = args.num_gpus if args.num_gpus is not None else embedded_gpus()
    if cfg.resources.cpus > cpus:
        raise ConfigError(f"resources.cpus: {cfg.resources.cpus:g} CPUs per trial, but the "
                          f"embedded Ray has {cpus}; give at most {cpus} (--cpus-per-trial)")
    if cfg.resources.gpus > gpus:
        raise ConfigError(f"resources.gpus: {cfg.resources.gpus:g} GPUs per trial, but the "
                          f"embedded Ray has {gpus}; give --gpus-per-trial 0, or --num-gpus N "
                          "for logical GPUs")


def check_storage(cfg: ExperimentConfig) -> None:
    """Before Ray starts: the storage path can be created and written."""
    check_writable(Path(cfg.storage), "storage", "--storage", folder=True)


def check_writable(path: Path, field: str, flag: str, *, folder: bool) -> None:
    """`path` (a folder, or a file) can be created and written: what is there has the
    right kind, and a folder made and removed again where the path begins to be missing
    proves it (nothing is left behind)."""
    import tempfile

    path = path.expanduser()
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else "a file"
        raise ConfigError(f"{field}: {str(path)!r} is {kind}; give "
                          f"{'a folder' if folder else 'a file name'} ({flag})")
    base = next((p for p in (path if folder else path.parent, *path.parents)
                 if p.exists()), Path("."))
    if not base.is_dir():
        raise ConfigError(f"{field}: {str(base)!r} is a file, not a folder ({flag})")
    try:
        tempfile.TemporaryDirectory(dir=base, prefix=".write-check-").cleanup()
    except OSError as err:
        raise ConfigError(f"{field}: cannot create files in {str(base)!r} "
                          f"({err.strerror or type(err).__name__}); give a place you can "
                          f"write ({flag})") from None


def check_address(args: argparse.Namespace) -> None:
    """Before joining: --address (or RAY_ADDRESS) is host:port and something answers
    there within 5 s (Ray itself retries for minutes)."""
    import socket

    address = cluster_address(args)
    if not address or address == "auto" or address.startswith(("ray://", "local")):
        return
    field = "--address" if getattr(args, "address", None) else "RAY_ADDRESS"
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{field}: {address!r} is not host:port (e.g. 10.0.0.1:6379, "
                          "the head's GCS address `ray start --head` prints)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as err:
        raise ConfigError(f"{field}: nothing answers at {address} "
                          f"({err.strerror or type(err).__name__}); start the head with "
                          "`ray start --head` or give its address") from None


def check_weights(cfg: ExperimentConfig) -> None:
    """Each `weights` file is a state dict torch can load (names to tensors), read once
    here: any other file failed every trial after Ray started."""
    if not cfg.weights:
        return
    import torch

    for backbone, path in cfg.weights.items():
        try:
            state = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many kinds for a file that is no state dict
            raise ConfigError(f"weights.{backbone}: {path!r} is not a file torch can load "
                              f"({type(err).__name__}); save one with "
                              "torch.save(model.state_dict(), path)") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                                  for v in state.values()):
            raise ConfigError(f"weights.{backbone}: {path!r} holds no state dict (names to "
                              "tensors); save one with torch.save(model.state_dict(), path)")


def check_data(cfg: ExperimentConfig, args: argparse.Namespace) -> None:
    """Before the embedded Ray starts: a dataset read from files is loaded once here (a
    missing root, a corrupt or unreadable image fails every trial otherwise, each in its own
    log). Digits and the synthetic set have no files to check, and torch stays unimported
    for them. On a cluster the data lives where the workers run, which the submitting
    machine may not see: there a run whose every trial failed exits 1."""
    if cfg.backend == "replay" or cluster_address(args):
        return
    check_weights(cfg)
    if cfg.dataset.name in ("digits", "synthetic"):
        return
    from service.training.data import DataError, load_splits
    from service.training.imagefolder import ImageFolderError

    ds = cfg.dataset.model_dump()
    name = ds.pop("name")
    try:
        load_splits(name, seed=cfg.seeds[0], **ds)
    except (DataError, ImageFolderError) as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(text if text.startswith("dataset.") else f"dataset.root: {text}"
                          ) from None
