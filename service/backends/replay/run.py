"""Running a replay comparison: every (entry, table, seed) cell in a pool of processes (no
Ray: a replayed trial costs no CPU slot), each scored against its table's known optimum and
written in the same layout as a real run (`<storage>/<name>/<cell>/`).

Per cell: `epochs.parquet` (every reported row, the service's result schema, plus the
best-so-far regret after it) and `summary.json` (final regret, the chosen configuration's
true value and test accuracy from the table, evaluations to the target, snaps, times).

A failure is a result: a cell whose chosen configuration diverged, that finished no trial,
or whose searcher crashed scores the table's worst configuration (normalised regret 1).
An in-trial cell (PBT, PB2, a controller) is scored by its chosen schedule retrained for
real where the table allows (`verified`, `service.backends.replay.verify`), with the continuation
model's score and the gap beside it; elsewhere by the model, with its measured error.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from service.core import registry
from service.core.api import Schedule
from service.core.config import ExperimentConfig
from service.core.layout import CONFIG_FILE, ROWS_FILE, SUMMARY_FILE, Cell, write_json
from service.core.progress import LOG_DIR
from service.core.table import ReplayTable, cached_table

TARGET_QUANTILE = 0.95
"""Evaluations to reach a target (Vashishtha 2025 section 4.2 counts model evaluations to 85%
validation accuracy on CIFAR-10): a table's target is the value the best 5% of its
configurations reach, since a fixed 85% means nothing on another table."""
"""Cells started first, so the pool does not end waiting on one slow searcher."""


def table_label(table: ReplayTable) -> str:
    """The table's name as a cell's backbone slot (the layout codec's `@` for `_w`)."""
    from service.core.layout import parse_cell_name

    safe = "".join(c if c.isalnum() or c in "._+-" else "-" for c in table.name.lower())
    cell = parse_cell_name(f"x__{safe}__s0")
    if cell is None:
        raise ValueError(f"table name {table.name!r} cannot name a cell folder")
    return cell.backbone


def cells(cfg: ExperimentConfig) -> list[tuple[Cell, str]]:
    out = [(Cell(s, table_label(cached_table(t)), seed), t)
           for s in cfg.searchers for t in cfg.replay.tables for seed in cfg.seeds]
    cost = {name: entry.replay_s for name, entry in registry.entries().items()}
    return sorted(out, key=lambda c: -cost.get(c[0].searcher.split(":")[0], 0.0))


def true_value(table: ReplayTable, sim: Any, trial_id: str, epoch: int, config: int,
               schedule: Schedule | None = None) -> float:
    """What the service would get for a trial chosen at `epoch`: a plain configuration is
    trained again for the full budget (its seed-mean value after `max_epochs`); an in-trial
    schedule (`schedule`, the one that produced the chosen row: a PBT trial may since have
    been cloned over from a donor; default the trial's last) is replayed through `epoch` on
    every seed, switches continued by the simulation's continuation model (the mean of the
    spliced curves)."""
    from service.backends.replay.switches import modelled

    plan = sim.plan
    if not plan.replays_schedule:
        return table.value(config, plan.max_epochs)
    schedule = sim.state[trial_id].schedule if schedule is None else schedule
    return modelled(table, schedule.upto(epoch), sim.continuation)


def normalised(regret: float, optimum: float, worst: float, sign: float) -> float:
    """Regret as a share of the table's spread, optimum to worst (NaN when they are equal)."""
    return regret / (optimum - worst) * sign if optimum != worst else math.nan


def worst_figures(table: ReplayTable, epochs: int, reason: str) -> dict[str, Any]:
    """A failed cell's score: the table's worst configuration (normalised regret 1)."""
    optimum, worst = table.optimum(min(epochs, table.epochs))
    return {"failed": reason, "final_regret": table.sign * (optimum - worst),
            "normalised_regret": 1.0, "optimum": optimum, "worst": worst}


def chosen_test(table: ReplayTable, sim: Any, trial_id: str, epoch: int, config: int,
                schedule: Schedule | None = None) -> float:
    """The table's test accuracy of the chosen configuration (the one in force at the
    chosen epoch of `schedule`, default the trial's last, for a schedule: an
    approximation), when it was recorded at the budget."""
    if table.test is None:
        return math.nan
    if sim.plan.replays_schedule:
        schedule = sim.state[trial_id].schedule if schedule is None else schedule
        config = table.snap(schedule.at(min(epoch, len(schedule))))[0]
    elif sim.plan.max_epochs != table.epochs:
        return math.nan
    return float(np.nanmean(table.test[config])) if np.isfinite(table.test[config]).any() \
        else math.nan


def score(sim: Any, table: ReplayTable) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows with the best-so-far regret after each (in simulated time order), and the
    cell's figures."""
    optimum, worst = table.optimum(sim.plan.max_epochs)
    sign = table.sign
    values = table.true_values(sim.plan.max_epochs)
    finite = np.sort(values[np.isfinite(values)])
    target = float(np.quantile(finite, TARGET_QUANTILE if sign > 0 else 1 - TARGET_QUANTILE))
    rows = sorted(sim.rows, key=lambda r: (r["unix_time"], r["trial_index"]))
    best: tuple[float, dict[str, Any]] | None = None
    regret = math.nan
    epochs = 0
    started: set[int] = set()
    evals_to_target = math.nan
    # A row is scored by the schedule that produced it (its own `schedule`): a PBT trial
    # cloned over from a donor after that row goes on under another history.
    cache: dict[tuple[str, int, str], float] = {}
    for row in rows:
        epochs += 1
        started.add(row["trial_index"])
        value = row[table.metric]
        if math.isfinite(value) and (best is None or sign * value > sign * best[0]):
            best = (value, row)
            key = (row["trial_id"], row["epoch"], row["schedule"])
            if key not in cache:
                cache[key] = true_value(table, sim, row["trial_id"], row["epoch"],
                                        row["config"], Schedule.from_json(row["schedule"]))
            regret = sign * (optimum - cache[key])
            if math.isnan(evals_to_target) and sign * (value - target) >= 0:
                evals_to_target = len(started)
        row["regret"] = regret
        row["trials_started"] = len(started)
        row["epochs_total"] = epochs
    chosen = best[1] if best else None
    chosen_value = cache[(chosen["trial_id"], chosen["epoch"], chosen["schedule"])] \
        if chosen else math.nan
    summary = {
        "trials": len(sim.trials), "epochs": epochs, "simulated_s": sim.clock,
        "snapped": sim.snapped, "lookups": sim.lookups,
        "optimum": optimum, "worst": worst, "target": target,
        "final_regret": regret,
        "normalised_regret": normalised(regret, optimum, worst, sign) if chosen else math.nan,
        "best_observed": best[0] if best else math.nan,
        "chosen_value": chosen_value,
        "test_acc": chosen_test(table, sim, chosen["trial_id"], chosen["epoch"],
                                chosen["config"], Schedule.from_json(chosen["schedule"]))
        if chosen else math.nan,
        "chosen_config": table.config_dict(chosen["config"]) if chosen else None,
        "chosen_schedule": json.loads(chosen["schedule"])
        if chosen and sim.plan.replays_schedule else None,
        "evals_to_target": evals_to_target,
        "in_trial": bool(sim.plan.replays_schedule),
        "searcher_s": sim.searcher_s,
        "continuation": sim.continuation,
        "space": sim.space_mode,
        "failed": None,
    }
    if chosen is None:
        summary.update(worst_figures(table, sim.plan.max_epochs, "no finite result"))
    elif not math.isfinite(chosen_value):
        summary.update(worst_figures(table, sim.plan.max_epochs,
                                     "the chosen configuration diverged"))
    if summary["in_trial"]:
        summary["modelled_value"] = summary["chosen_value"]
        summary["modelled_regret"] = summary["final_regret"]
        summary["verified"] = False
    return rows, summary


def verify_cell(table: ReplayTable, summary: dict[str, Any]
                ) -> tuple[dict[str, Any], list[Any]]:
    """An in-trial cell's summary scored by its chosen schedule retrained for real (read
    from the table's switch curves where they hold it), the model's score kept beside it;
    the curves it had to train. A table that cannot be retrained keeps the modelled score,
    with the model's measured error."""
    from service.backends.replay import verify

    store = verify.store_of(table.path)
    summary = {**summary, "model_mae": _model_mae(table.path, summary["continuation"])}
    if not summary.get("chosen_schedule") or verify.recording_run(table) is None \
            or table.metric != "val_acc":
        return summary, []
    schedule = Schedule.from_json(summary["chosen_schedule"])
    value, test, trained = verify.verify(table, schedule, store)
    optimum, worst = summary["optimum"], summary["worst"]
    summary.update(verified=True, verified_value=value, test_acc=test,
                   model_gap=summary["modelled_value"] - value)
    if math.isfinite(value):
        regret = table.sign * (optimum - value)
        summary.update(failed=None, chosen_value=value, final_regret=regret,
                       normalised_regret=normalised(regret, optimum, worst, table.sign))
    else:
        summary.update(worst_figures(table, len(schedule), "the chosen schedule diverged "
                                     "when retrained"))
    return summary, trained


@functools.cache
def _model_mae(table_path: str, model: str) -> float:
    """A continuation model's measured error on a table, once per worker process (its
    switch curves change only when the run ends)."""
    from service.backends.replay.switches import model_errors, store_of

    table = cached_table(table_path)
    return model_errors(table, store_of(table_path), (model,))[model]["mae"]


def run_cell(cfg_dict: dict[str, Any], cell: Cell, table_path: str,
             log_dir: str | None = None) -> dict[str, Any]:
    """One cell in a worker process: simulate, score, write its folder, return the summary
    (or why the entry cannot run on this table). With `log_dir` the libraries' output
    (Optuna's INFO lines, scikit-learn's warnings) goes to <log_dir>/replay-<pid>.log."""
    from service.core.progress import output_to

    log_file = None if log_dir is None else Path(log_dir) / f"replay-{os.getpid()}.log"
    with output_to(log_file):
        return _run_cell(cfg_dict, cell, table_path)


def _run_cell(cfg_dict: dict[str, Any], cell: Cell, table_path: str) -> dict[str, Any]:
    import pandas as pd

    from service.backends.replay.simulate import ReplayError, replay_cell
    from service.core.config import build_config
    from service.core.layout import cell_name

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.getLogger("ray.tune").setLevel(logging.WARNING)  # PBT logs every perturbation
    cfg = build_config(cfg_dict)
    table = cached_table(table_path)
    folder = cfg.experiment_dir / cell_name(cell)
    meta = {"searcher": cell.searcher, "backbone": cell.backbone, "seed": cell.seed,
            "table": table.path, "backend": "replay", "space": cfg.replay.space}
    start = time.perf_counter()
    try:
        import torch

        torch.set_num_threads(1)
        sim = replay_cell(cell.searcher, table, seed=cell.seed, budget=cfg.budget,
                          options=cfg.searcher_options.get(cell.searcher),
                          concurrency=cfg.concurrency, time_budget_s=cfg.replay.time_budget_s,
                          continuation=cfg.replay.continuation,
                          searcher_time=cfg.replay.searcher_time, space=cfg.replay.space,
                          objectives=cfg.objectives_spec)
        rows, figures = score(sim, table)
    except ReplayError as err:  # the entry cannot search this table at all: not ranked
        return _write_summary(folder, {**meta, "skipped": str(err)[:300]})
    except Exception as err:  # a crash is a failure: it scores the worst, loses no other cell
        last = traceback.extract_tb(err.__traceback__)[-1]
        reason = (f"crashed: {type(err).__name__}: {err} "
                  f"({Path(last.filename).name}:{last.lineno})")[:300]
        return _write_summary(folder, {**meta, **worst_figures(table, cfg.budget.epochs,
                                                               reason),
                                       "in_trial": False, "epochs": 0, "trials": 0,
                                       "wall_time_s": time.perf_counter() - start})
    trained: list[Any] = []
    if figures["in_trial"] and cfg.replay.verify:
        figures, trained = verify_cell(table, figures)
    summary = {**meta, **figures, "wall_time_s": time.perf_counter() - start}
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows).drop(columns=["config"], errors="ignore")
    frame.to_parquet(folder / ROWS_FILE, index=False)
    journal = journal_entries(sim, table, cell) if cfg.dashboard else None
    return {**_write_summary(folder, summary), TRAINED: trained, JOURNAL: journal}


