"""What every chart of the report shares: :class:`Chart` (a file name and how to draw it), names
as file names (:func:`slug`, :func:`digest`) and texts fitted inside a figure (:func:`fitted`,
:func:`chart_lines`, :func:`tick_label`). matplotlib is imported only when a text is measured.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qeval_plugins.core.text import printable

# Characters of a model or task name in a chart's file name: two slugs, their hashes, a sweep name
# and ".png" stay under 200 bytes (file names may have 255).
SLUG_LIMIT = 80


@dataclass(frozen=True)
class Chart:
    """One PNG chart: ``stem`` its file name without ``.png``; ``identity`` what tells it apart
    when two charts of one call get the same stem (then each stem gets ``-`` and
    :func:`digest` of it); ``make`` draws it from matplotlib's ``Figure`` class, or returns None
    when there is nothing to draw."""

    stem: str
    identity: str
    make: Callable[[Any], Any]


def chart_text(text: str, limit: int) -> str:
    """A name for a chart: :func:`printable`, at most ``limit`` characters (a longer one keeps
    its start and end around "…": model and task names differ at either end), and ``$`` escaped
    (matplotlib reads ``$…$`` as mathtext, which can fail to parse)."""
    text = printable(text)
    if len(text) > limit:
        head = limit // 2
        text = text[:head] + "…" + text[len(text) - (limit - 1 - head) :]
    return text.replace("$", r"\$")


def chart_lines(room: float, *parts: str, separator: str = " · ") -> str:
    """``parts`` (names) as a title or axis label ``room`` inches long: on one line, joined by
    ``separator``, when they fit, else one line each, each shortened in the middle to fit
    (:func:`fitted`)."""
    parts = tuple(part for part in parts if part)
    joined = fitted(separator.join(parts), room)
    if "…" not in joined:
        return joined
    return "\n".join(fitted(part, room) for part in parts)


def title_room(figure: Any) -> float:
    """Inches for a title: the figure's width less :data:`MARGIN_INCHES`."""
    return figure.get_size_inches()[0] - MARGIN_INCHES


def ylabel_room(figure: Any) -> float:
    """Inches for a y-axis label: half the figure's height (it is centred on the axes, which
    the title and the tick labels push off the figure's centre)."""
    return figure.get_size_inches()[1] / 2


TITLE_POINTS = 10  # titles (centred on the figure, not the axes) and axis labels
LEGEND_POINTS = 8
MARGIN_INCHES = 0.4  # left free beside a title or label
TICK_CHARS = 16  # a line of a run's name under a bar; at most TICK_LINES lines
TICK_LINES = 3


def fitted(text: str, inches: float, points: float = TITLE_POINTS) -> str:
    """:func:`chart_text` of ``text`` with as many characters as fit ``inches`` in ``points``
    type, measured with matplotlib's own font metrics (an ``M`` is twice as wide as an ``i``)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    font = FontProperties(size=points)

    def fits(candidate: str) -> bool:
        width = text_to_path.get_text_width_height_descent(candidate, font, ismath=False)[0]
        return width <= inches * 72

    whole = chart_text(text, len(printable(text)))
    if fits(whole):
        return whole
    low, high = 1, len(printable(text)) - 1  # the longest that fits lies in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(chart_text(text, middle)) else (low, middle - 1)
    return chart_text(text, low)


def tick_label(text: str) -> str:
    """A run's name under its bar: :func:`chart_text` to ``TICK_CHARS × TICK_LINES`` characters,
    wrapped into lines of at most :data:`TICK_CHARS`, broken after ``: , = _ - /`` or a space
    where it can be (``rtn:bits=4:`` / ``group_size=128``), else inside a word."""
    pieces = re.findall(r"[^:,=_/ -]*[:,=_/ -]?", chart_text(text, TICK_CHARS * TICK_LINES))
    lines = [""]
    for piece in filter(None, pieces):
        while len(piece) > TICK_CHARS:  # a piece longer than a line: cut where the line ends
            room = TICK_CHARS - len(lines[-1])
            lines[-1] += piece[:room]
            lines.append("")
            piece = piece[room:]
        if len(lines[-1]) + len(piece) > TICK_CHARS:
            lines.append("")
        lines[-1] += piece
    return "\n".join(line for line in lines if line)


def slug(text: str, limit: int = SLUG_LIMIT) -> str:
    """``text`` as a file-name part: runs of characters other than ASCII letters, digits and
    ``._-`` become ``_``; longer than ``limit`` characters, it is cut and gets ``-`` and 8 hex
    digits of the text's SHA-256 (so a file name stays far below the 255-byte limit)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"
    return name if len(name) <= limit else f"{name[:limit]}-{digest(text)}"


def digest(text: str) -> str:
    """8 hex digits of the SHA-256 of ``text`` (UTF-8, lone surrogates kept)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
