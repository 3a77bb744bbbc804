"""Reports across searchers, read back from the storage path alone (so they also work after
a crash or on another machine): one row per trial, EMERALD-O's Table 9 and Table 8 views,
and best-so-far plots.

Table 9 (seed 000 section 6.3): rows = searchers, columns = backbones, each cell the best
validation accuracy as mean +- 95% CI over seeds and the test accuracy of the chosen config.
Table 8 (section 6.2): grid against Bayesian optimisation on VGG16 / VGG19.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.experiment import CONFIG_FILE, FINAL_TEST_FILE, SUMMARY_FILE

BAYESIAN = ("skopt", "spearmint", "ax", "optuna", "hyperopt")
"""Searchers that stand for 'Bayesian optimisation' in Table 8, in order of preference
(the paper's Table 6 lists Scikit-Optimize as GP-based BO)."""


ANALYSIS_HP = ("hp_optimizer", "hp_lr", "hp_flip", "hp_rotation", "hp_shift", "hp_zoom")
AUGMENT_HP = ("hp_flip", "hp_rotation", "hp_shift", "hp_zoom")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash: skip it, keep the rest
                continue
    return rows


def _cell_meta(cell_dir: Path) -> dict[str, Any] | None:
    parts = cell_dir.name.split("__")
    if len(parts) != 3 or not parts[2].startswith("s"):
        return None
    backbone = parts[1].replace("_w", "@")
    return {"searcher": parts[0], "backbone": backbone, "seed": int(parts[2][1:])}


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
        for (searcher, backbone, seed, trial), df in epochs.groupby(
            ["searcher", "backbone", "seed", "trial"], sort=False
        ):
            df = df.sort_values("epoch")
            finite = df[np.isfinite(pd.to_numeric(df["val_acc"], errors="coerce"))]
            best = finite.loc[finite["val_acc"].idxmax()] if not finite.empty else None
            rows.append({
                "searcher": searcher, "backbone": backbone, "seed": seed, "trial": trial,
                "config": df["config"].iloc[-1], "epochs": int(df["epoch"].max()),
                "best_val_acc": float(best["val_acc"]) if best is not None else math.nan,
                "train_acc_at_best": float(best["train_acc"]) if best is not None else math.nan,
                "last_val_acc": float(df["val_acc"].iloc[-1]),
                "diverged": bool(df["diverged"].fillna(False).astype(bool).any()),
                "started": float(df["timestamp"].min() - df["epoch_time_s"].iloc[0]),
                "finished": float(df["timestamp"].max()),
                "train_time_s": float(df["epoch_time_s"].sum()),
                "errored": (storage / f"{searcher}__{backbone.replace('@', '_w')}__s{seed}"
                            / trial / "error.txt").exists(),
            })
    return pd.DataFrame(rows)


def load_final_tests(storage: str | Path) -> pd.DataFrame:
    """The test-split score of each cell's chosen configuration."""
    rows = []
    for cell_dir in sorted(Path(storage).glob("*__*__s*")):
        meta = _cell_meta(cell_dir)
        test_file = cell_dir / FINAL_TEST_FILE
        if meta and test_file.exists():
            test = json.loads(test_file.read_text())
            rows.append({**meta, "test_acc": test.get("test_acc"),
                         "chosen_config": json.dumps(test.get("config"), sort_keys=True)})
    return pd.DataFrame(rows, columns=["searcher", "backbone", "seed", "test_acc",
                                       "chosen_config"])


def load_summaries(storage: str | Path) -> pd.DataFrame:
    rows = []
    for cell_dir in sorted(Path(storage).glob("*__*__s*")):
        if (cell_dir / SUMMARY_FILE).exists():
            rows.append(json.loads((cell_dir / SUMMARY_FILE).read_text()))
    return pd.DataFrame(rows)


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
    for _, df in trials.groupby(["searcher", "backbone", "seed"], sort=False):
        df = df.sort_values("finished").copy()
        df["trial_index"] = np.arange(1, len(df) + 1)
        df["best_so_far"] = df["best_val_acc"].fillna(-np.inf).cummax().replace(-np.inf, np.nan)
        df["wall_s"] = df["finished"] - df["started"].min()
        frames.append(df)
    return pd.concat(frames) if frames else pd.DataFrame()


def plot_best_so_far(curves: pd.DataFrame, out_dir: Path) -> list[Path]:
    """PNG plots of best-so-far validation accuracy against trials and against wall time,
    one panel per backbone, one line per searcher (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    if curves.empty:
        return paths
    backbones = list(dict.fromkeys(curves.backbone))
    for x, label, fname in (("trial_index", "trials finished", "best_vs_trials.png"),
                            ("wall_s", "wall time (s)", "best_vs_time.png")):
        fig, axes = plt.subplots(1, len(backbones), figsize=(5 * len(backbones), 4),
                                 squeeze=False)
        for ax, backbone in zip(axes[0], backbones, strict=True):
            sub = curves[curves.backbone == backbone]
            for searcher, df in sub.groupby("searcher", sort=False):
                if x == "trial_index":
                    mean = df.groupby("trial_index")["best_so_far"].mean()
                    ax.plot(mean.index, 100 * mean.values, marker="o", ms=3, label=searcher)
                else:
                    for seed, sdf in df.groupby("seed"):
                        ax.step(sdf["wall_s"], 100 * sdf["best_so_far"], where="post",
                                label=searcher if seed == df.seed.min() else None)
            ax.set_title(backbone)
            ax.set_xlabel(label)
            ax.set_ylabel("best validation accuracy (%)")
            ax.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(storage: str | Path, out_dir: str | Path | None = None,
                 fmt: str = "csv") -> dict[str, Path]:
    """Write trials.csv (or .parquet), table9.md/.csv, table8.md/.csv and plots."""
    storage = Path(storage)
    out = Path(out_dir) if out_dir else storage / "report"
    out.mkdir(parents=True, exist_ok=True)
    trials = load_trials(storage)
    tests = load_final_tests(storage)
    if not trials.empty:
        trials = trials.merge(tests[["searcher", "backbone", "seed", "test_acc"]],
                              on=["searcher", "backbone", "seed"], how="left")
    written: dict[str, Path] = {}
    trials_path = out / f"trials.{fmt}"
    if fmt == "parquet":
        trials.to_parquet(trials_path, index=False)
    else:
        trials.to_csv(trials_path, index=False)
    written["trials"] = trials_path
    t9 = _in_config_order(table9(trials, tests), storage)
    t9.to_csv(out / "table9.csv", index=False)
    (out / "table9.md").write_text("# Table 9: searchers by backbones\n\n" +
                                   table9_markdown(t9))
    written["table9"] = out / "table9.md"
    t8 = table8(t9)
    t8.to_csv(out / "table8.csv", index=False)
    t8_md = "_no VGG backbone in this run_\n" if t8.empty else t8.to_markdown(index=False)
    (out / "table8.md").write_text("# Table 8: grid vs Bayesian on VGG (val acc %)\n\n" +
                                   t8_md + "\n")
    written["table8"] = out / "table8.md"
    summaries = load_summaries(storage)
    if not summaries.empty:
        summaries.to_csv(out / "experiments.csv", index=False)
        written["experiments"] = out / "experiments.csv"
    for path in plot_best_so_far(best_so_far(trials), out):
        written[path.stem] = path
    epochs = load_epochs(storage)
    gen = generalization(trials, epochs)
    gen.to_csv(out / "generalization.csv", index=False)
    (out / "generalization.md").write_text(
        "# Generalization (EMERALD-O section 6.4)\n\n"
        + (gen.to_markdown(index=False, floatfmt=".4f") if not gen.empty else "_no trials_")
        + "\n\nVTAG = |val - train accuracy| of the chosen trial; CAPC = coefficient of "
        "variation of best val accuracy across backbones; SVDAC = variance of mean val "
        "accuracy across augmentation conditions.\n")
    written["generalization"] = out / "generalization.md"
    for path in plot_analysis(epochs, out):
        written[path.stem] = path
    return written


def generalization(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """EMERALD-O section 6.4, per searcher: VTAG = |validation - training accuracy| of the
    chosen (best) trial of each cell, averaged; CAPC = coefficient of variation across
    backbones of the best validation accuracy (seed means); SVDAC = variance of the mean
    validation accuracy across augmentation conditions (final epochs of its trials)."""
    rows = []
    if trials.empty:
        return pd.DataFrame()
    for searcher, df in trials.groupby("searcher", sort=False):
        best = df.loc[df.groupby(["backbone", "seed"])["best_val_acc"].idxmax().dropna()]
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
    config_file = storage / CONFIG_FILE
    if table.empty or not config_file.exists():
        return table
    config = json.loads(config_file.read_text())
    rank = {"searcher": [n.replace(":", ".") for n in config.get("searchers", [])],
            "backbone": config.get("backbones", [])}
    keys = [table[col].map(lambda v, order=order: order.index(v) if v in order else len(order))
            for col, order in rank.items()]
    order = sorted(range(len(table)), key=lambda i: (keys[0].iloc[i], keys[1].iloc[i]))
    return table.iloc[order].reset_index(drop=True)
