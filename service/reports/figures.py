"""EMERALD-O's analysis figures (section 6), drawn from any run's epoch rows where the data
exist; each function returns the PNGs it wrote (none when its data are missing):

- Fig 7: validation accuracy over an EMERALD-O episode, with the step boundaries (each
  trial of `emerald`; each change of settings inside an `emerald-dynamic` trial);
- Fig 12: flip x rotation range under Adam (mean final validation accuracy, trial counts);
- Figs 14 and 18: pair plots of the hyperparameters and the final accuracy, one per
  backbone, densities on the diagonal;
- Figs 15-17: the VGG backbones' learning curves and learning rate against accuracy;
- Fig 19: best validation accuracy per searcher and backbone (mean and 95% CI over seeds).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from service.core import registry
from service.reports.plots import FLIP, LR, OPTIMIZER, ROTATION

PAIR_DIMS = ((LR, "log10 lr"), (ROTATION, "rotation"), (FLIP, "flip"),
             (OPTIMIZER, "optimizer"), ("val_acc", "val acc (%)"))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite(epochs: pd.DataFrame) -> pd.DataFrame:
    if epochs.empty or "val_acc" not in epochs:
        return pd.DataFrame()
    values = pd.to_numeric(epochs["val_acc"], errors="coerce")
    return epochs[np.isfinite(values)].copy()


def _final(epochs: pd.DataFrame) -> pd.DataFrame:
    """Each trial's last epoch row (what the trial ended with)."""
    ep = _finite(epochs)
    if ep.empty:
        return ep
    return ep.sort_values("epoch").groupby(["searcher", "backbone", "seed", "trial"]).tail(1)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def episode(rows: pd.DataFrame, hp_cols: list[str]) -> tuple[list[float], list[int]]:
    """One cell's epochs end to end in the order its trials started: accuracies (%) and the
    index of each step's first epoch (a new trial, or new settings inside one)."""
    start = rows.groupby("trial")["unix_time"].min().sort_values()
    y: list[float] = []
    bounds: list[int] = []
    for trial in start.index:
        trial_rows = rows[rows.trial == trial].sort_values("epoch")
        settings = trial_rows[hp_cols].astype(str).agg("|".join, axis=1).tolist()
        for i, value in enumerate(trial_rows.val_acc):
            if i == 0 or settings[i] != settings[i - 1]:
                bounds.append(len(y))
            y.append(100 * float(value))
    return y, bounds


def fig7_episode(epochs: pd.DataFrame, out: Path) -> list[Path]:
    """One panel per EMERALD-O searcher (its first backbone and seed): validation accuracy
    epoch after epoch in the order the trials started, dashed lines at step boundaries."""
    ep = _finite(epochs)
    if ep.empty:
        return []
    names = [s for s in dict.fromkeys(ep.searcher) if registry.feeds(s, "fig7")]
    if not names:
        return []
    plt = _plt()
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 3 * len(names)), squeeze=False)
    hp_cols = [c for c in (LR, OPTIMIZER, FLIP, ROTATION) if c in ep]
    for ax, name in zip(axes[:, 0], names, strict=True):
        sub = ep[ep.searcher == name]
        first = sub.iloc[0]
        sub = sub[(sub.backbone == first.backbone) & (sub.seed == first.seed)]
        y, bounds = episode(sub, hp_cols)
        ax.plot(np.arange(1, len(y) + 1), y, lw=1, marker=".", ms=3)
        for b in bounds[1:]:
            ax.axvline(b + 0.5, color="grey", ls="--", lw=0.6)
        ax.set_title(f"{name} on {first.backbone}, seed {first.seed}: {len(bounds)} steps")
        ax.set_xlabel("epoch (all trials, in the order they started)")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
    return [_save(fig, out / "fig07_episode.png")]


