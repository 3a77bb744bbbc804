"""Writing a report: `write_report` gathers the tables and plots of one experiment folder
(<storage>/<name>) or of every experiment under a storage root (its sub-folders are
experiment folders) into one report folder, as CSV/Markdown files and one index.html.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from service.core.api import ConfigError
from service.reports.compare import is_replay, write_replay_report
from service.reports.figures import paper_figures
from service.reports.load import (
    _config_lists,
    _experiment_name,
    _load_one,
    find_experiments,
)
from service.reports.overhead import breakdown, breakdown_markdown
from service.reports.pareto import write_pareto_section
from service.reports.plots import best_so_far, plot_analysis, plot_best_so_far
from service.reports.table2 import (
    CONVERGENCE_DEFINITION,
    TABLE2_NOTE,
    table2_display,
    table2_folders,
    write_table2,
)
from service.reports.table5 import (
    SETTLED_DEFINITION,
    TABLE5_NOTE,
    table5_display,
    table5_folders,
    write_table5,
)
from service.reports.tables import (
    _in_config_order,
    _ordered,
    _relabel,
    _searchers_in_order,
    generalization,
    row_labels,
    searchers_table,
    table8,
    table9,
)


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
    labels: dict[tuple[str, str], str] = field(default_factory=dict)
    """Row label per (experiment, searcher) where experiments are gathered (`row_labels`)."""


TEST_NOTE = ("test accuracy (%) of the chosen configuration trained for the run's epochs (its "
             "trial's own weights where a retraining would reproduce them).")
"""What Table 9's bracketed test accuracy is (service.backends.tune.experiment.trained_weights)."""


def _with_experiment(df: pd.DataFrame, name: str) -> pd.DataFrame:
    df = df.copy()
    df.insert(0, "experiment", name)
    return df


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def holds_files(folders: list[Path]) -> bool:
    """Whether any cell folder holds a file (a cell a run only created holds none yet)."""
    from service.reports.load import _cell_dirs

    return any(f.is_file() for folder in folders for cell in _cell_dirs(folder)
               for f in cell.rglob("*"))


def _single_views(folder: Path) -> _Views:
    """One experiment folder: exactly the tables it always had, plus its searchers table."""
    trials, tests, epochs, summaries, cells = _load_one(folder)
    t9 = _in_config_order(table9(trials, tests), folder)
    name = _experiment_name(folder)
    searchers = _searchers_in_order(searchers_table(_with_experiment(cells, name)), [folder])
    return _Views([folder], trials, t9, table8(t9), summaries, searchers, trials, epochs)


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
                  _relabel(epochs, labels), labels)


def write_report(storage: str | Path, out_dir: str | Path | None = None,
                 fmt: str = "csv", *, live: bool = False) -> dict[str, Path]:
    """Write trials.csv (or .parquet), table9.md/.csv, table8.md/.csv, generalization,
    searchers.md/.csv, plots, table2.md/.csv and optimizer_schedule.png (when an experiment
    runs an optimizer-selection or fixed-optimizer method, `Entry.feeds`) and
    index.html (default into <storage>/report) for one
    experiment folder, or for every experiment under a storage root: then trials.csv,
    table8 and searchers gain an `experiment` column and Table 9 rows follow `row_labels`.
    A folder that is neither raises ConfigError before anything is written. `live`: the
    refresh while a run goes on, without the paper's figures (two thirds of the report's
    CPU time, mostly the pair plots; the report written when the run ends has them).
    Files that are there but unreadable are named on stderr once the rest is written."""
    from service.reports.load import flush_warnings

    try:
        written = _write_report(Path(storage), out_dir, fmt, live=live)
    except ConfigError:
        flush_warnings(say=False)
        raise
    flush_warnings(say=not live)  # a running cell's files may be half-written
    return written


