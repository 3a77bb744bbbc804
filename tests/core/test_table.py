"""The table format: a good table loads with its space, seeds and curves; a malformed one
gets one line naming the column and what is expected; snapping uses the log scale."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.core.table import TableError, infer_space, load_table
from tests.backends.replay.tables import LRS, emerald_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> Path:
    return emerald_table(tmp_path_factory.mktemp("t") / "emerald.parquet")


def test_loads_space_seeds_curves(table_path) -> None:
    table = load_table(table_path)
    assert table.names == ("flip", "rotation", "shift", "optimizer", "lr")
    assert len(table.configs) == 2 * 2 * 2 * 3 * len(LRS) and table.factorial
    assert table.seeds == (0, 1) and table.epochs == 6
    assert table.space["lr"].kind == "loguniform"
    diverging = table.index[(False, 0, False, "sgd", 0.1)]
    assert table.lengths[diverging].tolist() == [2, 2]
    assert math.isnan(table.metrics["val_acc"][diverging, 0, 1])
    best, worst = table.optimum(6)
    assert best > worst
    values = table.true_values(6)
    assert np.nanmax(values) == pytest.approx(best)


def test_snap_is_nearest_on_log_scale(table_path) -> None:
    table = load_table(table_path)
    base = {"flip": True, "rotation": 0, "shift": False, "optimizer": "adam"}
    index, snapped = table.snap({**base, "lr": 1e-3})
    assert not snapped and table.configs[index][-1] == 1e-3
    # 4e-4 is nearer 1e-4 on a linear scale, nearer 1e-3 on the log scale
    low, high = 1e-4, 1e-3
    assert abs(4e-4 - low) < abs(4e-4 - high)
    index, snapped = table.snap({**base, "lr": 4e-4})
    assert snapped and table.configs[index][-1] == high
    with pytest.raises(KeyError):
        table.snap({**base, "lr": 1e-3, "zoom": True})
    with pytest.raises(ValueError, match="not recorded"):
        table.snap({**base, "optimizer": "adamw", "lr": 1e-3})


def _csv(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return path


def _good(n_seeds: int = 2) -> pd.DataFrame:
    rows = [{"depth": d, "dropout": p, "seed": s, "epoch": e, "error": 1 / (d * e) + p,
             "epoch_time_s": 1.0}
            for d in (2, 4, 8) for p in (0.0, 0.5) for s in range(n_seeds) for e in (1, 2, 3)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns="epoch"), "column 'epoch' is missing; expected the 1-based"),
    (lambda f: f.drop(columns="seed"), "column 'seed' is missing"),
    (lambda f: f.drop(columns="epoch_time_s"), "column 'epoch_time_s' is missing; expected "
                                               "the seconds"),
    (lambda f: f.assign(epoch=f.epoch + 0.5), "column 'epoch' must hold integers"),
    (lambda f: f.assign(epoch=f.epoch - 1), "column 'epoch' must start at 1"),
    (lambda f: f.assign(epoch_time_s=-1.0), "'epoch_time_s' must be 0 to"),
    (lambda f: f[f.epoch != 2], "without gaps"),
    (lambda f: pd.concat([f, f.iloc[:1]]), "has epoch 1 twice"),
    (lambda f: f[~((f.depth == 2) & (f.seed == 1))], "has no curve for seed 1"),
    (lambda f: f.assign(error="x"), "column 'error' must be numeric"),
    (lambda f: f.assign(depth=f.depth.where(f.epoch != 3)), "column 'depth' has empty cells"),
])
def test_malformed_table_one_line(tmp_path, change, message) -> None:
    path = _csv(tmp_path, change(_good()))
    (tmp_path / "t.csv.yaml").write_text("metric: error\nmode: min\n")
    with pytest.raises(TableError) as err:
        load_table(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_foreign_table_space_from_columns(tmp_path) -> None:
    path = _csv(tmp_path, _good())
    (tmp_path / "t.csv.yaml").write_text("metric: error\nmode: min\n")
    table = load_table(path)
    assert table.names == ("depth", "dropout") and table.mode == "min"
    assert table.space["depth"].kind == "int" and table.space["dropout"].kind == "uniform"
    assert table.optimum(3)[0] == pytest.approx(1 / 24)
    assert infer_space(pd.DataFrame({"lr": [1e-4, 1e-2], "opt": ["a", "b"]}), ["lr", "opt"]
                       ) == {"lr": {"loguniform": [1e-4, 1e-2]}, "opt": {"choice": ["a", "b"]}}


def test_metadata_space_column_missing(tmp_path) -> None:
    path = _csv(tmp_path, _good())
    (tmp_path / "t.csv.yaml").write_text(
        "metric: error\nmode: min\nspace: {depth: {int: [2, 8]}, width: [1, 2]}\n")
    with pytest.raises(TableError, match="column 'width' of the metadata's space is missing"):
        load_table(path)


def test_cli_refuses_bad_table_exit_2(tmp_path) -> None:
    path = _csv(tmp_path, _good().drop(columns="epoch_time_s"))
    (tmp_path / "t.csv.yaml").write_text("metric: error\nmode: min\n")
    proc = subprocess.run([sys.executable, "-m", "service", "bench", "--backend", "replay",
                           "--table", str(path), "--searchers", "random",
                           "--storage", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "replay.tables: table" in lines[0] and "'epoch_time_s'" in \
        lines[0]
    assert not (tmp_path / "out").exists()


def test_sampled_design_snaps_to_nearest_configuration(tmp_path) -> None:
    frame = _good()
    frame = frame[~((frame.depth == 4) & (frame.dropout == 0.5))]  # not a full grid
    path = _csv(tmp_path, frame)
    (tmp_path / "t.csv.yaml").write_text("metric: error\nmode: min\n")
    table = load_table(path)
    assert not table.factorial and len(table.configs) == 5
    # distances are per range width: depth 2 away of 6, dropout 0.1 away of 0.5
    index, snapped = table.snap({"depth": 4, "dropout": 0.4})
    assert snapped and table.configs[index] == (2, 0.5)
    assert table.configs[table.snap({"depth": 4, "dropout": 0.1})[0]] == (4, 0.0)


def test_a_table_without_a_finite_metric_is_refused_before_anything_runs(tmp_path) -> None:
    """Every curve diverged at its first epoch: no optimum to score against, so the config
    is refused naming replay.tables (it used to run every cell, then fail in the report)."""
    import math

    import pandas as pd

    from service.core.api import ConfigError
    from service.core.config import build_config
    from service.core.table import TableMeta, write_table

    rows = [{"lr": lr, "seed": 0, "epoch": 1, "val_acc": math.nan, "epoch_time_s": 0.1}
            for lr in (0.001, 0.01, 0.1)]
    path = write_table(pd.DataFrame(rows), TableMeta(), tmp_path / "nan.parquet")
    with pytest.raises(ConfigError, match="replay.tables: .*no configuration has a finite "
                                          "val_acc at epoch 1"):
        build_config({"name": "x", "storage": str(tmp_path / "out"), "backend": "replay",
                      "replay": {"tables": [str(path)]}, "searchers": ["random"],
                      "budget": {"trials": 2, "epochs": 1}})
    assert not (tmp_path / "out").exists()
