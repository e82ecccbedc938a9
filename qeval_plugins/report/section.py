"""One section of ``qeval report``: the shape every part of the report has.

A section reads its figures of a model's comparison once (:meth:`Section.read`, kept in
``Comparison.figures[name]``) and from them gives what each view draws: grids for the terminal,
Markdown and HTML, data for the JSON report, rows for the CSV, charts for ``--plot``. Per model
(``comparison``) or once for the whole report (``report_*``: the layer-sensitivity scans, which
belong to no model's runs). :mod:`.sections` lists them in order; :mod:`.render`, :mod:`.export`,
:mod:`.data` and :mod:`.plot` only loop over that list. Every method shows nothing by default,
so a section overrides only what it shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qeval_plugins.report.chart import Chart
    from qeval_plugins.report.comparison import Comparison, Report
    from qeval_plugins.report.grid import Grid


class Section:
    """A part of the report; ``name`` keys its figures and its JSON data."""

    name: str = ""

    def read(self, comparison: Comparison, notes: list[str]) -> Any:
        """This section's figures of one model's runs (``comparison.rows``), computed once by
        :func:`~.compare.compare`; a problem with them is one warning line appended to
        ``notes``."""
        return None

    def grids(self, comparison: Comparison) -> list[Grid]:
        """The tables of one model, their texts ``printable`` (terminal, Markdown, HTML)."""
        return []

    def data(self, comparison: Comparison) -> dict[str, Any]:
        """Keys added to the model's entry of the JSON report (made JSON-safe by its writer)."""
        return {}

    def csv_rows(self, model: dict[str, Any]) -> list[dict[str, Any]]:
        """Lines of the CSV (keys of :data:`~.export.CSV_COLUMNS`) from the model's JSON entry."""
        return []

    def charts(self, comparison: Comparison) -> list[Chart]:
        """The PNG charts of one model."""
        return []

    def report_grids(self, report: Report) -> list[Grid]:
        """The tables of the whole report, drawn after every model's."""
        return []

    def report_data(self, report: Report) -> dict[str, Any]:
        """Keys added to the top level of the JSON report."""
        return {}

    def report_charts(self, report: Report) -> list[Chart]:
        """The PNG charts of the whole report."""
        return []
