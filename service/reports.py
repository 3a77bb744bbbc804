"""Reports across searchers, read back from the storage path alone (so they also work after
a crash or on another machine): one row per trial, EMERALD-O's Table 9 and Table 8 views,
and best-so-far plots.

Table 9 (seed 000 section 6.3): rows = searchers, columns = backbones, each cell the best
validation accuracy as mean +- 95% CI over seeds and the test accuracy of the chosen config.
Table 8 (section 6.2): grid against Bayesian optimisation on VGG16 / VGG19.

`write_report` takes one experiment folder (<storage>/<name>) or a whole storage root (its
sub-folders are experiment folders) and gathers every experiment under it into one report.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.config import ConfigError
from service.experiment import CONFIG_FILE, FINAL_TEST_FILE, SUMMARY_FILE

BAYESIAN = ("skopt", "spearmint", "ax", "optuna", "hyperopt")
"""Searchers that stand for 'Bayesian optimisation' in Table 8, in order of preference
(the paper's Table 6 lists Scikit-Optimize as GP-based BO)."""


ANALYSIS_HP = ("hp_optimizer", "hp_lr", "hp_flip", "hp_rotation", "hp_shift", "hp_zoom")
AUGMENT_HP = ("hp_flip", "hp_rotation", "hp_shift", "hp_zoom")

ERROR_FILE = "error.txt"
"""What Tune writes into a trial's folder each time the trial fails (ray.air.constants
EXPR_ERROR_FILE, appended by Trial.handle_error, synced to the storage path; error.pkl beside
it for Ray task errors). It stays after a retry under max_failures."""
TRIAL_FILES = ("result.json", "params.json", ERROR_FILE, "error.pkl")
"""Any of these marks a sub-folder of a cell as a trial folder Tune created."""

SEARCHER_COLUMNS = ["experiment", "searcher", "cells", "trials", "errored", "epochs",
                    "trial_time_s", "wall_time_s", "wall_from_timestamps", "best_val_acc"]


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when it is missing, cut or not an object (a run
    that crashed while writing it must not stop the report)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return rows
    for line in text.splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash: skip it, keep the rest
                continue
    return [r for r in rows if isinstance(r, dict)]


def _cell_meta(cell_dir: Path) -> dict[str, Any] | None:
    parts = cell_dir.name.split("__")
    if len(parts) != 3 or not parts[2].startswith("s"):
        return None
    backbone = parts[1].replace("_w", "@")
    if not parts[2][1:].isdigit():
        return None
    return {"searcher": parts[0], "backbone": backbone, "seed": int(parts[2][1:])}


def _cell_dirs(folder: Path) -> list[Path]:
    """The cell folders (<searcher>__<backbone>__s<seed>) of one experiment folder."""
    return [d for d in sorted(folder.glob("*__*__s*")) if d.is_dir() and _cell_meta(d)]


def _is_experiment(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() or bool(_cell_dirs(folder))


def find_experiments(folder: str | Path) -> list[Path]:
    """The experiment folders one report covers: `folder` itself when it is one (it holds
    experiment_config.json or cell folders), else its direct sub-folders that are (a storage
    root). Anything else is a ConfigError naming the folder and the fix."""
    folder = Path(folder)
    if _is_experiment(folder):
        return [folder]
    subs = [d for d in sorted(folder.iterdir()) if d.is_dir() and _is_experiment(d)] \
        if folder.is_dir() else []
    if not subs:
        raise ConfigError(
            f"folder: {str(folder)!r} holds no experiment (no {CONFIG_FILE} in it or in any "
            "direct sub-folder, no <searcher>__<backbone>__s<seed> folders); give "
            "<storage>/<name> of a run, or the storage folder holding such runs")
    return subs


def load_epochs(storage: str | Path) -> pd.DataFrame:
    """Every reported epoch of every trial under `storage` (one folder per cell)."""
    rows: list[dict[str, Any]] = []
    for cell_dir in sorted(Path(storage).glob("*__*__s*")):
        meta = _cell_meta(cell_dir)
        if meta is None or not cell_dir.is_dir():
            continue
        for result_file in sorted(cell_dir.glob("*/result.json")):
            trial_dir = result_file.parent
            for r in _read_jsonl(result_file):
                config = {k: v for k, v in (r.get("config") or {}).items() if k != "run"}
                rows.append({
                    **meta, "trial": trial_dir.name, "trial_id": r.get("trial_id"),
                    "epoch": r.get("training_iteration"), "timestamp": r.get("timestamp"),
                    "time_total_s": r.get("time_total_s"),
                    **{k: r.get(k) for k in ("val_acc", "val_loss", "train_acc", "train_loss",
                                             "grad_norm", "epoch_time_s", "images_per_s",
                                             "model_size_mb", "diverged")},
                    "config": json.dumps(config, sort_keys=True, default=str),
                    # the settings in force this epoch (they change under emerald-dynamic)
                    **{k: r.get(k, config.get(k[3:])) for k in ANALYSIS_HP},
                })
    return pd.DataFrame(rows)


def load_trials(storage: str | Path) -> pd.DataFrame:
    """One row per trial: searcher, backbone, seed, config, best and last metrics, times."""
    storage = Path(storage)
    epochs = load_epochs(storage)
    rows: list[dict[str, Any]] = []
    if not epochs.empty:
        for col in ("epoch", "timestamp", "val_acc", "train_acc", "epoch_time_s"):
            epochs[col] = pd.to_numeric(epochs[col], errors="coerce")  # None from odd lines
        for (searcher, backbone, seed, trial), df in epochs.groupby(
            ["searcher", "backbone", "seed", "trial"], sort=False
        ):
            df = df.sort_values("epoch")
            finite = df[np.isfinite(pd.to_numeric(df["val_acc"], errors="coerce"))]
            best = finite.loc[finite["val_acc"].idxmax()] if not finite.empty else None
            rows.append({
                "searcher": searcher, "backbone": backbone, "seed": seed, "trial": trial,
                "config": df["config"].iloc[-1],
                "epochs": int(df["epoch"].max()) if df["epoch"].notna().any() else 0,
                "best_val_acc": float(best["val_acc"]) if best is not None else math.nan,
                "train_acc_at_best": float(best["train_acc"]) if best is not None else math.nan,
                "last_val_acc": float(df["val_acc"].iloc[-1]),
                "diverged": bool(df["diverged"].fillna(False).astype(bool).any()),
                "started": float(df["timestamp"].min() - df["epoch_time_s"].iloc[0]),
                "finished": float(df["timestamp"].max()),
                "train_time_s": float(df["epoch_time_s"].sum()),
                "errored": (storage / f"{searcher}__{backbone.replace('@', '_w')}__s{seed}"
                            / trial / ERROR_FILE).exists(),
            })
    return pd.DataFrame(rows)


def load_final_tests(storage: str | Path) -> pd.DataFrame:
    """The test-split score of each cell's chosen configuration."""
    rows = []
    for cell_dir in sorted(Path(storage).glob("*__*__s*")):
        meta = _cell_meta(cell_dir)
        test = _read_json(cell_dir / FINAL_TEST_FILE)
        if meta and test is not None:
            rows.append({**meta, "test_acc": test.get("test_acc"),
                         "chosen_config": json.dumps(test.get("config"), sort_keys=True)})
    return pd.DataFrame(rows, columns=["searcher", "backbone", "seed", "test_acc",
                                       "chosen_config"])


def load_summaries(storage: str | Path) -> pd.DataFrame:
    """Each cell's summary.json (absent for a cell whose run crashed)."""
    rows = []
    for cell_dir in sorted(Path(storage).glob("*__*__s*")):
        summary = _read_json(cell_dir / SUMMARY_FILE)
        if summary is not None:
            rows.append(summary)
    return pd.DataFrame(rows)


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def load_cells(storage: str | Path, epochs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell (Tune experiment) of one experiment folder: trial folders Tune
    created (also those that failed before reporting), trials with an error file, epochs
    trained (last training_iteration per trial), trial time (time_total_s of each trial's
    last result, summed), wall time (summary.json's wall_time_s, else the span of the result
    timestamps, flagged by wall_from) and the best validation accuracy. Read from the files
    alone, so a crashed cell still counts."""
    storage = Path(storage)
    epochs = load_epochs(storage) if epochs is None else epochs
    rows = []
    for cell_dir in _cell_dirs(storage):
        meta = _cell_meta(cell_dir) or {}
        trial_dirs = [d for d in sorted(cell_dir.iterdir())
                      if d.is_dir() and any((d / f).exists() for f in TRIAL_FILES)]
        ep = pd.DataFrame()
        if not epochs.empty:
            ep = epochs[(epochs.searcher == meta["searcher"]) & (epochs.backbone == meta[
                "backbone"]) & (epochs.seed == meta["seed"])].copy()
        trained = trial_time = best = wall_ts = math.nan
        if not ep.empty:
            for col in ("epoch", "timestamp", "time_total_s", "val_acc"):
                ep[col] = pd.to_numeric(ep[col], errors="coerce")
            last = ep.sort_values("epoch", kind="stable").groupby("trial").tail(1)
            trained = float(ep.groupby("trial")["epoch"].max().sum())
            trial_time = float(last["time_total_s"].sum())
            best = float(ep["val_acc"].max())  # NaN (diverged) epochs are skipped
            start = (ep["timestamp"] - ep["time_total_s"].fillna(0)).min()
            wall_ts = float(ep["timestamp"].max() - start)
        summary = _read_json(cell_dir / SUMMARY_FILE) or {}
        wall = _number(summary.get("wall_time_s"))
        wall_from = "summary" if math.isfinite(wall) else (
            "timestamps" if math.isfinite(wall_ts) else "")
        rows.append({
            **meta, "cell": cell_dir.name, "trials": len(trial_dirs),
            "errored": sum((d / ERROR_FILE).exists() or (d / "error.pkl").exists()
                           for d in trial_dirs),
            "epochs": 0 if math.isnan(trained) else int(trained),
            "trial_time_s": 0.0 if math.isnan(trial_time) else trial_time,
            "wall_time_s": wall if math.isfinite(wall) else wall_ts,
            "wall_from": wall_from, "best_val_acc": best,
        })
    return pd.DataFrame(rows, columns=["searcher", "backbone", "seed", "cell", "trials",
                                       "errored", "epochs", "trial_time_s", "wall_time_s",
                                       "wall_from", "best_val_acc"])


def searchers_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per experiment and searcher: cells (Tune experiments), trials run, trials errored,
    epochs trained, total trial time and wall time (both summed over cells, which may have
    run side by side), cells timed from result timestamps (no summary.json), best val acc."""
    if cells.empty:
        return pd.DataFrame(columns=SEARCHER_COLUMNS)
    table = cells.groupby(["experiment", "searcher"], sort=False).agg(
        cells=("cell", "count"), trials=("trials", "sum"), errored=("errored", "sum"),
        epochs=("epochs", "sum"), trial_time_s=("trial_time_s", "sum"),
        wall_time_s=("wall_time_s", lambda s: s.sum(min_count=1)),
        wall_from_timestamps=("wall_from", lambda s: int((s == "timestamps").sum())),
        best_val_acc=("best_val_acc", "max"),
    ).reset_index()
    return table[SEARCHER_COLUMNS]


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of a t-based 95% confidence interval (0 for a single seed)."""
    from scipy import stats

    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    if arr.size == 1:
        return float(arr[0]), 0.0
    half = stats.t.ppf(0.975, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size)
    return float(arr.mean()), float(half)


def table9(trials: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """Rows = searchers, columns = backbones; per cell the best validation accuracy (%)
    mean and CI over seeds, the test accuracy (%) of the chosen config, and the seeds."""
    if trials.empty:
        return pd.DataFrame()
    best = trials.groupby(["searcher", "backbone", "seed"])["best_val_acc"].max().reset_index()
    rows = []
    for (searcher, backbone), df in best.groupby(["searcher", "backbone"], sort=False):
        mean, half = mean_ci95(df["best_val_acc"].tolist())
        test_values = tests[(tests.searcher == searcher) & (tests.backbone == backbone)]
        test_mean, test_half = mean_ci95(test_values["test_acc"].astype(float).tolist())
        rows.append({"searcher": searcher, "backbone": backbone, "val_acc": 100 * mean,
                     "val_ci95": 100 * half, "test_acc": 100 * test_mean,
                     "test_ci95": 100 * test_half, "seeds": len(df)})
    return pd.DataFrame(rows)


def _cell_text(row: pd.Series) -> str:
    if not math.isfinite(row.val_acc):
        return "n/a"
    text = f"{row.val_acc:.2f} +- {row.val_ci95:.2f}"
    if math.isfinite(row.test_acc):
        text += f" (test {row.test_acc:.2f})"
    return text


def table9_markdown(table: pd.DataFrame) -> str:
    """Markdown grid: searchers by backbones."""
    if table.empty:
        return "_no finished trials_\n"
    backbones = list(dict.fromkeys(table.backbone))
    searchers = list(dict.fromkeys(table.searcher))
    lines = ["| searcher | " + " | ".join(backbones) + " |",
             "|---|" + "---|" * len(backbones)]
    for s in searchers:
        cells = []
        for b in backbones:
            match = table[(table.searcher == s) & (table.backbone == b)]
            cells.append(_cell_text(match.iloc[0]) if not match.empty else "")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    seeds = int(table.seeds.max())
    lines.append("")
    lines.append(f"Best validation accuracy (%) as mean +- 95% CI over {seeds} seed(s); in "
                 "brackets the test accuracy (%) of the chosen configuration, retrained.")
    return "\n".join(lines) + "\n"


def table8(table: pd.DataFrame) -> pd.DataFrame:
    """Grid against Bayesian optimisation on the VGG backbones (EMERALD-O Table 8)."""
    if table.empty:
        return pd.DataFrame()
    bayes = next((s for s in BAYESIAN if s in set(table.searcher)), None)
    rows = []
    for backbone in dict.fromkeys(table.backbone):
        if not str(backbone).startswith("vgg"):
            continue
        row: dict[str, Any] = {"backbone": backbone}
        for label, searcher in (("grid_search", "grid"), ("bayesian", bayes)):
            match = table[(table.searcher == searcher) & (table.backbone == backbone)]
            row[label] = float(match.val_acc.iloc[0]) if not match.empty else math.nan
        row["bayesian_searcher"] = bayes
        rows.append(row)
    return pd.DataFrame(rows)


def best_so_far(trials: pd.DataFrame) -> pd.DataFrame:
    """Best validation accuracy after each finished trial, per searcher/backbone/seed, with
    the trial count and the wall time since that cell's first trial started."""
    frames = []
    if trials.empty:
        return pd.DataFrame()
    for _, df in trials.groupby(["searcher", "backbone", "seed"], sort=False):
        df = df.sort_values("finished").copy()
        df["trial_index"] = np.arange(1, len(df) + 1)
        df["best_so_far"] = df["best_val_acc"].fillna(-np.inf).cummax().replace(-np.inf, np.nan)
        df["wall_s"] = df["finished"] - df["started"].min()
        frames.append(df)
    return pd.concat(frames) if frames else pd.DataFrame()


def plot_best_so_far(curves: pd.DataFrame, out_dir: Path) -> list[Path]:
    """PNG plots of best-so-far validation accuracy against trials and against wall time,
    one panel per backbone, one line per searcher (mean over seeds; one step line per seed
    against time), each searcher one colour in every panel and in the one legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    if curves.empty:
        return paths
    backbones = list(dict.fromkeys(curves.backbone))
    searchers = list(dict.fromkeys(curves.searcher))
    palette = plt.get_cmap("tab10" if len(searchers) <= 10 else "tab20")
    colour = {s: palette(i % palette.N) for i, s in enumerate(searchers)}
    for x, label, fname in (("trial_index", "trials finished", "best_vs_trials.png"),
                            ("wall_s", "wall time (s)", "best_vs_time.png")):
        fig, axes = plt.subplots(1, len(backbones), figsize=(5 * len(backbones), 4),
                                 squeeze=False)
        for ax, backbone in zip(axes[0], backbones, strict=True):
            sub = curves[curves.backbone == backbone]
            for searcher, df in sub.groupby("searcher", sort=False):
                if x == "trial_index":
                    mean = df.groupby("trial_index")["best_so_far"].mean()
                    ax.plot(mean.index, 100 * mean.values, marker="o", ms=3, label=searcher,
                            color=colour[searcher])
                else:
                    for seed, sdf in df.groupby("seed"):
                        ax.step(sdf["wall_s"], 100 * sdf["best_so_far"], where="post",
                                label=searcher if seed == df.seed.min() else None,
                                color=colour[searcher])
            ax.set_title(backbone)
            ax.set_xlabel(label)
            ax.set_ylabel("best validation accuracy (%)")
            ax.grid(alpha=0.3)
        handles: dict[str, Any] = {}  # searchers of every panel, not only the last one's
        for ax in axes[0]:
            for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(name, handle)
        axes[0][-1].legend(handles.values(), handles.keys(), fontsize=8)
        fig.tight_layout()
        path = out_dir / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


@dataclass
class _Views:
    """What one report shows: raw rows for trials.csv plus the tables and plot inputs, whose
    `searcher` column holds the Table 9 row label."""

    folders: list[Path]
    trials: pd.DataFrame
    table9: pd.DataFrame
    table8: pd.DataFrame
    summaries: pd.DataFrame
    searchers: pd.DataFrame
    labelled_trials: pd.DataFrame
    labelled_epochs: pd.DataFrame


def _experiment_name(folder: Path) -> str:
    return folder.name or folder.resolve().name


def _with_experiment(df: pd.DataFrame, name: str) -> pd.DataFrame:
    df = df.copy()
    df.insert(0, "experiment", name)
    return df


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _load_one(folder: Path) -> tuple[pd.DataFrame, ...]:
    """Trials (with their cell's test accuracy), final tests, epochs, summaries, cells."""
    trials = load_trials(folder)
    tests = load_final_tests(folder)
    if not trials.empty:
        trials = trials.merge(tests[["searcher", "backbone", "seed", "test_acc"]],
                              on=["searcher", "backbone", "seed"], how="left")
    epochs = load_epochs(folder)
    return trials, tests, epochs, load_summaries(folder), load_cells(folder, epochs)


def _config_lists(folder: Path) -> tuple[list[str], list[str]]:
    """The searchers (as cell folders spell them) and backbones an experiment listed."""
    config = _read_json(folder / CONFIG_FILE) or {}
    searchers, backbones = config.get("searchers"), config.get("backbones")
    return ([str(n).replace(":", ".") for n in searchers] if isinstance(searchers, list)
            else [], [str(b) for b in backbones] if isinstance(backbones, list) else [])


def _single_views(folder: Path) -> _Views:
    """One experiment folder: exactly the tables it always had, plus its searchers table."""
    trials, tests, epochs, summaries, cells = _load_one(folder)
    t9 = _in_config_order(table9(trials, tests), folder)
    name = _experiment_name(folder)
    searchers = _searchers_in_order(searchers_table(_with_experiment(cells, name)), [folder])
    return _Views([folder], trials, t9, table8(t9), summaries, searchers, trials, epochs)


def row_labels(cells: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Table 9 row label per (experiment, searcher): the searcher's name, or
    `experiment/searcher` when the searcher ran the same backbone in more than one experiment
    (not only the same seed: a cell's mean and CI over seeds must come from one experiment's
    budget and data). Such a searcher is labelled in every experiment it ran in; a searcher
    that ran disjoint backbones in several experiments keeps one row."""
    if cells.empty:
        return {}
    pairs = cells[["experiment", "searcher", "backbone"]].drop_duplicates()
    runs = pairs.groupby(["searcher", "backbone"])["experiment"].nunique()
    clashing = {searcher for (searcher, _), n in runs.items() if n > 1}
    return {(e, s): f"{e}/{s}" if s in clashing else s
            for e, s in pairs[["experiment", "searcher"]].drop_duplicates().itertuples(
                index=False)}


def _relabel(df: pd.DataFrame, labels: dict[tuple[str, str], str]) -> pd.DataFrame:
    if df.empty:
        return df
    df = df.copy()
    df["searcher"] = [labels.get((e, s), s) for e, s in zip(df.experiment, df.searcher,
                                                              strict=True)]
    return df


def _storage_views(folders: list[Path]) -> _Views:
    """Every experiment under a storage root in one set of tables (see `row_labels`)."""
    parts: dict[str, list[pd.DataFrame]] = {k: [] for k in ("trials", "tests", "epochs",
                                                            "summaries", "cells", "t8")}
    for folder in folders:
        name = _experiment_name(folder)
        trials, tests, epochs, summaries, cells = _load_one(folder)
        # Table 8 compares grid and Bayesian within one experiment's budget and data.
        t8 = table8(_in_config_order(table9(trials, tests), folder))
        for key, df in zip(parts, (trials, tests, epochs, summaries, cells, t8), strict=True):
            parts[key].append(_with_experiment(df, name))
    trials, tests, epochs, summaries, cells, t8 = (_concat(v) for v in parts.values())
    labels = row_labels(cells)
    labelled_trials, labelled_tests = _relabel(trials, labels), _relabel(tests, labels)
    searcher_order: list[str] = []
    backbone_order: list[str] = []
    for folder in folders:
        searchers, backbones = _config_lists(folder)
        name = _experiment_name(folder)
        searcher_order += [labels.get((name, s), s) for s in searchers]
        backbone_order += backbones
    t9 = _ordered(table9(labelled_trials, labelled_tests),
                  {"searcher": list(dict.fromkeys(searcher_order)),
                   "backbone": list(dict.fromkeys(backbone_order))})
    searchers = _searchers_in_order(searchers_table(cells), folders)
    return _Views(folders, trials, t9, t8, summaries, searchers, labelled_trials,
                  _relabel(epochs, labels))


def _searchers_in_order(table: pd.DataFrame, folders: list[Path]) -> pd.DataFrame:
    """Experiments in folder order, searchers in the order each experiment listed them."""
    rank: dict[tuple[str, str], int] = {}
    for folder in folders:
        name = _experiment_name(folder)
        for searcher in _config_lists(folder)[0]:
            rank.setdefault((name, searcher), len(rank))
    experiments = [_experiment_name(f) for f in folders]
    keys = [(experiments.index(e) if e in experiments else len(experiments),
             rank.get((e, s), len(rank))) for e, s in zip(table.experiment, table.searcher,
                                                          strict=True)]
    order = sorted(range(len(table)), key=lambda i: keys[i])
    return table.iloc[order].reset_index(drop=True)


def write_report(storage: str | Path, out_dir: str | Path | None = None,
                 fmt: str = "csv") -> dict[str, Path]:
    """Write trials.csv (or .parquet), table9.md/.csv, table8.md/.csv, generalization,
    searchers.md/.csv, plots and index.html (default into <storage>/report) for one
    experiment folder, or for every experiment under a storage root: then trials.csv,
    table8 and searchers gain an `experiment` column and Table 9 rows follow `row_labels`.
    A folder that is neither raises ConfigError before anything is written."""
    storage = Path(storage)
    folders = find_experiments(storage)
    out = Path(out_dir) if out_dir else storage / "report"
    out.mkdir(parents=True, exist_ok=True)
    views = _single_views(storage) if folders == [storage] else _storage_views(folders)
    trials = views.trials
    written: dict[str, Path] = {}
    trials_path = out / f"trials.{fmt}"
    if fmt == "parquet":
        trials.to_parquet(trials_path, index=False)
    else:
        trials.to_csv(trials_path, index=False)
    written["trials"] = trials_path
    t9 = views.table9
    t9.to_csv(out / "table9.csv", index=False)
    (out / "table9.md").write_text("# Table 9: searchers by backbones\n\n" +
                                   table9_markdown(t9))
    written["table9"] = out / "table9.md"
    t8 = views.table8
    t8.to_csv(out / "table8.csv", index=False)
    t8_md = "_no VGG backbone in this run_\n" if t8.empty else t8.to_markdown(index=False)
    (out / "table8.md").write_text("# Table 8: grid vs Bayesian on VGG (val acc %)\n\n" +
                                   t8_md + "\n")
    written["table8"] = out / "table8.md"
    summaries = views.summaries
    if not summaries.empty:
        summaries.to_csv(out / "experiments.csv", index=False)
        written["experiments"] = out / "experiments.csv"
    for path in plot_best_so_far(best_so_far(views.labelled_trials), out):
        written[path.stem] = path
    epochs = views.labelled_epochs
    gen = generalization(views.labelled_trials, epochs)
    gen.to_csv(out / "generalization.csv", index=False)
    (out / "generalization.md").write_text(
        "# Generalization (EMERALD-O section 6.4)\n\n"
        + (gen.to_markdown(index=False, floatfmt=".4f") if not gen.empty else "_no trials_")
        + "\n\n" + GENERALIZATION_NOTE + "\n")
    written["generalization"] = out / "generalization.md"
    for path in plot_analysis(epochs, out):
        written[path.stem] = path
    searchers = views.searchers
    searchers.to_csv(out / "searchers.csv", index=False)
    (out / "searchers.md").write_text(
        "# Searchers: work done and best result\n\n"
        + (searchers.to_markdown(index=False, floatfmt=".4g") if not searchers.empty
           else "_no cells_") + "\n\n" + SEARCHERS_NOTE + "\n")
    written["searchers"] = out / "searchers.md"
    written["index"] = write_index(out, storage, views, gen, written)
    return written


GENERALIZATION_NOTE = (
    "VTAG = |val - train accuracy| of the chosen trial; CAPC = coefficient of variation of "
    "best val accuracy across backbones; SVDAC = variance of mean val accuracy across "
    "augmentation conditions.")
SEARCHERS_NOTE = (
    "cells = Tune experiments (backbone x seed); trials = trial folders Tune created; "
    "errored = trials with Tune's error.txt (a failure, retried or not); epochs = last "
    "training_iteration summed over trials; trial_time_s = time_total_s of each trial's last "
    "result, summed; wall_time_s = each cell's summary.json wall_time_s (else the span of its "
    "result timestamps: wall_from_timestamps counts those cells), summed over cells that may "
    "have run side by side; best_val_acc as a fraction.")


def table9_grid(table: pd.DataFrame) -> pd.DataFrame:
    """Table 9 as a searcher x backbone frame of cell texts (the Markdown grid's content)."""
    if table.empty:
        return pd.DataFrame()
    backbones = list(dict.fromkeys(table.backbone))
    rows = []
    for s in dict.fromkeys(table.searcher):
        row = {"searcher": s}
        for b in backbones:
            match = table[(table.searcher == s) & (table.backbone == b)]
            row[b] = _cell_text(match.iloc[0]) if not match.empty else ""
        rows.append(row)
    return pd.DataFrame(rows)


def _html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>none</em></p>"
    return df.to_html(index=False, na_rep="", border=0, float_format=lambda v: f"{v:.4g}")


_CSS = ("body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} "
        "th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}")


def write_index(out: Path, storage: Path, views: _Views, gen: pd.DataFrame,
                written: dict[str, Path]) -> Path:
    """index.html: the report's tables (pandas HTML) and its PNGs (relative links) on one
    page, so a run can be read in a browser without tools."""
    pngs = [p for p in written.values() if p.suffix == ".png" and p.exists()]
    n_cells = int(views.searchers["cells"].sum()) if not views.searchers.empty else 0
    t9_caption = ("Best validation accuracy (%) as mean +- 95% CI over seeds; in brackets the "
                  "test accuracy (%) of the chosen configuration, retrained.")
    sections = [
        ("Table 9: searchers by backbones", _html_table(table9_grid(views.table9)),
         t9_caption),
        ("Searchers: work done and best result", _html_table(views.searchers),
         SEARCHERS_NOTE),
        ("Table 8: grid vs Bayesian on VGG (val acc %)", _html_table(views.table8), ""),
        ("Generalization (EMERALD-O section 6.4)", _html_table(gen), GENERALIZATION_NOTE),
        ("Cells (summary.json)", _html_table(views.summaries), ""),
    ]
    body = [f"<h1>Report: {html.escape(str(storage))}</h1>",
            f"<p>{len(views.folders)} experiment(s), {n_cells} cell(s), "
            f"{len(views.trials)} trial(s) with results. Trials: "
            f'<a href="{html.escape(written["trials"].name)}">'
            f"{html.escape(written['trials'].name)}</a>. TensorBoard: "
            f"<code>tensorboard --logdir {html.escape(str(storage))}</code></p>"]
    for title, table_html, note in sections:
        body.append(f"<h2>{html.escape(title)}</h2>\n{table_html}")
        if note:
            body.append(f"<p><small>{html.escape(note)}</small></p>")
    if pngs:
        body.append("<h2>Plots</h2>")
        body += [f'<p><img src="{html.escape(p.name)}" alt="{html.escape(p.stem)}" '
                 'style="max-width:100%"></p>' for p in pngs]
    page = ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Report: "
            f"{html.escape(_experiment_name(storage))}</title>\n<style>{_CSS}</style>"
            "</head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    path = out / "index.html"
    path.write_text(page)
    return path


def generalization(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """EMERALD-O section 6.4, per searcher: VTAG = |validation - training accuracy| of the
    chosen (best) trial of each cell, averaged; CAPC = coefficient of variation across
    backbones of the best validation accuracy (seed means); SVDAC = variance of the mean
    validation accuracy across augmentation conditions (final epochs of its trials)."""
    rows = []
    if trials.empty:
        return pd.DataFrame()
    for searcher, df in trials.groupby("searcher", sort=False):
        finite = df.dropna(subset=["best_val_acc"])  # a cell whose trials all diverged
        best = finite.loc[finite.groupby(["backbone", "seed"])["best_val_acc"].idxmax()]
        vtag = float((best["best_val_acc"] - best["train_acc_at_best"]).abs().mean())
        per_backbone = df.groupby(["backbone", "seed"])["best_val_acc"].max() \
            .groupby("backbone").mean()
        capc = float(per_backbone.std(ddof=0) / per_backbone.mean()) \
            if len(per_backbone) > 1 and per_backbone.mean() > 0 else math.nan
        ep = epochs[epochs.searcher == searcher]
        svdac = math.nan
        if not ep.empty:
            last = ep.sort_values("epoch").groupby(["backbone", "seed", "trial"]).tail(1)
            last = last[np.isfinite(pd.to_numeric(last["val_acc"], errors="coerce"))]
            if not last.empty:
                cond = last[list(AUGMENT_HP)].astype(str).agg("|".join, axis=1)
                means = last.groupby(cond)["val_acc"].mean()
                svdac = float(means.var(ddof=0)) if len(means) > 1 else 0.0
        rows.append({"searcher": searcher, "VTAG": vtag, "CAPC": capc, "SVDAC": svdac,
                     "conditions": int(len(means)) if not ep.empty and not last.empty else 0})
    return pd.DataFrame(rows)


def plot_analysis(epochs: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Section 6.1's views: validation accuracy against epochs grouped by optimizer, by
    learning rate (decade), by flip and by rotation range; optimizer x learning rate scatter
    of final validation accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = epochs[np.isfinite(pd.to_numeric(epochs.get("val_acc"), errors="coerce"))].copy() \
        if not epochs.empty else epochs
    if ep.empty or "hp_lr" not in ep:
        return []
    ep["lr_decade"] = np.floor(np.log10(ep["hp_lr"].astype(float))).map(lambda d: f"1e{d:.0f}")
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    for ax, key, title in zip(axes, ("hp_optimizer", "lr_decade", "hp_flip", "hp_rotation"),
                              ("optimizer", "learning rate (decade)", "horizontal flip",
                               "rotation range"), strict=True):
        for value, df in ep.groupby(key):
            mean = df.groupby("epoch")["val_acc"].mean()
            ax.plot(mean.index, 100 * mean.values, marker="o", ms=3, label=str(value))
        ax.set_title(f"validation accuracy by {title}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [out_dir / "analysis_by_setting.png"]
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)
    last = ep.sort_values("epoch").groupby(["searcher", "backbone", "seed", "trial"]).tail(1)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    optimizers = sorted(last["hp_optimizer"].astype(str).unique())
    for i, opt in enumerate(optimizers):
        df = last[last["hp_optimizer"].astype(str) == opt]
        sc = ax.scatter(df["hp_lr"].astype(float), np.full(len(df), i), c=100 * df["val_acc"],
                        cmap="viridis", vmin=0, vmax=100, s=30)
    ax.set_xscale("log")
    ax.set_yticks(range(len(optimizers)), optimizers)
    ax.set_xlabel("learning rate")
    ax.set_title("final validation accuracy: optimizer x learning rate")
    fig.colorbar(sc, label="validation accuracy (%)")
    fig.tight_layout()
    paths.append(out_dir / "analysis_optimizer_lr.png")
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths


def _in_config_order(table: pd.DataFrame, storage: Path) -> pd.DataFrame:
    """Rows in the order the experiment listed searchers and backbones (else as found)."""
    if table.empty or not (storage / CONFIG_FILE).exists():
        return table
    searchers, backbones = _config_lists(storage)
    return _ordered(table, {"searcher": searchers, "backbone": backbones})


def _ordered(table: pd.DataFrame, rank: dict[str, list[str]]) -> pd.DataFrame:
    """Rows sorted by each column's position in its list (unlisted values last, stable)."""
    if table.empty:
        return table
    keys = [table[col].map(lambda v, order=order: order.index(v) if v in order else len(order))
            for col, order in rank.items()]
    order = sorted(range(len(table)), key=lambda i: tuple(k.iloc[i] for k in keys))
    return table.iloc[order].reset_index(drop=True)
