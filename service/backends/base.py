"""The backend contract: how the CLI runs an experiment's cells, whichever backend runs
them (as Syne Tune's `TrialBackend`, which its simulator implements too). A backend starts
what it needs (`start`: Ray for the Tune backend, nothing for the replay), runs every cell
of the config under `cfg.experiment_dir` and returns their summaries (`run`), lets go of
what it started (`stop`), and says how the run ended (`outcome`: a headline, lines for
after the report and the exit status). Both write the same layout (service.core.layout),
so the reports never ask which one ran; the CLI writes and prints the report (reports sit
above the backends), the part `summary` names. The rules of a trial both follow are in
service.core.api (`trial_budget`, `plateaued`).

A new backend is one class here and one name in `BACKENDS` (and `ExperimentConfig.backend`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from service.core.config import ConfigError, ExperimentConfig
from service.core.layout import Cell, cell_name
from service.core.progress import LOG_DIR


class Backend(Protocol):
    """What the CLI calls, in this order: `start`, `run` (then `stop`, always), the report,
    `outcome`."""

    name: str
    summary: str
    """The written report file the CLI prints after a run (up to its per-table sections)."""

    def start(self, cfg: ExperimentConfig, args: argparse.Namespace) -> None:
        """Start what the run needs; ConfigError where it cannot (before any cell)."""

    def run(self, cfg: ExperimentConfig, *, restore: bool, verbose: bool,
            live_report: Callable[[Path], None] | None = None) -> list[dict[str, Any]]:
        """Run (or, with `restore`, finish) every cell; their summaries. `live_report`
        rewrites the report of a folder while the run goes on, where a backend can."""

    def stop(self) -> None:
        """Let go of what `start` started."""

    def outcome(self, cfg: ExperimentConfig, summaries: Sequence[dict[str, Any]],
                seconds: float) -> tuple[str, list[str], int]:
        """A headline for above the report's summary, lines for after its file list, and
        the exit status."""


class TuneBackend:
    """Cells as Ray Tune experiments on the cluster `--address` / RAY_ADDRESS names, or on
    an embedded local Ray; the report is rewritten while they run."""

    name = "tune"
    summary = "table9"

    def start(self, cfg: ExperimentConfig, args: argparse.Namespace) -> None:
        from service.backends.tune.ray_start import init_ray

        init_ray(args, cfg)

    def run(self, cfg: ExperimentConfig, *, restore: bool, verbose: bool,
            live_report: Callable[[Path], None] | None = None) -> list[dict[str, Any]]:
        from service.backends.tune.experiment import ReportRefresher, run_all

        refresher = ReportRefresher(cfg.experiment_dir, writer=live_report)
        return run_all(cfg, restore=restore, quiet=not verbose, refresher=refresher)

    def stop(self) -> None:
        import ray

        ray.shutdown()

    def outcome(self, cfg: ExperimentConfig, summaries: Sequence[dict[str, Any]],
                seconds: float) -> tuple[str, list[str], int]:
        failed = [s for s in summaries if "failed" in s]
        return (f"\n{len(summaries)} experiments in {seconds:.0f} s under "
                f"{cfg.experiment_dir}",
                [f"TensorBoard: tensorboard --logdir {cfg.experiment_dir}"],
                1 if failed else failed_trials_exit(cfg.experiment_dir, summaries))


class ReplayBackend:
    """Cells replayed on recorded tables in a pool of processes, on a simulated clock: no
    Ray instance, a replayed trial holds no CPU slot."""

    name = "replay"
    summary = "comparison"

    def start(self, cfg: ExperimentConfig, args: argparse.Namespace) -> None:
        """Nothing to start."""

    def run(self, cfg: ExperimentConfig, *, restore: bool, verbose: bool,
            live_report: Callable[[Path], None] | None = None) -> list[dict[str, Any]]:
        """Every cell (a replay is done in minutes: no live report); when no cell of a new
        replay can run (an entry that needs columns the tables lack), its folder goes again
        and the reason is a ConfigError."""
        import shutil

        from service.backends.replay.run import run_replay

        summaries = run_replay(cfg, quiet=not verbose)
        if summaries and not restore and all("skipped" in s for s in summaries):
            shutil.rmtree(cfg.experiment_dir, ignore_errors=True)
            raise ConfigError(f"replay.tables: no entry can run on them "
                              f"({summaries[0]['skipped']})")
        return summaries

    def stop(self) -> None:
        """Nothing to stop."""

    def outcome(self, cfg: ExperimentConfig, summaries: Sequence[dict[str, Any]],
                seconds: float) -> tuple[str, list[str], int]:
        ran = [s for s in summaries if "skipped" not in s]
        return (f"\n{len(ran)} replayed cells ({len(summaries) - len(ran)} could not run) "
                f"in {seconds:.0f} s under {cfg.experiment_dir}", [], 0 if ran else 1)


BACKENDS: dict[str, type] = {"tune": TuneBackend, "replay": ReplayBackend}
"""Every backend by its `ExperimentConfig.backend` name."""


def backend_for(cfg: ExperimentConfig) -> Backend:
    return BACKENDS[cfg.backend]()


def failed_trials_exit(folder: Path, summaries: Sequence[dict[str, Any]]) -> int:
    """1 when every trial of the run failed (the first error's line and where its log is
    printed), else 0; some failed trials are counted and located."""
    trials = sum(int(s.get("trials", 0)) for s in summaries)
    errors = sum(int(s.get("errors", 0)) for s in summaries)
    if not errors:
        return 0
    first = next(s for s in summaries if s.get("errors"))
    cell = folder / cell_name(Cell(first["searcher"], first["backbone"], first["seed"]))
    line = _first_error_line(cell)
    where = folder / LOG_DIR / f"{cell.name}.log"
    if errors >= trials:
        print(f"error: every trial failed ({errors} of {trials}); first: {line} "
              f"(log: {where})", file=sys.stderr)
        return 1
    print(f"{errors} of {trials} trials failed; first: {line} (log: {where})")
    return 0


def _first_error_line(cell: Path) -> str:
    """The last line of the first `error.txt` Tune wrote under a cell (the exception)."""
    for path in sorted(cell.rglob("error.txt")):
        lines = [x.strip() for x in path.read_text(errors="replace").splitlines() if x.strip()]
        if lines:
            return lines[-1][:300]
    return "no error.txt found"
