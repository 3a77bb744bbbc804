"""Table 2 of Pham 2024 (per-epoch optimizer selection): per dataset and method, the test
accuracy, macro F1, precision and recall of each cell's final test, the epoch a run converges
after and the seconds one epoch takes; plus a plot of the optimizer each trial ran per epoch.

Rows are (dataset, backbone, method), the method being the searcher as the config spells it
(`fixed:sgd` and `optsel-ppo:3opt` are two methods), in the order the config lists them; one
backbone per experiment, as in Pham 2024, gives one row per (dataset, method). Metrics
are in %, mean and half-width of a t-based 95% interval over seeds (`tables.mean_ci95`).

"Converges after" (Pham 2024 Table 2 gives no definition; this one is ours): for each
cell (method x backbone x seed), take its best trial (the trial holding the cell's best
val_acc) and the first epoch whose val_acc is within 0.5 points (0.005) of that trial's best
val_acc; the table shows the mean of that epoch over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.core import registry
from service.core.layout import CONFIG_FILE
from service.reports.load import (
    _config_lists,
    _experiment_name,
    _number,
    _read_json,
    load_epochs,
    load_final_tests,
)
from service.reports.tables import _ordered, _relabel, mean_ci95

CONVERGENCE_TOL = 0.005
"""Within this much (0.5 points of accuracy) of the best trial's best val_acc counts as
converged."""

CONVERGENCE_DEFINITION = (
    "Converges after = for each cell (method x backbone x seed), the first epoch of its best "
    "trial (the trial holding the cell's best val_acc) whose val_acc is within 0.5 points "
    "(0.005) of that trial's best val_acc; mean over seeds.")
TABLE2_NOTE = (
    "Test accuracy and F1, precision and recall (macro averages over classes) of each "
    "cell's final test of its chosen trial, in %, as mean +- half-width of a t-based 95% interval "
    "over seeds (+- 0.00 for one seed); n = seeds with a final test, macro n = those whose "
    "final_test.json holds the macro metrics (older runs lack them: empty cells). "
    "s per epoch = min-max epoch_time_s over every epoch of the method's trials.")

MACRO_KEYS = {"f1": "test_f1_macro", "precision": "test_precision_macro",
              "recall": "test_recall_macro"}
"""Table 2's macro columns and the final_test.json key each reads (optional keys)."""
FINAL_KEYS = ("test_acc", "test_loss", *MACRO_KEYS.values())

TABLE2_COLUMNS = ["dataset", "backbone", "method", "seeds", "test_acc", "test_acc_ci95",
                  "f1", "f1_ci95", "precision", "precision_ci95", "recall", "recall_ci95",
                  "macro_seeds", "converges_after", "epoch_time_min_s", "epoch_time_max_s"]
"""The columns of Pham 2024 Table 2 (Acc %, F1 %, Precision %, Recall %, Converges
after, Time for one epoch (s)) with their intervals and counts."""

OPTIMIZER = "hp_optimizer"
SCHEDULE_PNG = "optimizer_schedule.png"
CELL_KEYS = ["dataset", "backbone", "method", "seed"]


def is_table2_method(label: str) -> bool:
    """Whether searcher `label` runs an entry that feeds Table 2 (`Entry.feeds`: the
    optimizer-selection controllers and the fixed-optimizer baseline)."""
    return registry.feeds(label, "table2")


def table2_folders(folders: Sequence[Path]) -> list[Path]:
    """The experiment folders whose config lists a method that feeds Table 2."""
    return [f for f in folders if any(is_table2_method(s) for s in _config_lists(f)[0])]


def dataset_of(folder: Path) -> str:
    """The dataset an experiment ran (its config's `dataset.name`; empty when unknown)."""
    dataset = (_read_json(folder / CONFIG_FILE) or {}).get("dataset")
    name = dataset.get("name") if isinstance(dataset, dict) else None
    return str(name) if name else ""


def load_final_metrics(folder: str | Path) -> pd.DataFrame:
    """Each cell's final_test.json numbers Table 2 reads (`load_final_tests`): test accuracy,
    loss, the macro metrics (NaN where an older file lacks them) and the epochs retrained."""
    tests = load_final_tests(folder)
    tests["test_acc"] = tests["test_acc"].map(_number)
    return tests[["searcher", "backbone", "seed", *FINAL_KEYS, "epochs"]]


