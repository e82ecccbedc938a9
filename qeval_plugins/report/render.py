"""Rendering a :class:`~.compare.Report`: rich terminal tables, files and charts.

Nothing here computes a comparison; :mod:`.compare` does. Every view is built from
the same :class:`Grid` (headers, and cells of styled lines), so the terminal, Markdown and HTML
show the same figures:

* summary per model: one row per run — bits/param, size (MiB = bytes/2²⁰), quantization time,
  tokens/s, peak memory, and per task its main metric ± stderr, Δ versus the baseline and the
  relative degradation in % (positive = worse), green ≤ 1 %, yellow ≤ 5 %, red > 5 %, dim when
  |Δ| is within the combined stderr (``ns``);
* SQNR per run (when ``qeval_sqnr`` ran) with a one-character-per-layer bar view of the weight
  SQNR (▁ = the model's worst layer, █ = its best; the worst layer of a bucket when the layers
  outnumber the width), and the worst layers with proportional bars (0 dB → empty);
* sampling sensitivity per sweep (when ``qeval_temperature_*``, ``qeval_top_k_*`` or
  ``qeval_max_new_tokens_*`` ran): per run, rougeL and agree_tokens at each setting in numeric
  order (top_k ``all`` last), the settings of the ``rougeL_gap`` band starred (temperature
  0.5–0.8), and the summary task's slope, spread and gap.

The terminal layout fits the console width without breaking a word: a table too wide for it is
split into blocks of columns, each repeating the run column; a run label too long for its column
gets a line of its own; only a single value wider than the whole console is folded. Every text
read from a results file goes through :func:`.compare.printable` (control characters
shown as escapes) and, per format, HTML escaping, Markdown escaping or CSV formula quoting.

:func:`export` writes markdown, csv, json or html atomically (a symlink's target is replaced, the
link kept; a pipe, terminal or ``/dev/stdout`` is written in place); :func:`plot` writes PNG
charts with matplotlib (imported lazily, no pyplot state). Files get the permissions of a new file
(0o666 less the umask); chart file names are ASCII, at most ~190 bytes and unique within a call.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import math
import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.report.compare import (
    INTEGER_SWEEPS,
    SWEEP_SUMMARY_METRICS,
    TEMPERATURE_BAND,
    Comparison,
    Metric,
    Report,
    Row,
    Run,
    Score,
    Sweep,
    default_higher_is_better,
    printable,
)
from qeval_plugins.storage import atomic

Line = tuple[str, str]  # text, style: "" | "bold" | "dim" | "green" | "yellow" | "red"
Cell = list[Line]

GREEN_MAX_PCT = 1.0
YELLOW_MAX_PCT = 5.0
SPARK = "▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉█"
SPARK_WIDTH = 28
BAR_WIDTH = 24
GAP = "  "  # between table columns
MIN_COLUMN = 6
KEY_SHARE = 4  # a table too wide for the console gives its run column 1/KEY_SHARE of the width
# Characters of a model or task name in a chart's file name: two slugs, their hashes, a sweep name
# and ".png" stay under 200 bytes (file names may have 255).
SLUG_LIMIT = 80
PEAK_KINDS = {"cuda_max_allocated": "cuda", "cpu_peak_rss": "rss"}
LEGEND = (
    "Δ = run − baseline. % = relative degradation, 100·(base − q)/|base| for ↑ metrics and "
    "100·(q − base)/|base| for ↓ ones: positive = worse (green ≤ 1 %, yellow ≤ 5 %, red > 5 %). "
    "ns = |Δ| within √(se_base² + se_run²), not significant. sim = simulated quantization: "
    "effective bits, stored unquantized."
)


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

    def printable(self) -> Grid:
        """A copy whose every text is :func:`printable` (names in it come from results files);
        the lines of a header or caption stay lines (builders pass names through printable)."""
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


# ---------------------------------------------------------------- numbers as text


def number(value: float | None, signed: bool = False) -> str:
    """Three decimals below 10, two below 100, one below 10,000, grouped thousands below
    :data:`SCIENTIFIC_FROM`, else three significant digits (``1.23e+20``): at most 10 characters
    (``-1.23e+308``) whatever the value."""
    if value is None:
        return "—"
    size = abs(value)
    digits = 3 if size < 10 else 2 if size < 100 else 1 if size < 10_000 else 0
    return fixed(value, digits, signed)


SCIENTIFIC_FROM = 1e6  # |value| from which figures are written as 1.23e+06


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


def degradation_style(score: Score) -> str:
    """Colour of a compared score: dim if not significant, else by relative degradation."""
    pct = score.relative_degradation_pct
    if pct is None:
        return ""
    if score.significant is False:
        return "dim"
    return "green" if pct <= GREEN_MAX_PCT else "yellow" if pct <= YELLOW_MAX_PCT else "red"


def score_cell(score: Score | None) -> Cell:
    """``value ±stderr`` and, against a baseline, ``Δ  %`` (+ ``ns``) in its colour."""
    if score is None:
        return [("—", "dim")]
    first = number(score.value) + ("" if score.stderr is None else f" ±{number(score.stderr)}")
    if score.delta is None:
        return [(first, "")]
    second = number(score.delta, signed=True)
    if score.relative_degradation_pct is not None:
        second += f" {fixed(score.relative_degradation_pct, 1, signed=True)}%"
    if score.significant is False:
        second += " ns"
    return [(first, ""), (second, degradation_style(score))]


# ---------------------------------------------------------------- grids


def arrow(higher_is_better: bool | None) -> str:
    """↑ when higher is better, ↓ when lower is, nothing when unknown."""
    return {True: "↑", False: "↓"}.get(higher_is_better, "")


def summary_grid(comparison: Comparison) -> Grid:
    """One row per run: cost columns that have any value, then each task's score cell."""
    cost: list[tuple[str, Callable[[Row], Cell]]] = [
        ("bits/\nparam", _bits_cell),
        ("size\nMiB", lambda row: _plain(row.size_mib)),
        ("quant.\ns", _seconds_cell),
        ("tokens/s", _throughput_cell),
        ("peak\nMiB", _peak_cell),
    ]
    cost = [(title, cell) for title, cell in cost if any(cell(row) for row in comparison.rows)]
    settings = {
        row.run.label: (limit_text(row.run), shots_text(row.run)) for row in comparison.rows
    }
    uniform = len(set(settings.values())) == 1
    if not uniform:
        cost[:0] = [
            ("limit", lambda row: [(settings[row.run.label][0], "")]),
            ("shots", lambda row: [(settings[row.run.label][1], "")]),
        ]
    note = settings_note(*next(iter(settings.values()))) if uniform and settings else ""
    directions = {
        task: next(
            (row.scores[task].higher_is_better for row in comparison.rows if task in row.scores),
            None,
        )
        for task in comparison.tasks
    }
    grid = Grid(
        title=comparison.name,
        caption="\n".join(part for part in (comparison.baseline_reason, note) if part),
        headers=["run", *(title for title, _ in cost)]
        + [
            f"{printable(task)}\n{printable(metric)} {arrow(directions[task])}"
            for task, metric in comparison.tasks.items()
        ],
        right=[False] + [True] * (len(cost) + len(comparison.tasks)),
    )
    for row in comparison.rows:
        label: Cell = [(row.run.label, "bold")] + ([("baseline", "dim")] if row.is_baseline else [])
        grid.rows.append(
            [label, *(cell(row) or [("—", "dim")] for _, cell in cost)]
            + [score_cell(row.scores.get(task)) for task in comparison.tasks]
        )
    return grid


