"""`python -m service pretrain`: train EMERALD-O's agents on recorded tables, for a warm start.

Each episode is one replayed `emerald` search (the budget's trials and epochs, the simulated
clock) on the next table in turn; the agents' weights carry from episode to episode, while
each episode starts with a fresh replay buffer and its own exploration schedule, as a
warm-started search will. The weights are written after every episode (atomically), so an
interrupted pretraining keeps what it learned. Judge the file on a table it did not see.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from service.core.api import Budget, ConfigError
from service.core.table import cached_table

ENTRY = "emerald"


def check_pretrain(tables: list[str], out: str, episodes: int, options: dict[str, Any]
                   ) -> None:
    """Refuse bad input in one line before any episode runs."""
    from service.core import registry
    from service.core.table import plan_space

    if not tables:
        raise ConfigError("--table: give at least one replay table to pretrain on")
    if episodes < 1:
        raise ConfigError(f"--episodes: {episodes} must be at least 1")
    for path in tables:
        if Path(path).is_dir():
            raise ConfigError(f"--table: {path!r} is a folder; give a recorded table file "
                              "(docs/tables/*.parquet)")
        if not Path(path).is_file():
            raise ConfigError(f"--table: {path!r} does not exist; give a recorded table "
                              "(docs/tables/*.parquet)")
    if "warm_start" in options:
        raise ConfigError("--option warm_start: pretraining writes --out; start from an "
                          "earlier file by copying it to --out and adding --resume")
    target = Path(out)
    if target.exists() and target.is_dir():
        raise ConfigError(f"--out: {out!r} is a folder; give a file name, e.g. agents.pkl")
    from service.backends.replay.simulate import build_plan
    from service.core.table import TableError

    for path in tables:  # every table, before the first episode trains anything
        try:
            table = cached_table(path)
        except TableError as err:
            raise ConfigError(f"--table: {err}") from None
        space = plan_space(ENTRY, table)  # the space replay_cell searches by default
        try:  # with the defaults: what fails then is the table's
            registry.check_options(ENTRY, {}, space)
        except (ValueError, KeyError) as err:
            raise ConfigError(f"--table: {path}: {err}") from None
        try:
            registry.check_options(ENTRY, options, space)
        except (ValueError, KeyError) as err:
            raise ConfigError(f"--option: {err}") from None
        try:  # EMERALD-O needs augmentation and optimizer dimensions to act on
            build_plan(ENTRY, table, seed=0, budget=Budget(), options=options)
        except Exception as err:
            raise ConfigError(f"--table: {ENTRY} cannot search table {table.name!r} "
                              f"({', '.join(table.names)}): {err}"[:300]) from None


def pretrain(tables: list[str], out: str | Path, *, episodes: int, budget: Budget,
             seed: int = 0, options: dict[str, Any] | None = None, resume: bool = False,
             log: Any = print) -> dict[str, Any]:
    """Run the episodes; return a summary (also written beside `out` as JSON)."""
    from service.backends.replay.run import score
    from service.backends.replay.simulate import replay_cell

    out = Path(out)
    options = dict(options or {})
    start = time.time()
    history: list[dict[str, Any]] = []
    for episode in range(episodes):
        table = cached_table(tables[episode % len(tables)])
        warm = {"warm_start": str(out)} if episode or resume else {}
        sim = replay_cell(ENTRY, table, seed=seed * 100_003 + episode, budget=budget,
                          options={**options, **warm})
        _, figures = score(sim, table)
        searcher = sim.plan.searcher.searcher  # inside the registry's ResultGuard
        searcher.agents.save_agents(out, {
            "pretrain": [Path(t).name for t in tables], "episodes": episode + 1,
            "budget": budget.model_dump(), "options": options, "seed": seed})
        history.append({"episode": episode + 1, "table": Path(table.path).name,
                        "regret": figures["final_regret"], "trials": figures.get("trials")})
        log(f"  episode {episode + 1}/{episodes} on {Path(table.path).name}: regret "
            f"{100 * figures['final_regret']:.2f} points, {time.time() - start:.0f} s")
    summary = {"out": str(out), "tables": tables, "episodes": episodes, "seed": seed,
               "budget": budget.model_dump(), "options": options, "history": history,
               "wall_time_s": time.time() - start}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