def _with_dataset(df: pd.DataFrame, datasets: Mapping[str, str] | str) -> pd.DataFrame:
    """A copy of `df` with `method` (its searcher) and `dataset` (kept when present, else
    from `datasets`: one name, or one per `experiment`)."""
    df = df.copy()
    df["method"] = df["searcher"].astype(str)
    if "dataset" not in df:
        if isinstance(datasets, str) or "experiment" not in df:
            df["dataset"] = datasets if isinstance(datasets, str) else ""
        else:
            df["dataset"] = df["experiment"].map(lambda e: datasets.get(e, "")).fillna("")
    return df


def convergence_epoch(trial: pd.DataFrame, tol: float = CONVERGENCE_TOL) -> float:
    """The first epoch of one trial whose val_acc is within `tol` of its best (NaN when no
    epoch has a finite val_acc)."""
    ok = trial.assign(val_acc=pd.to_numeric(trial["val_acc"], errors="coerce"))
    ok = ok[np.isfinite(ok["val_acc"])].sort_values("epoch", kind="stable")
    if ok.empty:
        return math.nan
    reached = ok[ok["val_acc"] >= ok["val_acc"].max() - tol - 1e-12]
    return float(reached["epoch"].iloc[0])


def _cell_convergence(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per cell: the convergence epoch of its best trial (first trial holding the best)."""
    rows = []
    keys = CELL_KEYS + (["experiment"] if "experiment" in epochs else [])
    for key, cell in epochs.groupby(keys, sort=False, dropna=False):
        acc = pd.to_numeric(cell["val_acc"], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(acc).any():
            continue
        best_trial = cell["trial"].iloc[int(np.nanargmax(acc))]  # first trial holding it
        rows.append({**dict(zip(keys, key, strict=True)),
                     "converges_after": convergence_epoch(cell[cell["trial"] == best_trial])})
    return pd.DataFrame(rows, columns=[*keys, "converges_after"])


def _rows_of(df: pd.DataFrame, dataset: Any, backbone: Any, method: Any) -> pd.DataFrame:
    return df[(df.dataset == dataset) & (df.backbone == backbone) & (df.method == method)]


def table2(epochs: pd.DataFrame, tests: pd.DataFrame, *,
           datasets: Mapping[str, str] | str = "", order: Sequence[str] = ()) -> pd.DataFrame:
    """Pham 2024 Table 2 from the epochs frame (`load_epochs`) and final tests
    (`load_final_metrics`): one row per (dataset, backbone, method), methods in `order`.
    `datasets` names the dataset of every row, or of each `experiment` when the frames
    carry that column; a `dataset` column of theirs wins."""
    epochs = _with_dataset(epochs, datasets) if not epochs.empty else pd.DataFrame(
        columns=[*CELL_KEYS, "trial", "epoch", "val_acc", "epoch_time_s"])
    tests = _with_dataset(tests, datasets) if not tests.empty else pd.DataFrame(
        columns=[*CELL_KEYS, *FINAL_KEYS])
    tests = tests.reindex(columns=[*tests.columns,
                                   *(k for k in FINAL_KEYS if k not in tests)])  # older files
    conv = _cell_convergence(epochs)
    groups = list(dict.fromkeys(
        [tuple(k) for k in epochs[["dataset", "backbone", "method"]].itertuples(index=False)]
        + [tuple(k) for k in tests[["dataset", "backbone", "method"]].itertuples(index=False)]))
    rows = []
    for dataset, backbone, method in groups:
        test, ep, cv = (_rows_of(df, dataset, backbone, method) for df in (tests, epochs, conv))
        acc = test["test_acc"].astype(float)
        row: dict[str, Any] = {"dataset": dataset, "backbone": backbone, "method": method,
                               "seeds": int(test.loc[np.isfinite(acc), "seed"].nunique())}
        mean, half = mean_ci95(acc.tolist())
        row["test_acc"], row["test_acc_ci95"] = 100 * mean, 100 * half
        for column, key in MACRO_KEYS.items():
            mean, half = mean_ci95(test[key].astype(float).tolist())
            row[column], row[f"{column}_ci95"] = 100 * mean, 100 * half
        macro = test[list(MACRO_KEYS.values())].astype(float)
        row["macro_seeds"] = int(test.loc[np.isfinite(macro).all(axis=1), "seed"].nunique())
        row["converges_after"] = float(cv["converges_after"].mean()) if not cv.empty \
            else math.nan
        times = pd.to_numeric(ep["epoch_time_s"], errors="coerce").dropna()
        row["epoch_time_min_s"] = float(times.min()) if not times.empty else math.nan
        row["epoch_time_max_s"] = float(times.max()) if not times.empty else math.nan
        rows.append(row)
    table = pd.DataFrame(rows, columns=TABLE2_COLUMNS)
    datasets_seen = list(dict.fromkeys(table.dataset))
    return _ordered(table, {"dataset": datasets_seen, "method": list(order)})


def _interval(mean: float, half: float) -> str:
    return "" if not math.isfinite(mean) else f"{mean:.2f} +- {half:.2f}"


def table2_display(table: pd.DataFrame) -> pd.DataFrame:
    """Table 2 as the Markdown/HTML shows it: one text per Pham 2024 column."""
    rows = []
    for r in table.itertuples(index=False):
        lo, hi = r.epoch_time_min_s, r.epoch_time_max_s
        rows.append({
            "data": "" if pd.isna(r.dataset) else r.dataset, "backbone": r.backbone,
            "method": r.method, "n": r.seeds,
            "acc %": _interval(r.test_acc, r.test_acc_ci95),
            "F1 %": _interval(r.f1, r.f1_ci95),
            "precision %": _interval(r.precision, r.precision_ci95),
            "recall %": _interval(r.recall, r.recall_ci95), "macro n": r.macro_seeds,
            "converges after (epoch)": "" if not math.isfinite(r.converges_after)
            else f"{r.converges_after:.1f}",
            "s per epoch": "" if not math.isfinite(lo) else f"{lo:.2f}-{hi:.2f}",
        })
    return pd.DataFrame(rows)


def table2_markdown(table: pd.DataFrame) -> str:
    """table2.md: the table, the convergence definition and what the intervals are."""
    body = table2_display(table).to_markdown(index=False) if not table.empty \
        else "_no cells_"
    return ("# Table 2: test metrics, convergence and time per epoch (Pham 2024 Table 2)"
            f"\n\n{body}\n\n{CONVERGENCE_DEFINITION}\n\n{TABLE2_NOTE}\n")


def switching_trials(epochs: pd.DataFrame) -> set[tuple[Any, ...]]:
    """The (method, dataset) pairs with a trial whose `hp_optimizer` changes between epochs."""
    if epochs.empty or OPTIMIZER not in epochs:
        return set()
    keys = ["method", "dataset", *(["experiment"] if "experiment" in epochs else []),
            "backbone", "seed", "trial"]
    counts = epochs.dropna(subset=[OPTIMIZER]).groupby(keys, sort=False)[OPTIMIZER].nunique()
    return {k[:2] for k, n in counts.items() if n > 1}


def plot_optimizer_schedule(epochs: pd.DataFrame, out_dir: Path,
                            datasets: Mapping[str, str] | str = "") -> Path | None:
    """optimizer_schedule.png: per method that switches optimizer inside a trial, one row
    per trial, one column per epoch, coloured by the optimizer in force; None (no file)
    when no method switches."""
    if epochs.empty or OPTIMIZER not in epochs:
        return None
    epochs = _with_dataset(epochs, datasets)
    epochs["epoch"] = pd.to_numeric(epochs["epoch"], errors="coerce")
    epochs = epochs.dropna(subset=["epoch"])
    epochs = epochs[epochs["epoch"] >= 1]
    switching = switching_trials(epochs)
    panels = [k for k in dict.fromkeys(zip(epochs.method, epochs.dataset, strict=True))
              if k in switching]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    shown = epochs[[k in panels for k in zip(epochs.method, epochs.dataset, strict=True)]]
    optimizers = sorted(shown[OPTIMIZER].dropna().astype(str).unique())
    palette = plt.get_cmap("tab10" if len(optimizers) <= 10 else "tab20")
    colours = [palette(i % palette.N) for i in range(len(optimizers))]
    code = {opt: i for i, opt in enumerate(optimizers)}
    trial_keys = [*(["experiment"] if "experiment" in shown else []), "backbone", "seed",
                  "trial"]
    heights = [max(1, shown[(shown.method == m) & (shown.dataset == d)]
                   .groupby(trial_keys).ngroups) for m, d in panels]
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(9, sum(0.25 * h + 1.2 for h in heights)),
                             gridspec_kw={"height_ratios": heights})
    for ax, (method, dataset) in zip(axes[:, 0], panels, strict=True):
        sub = shown[(shown.method == method) & (shown.dataset == dataset)]
        trials = list(sub.groupby(trial_keys, sort=False))
        last = int(sub["epoch"].max())
        grid = np.full((len(trials), last), np.nan)
        labels = []
        for i, (key, df) in enumerate(trials):
            df = df.dropna(subset=[OPTIMIZER]).sort_values("epoch").drop_duplicates(
                "epoch", keep="last")
            for epoch, opt in zip(df["epoch"].astype(int), df[OPTIMIZER].astype(str),
                                  strict=True):
                grid[i, epoch - 1] = code[opt]
            key = dict(zip(trial_keys, key, strict=True))
            labels.append(f"{key['backbone']} s{key['seed']} {key['trial']}")
        ax.imshow(np.ma.masked_invalid(grid), aspect="auto", interpolation="nearest",
                  cmap=ListedColormap(colours), vmin=-0.5, vmax=len(optimizers) - 0.5,
                  extent=(0.5, last + 0.5, len(trials) - 0.5, -0.5))
        ax.set_yticks(range(len(trials)), labels, fontsize=7)
        ax.set_xlabel("epoch")
        ax.set_title(f"{dataset} {method}".strip() + ": optimizer in force per epoch")
    axes[0][0].legend([Patch(color=c) for c in colours], optimizers, fontsize=8,
                      loc="upper left", bbox_to_anchor=(1.01, 1.0), title="optimizer")
    fig.tight_layout()
    path = out_dir / SCHEDULE_PNG
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_table2(folders: Path | Sequence[Path], out: Path, *,
                 epochs: pd.DataFrame | None = None,
                 labels: Mapping[tuple[str, str], str] | None = None) -> dict[str, Path]:
    """Write table2.csv, table2.md and (when a method switches optimizer inside a trial)
    optimizer_schedule.png for experiment folders. `epochs` is their epochs frame when
    already read (with an `experiment` column for several folders) and `labels` the report's
    row labels per (experiment, searcher) (`tables.row_labels`), applied to the tests."""
    folders = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]
    names = [_experiment_name(f) for f in folders]
    labels = dict(labels or {})
    if epochs is None:
        epochs = pd.concat([load_epochs(f).assign(experiment=n)
                            for f, n in zip(folders, names, strict=True)], ignore_index=True)
    elif not epochs.empty and "experiment" not in epochs:
        if len(names) != 1:
            raise ValueError("epochs of several experiments need an `experiment` column")
        epochs = epochs.assign(experiment=names[0])
    if not epochs.empty:
        epochs = epochs[epochs["experiment"].isin(names)]
    tests = pd.concat([load_final_metrics(f).assign(experiment=n)
                       for f, n in zip(folders, names, strict=True)], ignore_index=True)
    tests = _relabel(tests, labels)
    datasets = {n: dataset_of(f) for f, n in zip(folders, names, strict=True)}
    order = list(dict.fromkeys(labels.get((n, s), s) for f, n in zip(folders, names,
                                                                     strict=True)
                               for s in _config_lists(f)[0]))
    table = table2(epochs, tests, datasets=datasets, order=order)
    out.mkdir(parents=True, exist_ok=True)
    written = {"table2_csv": out / "table2.csv", "table2": out / "table2.md"}
    table.to_csv(written["table2_csv"], index=False)
    written["table2"].write_text(table2_markdown(table))
    plot = plot_optimizer_schedule(epochs, out, datasets)
    if plot is not None:
        written["optimizer_schedule"] = plot
    return written
