"""PNG charts of a report, drawn with matplotlib (imported lazily, no pyplot state).

Each section (:mod:`.sections`, in order) gives its charts per model, then its charts of the
whole report. Chart file names are ASCII, at most ~190 bytes and unique within a call; files are
written by :func:`~.output.write_output`.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.report import sections
from qeval_plugins.report.chart import Chart, digest
from qeval_plugins.report.comparison import Report
from qeval_plugins.report.output import make_folder, write_output


def plot(report: Report, directory: str | Path) -> list[Path]:
    """Every chart of :func:`charts` as a PNG file in ``directory`` (created if missing).
    Returns the files written."""
    folder = make_folder(Path(directory))
    return [_save(figure, folder / name) for name, figure in charts(report)]


def charts(report: Report) -> Iterator[tuple[str, Any]]:
    """PNG charts as (file name, matplotlib figure), each figure made when reached: per model
    every section's :meth:`~.section.Section.charts`, then every section's charts of the whole
    report; a chart with nothing to draw is left out.

    Where two charts of one call would get the same file name (``org/m`` and ``org_m``), each
    gets ``-`` and 8 hex digits of the SHA-256 of its identity (:func:`~.chart.digest`)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise QevalError("plots need matplotlib; run: pip install 'qeval[plot]'") from error
    listed: list[Chart] = [
        chart
        for comparison in report.comparisons
        for section in sections.SECTIONS
        for chart in section.charts(comparison)
    ]
    listed += [chart for section in sections.SECTIONS for chart in section.report_charts(report)]
    stems = Counter(chart.stem for chart in listed)
    for chart in listed:
        figure = chart.make(Figure)
        if figure is not None:
            unique = (
                chart.stem if stems[chart.stem] == 1 else f"{chart.stem}-{digest(chart.identity)}"
            )
            yield f"{unique}.png", figure


def _save(figure: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return write_output(path, buffer.getvalue())
