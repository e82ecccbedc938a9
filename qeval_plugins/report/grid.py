"""The :class:`Grid` every view of the report is drawn from, and numbers as text.

A grid is a table to draw: headers and cells of styled lines. The terminal (:mod:`.render`),
Markdown and HTML (:mod:`.export`) draw the same grids (the sections', :mod:`.sections`), so they
show the same figures, written by :func:`number` and :func:`fixed`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from qeval_plugins.core.text import printable

Line = tuple[str, str]  # text, style: "" | "bold" | "dim" | "green" | "yellow" | "red"
Cell = list[Line]


@dataclass
class Grid:
    """A table to draw: title, caption and column headers (these two may hold several lines,
    split at newlines), whether each column is right-aligned, and the cells. The first ``keys``
    columns name the row; they are repeated in each block when the table is split by width."""

    title: str
    caption: str
    headers: list[str]
    right: list[bool]
    rows: list[list[Cell]] = field(default_factory=list)
    keys: int = 1

    def escaped(self) -> Grid:
        """A copy whose every text is :func:`~qeval_plugins.core.text.printable` (names in it
        come from results files); the lines of a header or caption stay lines."""
        return replace(
            self,
            title=printable(self.title),
            caption=_printable_lines(self.caption),
            headers=[_printable_lines(header) for header in self.headers],
            rows=[[[(printable(t), s) for t, s in cell] for cell in row] for row in self.rows],
        )


def _printable_lines(text: str) -> str:
    """:func:`printable` on each line of ``text``, kept as lines."""
    return "\n".join(map(printable, text.split("\n")))


SCIENTIFIC_FROM = 1e6  # |value| from which figures are written as 1.23e+06


def number(value: float | None, signed: bool = False) -> str:
    """Three decimals below 10, two below 100, one below 10,000, grouped thousands below
    :data:`SCIENTIFIC_FROM`, else three significant digits (``1.23e+20``): at most 10 characters
    (``-1.23e+308``) whatever the value."""
    if value is None:
        return "—"
    size = abs(value)
    digits = 3 if size < 10 else 2 if size < 100 else 1 if size < 10_000 else 0
    return fixed(value, digits, signed)


def fixed(value: float, digits: int, signed: bool = False) -> str:
    """``value`` with ``digits`` decimals and grouped thousands (``+`` in front when ``signed``),
    ∞ as ``∞``, and from :data:`SCIENTIFIC_FROM` in scientific notation with three significant
    digits, so a figure read from a file never runs to hundreds of digits."""
    if math.isinf(value):
        return ("+∞" if signed else "∞") if value > 0 else "−∞"
    sign = "+" if signed else ""
    if abs(value) >= SCIENTIFIC_FROM:
        return f"{value:{sign}.2e}"
    return f"{value:{sign},.{digits}f}"


def small_number(value: float) -> str:
    """:func:`number`, but two significant digits when 0 < |value| < 0.01 (slopes per top-k)."""
    return f"{value:.2g}" if 0 < abs(value) < 0.01 else number(value)


def arrow(higher_is_better: bool | None) -> str:
    """↑ when higher is better, ↓ when lower is, nothing when unknown."""
    return {True: "↑", False: "↓"}.get(higher_is_better, "")


def header_line(header: str) -> str:
    """A header of several terminal lines as one line (Markdown, HTML): ``bits/⏎param`` →
    ``bits/param``, ``W mean⏎dB`` → ``W mean dB``."""
    return header.replace("/\n", "/").replace("\n", " ")
