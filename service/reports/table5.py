"""Table V of Iranfar et al. (layer-wise Q-learning agents): per dataset, backbone and method,
the chosen network's test accuracy, model size, training and inference milliseconds per
batch (each cell's final test: the chosen trial's architecture retrained for the run's
epochs), the search's work (episodes, epochs) and best eq. 2 reward; for the agents also
their overhead per episode and whether they settled on one set (Figs 9 and 11).

Rows are (dataset, backbone, method), the method being the searcher as the config spells it;
`fixed` rows (no search: the space's constants, i.e. the original VGG-16 when no layer is
set) are Table V's "original". Numbers are mean and half-width of a t-based 95% interval
over seeds (`tables.mean_ci95`).

"Settled at" (Iranfar et al. calls the agents converged when they pick the same set for a
couple of consecutive episodes; this definition is ours): the first episode from which
Algorithm 3's greedy set, logged after every update, no longer changes up to the run's last
episode; "settled for" is how many episodes that is. Both come from each cell's
agent_steps.csv, which the layerwise searcher writes with its checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.core import registry
from service.core.api import eq2_reward
from service.core.layout import CONFIG_FILE, STEP_LOG
from service.reports.load import (
    _cells,
    _config_lists,
    _experiment_name,
    _read_json,
    load_epochs,
    load_final_tests,
)
from service.reports.table2 import dataset_of
from service.reports.tables import _ordered, mean_ci95

TABLE5_COLUMNS = [
    "dataset", "backbone", "method", "seeds", "test_acc", "test_acc_ci95", "model_mb",
    "model_mb_ci95", "train_ms_per_batch", "train_ms_ci95", "infer_ms_per_batch",
    "infer_ms_ci95", "test_reward", "test_reward_ci95", "episodes", "trained_epochs",
    "terminated", "best_reward", "best_reward_ci95",
    "overhead_ms", "exploration_episodes", "settled_at", "settled_for"]

TABLE5_NOTE = (
    "acc % = test accuracy of each cell's chosen network (its best trial's architecture "
    "retrained for the run's epochs), MB = its parameters and buffers, train / infer ms = "
    "milliseconds per batch of training (the retrain's last epoch) and of a forward pass "
    "(the test split, batch size of the trial), test reward = eq. 2 of that network (its test "
    "accuracy and MB, the experiment's reward coefficients), each mean +- half-width of a "
    "t-based 95% interval over seeds; episodes = trials per cell, epochs = epochs trained per cell "
    "(restarts included), terminated = trials per cell ended by Iranfar et al.'s slow-batch "
    "or loss rule, best reward = the cell's best eq. 2 reward during the search (column "
    "`reward`, at each trial's own epochs: shortened episodes score lower), all means over "
    "seeds. overhead ms = the agents' own time per episode (suggest and Q-table "
    "update), exploration = episodes in Algorithm 1's phase.")
SETTLED_DEFINITION = (
    "Settled at = the first episode from which Algorithm 3's greedy set (logged after every "
    "update) no longer changes up to the cell's last episode; settled for = the episodes "
    "since; means over seeds.")


def is_table5_method(label: str) -> bool:
    """Whether searcher `label` runs an entry that feeds Table V (`Entry.feeds`)."""
    return registry.feeds(label, "table5")


def table5_folders(folders: Sequence[Path]) -> list[Path]:
    """The experiment folders whose config lists a method that feeds Table V."""
    return [f for f in folders if any(is_table5_method(s) for s in _config_lists(f)[0])]


def settled(greedy: Sequence[str]) -> tuple[float, float]:
    """(settled at, settled for) of one cell's greedy sets, one per episode (1-based)."""
    if not len(greedy):
        return math.nan, math.nan
    last, start = greedy[-1], len(greedy)
    while start > 1 and greedy[start - 2] == last:
        start -= 1
    return float(start), float(len(greedy) - start)


def load_agent_logs(folder: Path) -> pd.DataFrame:
    """Per cell of one experiment: the agents' overhead per episode, exploration length
    and when their greedy set settled, from agent_steps.csv."""
    rows = []
    for cell_dir, cell in _cells(folder):
        path = cell_dir / STEP_LOG
        if not is_table5_method(cell.searcher) or not path.exists():
            continue
        log = pd.read_csv(path)
        if "greedy" not in log:
            continue
        at, since = settled(log["greedy"].astype(str).tolist())
        rows.append({"searcher": cell.searcher, "backbone": cell.backbone, "seed": cell.seed,
                     "overhead_ms": float(pd.to_numeric(log["overhead_ms"]).mean()),
                     "exploration_episodes": int((log["phase"] == "exploration").sum()),
                     "settled_at": at, "settled_for": since})
    return pd.DataFrame(rows, columns=["searcher", "backbone", "seed", "overhead_ms",
                                       "exploration_episodes", "settled_at", "settled_for"])