def limit_text(run: Run) -> str:
    """The run's lm-eval ``--limit``: documents per task (a fraction below 1), "all" when it ran
    without one, "—" when the file does not say."""
    limit = run.settings.get("limit")
    return "—" if limit is None else "all" if limit == "none" else limit


def shots_text(run: Run) -> str:
    """The run's few-shot count ("0"), its range over tasks ("0–5"), or "—" when unknown."""
    counts = set(run.fewshot.values())
    if not counts:
        return "—"
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}–{high}"


def settings_note(limit: str, shots: str) -> str:
    """The limit and few-shot count every run of a model shares, as a caption phrase."""
    parts = [] if limit == "—" else ["no limit" if limit == "all" else f"limit {limit} per task"]
    parts += [] if shots == "—" else [f"{shots}-shot"]
    return f"every run: {', '.join(parts)}" if parts else ""


def _plain(value: float | None) -> Cell:
    return [] if value is None else [(number(value), "")]


def _seconds_cell(row: Row) -> Cell:
    return [] if row.quantize_seconds is None else [(fixed(row.quantize_seconds, 2), "")]


def _bits_cell(row: Row) -> Cell:
    if row.bits_per_param is None:
        return []
    return [(fixed(row.bits_per_param, 2), "")] + ([("sim", "dim")] if row.simulated else [])


def _throughput_cell(row: Row) -> Cell:
    short = {"loglikelihood": "ll", "generate": "gen"}
    return [(f"{fixed(rate, 0)} {short[kind]}", "") for kind, rate in row.tokens_per_s.items()]


