"""The report's plots (PNG, matplotlib's Agg backend): best-so-far validation accuracy
against trials finished and against wall time (from the trials' own `started`/`finished`,
unix_time and elapsed_s, never Tune's whole-second timestamp), and section 6.1's views of
validation accuracy by setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.core.api import HP_PREFIX

LR, OPTIMIZER, FLIP, ROTATION = (f"{HP_PREFIX}{name}" for name in
                                  ("lr", "optimizer", "flip", "rotation"))


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


def plot_analysis(epochs: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Section 6.1's views: validation accuracy against epochs grouped by optimizer, by
    learning rate (decade), by flip and by rotation range; optimizer x learning rate scatter
    of final validation accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = epochs[np.isfinite(pd.to_numeric(epochs.get("val_acc"), errors="coerce"))].copy() \
        if not epochs.empty else epochs
    if ep.empty or LR not in ep:
        return []
    ep["lr_decade"] = np.floor(np.log10(ep[LR].astype(float))).map(lambda d: f"1e{d:.0f}")
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    for ax, key, title in zip(axes, (OPTIMIZER, "lr_decade", FLIP, ROTATION),
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
    optimizers = sorted(last[OPTIMIZER].astype(str).unique())
    for i, opt in enumerate(optimizers):
        df = last[last[OPTIMIZER].astype(str) == opt]
        sc = ax.scatter(df[LR].astype(float), np.full(len(df), i), c=100 * df["val_acc"],
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
