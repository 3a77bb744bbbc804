"""Where things live under a storage path: one codec between a cell (searcher, backbone,
seed) and its folder name, both ways, used by the runner and the reports.

A cell folder is `<searcher>__<backbone>__s<seed>`: a label's `:` becomes `.`, a backbone's
`@` becomes `_w` and its `:` (an import path, `pkg.models:build`) becomes `+`. Entry names
and labels never hold `__` or `.`, backbone names never `__`, `_w` or `+` (the registry and
the backbone parser refuse them), so the name splits back without loss.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEP = "__"
CONFIG_FILE = "experiment_config.json"
FINAL_TEST_FILE = "final_test.json"
SUMMARY_FILE = "summary.json"
ROWS_FILE = "epochs.parquet"
"""A replayed cell's reported rows (service.backends.replay.run), read by the comparison
report."""
RUN_FILE = "run.json"
"""Per experiment folder: when `run_all` started and ended and its trial slots."""
STEP_LOG = "agent_steps.csv"
STEP_TB = "agent_tb"
"""Per-step log of an RL method (searcher or controller) in its cell folder, as CSV and as
TensorBoard scalars."""
CELL_GLOB = f"*{SEP}*{SEP}s*"
JOURNAL_FILE = "optuna.journal"
"""Per experiment folder: every cell's trials as Optuna studies, for optuna-dashboard
(service.backends.journal)."""


def write_json(path: Path, data: Any, **dump: Any) -> None:
    """Write `data` as JSON under a temporary name, then rename it into place, so a report
    refreshed while a run goes on reads the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, **dump))
    os.replace(tmp, path)

_CELL = re.compile(r"(?P<searcher>[a-z0-9][a-z0-9_.-]*?)__"
                   r"(?P<backbone>[A-Za-z0-9_][A-Za-z0-9_.+-]*?)__s(?P<seed>\d+)")


@dataclass(frozen=True)
class Cell:
    """One Tune experiment of a comparison."""

    searcher: str
    backbone: str
    seed: int

    @property
    def name(self) -> str:
        """A unique folder name: Tune merges two runs of the same name and loses state."""
        return cell_name(self)


def cell_name(cell: Cell) -> str:
    searcher = cell.searcher.replace(":", ".")
    backbone = cell.backbone.replace("@", "_w").replace(":", "+")
    name = f"{searcher}{SEP}{backbone}{SEP}s{cell.seed}"
    if parse_cell_name(name) != cell:
        raise ValueError(f"cell {cell} does not round-trip through its folder name {name!r}")
    return name


def parse_cell_name(name: str) -> Cell | None:
    """The cell of a folder name, or None for a folder that is not a cell."""
    match = _CELL.fullmatch(name)
    if match is None or SEP in match["searcher"] or SEP in match["backbone"]:
        return None
    searcher = match["searcher"].replace(".", ":", 1)
    if "." in searcher:
        return None
    head, sep, width = match["backbone"].rpartition("_w")
    backbone = f"{head}@{width}" if sep and head else match["backbone"]
    return Cell(searcher, backbone.replace("+", ":"), int(match["seed"]))
