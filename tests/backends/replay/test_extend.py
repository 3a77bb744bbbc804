"""`python -m service.backends.replay.extend`: a recorded table gains each configuration's
model size, parameters and inference time (its networks built as its trials built them,
not trained), and a multi-objective replay can then trade accuracy against size."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest

from service.backends.replay.extend import COLUMNS, main
from service.backends.tune.trainable import RunSettings, build_trainer, load_data, split_config
from service.core.table import TableMeta, cached_table, read_frame, write_table
from service.training.trainer import HParams

RUN = {"backbone": "vgg16", "epochs": 3,
       "dataset": {"name": "synthetic", "max_train": 64}, "threads": 1}


def width_table(path: Path) -> Path:
    """Width x lr on VGG-16, accuracy rising with width (sizes are what extend adds)."""
    rows = []
    for width, lr, seed in itertools.product((0.0625, 0.125), (1e-3, 1e-2), (0, 1)):
        for epoch in (1, 2, 3):
            rows.append({"width": width, "lr": lr, "optimizer": "adam", "seed": seed,
                         "epoch": epoch,
                         "val_acc": 0.5 + width + 0.01 * epoch - (lr > 5e-3) * 0.05,
                         "epoch_time_s": 0.2 + width})
    meta = TableMeta(space={"width": {"choice": [0.0625, 0.125]},
                            "lr": {"choice": [1e-3, 1e-2]}, "optimizer": "adam"},
                     metric="val_acc", mode="max", dataset="synthetic", backbone="vgg16",
                     command="tests/backends/replay/test_extend.py", extra={"run": RUN})
    return write_table(pd.DataFrame(rows), meta, path)


def test_extend_adds_what_a_trial_of_each_configuration_reports(tmp_path, capsys) -> None:
    path = width_table(tmp_path / "widths.parquet")
    assert main(["--table", str(path), "--repeats", "1"]) == 0
    assert "2 architectures measured" in capsys.readouterr().out
    frame, meta = read_frame(path)
    assert set(COLUMNS) <= set(frame.columns) and meta.extra["architecture"]["repeats"] == 1
    sizes = frame.groupby("width")["model_size_mb"].agg(["min", "max"])
    assert (sizes["min"] == sizes["max"]).all()  # one network per width, lr aside
    assert sizes.loc[0.125, "min"] > 2 * sizes.loc[0.0625, "min"]
    assert (frame["infer_ms_per_batch"] > 0).all()
    # what the trainable itself builds for the widest configuration
    run, hp = split_config({"width": 0.125, "lr": 1e-3, "optimizer": "adam",
                            "run": RunSettings(**{**RUN, "seed": 0}).as_dict()})
    trainer = build_trainer(run, load_data(run), HParams.from_config(hp), hp)
    wide = frame[frame["width"] == 0.125].iloc[0]
    assert wide["model_size_mb"] == pytest.approx(trainer.model_size_mb)
    assert wide["num_parameters"] == trainer.num_parameters
    # a replay can now name the size as an objective
    table = cached_table(path)
    assert {"model_size_mb", "num_parameters"} <= set(table.metrics)


def test_a_table_that_does_not_say_how_it_was_recorded_is_refused(tmp_path, capsys) -> None:
    path = width_table(tmp_path / "widths.parquet")
    frame, meta = read_frame(path)
    meta.extra, meta.command = {}, None
    write_table(frame, meta, path)
    assert main(["--table", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: table 'widths'") and "cannot be rebuilt" in err
    assert err.count("\n") == 1
