"""The agreement study: replay and real runs of the same cells, side by side.

Runs (unless `--report-only`) the four presets, each with the service's own command:

    python -m service bench --preset agreement-real --storage S          # real, table (a)
    python -m service bench --preset agreement-optsel-real --storage S   # real, table (c)
    python -m service bench --preset agreement-replay --storage S
    python -m service bench --preset agreement-optsel-replay --storage S

then scores every real cell as the replay scores its cells: a per-trial searcher's chosen
configuration by the table's seed-mean value after 12 epochs (the recording repeats on the
CPU), an in-trial searcher's chosen schedule by retraining it on every recorded seed
(service.backends.replay.verify, read from the table's switch curves where they hold it); a cell
with no result scores the table's worst configuration. It prints, and writes to `--out`, per
entry: the real regret, the replayed one (verified and modelled), their difference with a
95% bootstrap CI, and the Spearman correlation of the entries' rankings.

    python docs/results/agreement/agreement.py --storage results --out docs/results/agreement
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

PRESETS = (("agreement-real", "agreement-replay"),
           ("agreement-optsel-real", "agreement-optsel-replay"))
TABLES = {"agreement-real": "docs/tables/digits-vgg16_w0.0625.parquet",
          "agreement-optsel-real": "docs/tables/digits-resnet18_w0.0625-optsel.parquet"}


def real_regrets(folder: Path, table_path: str) -> pd.DataFrame:
    """Every real cell's regret, scored as the replay scores a cell."""
    from service.backends.replay.switches import store_of
    from service.backends.replay.verify import verify
    from service.core.api import Schedule
    from service.core.layout import CELL_GLOB, SUMMARY_FILE, parse_cell_name
    from service.core.table import cached_table

    table = cached_table(table_path)
    optimum, worst = table.optimum(table.epochs)
    store = store_of(table.path)
    rows = []
    for d in sorted(folder.glob(CELL_GLOB)):
        cell = parse_cell_name(d.name)
        if cell is None or not (d / SUMMARY_FILE).is_file():
            continue
        test_file = d / "final_test.json"
        value, how = math.nan, "no result"
        if test_file.is_file():
            chosen = json.loads(test_file.read_text())
            if chosen.get("schedule"):
                schedule = Schedule.from_json(chosen["schedule"])
                fitted = Schedule()  # the table's names only (the trainer's others fixed)
                for epoch in range(1, len(schedule) + 1):
                    fitted.append({n: v for n, v in schedule.at(epoch).items()
                                   if n in table.names})
                value, _, trained = verify(table, fitted, store)
                store.add(trained)
                how = "retrained"
            else:
                config = {n: chosen["config"][n] for n in table.names
                          if n in chosen["config"]}
                for n in table.names:  # constants of the recording
                    config.setdefault(n, table.grid[n][0])
                value = table.value(table.snap(config)[0], table.epochs)
                how = "table"
        failed = not math.isfinite(value)
        regret = table.sign * (optimum - (worst if failed else value))
        rows.append({"searcher": cell.searcher, "seed": cell.seed, "regret": regret,
                     "failed": failed, "scored_by": how})
    return pd.DataFrame(rows)


def replay_regrets(folder: Path) -> pd.DataFrame:
    from service.reports.compare import load_replay, with_failures

    cells, _ = load_replay(folder)
    cells = with_failures(cells)
    out = cells[["searcher", "seed", "final_regret"]].rename(columns={"final_regret": "regret"})
    out["modelled"] = cells["modelled_regret"] if "modelled_regret" in cells else np.nan
    out["modelled"] = out["modelled"].fillna(out["regret"])
    return out


def _mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    from scipy import stats

    if len(values) < 2 or np.all(values == values[0]):
        return float(np.mean(values)), float(np.mean(values)), float(np.mean(values))
    ci = stats.bootstrap((values,), np.mean, n_resamples=2000, method="percentile",
                         random_state=0).confidence_interval
    return float(np.mean(values)), float(ci.low), float(ci.high)