def _peak_cell(row: Row) -> Cell:
    if row.peak_memory_mib is None:
        return []
    kind = PEAK_KINDS.get(row.peak_memory_kind or "", row.peak_memory_kind or "")
    return [(fixed(row.peak_memory_mib, 0), "")] + ([(kind, "dim")] if kind else [])


SQNR_COLUMNS = (
    ("weight_sqnr_mean_db", "W mean\ndB"),
    ("weight_sqnr_min_db", "W min\ndB"),
    ("weight_sqnr_global_db", "W global\ndB"),
    ("logit_sqnr_db", "logit\ndB"),
    ("activation_sqnr_last_db", "act last\ndB"),
    ("kl_mean", "KL mean\nnats"),
    ("top1_agreement", "top-1\nagree"),
)


def sqnr_grids(comparison: Comparison) -> list[Grid]:
    """The SQNR summary (with per-layer bars) and the worst layers; none without SQNR runs."""
    if not comparison.sqnr:
        return []
    finite = [v for run in comparison.sqnr for v in run.layers.values() if math.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
    summary = Grid(
        title=f"{comparison.name}: SQNR vs the unquantized model (higher = closer)",
        caption="",
        headers=[
            "run",
            *(title for _, title in SQNR_COLUMNS),
            f"weight SQNR per layer\n▁ {number(low)} … █ {number(high)} dB" if finite else "layers",
        ],
        right=[False] + [True] * len(SQNR_COLUMNS) + [False],
    )
    worst = Grid(
        title=f"{comparison.name}: worst layers (weight SQNR)",
        caption="",
        headers=["run", "layer", "dB", ""],
        right=[False, False, True, False],
    )
    for run in comparison.sqnr:
        summary.rows.append(
            [[(run.label, "bold")]]
            + [[(number(run.metrics.get(name)), "")] for name, _ in SQNR_COLUMNS]
            + [[(sparkline(list(run.layers.values()), low, high), "")]]
        )
        for layer, value in run.worst:
            if value != math.inf:  # −∞ (all-zero reference, nonzero noise) is the worst of all
                bar = hbar(value, high)
                worst.rows.append(
                    [[(run.label, "bold")], [(layer, "")], [(number(value), "")], [(bar, "")]]
                )
    return [summary] + ([worst] if worst.rows else [])


def sparkline(values: list[float], low: float, high: float, width: int = SPARK_WIDTH) -> str:
    """One block character per value (▁ at ``low`` … █ at ``high``; +∞ is █, −∞ is ▁), the
    minimum of each bucket when there are more values than ``width``; "identical (∞)" if all
    are +∞. The share (value − low)/(high − low) is computed on halves, so ±1e308 cannot
    overflow."""
    if not values:
        return "—"
    if all(v == math.inf for v in values):
        return "identical (∞)"
    buckets = min(width, len(values))
    marks = []
    for index in range(buckets):
        chunk = values[index * len(values) // buckets : (index + 1) * len(values) // buckets]
        value = min(chunk)
        if value >= high:
            share = 1.0
        elif value <= low:
            share = 0.0
        else:
            share = (value / 2 - low / 2) / (high / 2 - low / 2)
        marks.append(SPARK[round(share * (len(SPARK) - 1))])
    return "".join(marks)


def hbar(value: float, high: float, width: int = BAR_WIDTH) -> str:
    """A bar of value/high · ``width`` characters in eighths (empty at or below 0 dB)."""
    if high <= 0:
        return ""
    eighths = round(max(0.0, min(value / high, 1.0)) * width * 8)
    return "█" * (eighths // 8) + (EIGHTHS[eighths % 8] if eighths % 8 else "")


SWEEP_CELL_METRICS = (("rougeL", ""), ("agree_tokens", "dim"))  # a sensitivity cell's lines
SWEEP_SUMMARY_TITLES = {"rougeL_slope": "slope", "rougeL_spread": "spread", "rougeL_gap": "gap"}


def sensitivity_grid(name: str, sweep: Sweep) -> Grid:
    """A sweep's metric by setting: a row per run, a column per setting (band settings starred),
    each cell rougeL over agree_tokens; then the summary task's rougeL_slope (least squares, per
    unit of the setting), rougeL_spread (max − min) and rougeL_gap (mean reference − quantized)."""
    summary = [m for m in SWEEP_SUMMARY_METRICS if any(m in run.summary for run in sweep.runs)]
    notes = []
    if sweep.band is not None:
        low, high = map(sweep.label, sweep.band)
        roy = sweep.name == "temperature" and sweep.band == TEMPERATURE_BAND
        notes.append(f"* = {low}–{high} band" + (" (Roy 2023)" if roy else ""))
    if "rougeL_gap" in summary:
        over = "the sweep" if sweep.band is None else "the band"
        notes.append(f"gap = mean reference − quantized rougeL over {over}")
    directions = {
        metric: next(
            (run.summary[metric].higher_is_better for run in sweep.runs if metric in run.summary),
            None,
        )
        for metric in summary
    }
    grid = Grid(
        title=f"{name}: {sweep.name} sensitivity (metric by setting)",
        caption="; ".join(notes),
        headers=[
            "run",
            f"{sweep.name} →",
            *(sweep.label(s) + ("*" if sweep.in_band(s) else "") for s in sweep.settings),
            *(f"rougeL\n{SWEEP_SUMMARY_TITLES[m]} {arrow(directions[m])}" for m in summary),
        ],
        right=[False, False] + [True] * (len(sweep.settings) + len(summary)),
        keys=2,
    )
    metric_cell = [
        (f"{metric} {arrow(default_higher_is_better(metric))}", style)
        for metric, style in SWEEP_CELL_METRICS
    ]
    for run in sweep.runs:
        label: Cell = [(run.label, "bold")] + ([("baseline", "dim")] if run.is_baseline else [])
        grid.rows.append(
            [label, metric_cell]
            + [_sweep_cell(run.points.get(setting, {})) for setting in sweep.settings]
            + [
                [(small_number(run.summary[m].value), "")] if m in run.summary else [("—", "dim")]
                for m in summary
            ]
        )
    return grid


def _sweep_cell(metrics: dict[str, Metric]) -> Cell:
    """One setting of one run: rougeL, then agree_tokens dimmed ("—" where missing)."""
    return [
        (number(metrics[name].value), style) if name in metrics else ("—", "dim")
        for name, style in SWEEP_CELL_METRICS
    ]


def small_number(value: float) -> str:
    """:func:`number`, but two significant digits when 0 < |value| < 0.01 (slopes per top-k)."""
    return f"{value:.2g}" if 0 < abs(value) < 0.01 else number(value)


def grids(comparison: Comparison) -> list[Grid]:
    """Every table of one model, in order, their texts :func:`printable`."""
    return [
        grid.printable()
        for grid in (
            summary_grid(comparison),
            *sqnr_grids(comparison),
            *(sensitivity_grid(comparison.name, sweep) for sweep in comparison.sensitivity),
        )
    ]


# ---------------------------------------------------------------- terminal


def render(report: Report, console: Any, empty_note: bool = True) -> None:
    """Print the report with rich: per model the summary and SQNR tables, the legend, warnings
    (and "No runs to report." when it has none, if ``empty_note``).

    Tables are drawn as segments (never parsed as rich markup) laid out by :func:`grid_lines`
    for ``console.width``; warnings are :func:`printable` text.
    """
    from rich.segment import Segment, Segments
    from rich.style import Style
    from rich.text import Text

    styles = {name: Style.parse(name) for name in ("bold", "dim", "green", "yellow", "red")}
    if not report.comparisons and empty_note:
        console.print("No runs to report.", style="yellow")
    for comparison in report.comparisons:
        for grid in grids(comparison):
            segments = []
            for line in grid_lines(grid, console.width):
                segments += [Segment(text, styles.get(style)) for text, style in line]
                segments.append(Segment.line())
            console.print(Segments(segments), crop=False)
    if report.comparisons:
        console.print(Text(LEGEND, style="dim"))
    for warning in report.warnings:
        console.print(Text.assemble(("warning: ", "yellow"), printable(warning)))


def grid_lines(grid: Grid, width: int) -> list[list[Line]]:
    """The grid laid out as lines of styled pieces: centred title, then per block of columns a
    header, a rule and the rows, then the caption. Lines carry no trailing spaces.

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
    """Each line of ``text`` folded to ``width`` and centred over a table ``total`` cells wide."""
    from rich.cells import cell_len

    return [
        " " * max(0, (total - cell_len(line)) // 2) + line
        for paragraph in text.split("\n")
        if paragraph
        for line in fold(paragraph, width)
    ]


# ---------------------------------------------------------------- files


def write_output(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` without ever replacing a link, a pipe or a device; returns
    ``path``.

    * a path that leads through ``/proc`` (``/dev/stdout``, ``/dev/fd/N``: a descriptor the shell
      opened) or names an existing FIFO or character device (a pipe, a terminal, ``/dev/null``)
      is written in place after the console's own output (:func:`_write_in_place`);
    * a symlink is followed: the file it resolves to is replaced atomically, the link kept;
    * a new or regular file is replaced atomically (:func:`write_atomic`);
    * any other existing thing (a block device, a socket) is a one-line :class:`QevalError`.
    """
    if writes_in_place(path):
        return _write_in_place(path, data)
    write_atomic(Path(os.path.realpath(path)) if path.is_symlink() else path, data)
    return path


def writes_in_place(path: Path) -> bool:
    """Whether :func:`write_output` appends to ``path`` rather than replacing it: it leads
    through ``/proc`` or is a FIFO or character device. Raises a one-line :class:`QevalError`
    when ``path`` is a block device, a socket or another special file."""
    kind = _existing_kind(path)
    if kind in ("fifo", "character device") or _proc_entry(path) is not None:
        return True
    if kind not in (None, "file", "folder"):
        raise QevalError(
            f"cannot write {printable(str(path))}: it is a {kind}; name a file, a pipe or a "
            "terminal"
        )
    return False


def _existing_kind(path: Path) -> str | None:
    """What ``path`` names, following symlinks: None when nothing (or a dangling link), else
    "file", "folder", "fifo", "character device", "block device", "socket" or "special file"."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    for test, kind in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return kind
    return "special file"


MAX_LINK_HOPS = 40  # as the kernel's limit on symlinks followed in one lookup


def _proc_entry(path: Path) -> Path | None:
    """Where ``path``, or a link on the way to its target, first enters ``/proc`` (``/dev/stdout``
    → ``/proc/<pid>/fd/1``), its folder resolved; None when it never does."""
    for _ in range(MAX_LINK_HOPS):
        folder = Path(os.path.realpath(path.parent))
        if folder.parts[:2] == ("/", "proc"):
            return folder / path.name
        if not path.is_symlink():
            return None
        try:
            path = path.parent / os.readlink(path)
        except OSError:
            return None
    return None


def _own_descriptor(path: Path) -> int | None:
    """N when ``path`` leads to ``/proc/self/fd/N`` (``/dev/stdout``, ``/dev/fd/N``): one of this
    process's open descriptors, to be written through (as a shell does), sharing its offset."""
    entry = _proc_entry(path)
    if entry is None or entry.parent != Path(os.path.realpath("/proc/self/fd")):
        return None
    return int(entry.name) if entry.name.isascii() and entry.name.isdigit() else None


def _write_in_place(path: Path, data: bytes) -> Path:
    """Write ``data`` through this process's descriptor that ``path`` names, else append it to
    ``path`` (opened as ``>>`` would), after flushing stdout and stderr so it follows the
    terminal output already printed; an OS error is a one-line :class:`QevalError`."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        descriptor = _own_descriptor(path)
        if descriptor is None:
            with open(path, "ab") as handle:
                handle.write(data)
        else:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
    except OSError as error:
        raise QevalError(
            f"cannot write {printable(str(path))}: {error.strerror or error}"
        ) from error
    return path


def write_atomic(path: Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` through :func:`qeval_plugins.storage.atomic.write_atomic`.

    Never half-written, with a new file's permissions; an OS error (no space, no permission) is a
    one-line :class:`QevalError`.
    """
    try:
        atomic.write_atomic(path, data)
    except OSError as error:
        raise QevalError(
            f"cannot write {printable(str(path))}: {error.strerror or error}"
        ) from error
    return path


def make_folder(folder: Path) -> Path:
    """Create ``folder`` (and its parents) unless it exists; an OS error (a file in the way, no
    permission) is a one-line :class:`QevalError`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        shown = printable(str(folder))
        raise QevalError(f"cannot create the folder {shown}: {error.strerror or error}") from error
    return folder


def not_a_folder(path: Path) -> Path:
    """``path``, or a one-line :class:`QevalError` when it is an existing folder."""
    if path.is_dir():
        shown = printable(str(path / "qeval-report.md"))
        raise QevalError(f"{printable(str(path))} is a folder; name a file in it, e.g. {shown}")
    return path


def destination(path: str | Path) -> Path:
    """``path`` as a file for ``--out``, or a one-line :class:`QevalError` when it names a folder,
    a block device or a socket, or its folder (a symlink's: its target's) does not exist (the
    command line never creates a folder from a typo). Pipes, terminals and ``/dev/stdout`` are
    fine (:func:`writes_in_place`)."""
    path = not_a_folder(Path(path))
    if writes_in_place(path):
        return path
    shown = printable(str(path))
    folder = Path(os.path.realpath(path)).parent if path.is_symlink() else path.parent
    if not folder.is_dir():
        kind = "is not a folder" if folder.exists() else "does not exist"
        raise QevalError(
            f"cannot write {shown}: {printable(str(folder))} {kind}; create the folder or "
            "choose another --out"
        )
    return path


FORMAT_EXTENSIONS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".csv": "csv",
    ".json": "json",
    ".html": "html",
    ".htm": "html",
}


def format_for(path: str | Path) -> str:
    """The export format a file name asks for (:data:`FORMAT_EXTENSIONS`, any case), or a
    one-line :class:`QevalError` for another extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMAT_EXTENSIONS:
        raise QevalError(
            f"cannot tell the report format from '{printable(str(path))}'; end the file name "
            f"in {', '.join(FORMAT_EXTENSIONS)} or pass --format {{{','.join(FORMATS)}}}"
        )
    return FORMAT_EXTENSIONS[suffix]


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


CSV_COLUMNS = (
    "model",
    "run",
    "is_baseline",
    "backend",
    "quantizer",
    "bits_per_param",
    "simulated",
    "size_mib",
    "quantize_seconds",
    "loglikelihood_tokens_per_s",
    "generate_tokens_per_s",
    "peak_memory_mib",
    "peak_memory_kind",
    "task",
    "metric",
    "higher_is_better",
    "value",
    "stderr",
    "delta",
    "relative_degradation_pct",
    "significant",
    "limit",
    "num_fewshot",
)

CSV_RUN_KEYS = CSV_COLUMNS[2:9]  # is_baseline ... quantize_seconds, as in Report.to_dict()
# A cell starting with one of these is a formula to a spreadsheet (=HYPERLINK, +cmd|, @SUM).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NUMBER_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?inf|nan")


def to_csv(report: Report) -> str:
    """Long format: one line per model × run × task (a run without scores gets one line).

    Text cells that a spreadsheet would run as a formula (starting with ``= + - @``, tab or CR)
    get a leading ``'``; numbers, "-inf" included, stay numbers."""
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for model in report.to_dict()["models"]:
        for run in model["runs"]:
            common = {
                "model": model["model"],
                "run": run["label"],
                **{key: run[key] for key in CSV_RUN_KEYS},
                "loglikelihood_tokens_per_s": run["tokens_per_s"].get("loglikelihood"),
                "generate_tokens_per_s": run["tokens_per_s"].get("generate"),
                "peak_memory_mib": run["peak_memory_mib"],
                "peak_memory_kind": run["peak_memory_kind"],
                "limit": run["settings"].get("limit"),
            }
            scores = run["scores"] or {None: {}}
            for task, score in scores.items():
                row = {**common, "task": task, **score, "num_fewshot": run["num_fewshot"].get(task)}
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
    for comparison in report.comparisons:
        parts += [f"## {_md(printable(comparison.name))}", ""]
        for grid in grids(comparison):
            own = grid.title != printable(comparison.name)  # the summary's heads the section
            caption = [_md(line) + "\n" for line in grid.caption.split("\n") if line]
            parts += [f"**{_md(grid.title)}**", ""] if own else caption
            parts.append("| " + " | ".join(_md(one_line(h)) for h in grid.headers) + " |")
            parts.append("|" + "|".join("---:" if r else ":---" for r in grid.right) + "|")
            parts += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in grid.rows]
            parts.append("")
            parts += caption if own else []
    parts += [_md(LEGEND), ""] if report.comparisons else ["No runs to report.", ""]
    if report.warnings:
        warnings = [f"- {_md(printable(warning))}" for warning in report.warnings]
        parts += ["## Warnings", "", *warnings, ""]
    return "\n".join(parts)


MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~$!&])")


