"""What ``mtl-report`` computes, as pure functions: find the run directories under some paths
(:func:`discover`), group runs that differ only by their seed (:func:`group_runs`), aggregate each
group's test metrics over seeds (:func:`aggregate`), the Pareto front of a set of points
(:func:`pareto_front`), mean curves over seeds (:func:`mean_curve`), and the leaderboard as text,
CSV and Markdown. Plots are in ``report/plots.py`` (matplotlib, the optional ``plots`` extra).

Nothing here imports torch: the report answers in well under a second.

The modules, each importing only those above it:

- :mod:`.stats`: finite numbers, mean and sample std (:class:`Stat`);
- :mod:`.runs`: reading run directories into :class:`Run` records (:func:`discover`);
- :mod:`.groups`: grouping runs that differ only by seed (:func:`group_runs`);
- :mod:`.leaderboard`: the metric columns, the mean ± std over seeds per group (:func:`aggregate`; a
  repeated seed counts once) and the caveats under the tables (:func:`caveats`);
- :mod:`.pareto`: the Pareto front and the two primary metrics it is drawn on;
- :mod:`.curves`: metrics.jsonl series and their mean over seeds;
- :mod:`.tables`: the leaderboard as console text, Markdown and CSV;
- :mod:`.plots`: the PNG plots (imports the others; nothing here imports it).
"""

from __future__ import annotations

from .curves import mean_curve, read_records, series
from .groups import NOT_GROUPED, Group, canonical, common_items, config_value, default_items, group_runs
from .leaderboard import DELTA_M, EXTRA_COLUMNS, Column, Row, aggregate, caveats, experiment_key, metric_columns
from .pareto import pareto_front, primary_pair
from .runs import ARROWS, RUN_FILES, Run, Skipped, discover, load_run, load_stl_run
from .stats import Stat, mean_std
from .tables import csv_header, fmt_stat, table_cells, to_csv, to_markdown, to_text

__all__ = [
    "ARROWS",
    "DELTA_M",
    "EXTRA_COLUMNS",
    "NOT_GROUPED",
    "RUN_FILES",
    "Column",
    "Group",
    "Row",
    "Run",
    "Skipped",
    "Stat",
    "aggregate",
    "canonical",
    "caveats",
    "common_items",
    "config_value",
    "csv_header",
    "default_items",
    "discover",
    "experiment_key",
    "fmt_stat",
    "group_runs",
    "load_run",
    "load_stl_run",
    "mean_curve",
    "mean_std",
    "metric_columns",
    "pareto_front",
    "primary_pair",
    "read_records",
    "series",
    "table_cells",
    "to_csv",
    "to_markdown",
    "to_text",
]
