"""Drawing a :class:`~.comparison.Report` on the terminal with rich.

Per model, every section's grids (:mod:`.sections`, in order), then the legend of what the
tables show (:func:`legend`), the sections' grids of the whole report and the
warnings; each grid laid out for the console's width by :mod:`.layout`.
"""

from __future__ import annotations

from typing import Any

from qeval_plugins.core.text import printable
from qeval_plugins.report import sections
from qeval_plugins.report.comparison import Report
from qeval_plugins.report.grid import Grid
from qeval_plugins.report.layout import print_grid
from qeval_plugins.report.summary import LEGEND, SIM_LEGEND


def render(report: Report, console: Any, empty_note: bool = True) -> None:
    """Print the report with rich: per model every section's tables, the legend (if
    :func:`legend`), the tables of the whole report, the warnings (and "No runs to
    report." when it shows nothing, if ``empty_note``).

    Tables are drawn as segments (never parsed as rich markup) laid out for ``console.width``;
    warnings are :func:`printable` text.
    """
    from rich.text import Text

    overall = report_grids(report)
    if not report.comparisons and not overall and empty_note:
        console.print("No runs to report.", style="yellow")
    for comparison in report.comparisons:
        for section in sections.SECTIONS:
            for grid in section.grids(comparison):
                print_grid(grid, console)
    explained = legend(report)
    if explained:
        console.print(Text(explained, style="dim"))
    for grid in overall:
        print_grid(grid, console)
    for warning in report.warnings:
        console.print(Text.assemble(("warning: ", "yellow"), printable(warning)))


def report_grids(report: Report) -> list[Grid]:
    """Every section's tables of the whole report, in order."""
    return [grid for section in sections.SECTIONS for grid in section.report_grids(report)]


def legend(report: Report) -> str:
    """The legend of what the tables show: :data:`~.summary.LEGEND` where a score is compared
    with its baseline (Δ, %, interval, p, ns), :data:`~.summary.SIM_LEGEND` where a run's
    quantization is simulated; "" when neither (a report of SQNR runs only, or no baseline)."""
    rows = [row for comparison in report.comparisons for row in comparison.rows]
    compared = any(score.delta is not None for row in rows for score in row.scores.values())
    simulated = any(row.simulated for row in rows)
    return " ".join(text for text, shown in ((LEGEND, compared), (SIM_LEGEND, simulated)) if shown)
