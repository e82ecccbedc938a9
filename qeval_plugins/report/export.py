"""The report as a file: Markdown, CSV, JSON or HTML (:data:`FORMATS`).

Markdown and HTML draw the same grids as the terminal (every section's, :mod:`.sections`); JSON
is :func:`~.data.report_data` and the CSV the sections' lines of it (the summary's long form).
Every text read from a results file is ``printable`` and, per format, Markdown-escaped,
HTML-escaped or quoted against spreadsheet formulas. :func:`export` writes through
:func:`~.output.write_output`.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.text import printable
from qeval_plugins.report import sections
from qeval_plugins.report.comparison import Comparison, Report
from qeval_plugins.report.data import report_data
from qeval_plugins.report.file_formats import FORMAT_EXTENSIONS
from qeval_plugins.report.grid import Cell, Grid, header_line
from qeval_plugins.report.output import (
    STDOUT,
    make_folder,
    not_a_folder,
    write_output,
    writes_in_place,
)
from qeval_plugins.report.render import legend, report_grids
from qeval_plugins.report.summary import CSV_COLUMNS


def format_for(path: str | Path) -> str:
    """The export format a file name asks for (:data:`FORMAT_EXTENSIONS`, any case), or a
    one-line :class:`QevalError` for another extension (for ``-``, a pipe or a device, whose
    name cannot be changed: one that says to pass ``--format``)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMAT_EXTENSIONS and writes_in_place(Path(path)):
        raise QevalError(
            f"--out {printable(str(path))} is standard output, a pipe or a device, whose name "
            f"sets no format; pass --format {{{','.join(FORMATS)}}}"
        )
    if suffix not in FORMAT_EXTENSIONS:
        raise QevalError(
            f"cannot tell the report format from '{printable(str(path))}'; end the file name "
            f"in {', '.join(FORMAT_EXTENSIONS)} or pass --format {{{','.join(FORMATS)}}}"
        )
    return FORMAT_EXTENSIONS[suffix]