TRAINED = "_trained_curves"
"""The key of a worker's answer holding the switch curves it retrained (not written)."""
JOURNAL = "_journal"
"""The key of a worker's answer holding its cell's trials for the Optuna journal, which the
driver writes (service.backends.journal)."""


def journal_entries(sim: Any, table: ReplayTable, cell: Cell) -> dict[str, Any]:
    """A replayed cell's trials as the journal takes them (plain data, sent to the driver):
    each trial's rows, how it ended, its simulated times and the offset onto the wall
    clock; the cell's space, metric and mode."""
    from dataclasses import asdict

    from service.backends.journal import TrialLog
    from service.core.api import trial_budget

    by_trial: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(sim.rows, key=lambda r: (r["unix_time"], r["epoch"])):
        by_trial.setdefault(row["trial_id"], []).append(row)
    logs = []
    for trial in sim.trials:
        rows = by_trial.get(trial.trial_id)
        if not rows:
            continue  # never started
        config = {k: v for k, v in (trial.config or {}).items() if k != "run"}
        log = TrialLog(trial.trial_id, config, trial_budget(sim.plan.max_epochs, config),
                       status="ERROR" if trial.status == "ERROR" else "TERMINATED",
                       started_unix=rows[0]["unix_time"] - rows[0]["epoch_time_s"],
                       ended_unix=rows[-1]["unix_time"])
        for row in rows:
            log.add_row(row, table.metric)
        logs.append(asdict(log))
    return {"cell": cell, "logs": logs, "space": sim.space.to_dict(), "metric": table.metric,
            "mode": table.mode, "in_trial": bool(sim.plan.replays_schedule),
            "offset_s": time.time() - sim.clock, "table": table.path}