def fig12_flip_rotation(epochs: pd.DataFrame, out: Path) -> list[Path]:
    """Mean final validation accuracy of the Adam trials by horizontal flip x rotation
    range, the number of trials in each cell written in it."""
    last = _final(epochs)
    if last.empty or not {OPTIMIZER, FLIP, ROTATION} <= set(last):
        return []
    adam = last[last[OPTIMIZER].astype(str) == "adam"]
    if adam.empty:
        return []
    flips = sorted(adam[FLIP].astype(bool).unique())
    rotations = sorted(pd.to_numeric(adam[ROTATION]).unique())
    grid = np.full((len(flips), len(rotations)), np.nan)
    counts = np.zeros_like(grid, dtype=int)
    for (flip, rot), df in adam.groupby([adam[FLIP].astype(bool), pd.to_numeric(
            adam[ROTATION])]):
        i, j = flips.index(flip), rotations.index(rot)
        grid[i, j], counts[i, j] = 100 * df.val_acc.astype(float).mean(), len(df)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.6 * len(rotations) + 2.5, 1.2 * len(flips) + 2))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    for i in range(len(flips)):
        for j in range(len(rotations)):
            if counts[i, j]:
                ax.text(j, i, f"{grid[i, j]:.1f}\nn={counts[i, j]}", ha="center",
                        va="center", color="white", fontsize=8)
    ax.set_xticks(range(len(rotations)), [f"{r:g}" for r in rotations])
    ax.set_yticks(range(len(flips)), [str(f) for f in flips])
    ax.set_xlabel("rotation range")
    ax.set_ylabel("horizontal flip")
    ax.set_title("Adam: final validation accuracy (%) by flip x rotation")
    fig.colorbar(image, label="validation accuracy (%)")
    return [_save(fig, out / "fig12_flip_rotation_adam.png")]


def _pair_values(last: pd.DataFrame) -> dict[str, np.ndarray]:
    values: dict[str, np.ndarray] = {}
    for col, label in PAIR_DIMS:
        if col not in last:
            continue
        if col == LR:
            values[label] = np.log10(last[col].astype(float).to_numpy())
        elif col == OPTIMIZER:
            names = sorted(last[col].astype(str).unique())
            values[label] = last[col].astype(str).map(names.index).to_numpy(float)
        elif col == FLIP:
            values[label] = last[col].astype(bool).to_numpy(float)
        elif col == "val_acc":
            values[label] = 100 * last[col].astype(float).to_numpy()
        else:
            values[label] = pd.to_numeric(last[col]).to_numpy(float)
    return values


def fig14_pairs(epochs: pd.DataFrame, out: Path, limit: int = 3) -> list[Path]:
    """Pair plots (Figs 14 and 18), one per backbone (at most `limit`): every pair of the
    hyperparameters and the final accuracy as a scatter coloured by accuracy, each one's
    density (a normalised histogram) on the diagonal."""
    last = _final(epochs)
    if last.empty or LR not in last:
        return []
    plt = _plt()
    paths = []
    for backbone in list(dict.fromkeys(last.backbone))[:limit]:
        values = _pair_values(last[last.backbone == backbone])
        labels = list(values)
        acc = values["val acc (%)"]
        n = len(labels)
        fig, axes = plt.subplots(n, n, figsize=(2.2 * n, 2.2 * n), squeeze=False)
        for i, row in enumerate(labels):
            for j, col in enumerate(labels):
                ax = axes[i, j]
                if i == j:
                    ax.hist(values[row], bins=12, density=True, color="tab:blue", alpha=0.7)
                else:
                    ax.scatter(values[col], values[row], c=acc, cmap="viridis", s=10)
                if i == n - 1:
                    ax.set_xlabel(col, fontsize=8)
                if j == 0:
                    ax.set_ylabel(row, fontsize=8)
                ax.tick_params(labelsize=6)
        fig.suptitle(f"{backbone}: hyperparameters and final validation accuracy "
                     f"({len(acc)} trials)")
        safe = "".join(c if c.isalnum() else "_" for c in str(backbone))
        paths.append(_save(fig, out / f"fig14_pairs_{safe}.png"))
    return paths


