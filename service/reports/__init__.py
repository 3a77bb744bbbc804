"""Reports across searchers, read back from the storage path alone (so they also work after
a crash or on another machine): one row per trial, EMERALD-O's Table 9 and Table 8 views,
and best-so-far plots.

`load` reads a storage path (each result file once per report), `tables` builds the tables,
`plots` the PNGs and `render` writes them: `write_report` takes one experiment folder
(<storage>/<name>) or a whole storage root (its sub-folders are experiment folders) and
gathers every experiment under it into one report. `table2` is Pham's Table 2 (and
the optimizer-schedule plot), written for experiments that select optimizers.
"""

from service.reports.load import (
    ANALYSIS_HP,
    AUGMENT_HP,
    ERROR_FILE,
    TRIAL_FILES,
    find_experiments,
    load_cells,
    load_epochs,
    load_final_tests,
    load_summaries,
    load_trials,
)
from service.reports.plots import best_so_far, plot_analysis, plot_best_so_far
from service.reports.render import (
    GENERALIZATION_NOTE,
    SEARCHERS_NOTE,
    table9_grid,
    table9_markdown,
    write_index,
    write_report,
)
from service.reports.table2 import (
    CONVERGENCE_DEFINITION,
    convergence_epoch,
    is_table2_method,
    load_final_metrics,
    plot_optimizer_schedule,
    table2,
    write_table2,
)
from service.reports.tables import (
    SEARCHER_COLUMNS,
    generalization,
    mean_ci95,
    row_labels,
    searchers_table,
    table8,
    table9,
)

__all__ = [
    "ANALYSIS_HP", "CONVERGENCE_DEFINITION", "convergence_epoch",
    "is_table2_method", "load_final_metrics", "plot_optimizer_schedule", "table2",
    "write_table2", "AUGMENT_HP", "ERROR_FILE", "GENERALIZATION_NOTE", "SEARCHERS_NOTE",
    "SEARCHER_COLUMNS", "TRIAL_FILES", "best_so_far", "find_experiments", "generalization",
    "load_cells", "load_epochs", "load_final_tests", "load_summaries", "load_trials",
    "mean_ci95", "plot_analysis", "plot_best_so_far", "row_labels", "searchers_table",
    "table8", "table9", "table9_grid", "table9_markdown", "write_index", "write_report",
]
