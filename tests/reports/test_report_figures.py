"""EMERALD-O's figures (service/reports/figures.py) from a small run's epoch rows: each one
renders where its data exist and is left out where they do not; Fig 7's step boundaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.reports import figures
from service.reports.plots import FLIP, LR, OPTIMIZER, ROTATION


def _epochs() -> pd.DataFrame:
    """emerald (one config per trial) and emerald-dynamic (a switch at epoch 3 of each
    trial) on two backbones, two seeds, four trials of four epochs."""
    rng = np.random.default_rng(0)
    rows = []
    for searcher in ("emerald", "emerald-dynamic", "random"):
        for backbone in ("vgg16@0.0625", "resnet18@0.0625"):
            for seed in (0, 1):
                for t in range(4):
                    hp = {LR: 10.0 ** -(t + 2), OPTIMIZER: ("adam", "sgd")[t % 2],
                          FLIP: bool(t % 2), ROTATION: (0, 10, 20, 30)[t]}
                    for epoch in range(1, 5):
                        switched = searcher == "emerald-dynamic" and epoch >= 3
                        rows.append({"searcher": searcher, "backbone": backbone,
                                     "seed": seed, "trial": f"trial_{t}", "epoch": epoch,
                                     "unix_time": 100.0 * t + epoch,
                                     "val_acc": float(np.clip(0.5 + 0.1 * epoch - 0.05 * t
                                                              + rng.normal(0, 0.01), 0, 1)),
                                     **hp, **({LR: hp[LR] / 10} if switched else {})})
    return pd.DataFrame(rows)


def _trials(epochs: pd.DataFrame) -> pd.DataFrame:
    return epochs.groupby(["searcher", "backbone", "seed", "trial"], as_index=False).agg(
        best_val_acc=("val_acc", "max"))


def test_episode_marks_every_trial_and_every_switch_inside_one() -> None:
    ep = _epochs()
    one = ep[(ep.backbone == "vgg16@0.0625") & (ep.seed == 0)]
    hp = [LR, OPTIMIZER, FLIP, ROTATION]
    y, bounds = figures.episode(one[one.searcher == "emerald"], hp)
    assert len(y) == 16 and bounds == [0, 4, 8, 12]  # a step per trial
    _, bounds = figures.episode(one[one.searcher == "emerald-dynamic"], hp)
    assert bounds == [0, 2, 4, 6, 8, 10, 12, 14]  # and the switch at epoch 3 of each


def test_every_figure_renders_from_a_small_run(tmp_path: Path) -> None:
    from PIL import Image

    ep = _epochs()
    paths = figures.paper_figures(_trials(ep), ep, tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["fig07_episode.png", "fig12_flip_rotation_adam.png",
                     "fig14_pairs_resnet18_0_0625.png", "fig14_pairs_vgg16_0_0625.png",
                     "fig15_vgg.png", "fig19_searchers.png"]
    for path in paths:
        image = Image.open(path).convert("L")
        assert image.width > 300 and image.height > 200
        assert np.asarray(image).std() > 10, path.name  # not blank


@pytest.mark.parametrize("drop", ["emerald", "adam", "vgg"])
def test_a_figure_without_its_data_is_left_out(tmp_path: Path, drop: str) -> None:
    ep = _epochs()
    if drop == "emerald":
        ep = ep[~ep.searcher.str.contains("emerald")]
        missing = "fig07_episode.png"
    elif drop == "adam":
        ep = ep[ep[OPTIMIZER] != "adam"]
        missing = "fig12_flip_rotation_adam.png"
    else:
        ep = ep[~ep.backbone.str.startswith("vgg")]
        missing = "fig15_vgg.png"
    names = {p.name for p in figures.paper_figures(_trials(ep), ep, tmp_path)}
    assert missing not in names and "fig19_searchers.png" in names
    assert figures.paper_figures(pd.DataFrame(), pd.DataFrame(), tmp_path) == []