def fig15_vgg(epochs: pd.DataFrame, out: Path) -> list[Path]:
    """Per VGG backbone: every trial's learning curve, and its learning rate against its
    final accuracy coloured by optimizer (Figs 15-17)."""
    ep = _finite(epochs)
    if ep.empty or LR not in ep:
        return []
    vggs = [b for b in dict.fromkeys(ep.backbone) if str(b).startswith("vgg")]
    if not vggs:
        return []
    plt = _plt()
    fig, axes = plt.subplots(len(vggs), 2, figsize=(11, 3.6 * len(vggs)), squeeze=False)
    last = _final(ep)
    for (curves, scatter), backbone in zip(axes, vggs, strict=True):
        sub = ep[ep.backbone == backbone]
        for _, rows in sub.groupby(["searcher", "seed", "trial"]):
            rows = rows.sort_values("epoch")
            curves.plot(rows.epoch, 100 * rows.val_acc.astype(float), lw=0.6, alpha=0.5)
        curves.set_title(f"{backbone}: validation accuracy per trial")
        curves.set_xlabel("epoch")
        curves.set_ylabel("validation accuracy (%)")
        curves.grid(alpha=0.3)
        fin = last[last.backbone == backbone]
        for opt, df in fin.groupby(fin[OPTIMIZER].astype(str) if OPTIMIZER in fin else
                                   pd.Series("all", index=fin.index)):
            scatter.scatter(df[LR].astype(float), 100 * df.val_acc.astype(float), s=14,
                            label=opt)
        scatter.set_xscale("log")
        scatter.set_title(f"{backbone}: learning rate and final accuracy")
        scatter.set_xlabel("learning rate")
        scatter.set_ylabel("final validation accuracy (%)")
        scatter.grid(alpha=0.3)
        scatter.legend(fontsize=8)
    return [_save(fig, out / "fig15_vgg.png")]


def fig19_bars(trials: pd.DataFrame, out: Path) -> list[Path]:
    """Best validation accuracy per searcher, one bar group per backbone: the mean over
    seeds of each cell's best, with a 95% t interval where there are several seeds."""
    from scipy import stats

    if trials.empty or "best_val_acc" not in trials:
        return []
    best = trials.groupby(["searcher", "backbone", "seed"], sort=False)["best_val_acc"].max()
    best = best.dropna().reset_index()
    if best.empty:
        return []
    searchers = list(dict.fromkeys(best.searcher))
    backbones = list(dict.fromkeys(best.backbone))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(searchers) * len(backbones) + 2), 4.5))
    width = 0.8 / len(backbones)
    for k, backbone in enumerate(backbones):
        means, errs = [], []
        for searcher in searchers:
            v = 100 * best[(best.searcher == searcher) & (best.backbone == backbone)][
                "best_val_acc"].to_numpy(float)
            means.append(v.mean() if v.size else math.nan)
            errs.append(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
                        if v.size > 1 else 0.0)
        ax.bar(np.arange(len(searchers)) + k * width, means, width, yerr=errs, capsize=2,
               label=backbone)
    ax.set_xticks(np.arange(len(searchers)) + width * (len(backbones) - 1) / 2, searchers,
                  rotation=45, ha="right")
    ax.set_ylabel("best validation accuracy (%)")
    ax.set_title("best validation accuracy per searcher (mean, 95% CI over seeds)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return [_save(fig, out / "fig19_searchers.png")]


def paper_figures(trials: pd.DataFrame, epochs: pd.DataFrame, out: Path) -> list[Path]:
    """Every figure whose data this run has."""
    return [*fig7_episode(epochs, out), *fig12_flip_rotation(epochs, out),
            *fig14_pairs(epochs, out), *fig15_vgg(epochs, out), *fig19_bars(trials, out)]
