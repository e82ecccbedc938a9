"""Grids laid out as terminal lines for a console width, and printed with rich.

The layout fits the console width without breaking a word: a table too wide for it is split into
blocks of columns, each repeating the key columns; a run label too long for its column gets a
line of its own; only a single value wider than the whole console is folded. Grids' texts are
already ``printable``; rich is imported lazily.
"""

from __future__ import annotations

from typing import Any

from qeval_plugins.report.grid import Cell, Grid, Line

GAP = "  "  # between table columns
MIN_COLUMN = 6
KEY_SHARE = 4  # a table too wide for the console gives its run column 1/KEY_SHARE of the width


def print_grid(grid: Grid, console: Any) -> None:
    """Print one grid as segments (never parsed as rich markup), laid out by :func:`grid_lines`
    for ``console.width``."""
    from rich.segment import Segment, Segments
    from rich.style import Style

    styles = {name: Style.parse(name) for name in ("bold", "dim", "green", "yellow", "red")}
    segments = []
    for line in grid_lines(grid, console.width):
        segments += [Segment(text, styles.get(style)) for text, style in line]
        segments.append(Segment.line())
    console.print(Segments(segments), crop=False)


def grid_lines(grid: Grid, width: int) -> list[list[Line]]:
    """The grid laid out as lines of styled pieces: centred title, then per block of columns a
    header, a rule and the rows, then the caption (each paragraph of title and caption centred as a
    block, :func:`_centred`). Lines carry no trailing spaces.

    Laid out here rather than with rich's Table, which is ~20× slower on thousands of rows; the
    time is linear in the number of cells. Columns are as wide as their widest line, two spaces
    apart. A grid wider than ``width`` (in terminal cells) is split into blocks of whole columns,
    each repeating the key columns (:attr:`Grid.keys`); the run column is then at most
    ``width // KEY_SHARE`` wide and a label longer than that gets a line of its own above its row;
    a column wider than a block (a single name of ~60+ characters) is folded at spaces, words cut
    only when longer than the column.
    """
    from rich.cells import cell_len

    header = [[(part, "bold") for part in title.split("\n")] for title in grid.headers]
    body = [header, *grid.rows]
    widths = [0] * len(header)
    for row in body:
        for index, cell in enumerate(row):
            for text, _ in cell:
                widths[index] = max(widths[index], cell_len(text))
    keys = min(grid.keys, len(widths))
    if sum(widths) + len(GAP) * (len(widths) - 1) > width:
        widths[0] = min(widths[0], max(MIN_COLUMN, width // KEY_SHARE))
        room = width - sum(widths[:keys]) - len(GAP) * keys
        widths[keys:] = [min(w, max(MIN_COLUMN, room)) for w in widths[keys:]]
    blocks = column_blocks(widths, keys, width)
    first = [*range(keys), *blocks[0]]
    total = sum(widths[i] for i in first) + len(GAP) * (len(first) - 1)
    lines = [[(part, "bold")] for part in _centred(grid.title, total, width)]
    for number_of_block, block in enumerate(blocks):
        columns = [*range(keys), *block]
        lines += [[]] if number_of_block else []
        for index, row in enumerate(body):
            lines += _row_lines(
                [row[i] for i in columns],
                [widths[i] for i in columns],
                [grid.right[i] for i in columns],
                width,
                labelled=index > 0,
            )
            if index == 0:
                span = sum(widths[i] for i in columns) + len(GAP) * (len(columns) - 1)
                lines.append([("─" * span, "dim")])
    lines += [[(part, "dim")] for part in _centred(grid.caption, total, width)]
    lines.append([])
    return lines


def column_blocks(widths: list[int], keys: int, width: int) -> list[list[int]]:
    """The non-key columns split into blocks, each as many whole columns as fit ``width`` beside
    the key columns (at least one per block); one block, possibly empty, when all fit."""
    base = sum(widths[:keys]) + len(GAP) * (keys - 1)
    blocks: list[list[int]] = [[]]
    used = base
    for index in range(keys, len(widths)):
        need = len(GAP) + widths[index]
        if blocks[-1] and used + need > width:
            blocks.append([])
            used = base
        blocks[-1].append(index)
        used += need
    return blocks


def _row_lines(
    row: list[Cell], widths: list[int], right: list[bool], width: int, labelled: bool
) -> list[list[Line]]:
    """One table row as lines: a first-column text wider than its column (a long run label, when
    ``labelled``) on a line of its own above, then the cells side by side, each folded to its
    width, right-aligned where ``right``, separated by :data:`GAP`."""
    from rich.cells import cell_len

    lines: list[list[Line]] = []
    label = row[0]
    if labelled and any(cell_len(text) > widths[0] for text, _ in label):
        lines += [[(part, style)] for text, style in label for part in fold(text, width)]
        row = [[], *row[1:]]
    columns = [
        [(piece, style) for text, style in cell for piece in fold(text, w)]
        for cell, w in zip(row, widths, strict=True)
    ]
    for line_index in range(max(map(len, columns))):
        line: list[Line] = []
        pending = ""  # unstyled text (gaps, padding, plain cells) not yet added to the line
        for position, (column, w, is_right) in enumerate(zip(columns, widths, right, strict=True)):
            text, style = column[line_index] if line_index < len(column) else ("", "")
            pad = " " * (w - cell_len(text))
            pending += (GAP if position else "") + (pad if is_right else "")
            if style and text:
                line += [(pending, ""), (text, style)] if pending else [(text, style)]
                pending = ""
            else:
                pending += text
            pending += "" if is_right else pad
        if pending.rstrip():
            line.append((pending.rstrip(), ""))
        lines.append(line)
    return lines


def fold(text: str, width: int) -> list[str]:
    """``text`` as lines of at most ``width`` terminal cells: broken at spaces, a word cut only
    when it is longer than a line; ``[text]`` when it fits."""
    from rich.cells import cell_len, chop_cells

    if cell_len(text) <= width:
        return [text]
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        for piece in chop_cells(word, width) if cell_len(word) > width else [word]:
            joined = f"{current} {piece}" if current else piece
            if cell_len(joined) <= width:
                current = joined
            else:
                lines.append(current)
                current = piece
    return [*lines, current]


def _centred(text: str, total: int, width: int) -> list[str]:
    """Each line of ``text`` (a paragraph) centred over a table ``total`` cells wide as a block:
    folded to ``width`` (the console), its lines share one indent, so a wrapped line starts under
    the one above it; a paragraph wider than the table starts at its left edge."""
    from rich.cells import cell_len

    lines: list[str] = []
    for paragraph in filter(None, text.split("\n")):
        folded = fold(paragraph, width)
        indent = " " * max(0, (total - max(map(cell_len, folded))) // 2)
        lines += [indent + line for line in folded]
    return lines