def write_journal(folder: Path, entry: dict[str, Any], writer: Any = None) -> Any:
    """A replayed cell's trials into the experiment's Optuna journal, one study (on the
    driver, as each cell's results come in); the writer, to pass to the next call."""
    from service.backends.journal import JournalWriter, TrialLog
    from service.core.space import SearchSpace

    writer = writer or JournalWriter(folder)
    space = SearchSpace.from_dict(entry["space"], free=True)
    cell = entry["cell"]
    writer.study(cell, mode=entry["mode"], metric=entry["metric"], table=entry["table"],
                 backend="replay")
    for log in entry["logs"]:
        writer.add(cell, TrialLog(**log), in_trial=entry["in_trial"],
                   offset_s=entry["offset_s"], space=space, mode=entry["mode"],
                   metric=entry["metric"])
    return writer


def _write_summary(folder: Path, summary: dict[str, Any]) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / SUMMARY_FILE, summary, indent=1, default=str)
    return summary


def run_replay(cfg: ExperimentConfig, log: Any = print, quiet: bool = False
               ) -> list[dict[str, Any]]:
    """Every cell of `cfg` against its tables, `replay.workers` processes at once (default:
    the machine's cores). `quiet`: the cells' library output goes to the experiment's logs/
    folder, the console shows only progress."""
    import multiprocessing

    folder = cfg.experiment_dir
    folder.mkdir(parents=True, exist_ok=True)
    # Only what was set: a replay's space comes from its tables, so a stored default space
    # would be refused when the config is read back.
    cfg_dict = cfg.model_dump(exclude_unset=True)
    stored = {**cfg_dict, "storage": str(Path(cfg.storage).expanduser().resolve())}
    write_json(folder / CONFIG_FILE, stored, indent=1)
    todo = cells(cfg)
    log_dir = str(folder / LOG_DIR) if quiet else None
    workers = cfg.replay.workers or os.cpu_count() or 1
    summaries: list[dict[str, Any]] = []
    start = time.time()
    log(f"replaying {len(todo)} cells ({len(cfg.searchers)} entries x "
        f"{len(cfg.replay.tables)} tables x {len(cfg.seeds)} seeds) in {workers} processes"
        + (f"; library output in {log_dir}" if log_dir else ""))
    trained: dict[str, list[Any]] = {}
    journal: dict[str, Any] = {}

    def done(summary: dict[str, Any]) -> None:
        entry = summary.pop(JOURNAL, None)
        if entry is not None:
            journal["writer"] = write_journal(folder, entry, journal.get("writer"))
        summaries.append(_logged(summary, len(summaries), len(todo), start, log, trained))

    if workers == 1:
        for cell, path in todo:
            done(run_cell(cfg_dict, cell, path, log_dir))
    else:
        context = multiprocessing.get_context("spawn")  # no forked Ray or torch state
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(run_cell, cfg_dict, cell, path, log_dir)
                       for cell, path in todo]
            for future in as_completed(futures):
                done(future.result())
    _store_trained(trained, log)
    return summaries


def _store_trained(trained: dict[str, list[Any]], log: Any) -> None:
    """Add the curves the cells retrained to their tables' switch curves, so the next replay
    of the same schedules reads them (a table in a read-only place keeps none)."""
    from service.backends.replay.switches import store_of

    for path, curves in trained.items():
        if not curves:
            continue
        store = store_of(path)
        try:
            new = store.add(curves)
        except OSError as err:
            log(f"  {len(curves)} retrained curves not kept ({err})")
            continue
        log(f"  {new} retrained curves added to {store.path}")


def _logged(summary: dict[str, Any], done: int, total: int, start: float, log: Any,
            trained: dict[str, list[Any]]) -> dict[str, Any]:
    done += 1
    curves = summary.pop(TRAINED, None)
    if curves:
        trained.setdefault(summary["table"], []).extend(curves)
    if "skipped" in summary and summary["seed"] == 0:
        log(f"  {summary['searcher']} on {summary['backbone']}: cannot run "
            f"({summary['skipped']})")
    if done == total or done % max(1, total // 10) == 0:
        log(f"  {done}/{total} cells, {time.time() - start:.0f} s")
    return summary
