"""The replay comparison report: a failed cell scores its table's worst configuration and
counts everywhere; verdicts come from paired Wilcoxon tests, Holm-corrected, and need 20
blocks; unverified in-trial rows with an unknown or large model error are shown apart."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.core.layout import SUMMARY_FILE, Cell, cell_name
from service.reports.compare import (
    MIN_BLOCKS,
    NO_RESULT,
    holm,
    load_replay,
    ranked,
    ranks,
    shown_apart,
    summary_table,
    verdicts,
    with_failures,
    write_replay_report,
)

OPTIMUM, WORST = 0.9, 0.1


def _summary(searcher: str, seed: int, regret: float, table: str = "t", **extra) -> dict:
    """A replay cell's summary.json as run.py writes it (accuracy metric, max mode)."""
    return {"searcher": searcher, "backbone": table, "seed": seed, "backend": "replay",
            "final_regret": regret, "normalised_regret": regret / (OPTIMUM - WORST),
            "optimum": OPTIMUM, "worst": WORST,
            "test_acc": OPTIMUM - regret if math.isfinite(regret) else math.nan,
            "evals_to_target": 3.0, "epochs": 12, "snapped": 0, "lookups": 12,
            "simulated_s": 50.0, "wall_time_s": 0.1, "in_trial": False, **extra}


def _good(seeds: int = 20, rng_seed: int = 0) -> np.ndarray:
    return np.random.default_rng(rng_seed).uniform(0.01, 0.1, seeds)


def _flaky_cells() -> pd.DataFrame:
    """`steady` and `flaky` choose the same configurations on 20 seeds, but flaky fails on
    the even seeds: run.py's scored failures, a failure whose regret was left NaN, and one
    old-style cell with a NaN regret and no `failed` field."""
    good = _good()
    rows = [_summary("steady", s, good[s]) for s in range(20)]
    for s in range(20):
        if s % 2:
            row = _summary("flaky", s, good[s])
        if s % 2 == 0 and s < 10:
            row = _summary("flaky", s, OPTIMUM - WORST, failed="diverged: lr 3.0",
                           normalised_regret=1.0, test_acc=math.nan)
        elif s % 2 == 0 and s < 18:
            row = _summary("flaky", s, math.nan, failed="crash: worker died")
        elif s % 2 == 0:
            row = _summary("flaky", s, math.nan)  # a folder from before `failed`
        rows.append(row)
    return pd.DataFrame(rows)


def test_a_searcher_that_fails_on_half_the_seeds_ranks_below_one_that_does_not() -> None:
    cells = with_failures(_flaky_cells())
    flaky = cells[cells["searcher"] == "flaky"].set_index("seed")
    assert flaky["is_failed"].sum() == 10
    assert np.isfinite(cells["final_regret"]).all()
    assert flaky.loc[18, "failed"] == NO_RESULT and flaky.loc[10, "failed"].startswith("crash")
    assert flaky.loc[12, "final_regret"] == pytest.approx(OPTIMUM - WORST)
    assert flaky.loc[12, "normalised_regret"] == 1.0 and math.isnan(flaky.loc[12, "test_acc"])

    table = summary_table(cells).set_index("searcher")
    good = _good()
    expected = np.where(np.arange(20) % 2 == 0, OPTIMUM - WORST, good) * 100
    assert table.loc["flaky", "failures"] == 10 and table.loc["steady", "failures"] == 0
    assert table.loc["flaky", "regret_mean"] == pytest.approx(expected.mean())
    assert table.loc["steady", "regret_mean"] == pytest.approx(good.mean() * 100)
    assert table.loc["flaky", "regret_ci_low"] > table.loc["steady", "regret_ci_high"]
    assert table.loc["flaky", "normalised_regret"] == pytest.approx(
        np.where(np.arange(20) % 2 == 0, 1.0, good / (OPTIMUM - WORST)).mean())
    # test accuracy is undefined without a chosen configuration: over the 10 that have one
    assert table.loc["flaky", "test_acc"] == pytest.approx((OPTIMUM - good[1::2]).mean() * 100)

    avg, info = ranks(cells)
    assert info["blocks"] == 20
    assert avg.set_index("searcher")["avg_rank"].to_dict() == {"steady": 1.25, "flaky": 1.75}
    judged, note = verdicts(cells)
    judged = judged.set_index("searcher")
    assert judged.loc["steady", "verdict"] == "best"
    assert judged.loc["flaky", "verdict"] == "worse" and judged.loc["flaky", "p_holm"] < 0.01
    assert "1 worse" in note


