"""The console of a run: one progress line instead of Ray's, Tune's and the libraries' logs.

The driver polls the experiment folder (the result files Tune writes, each read from where
it was last read) and prints experiments done / total, trials and epochs done, the best
metric so far per searcher, the elapsed time and the expected remaining time (from the
epochs still to train at the rate so far). On a terminal the line is redrawn in place; when
the output is not a terminal (a file, `ray job submit`'s log) it is a plain new line at most
every `every_s` seconds, with no control characters.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from service.core.layout import SUMMARY_FILE, Cell

LOG_DIR = "logs"
"""Per experiment folder: each cell's driver output (Tune, searchers, libraries) as
<cell>.log, what the console no longer shows."""


@contextmanager
def output_to(log_file: str | Path | None) -> Iterator[None]:
    """This process's stdout and stderr (file descriptors 1 and 2, so C libraries and child
    processes too) go to `log_file` (appended) for the block; None leaves them alone."""
    if log_file is None:
        yield
        return
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_file, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    """Counts a run's progress from its files; `update` prints when it is due."""

    def __init__(self, folder: Path, cells: list[Cell], *, metric: str, mode: str,
                 epochs_per_cell: int, stream: TextIO | None = None,
                 every_s: float = 30.0) -> None:
        self.folder, self.cells = Path(folder), list(cells)
        self.metric, self.sign = metric, 1.0 if mode == "max" else -1.0
        self.total_epochs = max(1, epochs_per_cell * len(self.cells))
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = every_s
        self.start = time.time()
        self.last_print = -math.inf
        self.offsets: dict[Path, int] = {}
        self.epochs: dict[Path, int] = {}
        self.best: dict[str, float] = {}
        self.shown = ""

    def _read_new(self, path: Path, searcher: str) -> None:
        """The complete lines `path` gained since the last call."""
        offset = self.offsets.get(path, 0)
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except OSError:
            return
        end = chunk.rfind(b"\n") + 1
        self.offsets[path] = offset + end
        for line in chunk[:end].splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            self.epochs[path] = max(self.epochs.get(path, 0),
                                    int(row.get("training_iteration") or 0))
            value = row.get(self.metric)
            if isinstance(value, (int, float)) and math.isfinite(value) and (
                    searcher not in self.best or self.sign * value > self.sign * self.best[
                        searcher]):
                self.best[searcher] = float(value)

    def scan(self) -> dict[str, Any]:
        """The counts now: experiments done, trials, epochs, best per searcher, times."""
        done = trials = 0
        for cell in self.cells:
            cell_dir = self.folder / cell.name
            if (cell_dir / SUMMARY_FILE).exists():
                done += 1
            for result in cell_dir.glob("trial_*/result.json"):
                trials += 1
                self._read_new(result, cell.searcher)
        epochs = sum(self.epochs.values())
        elapsed = time.time() - self.start
        remaining = (elapsed * max(0, self.total_epochs - epochs) / epochs if epochs
                     else math.inf)
        if done == len(self.cells):
            remaining = 0.0
        return {"done": done, "cells": len(self.cells), "trials": trials, "epochs": epochs,
                "total_epochs": self.total_epochs, "best": dict(self.best),
                "elapsed_s": elapsed, "remaining_s": remaining}

    def line(self, state: dict[str, Any]) -> str:
        best = ", ".join(f"{s} {v:.4g}" for s, v in sorted(
            state["best"].items(), key=lambda kv: -self.sign * kv[1]))
        return (f"progress: {state['done']}/{state['cells']} experiments, {state['trials']} "
                f"trials, {state['epochs']}/{state['total_epochs']} epochs, elapsed "
                f"{_duration(state['elapsed_s'])}, remaining ~{_duration(state['remaining_s'])}"
                + (f" | best {self.metric}: {best}" if best else ""))

    def update(self, force: bool = False) -> None:
        """Print the progress line when due (every second on a terminal, every `every_s`
        otherwise), or now with `force`."""
        now = time.time()
        if not force and now - self.last_print < (1.0 if self.tty else self.every_s):
            return
        self.last_print = now
        text = self.line(self.scan())
        if text == self.shown:
            return
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.shown = text

    def log(self, message: str) -> None:
        """A line of its own (an experiment started or finished), above the progress."""
        if self.tty and self.shown:
            self.stream.write("\r\033[K")
        self.stream.write(message + "\n")
        self.stream.flush()
        if self.tty and self.shown:
            self.stream.write(self.shown)
            self.stream.flush()

    def close(self) -> None:
        self.update(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