def to_json(report: Report) -> str:
    return json.dumps(report_data(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# A cell starting with one of these is a formula to a spreadsheet (=HYPERLINK, +cmd|, @SUM).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NUMBER_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?inf|nan")


def to_csv(report: Report) -> str:
    """Long format: per model every section's :meth:`~.section.Section.csv_rows` (the summary's:
    one line per run × task, a run without scores gets one line).

    Text cells that a spreadsheet would run as a formula (starting with ``= + - @``, tab or CR)
    get a leading ``'``; numbers, "-inf" included, stay numbers."""
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for model in report_data(report)["models"]:
        for section in sections.SECTIONS:
            for row in section.csv_rows(model):
                writer.writerow({key: csv_cell(value) for key, value in row.items()})
    return stream.getvalue()


def csv_cell(value: Any) -> Any:
    """``value``, with a ``'`` in front when it is text a spreadsheet would take for a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return value if NUMBER_TEXT.fullmatch(value) else "'" + value
    return value


def to_markdown(report: Report) -> str:
    """GitHub Markdown: a section per model, its tables, the legend and the warnings. Text is
    escaped (:func:`_md`), so names cannot add markup, HTML, links or table cells."""
    parts = ["# qeval report", ""]
    overall = report_grids(report)
    for comparison in report.comparisons:
        parts += [f"## {_md(printable(comparison.name))}", ""]
        for grid in model_grids(comparison):
            parts += _md_table(grid, heads_section=grid.title == printable(comparison.name))
    parts += [_md(legend(report)), ""] if legend(report) else []
    parts += [] if report.comparisons or overall else ["No runs to report.", ""]
    for grid in overall:
        parts += _md_table(grid, heads_section=False)
    if report.warnings:
        warnings = [f"- {_md(printable(warning))}" for warning in report.warnings]
        parts += ["## Warnings", "", *warnings, ""]
    return "\n".join(parts)


def _md_table(grid: Grid, heads_section: bool) -> list[str]:
    """A grid as Markdown lines: its title in bold, the table, its caption; a grid that
    ``heads_section`` (the summary, titled with the model's name) has its caption first and no
    title of its own."""
    caption = [_md(line) + "\n" for line in grid.caption.split("\n") if line]
    parts = caption if heads_section else [f"**{_md(grid.title)}**", ""]
    parts.append("| " + " | ".join(_md(header_line(h)) for h in grid.headers) + " |")
    parts.append("|" + "|".join("---:" if r else ":---" for r in grid.right) + "|")
    parts += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in grid.rows]
    parts.append("")
    return parts + ([] if heads_section else caption)


def model_grids(comparison: Comparison) -> list[Grid]:
    """Every section's tables of one model, in order."""
    return [grid for section in sections.SECTIONS for grid in section.grids(comparison)]


MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~$!&])")


def _md(text: str) -> str:
    """``text`` with Markdown's active characters backslash-escaped (emphasis, code, links, HTML,
    table cells, headings, math, entities); newlines must already be escapes (printable)."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _md_cell(cell: Cell) -> str:
    return "<br>".join(f"**{_md(t)}**" if style == "bold" else _md(t) for t, style in cell if t)


HTML_STYLE = """body{font-family:system-ui,sans-serif;margin:2em}
table{border-collapse:collapse;margin:1em 0}caption{text-align:left;color:#555;padding:.3em 0}
th,td{padding:.25em .6em;border-bottom:1px solid #ddd;vertical-align:top;white-space:pre-line}
th{text-align:left}.right{text-align:right}.bold{font-weight:600}.dim{color:#999}
.green{color:#1a7f37}.yellow{color:#9a6700}.red{color:#cf222e}.warning{color:#9a6700}"""


def _html(text: str) -> str:
    """``text`` for HTML: :func:`printable`, then ``& < > " '`` escaped."""
    return html.escape(printable(text))


def to_html(report: Report) -> str:
    """A standalone HTML page with the same tables and colours as the terminal; every text is
    escaped (:func:`_html`)."""
    body = ["<h1>qeval report</h1>"]
    for comparison in report.comparisons:
        body.append(f"<h2>{_html(comparison.name)}</h2>")
        for grid in model_grids(comparison):
            if grid.title != printable(comparison.name):
                body.append(f"<h3>{html.escape(grid.title)}</h3>")
            body.append(_html_table(grid))
    body.append(f'<p class="dim">{html.escape(legend(report))}</p>' if legend(report) else "")
    for grid in report_grids(report):
        body += [f"<h3>{html.escape(grid.title)}</h3>", _html_table(grid)]
    body += [f'<p class="warning">warning: {_html(w)}</p>' for w in report.warnings]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>qeval report</title>'
        f"<style>{HTML_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _html_table(grid: Grid) -> str:
    """A grid (texts already printable) as an HTML table, every text escaped."""

    def cls(right: bool) -> str:
        return ' class="right"' if right else ""

    head = "".join(
        f"<th{cls(r)}>{html.escape(header_line(h))}</th>"
        for h, r in zip(grid.headers, grid.right, strict=True)
    )
    rows = [
        "<tr>"
        + "".join(
            f"<td{cls(r)}>"
            + "<br>".join(
                f'<span class="{s}">{html.escape(t)}</span>' if s else html.escape(t)
                for t, s in cell
            )
            + "</td>"
            for cell, r in zip(cells, grid.right, strict=True)
        )
        + "</tr>"
        for cells in grid.rows
    ]
    caption = "<br>".join(html.escape(line) for line in grid.caption.split("\n") if line)
    caption = f"<caption>{caption}</caption>" if caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def export(report: Report, fmt: str, path: str | Path) -> Path:
    """Write the report as ``fmt`` (one of :data:`FORMATS`) to ``path`` by :func:`write_output`
    (atomically, or appended to a pipe or device; ``-``: standard output), creating its folder;
    ``path`` naming a folder is a one-line :class:`QevalError`."""
    if fmt not in EXPORTERS:
        raise QevalError(f"unknown report format '{fmt}'; choose one of {', '.join(FORMATS)}.")
    path = Path(path)
    if str(path) != STDOUT:
        path = not_a_folder(path)
        make_folder(path.parent)
    return write_output(path, EXPORTERS[fmt](report).encode("utf-8"))


EXPORTERS: dict[str, Callable[[Report], str]] = {
    "markdown": to_markdown,
    "csv": to_csv,
    "json": to_json,
    "html": to_html,
}
FORMATS = tuple(EXPORTERS)