def _diff_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mean of a minus mean of b with a 95% bootstrap CI (independent samples: a replay's
    seed and a real run's seed draw different things)."""
    rng = np.random.default_rng(0)
    diffs = [rng.choice(a, len(a)).mean() - rng.choice(b, len(b)).mean() for _ in range(4000)]
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(a.mean() - b.mean()), float(low), float(high)


def compare(real: pd.DataFrame, replay: pd.DataFrame, scale: float = 100.0) -> pd.DataFrame:
    rows = []
    for searcher in sorted(set(real["searcher"]) | set(replay["searcher"])):
        r = real.loc[real["searcher"] == searcher, "regret"].to_numpy(float) * scale
        p = replay.loc[replay["searcher"] == searcher, "regret"].to_numpy(float) * scale
        m = replay.loc[replay["searcher"] == searcher, "modelled"].to_numpy(float) * scale
        if not len(r) or not len(p):
            continue
        real_m, real_lo, real_hi = _mean_ci(r)
        rep_m, rep_lo, rep_hi = _mean_ci(p)
        diff, d_lo, d_hi = _diff_ci(p, r)
        mdiff, m_lo, m_hi = _diff_ci(m, r)
        rows.append({
            "searcher": searcher, "real_seeds": len(r), "replay_seeds": len(p),
            "real_failures": int(real.loc[real["searcher"] == searcher, "failed"].sum()),
            "real": f"{real_m:.2f} [{real_lo:.2f}, {real_hi:.2f}]",
            "replay (verified)": f"{rep_m:.2f} [{rep_lo:.2f}, {rep_hi:.2f}]",
            "replay - real": f"{diff:+.2f} [{d_lo:+.2f}, {d_hi:+.2f}]",
            "within 1 point": bool(d_lo >= -1.0 and d_hi <= 1.0),
            "modelled - real": f"{mdiff:+.2f} [{m_lo:+.2f}, {m_hi:+.2f}]",
            "_real": real_m, "_replay": rep_m, "_modelled": float(np.mean(m)),
        })
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", default="results")
    parser.add_argument("--out", default="docs/results/agreement")
    parser.add_argument("--report-only", action="store_true",
                        help="score experiments already under --storage")
    args = parser.parse_args(argv)
    if not args.report_only:
        for pair in PRESETS:
            for preset in pair:
                command = [sys.executable, "-m", "service", "bench", "--preset", preset,
                           "--storage", args.storage]
                print("$", " ".join(command[1:]), flush=True)
                subprocess.run(command, check=True)
    from scipy import stats

    parts, cells = [], []
    for real_name, replay_name in PRESETS:
        real_dir, replay_dir = Path(args.storage) / real_name, Path(args.storage) / replay_name
        if not real_dir.is_dir() or not replay_dir.is_dir():
            print(f"{real_name} or {replay_name} missing under {args.storage}: skipped")
            continue
        real, replay = real_regrets(real_dir, TABLES[real_name]), replay_regrets(replay_dir)
        parts.append(compare(real, replay))
        cells += [real.assign(side="real"), replay.assign(side="replay")]
    table = pd.concat(parts, ignore_index=True)
    rho = stats.spearmanr(table["_real"], table["_replay"]).statistic
    rho_m = stats.spearmanr(table["_real"], table["_modelled"]).statistic
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shown = table[[c for c in table if not c.startswith("_")]]
    shown.to_csv(out / "agreement.csv", index=False)
    # every cell's regret, both sides: the real runs take an hour, so a change of the replay
    # alone can be compared against them again
    pd.concat(cells, ignore_index=True).to_csv(out / "cells.csv", index=False)
    text = "\n".join([
        "# Agreement: replay against real runs of the same cells",
        "",
        "Final regret in points of val_acc to the table's optimum (mean [95% bootstrap CI] "
        "over seeds). Real: each cell run for real with the Tune backend on the table's "
        "recording settings, its choice scored as the replay scores one (a configuration by "
        "the table, a schedule retrained on every recorded seed). Replay (verified): in-trial "
        "rows retrained; modelled: the continuation model's score instead. `replay - real`: "
        "difference of the means, 95% bootstrap CI over both samples (independent: a seed "
        "draws different things in each).",
        "",
        shown.to_markdown(index=False),
        "",
        f"Spearman correlation of the entries' mean regrets, real against replay (verified): "
        f"{rho:.2f}; real against the modelled replay: {rho_m:.2f} ({len(table)} entries).",
        "",
        "Regenerate: `python docs/results/agreement/agreement.py --storage results --out "
        "docs/results/agreement`.",
        ""])
    (out / "agreement.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