def _write_report(storage: Path, out_dir: str | Path | None, fmt: str, *, live: bool
                  ) -> dict[str, Path]:
    folders = find_experiments(storage)
    out = Path(out_dir) if out_dir else storage / "report"
    if folders == [storage] and is_replay(storage):
        return write_replay_report(storage, out)
    views = _single_views(storage) if folders == [storage] else _storage_views(folders)
    trials = views.trials
    if not live and trials.empty and views.summaries.empty and holds_files(folders):
        raise ConfigError(f"folder: {str(storage)!r} holds no readable result (its cells' "
                          "files are not what a run writes); nothing written")
    out.mkdir(parents=True, exist_ok=True)
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
    for path in [] if live else paper_figures(views.labelled_trials, epochs, out):
        written[path.stem] = path
    searchers = views.searchers
    searchers.to_csv(out / "searchers.csv", index=False)
    phases = breakdown(storage) if folders == [storage] else None
    (out / "searchers.md").write_text(
        "# Searchers: work done and best result\n\n"
        + (searchers.to_markdown(index=False, floatfmt=".4g") if not searchers.empty
           else "_no cells_") + "\n\n" + SEARCHERS_NOTE + "\n"
        + ("" if phases is None else "\n## Where the time went\n\n" + breakdown_markdown(
            phases) + "\n" + OVERHEAD_NOTE + "\n"))
    written["searchers"] = out / "searchers.md"
    table2_from = table2_folders(views.folders)  # Pham's optimizer-selection runs
    if table2_from:
        written.update(write_table2(table2_from, out, epochs=views.labelled_epochs,
                                    labels=views.labels))
    table5_from = table5_folders(views.folders)  # Iranfar et al.'s layer-wise agents
    if table5_from:
        written.update(write_table5(table5_from, out))
    if folders == [storage]:
        written.update(write_pareto_section(storage, out))  # with objectives only
    written["index"] = write_index(out, storage, views, gen, written)
    return written


GENERALIZATION_NOTE = (
    "VTAG = |val - train accuracy| of the chosen trial; CAPC = coefficient of variation of "
    "best val accuracy across backbones (CAPC_pct: the same in percent, as the paper gives "
    "it); SVDAC = variance of mean val accuracy across augmentation conditions.")
OVERHEAD_NOTE = (
    "training, evaluation, checkpoint and report, trial setup: summed over every trial's "
    "epochs; experiment start / end and final test: over cells (a cell's Tune driver before "
    "its first trial's setup and after its last epoch); the rest is actor start-up between "
    "trials, Tune's snapshots and idle slots. Phases of cells that ran side by side each "
    "count in full.")
SEARCHERS_NOTE = (
    "cells = Tune experiments (backbone x seed); trials = trial folders Tune created; "
    "errored = trials with Tune's error.txt (a failure, retried or not); epochs = last "
    "training_iteration summed over trials; trial_time_s = time_total_s of each trial's last "
    "result, summed; wall_time_s = each cell's summary.json wall_time_s (else the span of its "
    "results, from the first trial's start to the last epoch's end: wall_from_timestamps "
    "counts those cells), summed over cells that may have run side by side; best_val_acc as "
    "a fraction.")


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
                  f"{TEST_NOTE}")
    sections = [
        ("Table 9: searchers by backbones", _html_table(table9_grid(views.table9)),
         t9_caption),
        ("Searchers: work done and best result", _html_table(views.searchers),
         SEARCHERS_NOTE),
        ("Table 8: grid vs Bayesian on VGG (val acc %)", _html_table(views.table8), ""),
    ]
    if "table5_csv" in written:
        sections.insert(1, (
            "Table V: the agents' network against random search and the original "
            "(Iranfar et al.)", _html_table(table5_display(pd.read_csv(written["table5_csv"]))),
            f"{TABLE5_NOTE} {SETTLED_DEFINITION}"))
    if "table2_csv" in written:
        sections.insert(1, (
            "Table 2: test metrics, convergence and time per epoch (Pham 2024)",
            _html_table(table2_display(pd.read_csv(written["table2_csv"]))),
            f"{CONVERGENCE_DEFINITION} {TABLE2_NOTE}"))
    if "pareto_csv" in written:
        sections.insert(1, ("Multi-objective: hypervolume of each searcher's fronts",
                            _html_table(pd.read_csv(written["pareto_csv"])),
                            "Larger is better; the reference point, verdicts and fronts: "
                            "pareto.md."))
    sections += [
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
    # An empty icon: without one a browser asks for /favicon.ico and logs its 404 as an error.
    page = ("<!doctype html>\n<html><head><meta charset=\"utf-8\">"
            "<link rel=\"icon\" href=\"data:,\"><title>Report: "
            f"{html.escape(_experiment_name(storage))}</title>\n<style>{_CSS}</style>"
            "</head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    path = out / "index.html"
    path.write_text(page)
    return path


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
                 f"brackets the {TEST_NOTE}")
    return "\n".join(lines) + "\n"