def _paired(diff: np.ndarray, rng_seed: int = 1) -> pd.DataFrame:
    """Searchers a and b on len(diff) (table, seed) blocks over two tables, b = a + diff."""
    a = _good(len(diff), rng_seed) + 0.01
    return pd.DataFrame(
        [_summary("a", i // 2, a[i], table=f"t{i % 2}") for i in range(len(diff))]
        + [_summary("b", i // 2, a[i] + diff[i], table=f"t{i % 2}")
           for i in range(len(diff))])


def test_a_paired_verdict_finds_a_known_difference_and_only_with_enough_blocks() -> None:
    noise = np.random.default_rng(2).normal(0, 0.002, 20)
    cells = _paired(0.02 + noise)
    judged, note = verdicts(cells)
    b = judged.set_index("searcher").loc["b"]
    assert b["verdict"] == "worse" and b["p_holm"] < 0.05
    assert b["diff_vs_best"] == pytest.approx((0.02 + noise.mean()) * 100)
    assert 0 < b["diff_ci_low"] < 2.0 < b["diff_ci_high"]
    assert "Wilcoxon" in note and "zsplit" in note and "over 20 (table, seed) blocks" in note

    # 19 blocks: the same difference is no ranking claim, unless the threshold is lowered
    fewer = cells[~((cells["backbone"] == "t1") & (cells["seed"] == 9))]
    judged, note = verdicts(fewer)
    assert judged.set_index("searcher").loc["b", "verdict"] == "tie"
    assert f"fewer than {MIN_BLOCKS} blocks: no ranking claim" in note
    judged, _ = verdicts(fewer, min_blocks=5)
    assert judged.set_index("searcher").loc["b", "verdict"] == "worse"
    judged, note = verdicts(cells[cells["seed"] == 0].iloc[[0, 2]], min_blocks=1)
    assert judged.set_index("searcher").loc["b", "verdict"] == "tie"
    assert "too few blocks" in note


def test_a_near_zero_difference_is_a_tie() -> None:
    half = np.random.default_rng(3).normal(0, 0.002, 10)
    judged, _ = verdicts(_paired(np.concatenate([half, -half])))
    row = judged[judged["verdict"] != "best"].iloc[0]
    assert row["verdict"] == "tie" and row["p_holm"] > 0.5


def test_the_best_by_mean_can_lose_the_paired_test() -> None:
    """b beats a by a little on 18 blocks and loses by a lot on 2: a has the lower mean
    (the best) but the signed ranks favour b, significantly: `better`."""
    diff = np.array([-0.01] * 18 + [0.2, 0.2])
    judged, _ = verdicts(_paired(diff))
    judged = judged.set_index("searcher")
    assert judged.loc["a", "verdict"] == "best"
    assert judged.loc["b", "diff_vs_best"] > 0
    assert judged.loc["b", "verdict"] == "better" and judged.loc["b", "p_holm"] < 0.05


def test_holm_matches_a_hand_computation() -> None:
    # sorted: 0.005 x4 = 0.02; 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04 -> 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005, math.nan])
    np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    np.testing.assert_allclose(holm([0.2]), [0.2])


def _in_trial_cells(mae: float, verified: bool | None = False) -> pd.DataFrame:
    """random (per trial), pbt (in trial, scored by the model) and pb2 (in trial,
    retrained: verified, with its model's gap) on 20 seeds; pbt looks best."""
    good = _good()
    extra = {} if verified is None else {"verified": verified}
    rows = [_summary("random", s, good[s] + 0.02, searcher_s=1.0) for s in range(20)]
    rows += [_summary("pbt", s, good[s] / 2, in_trial=True, modelled_regret=good[s] / 2,
                      model_gap=math.nan, model_mae=mae, searcher_s=3.0, **extra)
             for s in range(20)]
    rows += [_summary("pb2", s, good[s], in_trial=True, verified=True,
                      modelled_regret=good[s] - 0.01, model_gap=-0.01, model_mae=mae,
                      searcher_s=5.0) for s in range(20)]
    return pd.DataFrame(rows)


def test_an_unverified_in_trial_row_with_unknown_model_error_is_shown_apart() -> None:
    cells = _in_trial_cells(mae=math.nan)
    apart = shown_apart(cells)
    assert apart["searcher"].tolist() == ["pbt"] and math.isnan(apart["model_error"].iloc[0])
    assert apart["modelled"].iloc[0] == pytest.approx(_good().mean() / 2 * 100)
    assert set(ranked(cells)["searcher"]) == {"random", "pb2"}
    avg, info = ranks(cells)
    assert set(avg["searcher"]) == {"random", "pb2"} and info["k"] == 2
    table = summary_table(cells).set_index("searcher")
    assert table.loc["pb2", "gap"] == pytest.approx(-1.0)
    assert table.loc["pb2", "modelled"] == pytest.approx((_good() - 0.01).mean() * 100)
    assert math.isnan(table.loc["random", "modelled"]) and math.isnan(table.loc["pb2",
                                                                                "model_error"])
    assert table["searcher_s"].to_dict() == {"random": 1.0, "pbt": 3.0, "pb2": 5.0}

    # an error of 2 points is no better than an unknown one; half a point ranks the row
    assert shown_apart(_in_trial_cells(mae=0.02))["model_error"].tolist() == [
        pytest.approx(2.0)]
    small = _in_trial_cells(mae=0.005)
    assert shown_apart(small).empty and set(ranked(small)["searcher"]) == {
        "random", "pbt", "pb2"}
    assert summary_table(small).set_index("searcher").loc["pbt", "model_error"] == \
        pytest.approx(0.5)
    assert verdicts(small)[0].set_index("searcher").loc["pbt", "verdict"] == "best"
    # verified, or a folder from before `verified`: ranked as before
    assert shown_apart(_in_trial_cells(mae=math.nan, verified=True)).empty
    assert shown_apart(_in_trial_cells(mae=math.nan, verified=None)).empty


def _write(folder: Path, summaries: list[dict]) -> None:
    for summary in summaries:
        cell = folder / cell_name(Cell(summary["searcher"], summary["backbone"],
                                       summary["seed"]))
        cell.mkdir(parents=True)
        (cell / SUMMARY_FILE).write_text(json.dumps(summary))


def test_the_report_counts_failures_and_names_the_paired_test(tmp_path) -> None:
    good = _good(4)
    summaries = [_summary("random", s, good[s] + 0.01) for s in range(4)]
    summaries += [_summary("optuna", s, good[s]) for s in range(3)]
    summaries.append(_summary("optuna", 3, math.nan, failed="diverged: lr 3.0"))
    summaries += [_summary("pbt", s, good[s] / 2, in_trial=True, verified=False,
                           modelled_regret=good[s] / 2, model_gap=math.nan,
                           model_mae=math.nan) for s in range(4)]
    summaries += [{"searcher": "grid", "backbone": "t", "seed": s, "backend": "replay",
                   "skipped": "the grid is larger than the budget"} for s in range(4)]
    _write(tmp_path / "exp", summaries)
    (tmp_path / "exp" / "experiment_config.json").write_text(
        json.dumps({"replay": {"paired": ["optuna vs random"]}}))
    cells, _ = load_replay(tmp_path / "exp")
    assert cells["is_failed"].sum() == 1 and cells["skipped"].notna().sum() == 4

    written = write_replay_report(tmp_path / "exp", tmp_path / "out")
    text = written["comparison"].read_text()
    assert "failures" in text and "Wilcoxon signed-rank" in text and "Holm" in text
    assert "fewer than 20 blocks: no ranking claim" in text
    assert "## Failed cells" in text and "- optuna on t, seed 3: diverged: lr 3.0" in text
    assert "## In-trial rows not verified (shown apart)" in text and "error unknown" in text
    assert "| modelled" not in text.split("## In-trial")[0]  # no ranked row has a model
    assert "## Entries that cannot run on a table" in text and "## Paired comparisons" in text
    overall = pd.read_csv(tmp_path / "out" / "comparison.csv").set_index("searcher")
    assert set(overall.index) == {"random", "optuna"}  # pbt apart, grid skipped
    assert overall.loc["optuna", "failures"] == 1
    assert overall.loc["optuna", "regret_mean"] == pytest.approx(
        (good[:3].sum() + OPTIMUM - WORST) / 4 * 100)
    assert set(overall["verdict"]) == {"best", "tie"} and "p_holm" in overall
    paired = pd.read_csv(tmp_path / "out" / "paired.csv").iloc[0]
    diff = (OPTIMUM - WORST - good[3] - 0.01 - 3 * 0.01) / 4 * 100
    assert paired["regret_diff"].startswith(f"{diff:+.2f} [")


def test_a_report_where_every_row_is_shown_apart_ranks_nothing_and_says_so(tmp_path
                                                                            ) -> None:
    """Only unverified in-trial rows (a replay with `replay.verify: false`): nothing is
    ranked, and the report is written saying so (it raised KeyError before)."""
    good = _good(4)
    summaries = [_summary("pbt", s, good[s] / 2, in_trial=True, verified=False,
                          modelled_regret=good[s] / 2, model_gap=math.nan,
                          model_mae=math.nan) for s in range(4)]
    _write(tmp_path / "exp", summaries)
    written = write_replay_report(tmp_path / "exp", tmp_path / "out")
    text = written["comparison"].read_text()
    assert "nothing is ranked or tested here" in text
    assert "## In-trial rows not verified (shown apart)" in text


def test_in_trial_rows_come_with_the_continuation_models_measured_error() -> None:
    """A report with in-trial rows on a shipped table shows every model's error against
    the switch curves kept beside it; a table that is not here adds nothing."""
    from service.backends.replay.switches import SwitchStore, model_errors
    from service.core.table import cached_table
    from service.reports.compare import model_error_lines

    path = "docs/tables/digits-vgg16_w0.0625.parquet"
    cells = pd.DataFrame({"searcher": ["emerald-dynamic", "random"], "in_trial": [True, False],
                          "table": [path, path], "backbone": ["digits-vgg16@0.0625"] * 2})
    text = "\n".join(model_error_lines(cells))
    table = cached_table(path)
    errors = model_errors(table, SwitchStore(table))
    assert "error on table digits-vgg16@0.0625" in text
    assert f"| reach | {errors['reach']['n']:.0f} | {100 * errors['reach']['mae']:.1f} [" in text
    assert "| epoch |" in text and "| restart |" in text
    assert model_error_lines(cells.assign(table="/nonexistent.parquet")) == []
    assert model_error_lines(cells.assign(in_trial=False)) == []
