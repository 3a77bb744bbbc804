"""Extend a recorded table with each configuration's model size and inference time, so
multi-objective replays can trade accuracy against them (docs/multi-objective.md): the
network of every configuration is built as its trial built it (the table's own recording
settings), never trained. Size and parameters are exact; the inference time is measured
on this machine, median of `REPEATS` passes over the test split, and the table's metadata
says where and how (`extra.architecture`)."""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from service.backends.replay.verify import recording_run
from service.backends.tune.trainable import build_trainer, load_data, split_config
from service.core.space import layer_values
from service.core.table import (
    TableError,
    cached_table,
    config_keys,
    read_frame,
    write_table,
)
from service.training.trainer import HParams

COLUMNS = ("model_size_mb", "num_parameters", "infer_ms_per_batch")
"""What `extend` adds (model_size_mb and num_parameters as the trainer reports them every
epoch; infer_ms_per_batch as the final test measures it, Iranfar et al. Table V)."""
REPEATS = 3
"""Inference passes over the test split per architecture; their median is kept."""


def architecture_columns(path: str, repeats: int = REPEATS) -> dict[tuple[Any, ...], dict]:
    """Each configuration of table `path` (its key in the table) with its COLUMNS. Networks
    that only differ in hyperparameters the architecture does not see are measured once."""
    table = cached_table(path)
    run = recording_run(table)
    if run is None:
        raise TableError(f"table {table.name!r} does not say how it was recorded (backbone, "
                         "data set): its networks cannot be rebuilt")
    splits, measured, out = None, {}, {}
    for index, key in enumerate(table.configs):
        config = {**table.space.constants, **table.config_dict(index)}
        settings, hp = split_config({**config, "run": {**run, "seed": 0}})
        if splits is None:
            splits = load_data(settings)
        arch = (settings.backbone, tuple(sorted(layer_values(hp).items())), hp.get("batch_size"))
        if arch not in measured:
            trainer = build_trainer(settings, splits, HParams.from_config(hp), hp)
            times = [trainer.inference_ms_per_batch(splits.test_x) for _ in range(repeats)]
            measured[arch] = {"model_size_mb": trainer.model_size_mb,
                              "num_parameters": int(trainer.num_parameters),
                              "infer_ms_per_batch": statistics.median(times)}
        out[key] = measured[arch]
    return out


def extend(path: str, repeats: int = REPEATS) -> int:
    """Add COLUMNS to table `path` in place (atomically); returns the architectures measured."""
    table = cached_table(path)
    columns = architecture_columns(path, repeats)
    frame, meta = read_frame(path)
    keys = config_keys(frame, table.names)
    for column in COLUMNS:
        frame[column] = [columns[k][column] for k in keys]
    meta.extra["architecture"] = {
        "columns": list(COLUMNS),
        "command": "python -m service.backends.replay.extend "
                   + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "repeats": repeats,
        "architectures": len({tuple(sorted(v.items())) for v in columns.values()}),
    }
    write_table(frame, meta, path)
    return meta.extra["architecture"]["architectures"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.backends.replay.extend",
        description="Add each configuration's model size, parameters and inference time to "
                    "a recorded table (its networks are built, not trained).")
    parser.add_argument("--table", required=True, help="a table recorded by `record`")
    parser.add_argument("--repeats", type=int, default=REPEATS,
                        help="inference passes per architecture (their median is kept)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        print("error: --repeats: give 1 or more", file=sys.stderr)
        return 2
    try:
        count = extend(args.table, args.repeats)
    except TableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.table}: {', '.join(COLUMNS)} added ({count} architectures measured)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
