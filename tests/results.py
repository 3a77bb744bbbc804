"""Reading what trials reported, straight from the storage path (tests of runs in other
processes and on other nodes cannot hold Tune's ResultGrid)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def trial_rows(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Result rows (one per reported epoch) of every trial in `folder`, a cell or an
    experiment folder, by trial folder name. Trials that have not reported yet, and trials
    set aside under `.orphaned/`, are left out."""
    out = {}
    for path in [*folder.glob("trial_*/result.json"),
                 *folder.glob("*__*__s*/trial_*/result.json")]:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            out[path.parent.name] = rows
    return out