def _cell_work(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per cell: trials, epochs trained, terminated trials and the best eq. 2 reward."""
    if epochs.empty:
        return pd.DataFrame(columns=["searcher", "backbone", "seed", "episodes",
                                     "trained_epochs", "terminated", "best_reward"])
    epochs = epochs.assign(
        reward=pd.to_numeric(epochs.get("reward"), errors="coerce"),
        ended=epochs.get("terminated", pd.Series("", index=epochs.index)).fillna("")
        .astype(str).ne(""))
    rows = []
    for (searcher, backbone, seed), cell in epochs.groupby(["searcher", "backbone", "seed"],
                                                           sort=False):
        per_trial = cell.groupby("trial")
        rows.append({"searcher": searcher, "backbone": backbone, "seed": seed,
                     "episodes": per_trial.ngroups,
                     "trained_epochs": float(per_trial["epoch"].max().sum()),
                     "terminated": int(per_trial["ended"].any().sum()),
                     "best_reward": float(cell["reward"].max())})
    return pd.DataFrame(rows)


def _numbers(df: pd.DataFrame, column: str) -> pd.Series:
    """Column `column` of `df` as numbers (empty when absent)."""
    if column not in df:
        return pd.Series(dtype=float)
    return pd.to_numeric(df[column], errors="coerce")


def table5(folder: Path) -> pd.DataFrame:
    """Iranfar et al. Table V of one experiment folder, methods in the config's order."""
    tests = load_final_tests(folder)
    work = _cell_work(load_epochs(folder))
    logs = load_agent_logs(folder)
    keys = ["searcher", "backbone", "seed"]
    cells = work.merge(tests, on=keys, how="outer").merge(logs, on=keys, how="left")
    reward = (_read_json(folder / CONFIG_FILE) or {}).get("reward")
    if isinstance(reward, dict) and not cells.empty:  # eq. 2 of the retrained network
        c_acc, ref = float(reward["c_acc"]), float(reward["size_ref_mb"])
        cells["test_reward"] = [
            eq2_reward(acc, size / ref, c_acc) if math.isfinite(acc + size) else math.nan
            for acc, size in zip(_numbers(cells, "test_acc"),
                                 _numbers(cells, "model_size_mb"), strict=True)]
    rows = []
    for (searcher, backbone), df in cells.groupby(["searcher", "backbone"], sort=False):
        row: dict[str, Any] = {"dataset": dataset_of(folder), "backbone": backbone,
                               "method": searcher}
        acc = _numbers(df, "test_acc")
        row["seeds"] = int(df.loc[np.isfinite(acc), "seed"].nunique())
        for column, key, scale in (("test_acc", "test_acc", 100.0),
                                   ("model_mb", "model_size_mb", 1.0),
                                   ("train_ms_per_batch", "train_ms_per_batch", 1.0),
                                   ("infer_ms_per_batch", "infer_ms_per_batch", 1.0),
                                   ("best_reward", "best_reward", 1.0),
                                   ("test_reward", "test_reward", 1.0)):
            mean, half = mean_ci95(_numbers(df, key).tolist())
            ci = {"train_ms_per_batch": "train_ms_ci95",
                  "infer_ms_per_batch": "infer_ms_ci95"}.get(column, f"{column}_ci95")
            row[column], row[ci] = scale * mean, scale * half
        for column in ("episodes", "trained_epochs", "terminated", "overhead_ms",
                       "exploration_episodes", "settled_at", "settled_for"):
            values = _numbers(df, column).dropna()
            row[column] = float(values.mean()) if not values.empty else math.nan
        rows.append(row)
    table = pd.DataFrame(rows, columns=TABLE5_COLUMNS)
    return _ordered(table, {"method": _config_lists(folder)[0]})


def _cell(mean: float, half: float, digits: int = 2) -> str:
    return "" if not math.isfinite(mean) else f"{mean:.{digits}f} +- {half:.{digits}f}"


def _plain(value: float, digits: int = 1) -> str:
    return "" if not math.isfinite(value) else f"{value:.{digits}f}"


def table5_display(table: pd.DataFrame) -> pd.DataFrame:
    """Table V as the Markdown/HTML shows it."""
    return pd.DataFrame([{
        "data": r.dataset, "backbone": r.backbone, "method": r.method, "n": r.seeds,
        "acc %": _cell(r.test_acc, r.test_acc_ci95), "MB": _cell(r.model_mb, r.model_mb_ci95, 3),
        "train ms/batch": _cell(r.train_ms_per_batch, r.train_ms_ci95, 1),
        "infer ms/batch": _cell(r.infer_ms_per_batch, r.infer_ms_ci95, 1),
        "test reward": _cell(r.test_reward, r.test_reward_ci95, 3),
        "episodes": _plain(r.episodes), "epochs": _plain(r.trained_epochs),
        "terminated": _plain(r.terminated), "best reward": _cell(r.best_reward,
                                                                 r.best_reward_ci95, 3),
        "overhead ms/episode": _plain(r.overhead_ms, 2),
        "exploration": _plain(r.exploration_episodes, 0),
        "settled at": _plain(r.settled_at), "settled for": _plain(r.settled_for),
    } for r in table.itertuples(index=False)])


def write_table5(folders: Sequence[Path], out: Path) -> dict[str, Path]:
    """table5.csv and table5.md for the experiment folders that run the layerwise agents."""
    table = pd.concat([table5(Path(f)).assign(experiment=_experiment_name(Path(f)))
                       for f in folders], ignore_index=True)
    table.to_csv(out / "table5.csv", index=False)
    body = table5_display(table).to_markdown(index=False) if not table.empty else "_no cells_"
    (out / "table5.md").write_text(
        "# Table V: the agents' network against random search and the original (Iranfar "
        f"et al. Table V)\n\n{body}\n\n{TABLE5_NOTE}\n\n{SETTLED_DEFINITION}\n")
    return {"table5": out / "table5.md", "table5_csv": out / "table5.csv"}