def _md(text: str) -> str:
    """``text`` with Markdown's active characters backslash-escaped (emphasis, code, links, HTML,
    table cells, headings, math, entities); newlines must already be escapes (printable)."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _md_cell(cell: Cell) -> str:
    return "<br>".join(f"**{_md(t)}**" if style == "bold" else _md(t) for t, style in cell if t)


def one_line(header: str) -> str:
    """A two-line terminal header on one line: ``bits/⏎param`` → ``bits/param``."""
    return header.replace("/\n", "/").replace("\n", " ")


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
        for grid in grids(comparison):
            if grid.title != printable(comparison.name):
                body.append(f"<h3>{html.escape(grid.title)}</h3>")
            body.append(_html_table(grid))
    body.append(f'<p class="dim">{html.escape(LEGEND)}</p>' if report.comparisons else "")
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
        f"<th{cls(r)}>{html.escape(one_line(h))}</th>"
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
    (atomically, or appended to a pipe or device), creating its folder; ``path`` naming a folder
    is a one-line :class:`QevalError`."""
    if fmt not in EXPORTERS:
        raise QevalError(f"unknown report format '{fmt}'; choose one of {', '.join(FORMATS)}.")
    path = not_a_folder(Path(path))
    make_folder(path.parent)
    return write_output(path, EXPORTERS[fmt](report).encode("utf-8"))


