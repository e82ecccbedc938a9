"""How a grid's title and caption sit over its table in the terminal (:mod:`.layout`)."""

from __future__ import annotations

from qeval_plugins.report.grid import Grid
from qeval_plugins.report.layout import grid_lines


def caption_lines(caption: str, width: int) -> tuple[int, list[str]]:
    """The table's width and the caption's lines of a one-row grid laid out ``width`` wide."""
    grid = Grid("title", caption, ["run", "value"], [False, True], [[[("a", "")], [("1.0", "")]]])
    lines = ["".join(text for text, _ in line) for line in grid_lines(grid, width)]
    title, header, rule, row, *caption, blank = lines  # one-line title, header and row
    assert title.strip() == "title"
    assert header.startswith("run") and row.startswith("a") and blank == ""
    return len(rule), caption


def test_a_wrapped_caption_line_starts_under_the_line_above():
    """A caption wider than its table was folded at the console width and each piece centred:
    ``no baseline: ... (pass --baseline`` then ``               SPEC)``; the scan's verified KL
    line went on 22 columns in."""
    words = " ".join(f"word{number}" for number in range(30))
    table_width, lines = caption_lines(f"short note\n{words}", 60)
    short, *wrapped = lines
    assert short == " " * ((table_width - len("short note")) // 2) + "short note"
    assert len(wrapped) > 1 and all(len(line) <= 60 for line in wrapped)
    assert all(not line.startswith(" ") for line in wrapped)  # the table's left edge, each
    assert " ".join(wrapped) == words


def test_a_wrapped_paragraph_is_centred_as_a_block():
    """Centred line by line, ``yyy`` went one column further in than ``xxxxxx``."""
    table_width, lines = caption_lines("x" * 6 + " " + "y" * 3, 8)
    assert table_width == len("run  value")
    assert lines == ["  xxxxxx", "  yyy"]  # folded at 8, one indent: (10 - 6) // 2