EXPORTERS: dict[str, Callable[[Report], str]] = {
    "markdown": to_markdown,
    "csv": to_csv,
    "json": to_json,
    "html": to_html,
}
FORMATS = tuple(EXPORTERS)


# ---------------------------------------------------------------- charts


def plot(report: Report, directory: str | Path) -> list[Path]:
    """Every chart of :func:`charts` as a PNG file in ``directory`` (created if missing).
    Returns the files written."""
    folder = make_folder(Path(directory))
    return [_save(figure, folder / name) for name, figure in charts(report)]


def charts(report: Report) -> Iterator[tuple[str, Any]]:
    """PNG charts per model, as (file name, matplotlib figure), each figure made when reached:
    each task's main metric per run (± stderr, baseline dashed; ``<model>__<task>.png``), the
    weight SQNR per layer of every run (one line each; ``<model>__sqnr_layers.png``) and, per
    sampling sweep, rougeL by setting (one line per run, ``sensitivity_<model>_<sweep>.png``).

    File names are slugs (:func:`_slug`) of the names; where two charts of one call would get the
    same one (``org/m`` and ``org_m``), each gets ``-`` and 8 hex digits of the SHA-256 of its
    model and task. Every text stays inside its figure: titles and labels are shortened in the
    middle to fit (:func:`fitted`) and run names wrapped (:func:`tick_label`)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise QevalError("plots need matplotlib; run: pip install 'qeval[plot]'") from error
    makers: list[tuple[str, str, Callable[[], Any]]] = []  # file stem, identity, figure maker
    for comparison in report.comparisons:
        model = _slug(comparison.name)
        for task, metric in comparison.tasks.items():
            makers.append(
                (
                    f"{model}__{_slug(task)}",
                    f"{comparison.model}\0task\0{task}",
                    lambda c=comparison, t=task, m=metric: _metric_chart(Figure, c, t, m),
                )
            )
        makers.append(
            (
                f"{model}__sqnr_layers",
                f"{comparison.model}\0sqnr",
                lambda c=comparison: _sqnr_chart(Figure, c),
            )
        )
        for sweep in comparison.sensitivity:
            makers.append(
                (
                    f"sensitivity_{model}_{sweep.name}",
                    f"{comparison.model}\0sweep\0{sweep.name}",
                    lambda n=comparison.name, w=sweep: _sensitivity_chart(Figure, n, w),
                )
            )
    stems = Counter(stem for stem, _, _ in makers)
    for stem, identity, make in makers:
        figure = make()
        if figure is not None:
            unique = stem if stems[stem] == 1 else f"{stem}-{_digest(identity)}"
            yield f"{unique}.png", figure


def _metric_chart(figure_class: Any, comparison: Comparison, task: str, metric: str) -> Any:
    scored = [
        (row, row.scores[task])
        for row in comparison.rows
        if task in row.scores and math.isfinite(row.scores[task].value)
    ]
    if not scored:
        return None
    figure = figure_class(figsize=(max(4.0, 0.7 * len(scored) + 2.0), 3.6), layout="constrained")
    axes = figure.add_subplot()
    axes.bar(
        range(len(scored)),
        [score.value for _, score in scored],
        yerr=[score.stderr or 0.0 for _, score in scored],
        color=["#8c8c8c" if row.is_baseline else "#4c72b0" for row, _ in scored],
        capsize=3,
    )
    base = next((score.value for row, score in scored if row.is_baseline), None)
    if base is not None:
        axes.axhline(base, color="#444444", linestyle="--", linewidth=1, label="baseline")
        axes.legend(loc="best", fontsize=8)
    axes.set_xticks(
        range(len(scored)),
        [tick_label(row.run.label) for row, _ in scored],
        rotation=30,
        ha="right",
    )
    direction = {True: "(higher is better)", False: "(lower is better)"}.get(
        scored[0][1].higher_is_better, ""
    )
    figure.suptitle(chart_lines(title_room(figure), comparison.name, task), fontsize=TITLE_POINTS)
    axes.set_ylabel(chart_lines(ylabel_room(figure), metric, direction, separator=" "))
    return figure


def _sqnr_chart(figure_class: Any, comparison: Comparison) -> Any:
    """Weight SQNR (dB) per layer, one line per run; +∞ (identical) layers are gaps, −∞ layers
    (all-zero reference, nonzero noise: the worst) red ▼ marks 3 dB below the lowest figure."""
    lines = [run for run in comparison.sqnr if any(v != math.inf for v in run.layers.values())]
    if not lines:
        return None
    finite = [v for run in lines for v in run.layers.values() if math.isfinite(v)]
    floor = min(finite, default=0.0) - 3.0
    figure = figure_class(figsize=(7.0, 3.6), layout="constrained")
    axes = figure.add_subplot()
    marked = False
    for run in lines:
        values = list(run.layers.values())
        shown = [v if math.isfinite(v) else math.nan for v in values]
        label = fitted(run.label, figure.get_size_inches()[0] / 2, LEGEND_POINTS)
        axes.plot(range(len(values)), shown, marker=".", linewidth=1, label=label)
        worst = [index for index, v in enumerate(values) if v == -math.inf]
        if worst:
            label = None if marked else "−∞ dB (all-zero reference)"
            axes.scatter(worst, [floor] * len(worst), marker="v", color="#cf222e", label=label)
            marked = True
    title = chart_lines(title_room(figure), comparison.name, "weight SQNR per layer")
    figure.suptitle(title, fontsize=TITLE_POINTS)
    axes.set_xlabel("layer (checkpoint order)")
    axes.set_ylabel("SQNR (dB, higher = closer)")
    axes.legend(loc="best", fontsize=8)
    return figure


def _sensitivity_chart(figure_class: Any, name: str, sweep: Sweep) -> Any:
    """rougeL against the setting, one line per run (baseline dashed), the band shaded.

    top_k and max_new_tokens use a log₂ axis (when all settings are positive); top_k ``all``
    (+∞; finite top_k settings are ≥ 1) is drawn at the right end, at 4 × the largest finite
    setting (two octaves on), labelled "all".
    """
    lines = [
        (run, points)
        for run in sweep.runs
        if (
            points := [
                (setting, metrics["rougeL"].value)
                for setting, metrics in run.points.items()
                if "rougeL" in metrics and math.isfinite(metrics["rougeL"].value)
            ]
        )
    ]
    if not lines:
        return None
    finite = [setting for setting in sweep.settings if math.isfinite(setting)]
    log = sweep.name in INTEGER_SWEEPS and min(finite, default=1.0) > 0
    unrestricted = 4 * max(finite, default=0.25)

    def position(setting: float) -> float:
        return unrestricted if math.isinf(setting) else setting

    figure = figure_class(figsize=(6.4, 3.6), layout="constrained")
    axes = figure.add_subplot()
    if sweep.band is not None:
        low, high = map(sweep.label, sweep.band)
        axes.axvspan(*sweep.band, color="#f2c14e", alpha=0.25, label=f"{low}–{high} band")
    for run, points in lines:
        axes.plot(
            [position(setting) for setting, _ in points],
            [value for _, value in points],
            marker="o",
            linewidth=1.2,
            linestyle="--" if run.is_baseline else "-",
            label=fitted(run.label, figure.get_size_inches()[0] / 2, LEGEND_POINTS)
            + (" (baseline)" if run.is_baseline else ""),
        )
    if log:
        axes.set_xscale("log", base=2)
    axes.set_xticks([position(s) for s in sweep.settings], [sweep.label(s) for s in sweep.settings])
    axes.minorticks_off()
    title = chart_lines(title_room(figure), name, f"{sweep.name} sensitivity")
    figure.suptitle(title, fontsize=TITLE_POINTS)
    axes.set_xlabel(sweep.name + (" (log scale)" if log else ""))
    axes.set_ylabel("rougeL (higher is better)")
    axes.legend(loc="best", fontsize=8)
    return figure


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


def _save(figure: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return write_output(path, buffer.getvalue())


def _slug(text: str, limit: int = SLUG_LIMIT) -> str:
    """``text`` as a file-name part: runs of characters other than ASCII letters, digits and
    ``._-`` become ``_``; longer than ``limit`` characters, it is cut and gets ``-`` and 8 hex
    digits of the text's SHA-256 (so a file name stays far below the 255-byte limit)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"
    return slug if len(slug) <= limit else f"{slug[:limit]}-{_digest(text)}"


def _digest(text: str) -> str:
    """8 hex digits of the SHA-256 of ``text`` (UTF-8, lone surrogates kept)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
