"""Rendering a :class:`qeval_plugins.results.Report`: rich terminal tables, files and charts.

Nothing here computes a comparison; :mod:`qeval_plugins.results` does. Every view is built from
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

:func:`export` writes markdown, csv, json or html atomically; :func:`plot` writes PNG charts with
matplotlib (imported lazily, no pyplot state).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import re
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qeval_plugins.errors import QevalError
from qeval_plugins.results import (
    INTEGER_SWEEPS,
    SWEEP_SUMMARY_METRICS,
    TEMPERATURE_BAND,
    Comparison,
    Metric,
    Report,
    Row,
    Score,
    Sweep,
    default_higher_is_better,
)

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
PEAK_KINDS = {"cuda_max_allocated": "cuda", "cpu_peak_rss": "rss"}
LEGEND = (
    "Δ = run − baseline. % = relative degradation, 100·(base − q)/|base| for ↑ metrics and "
    "100·(q − base)/|base| for ↓ ones: positive = worse (green ≤ 1 %, yellow ≤ 5 %, red > 5 %). "
    "ns = |Δ| within √(se_base² + se_run²), not significant. sim = simulated quantization: "
    "effective bits, stored unquantized."
)


@dataclass
class Grid:
    """A table to draw: title, caption, column headers (right-aligned or not) and cells."""

    title: str
    caption: str
    headers: list[str]
    right: list[bool]
    rows: list[list[Cell]] = field(default_factory=list)


# ---------------------------------------------------------------- numbers as text


def number(value: float | None, signed: bool = False) -> str:
    """Three decimals below 10, two below 100, one below 10,000, else grouped thousands."""
    if value is None:
        return "—"
    if math.isinf(value):
        return ("+∞" if signed else "∞") if value > 0 else "−∞"
    size = abs(value)
    digits = 3 if size < 10 else 2 if size < 100 else 1 if size < 10_000 else 0
    return f"{value:{'+' if signed else ''},.{digits}f}"


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
        second += f" {score.relative_degradation_pct:+.1f}%"
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
    directions = {
        task: next(
            (row.scores[task].higher_is_better for row in comparison.rows if task in row.scores),
            None,
        )
        for task in comparison.tasks
    }
    grid = Grid(
        title=comparison.name,
        caption=comparison.baseline_reason,
        headers=["run", *(title for title, _ in cost)]
        + [
            f"{task}\n{metric} {arrow(directions[task])}"
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


def _plain(value: float | None) -> Cell:
    return [] if value is None else [(number(value), "")]


def _seconds_cell(row: Row) -> Cell:
    return [] if row.quantize_seconds is None else [(f"{row.quantize_seconds:.2f}", "")]


def _bits_cell(row: Row) -> Cell:
    if row.bits_per_param is None:
        return []
    return [(f"{row.bits_per_param:.2f}", "")] + ([("sim", "dim")] if row.simulated else [])


def _throughput_cell(row: Row) -> Cell:
    short = {"loglikelihood": "ll", "generate": "gen"}
    return [(f"{rate:,.0f} {short[kind]}", "") for kind, rate in row.tokens_per_s.items()]


def _peak_cell(row: Row) -> Cell:
    if row.peak_memory_mib is None:
        return []
    kind = PEAK_KINDS.get(row.peak_memory_kind or "", row.peak_memory_kind or "")
    return [(f"{row.peak_memory_mib:,.0f}", "")] + ([(kind, "dim")] if kind else [])


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
            if math.isfinite(value):
                bar = hbar(value, high)
                worst.rows.append(
                    [[(run.label, "bold")], [(layer, "")], [(number(value), "")], [(bar, "")]]
                )
    return [summary] + ([worst] if worst.rows else [])


def sparkline(values: list[float], low: float, high: float, width: int = SPARK_WIDTH) -> str:
    """One block character per value (▁ at ``low`` … █ at ``high``; ∞ is █), the minimum of
    each bucket when there are more values than ``width``; "identical (∞)" if all are ∞."""
    if not values:
        return "—"
    if all(math.isinf(v) and v > 0 for v in values):
        return "identical (∞)"
    buckets = min(width, len(values))
    marks = []
    for index in range(buckets):
        chunk = values[index * len(values) // buckets : (index + 1) * len(values) // buckets]
        value = min(chunk)
        share = 1.0 if value >= high else 0.0 if high <= low else (value - low) / (high - low)
        marks.append(SPARK[round(max(share, 0.0) * (len(SPARK) - 1))])
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
    """Every table of one model, in order."""
    return [
        summary_grid(comparison),
        *sqnr_grids(comparison),
        *(sensitivity_grid(comparison.name, sweep) for sweep in comparison.sensitivity),
    ]


# ---------------------------------------------------------------- terminal


def render(report: Report, console: Any) -> None:
    """Print the report with rich: per model the summary and SQNR tables, the legend, warnings."""
    from rich.segment import Segment, Segments
    from rich.style import Style
    from rich.text import Text

    styles = {name: Style.parse(name) for name in ("bold", "dim", "green", "yellow", "red")}
    if not report.comparisons:
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
        console.print(Text.assemble(("warning: ", "yellow"), warning))


def fit_widths(natural: list[int], available: int, smallest: int = MIN_COLUMN) -> list[int]:
    """Column widths within ``available``: the widest column gives up one cell at a time."""
    widths = list(natural)
    while sum(widths) > available and max(widths) > smallest:
        widths[widths.index(max(widths))] -= 1
    return widths


def grid_lines(grid: Grid, width: int) -> list[list[Line]]:
    """The grid laid out as lines of styled pieces: centred title, header, rule, rows, caption.

    Laid out here rather than with rich's Table, which is ~20× slower on thousands of rows.
    Columns are as wide as their widest line, separated by two spaces; the widest gives way
    (its text folded) until the table fits ``width``. Lines carry no trailing spaces.
    """
    from rich.cells import cell_len, chop_cells

    header = [[(part, "bold") for part in title.split("\n")] for title in grid.headers]
    body = [header, *grid.rows]
    natural = [max(cell_len(t) for row in body for t, _ in row[i]) for i in range(len(header))]
    gaps = len(GAP) * (len(natural) - 1)
    widths = fit_widths(natural, width - gaps)
    total = sum(widths) + gaps
    lines = [[(part, "bold")] for part in _centred(grid.title, total, width, cell_len)]
    for index, row in enumerate(body):
        columns = [
            [
                (piece, style)
                for text, style in cell
                for piece in ([text] if cell_len(text) <= w else chop_cells(text, w))
            ]
            for cell, w in zip(row, widths, strict=True)
        ]
        for line_index in range(max(map(len, columns))):
            line: list[Line] = []
            pending = ""  # unstyled text (gaps, padding, plain cells) not yet added to the line
            for position, (column, w, right) in enumerate(
                zip(columns, widths, grid.right, strict=True)
            ):
                text, style = column[line_index] if line_index < len(column) else ("", "")
                pad = " " * (w - cell_len(text))
                pending += (GAP if position else "") + (pad if right else "")
                if style and text:
                    line += [(pending, ""), (text, style)] if pending else [(text, style)]
                    pending = ""
                else:
                    pending += text
                pending += "" if right else pad
            if pending.rstrip():
                line.append((pending.rstrip(), ""))
            lines.append(line)
        if index == 0:
            lines.append([("─" * total, "dim")])
    lines += [[(part, "dim")] for part in _centred(grid.caption, total, width, cell_len)]
    lines.append([])
    return lines


def _centred(text: str, total: int, width: int, cell_len: Callable[[str], int]) -> list[str]:
    """``text`` wrapped to ``width`` and each line centred over a table ``total`` cells wide."""
    return [
        " " * max(0, (total - cell_len(line)) // 2) + line
        for line in textwrap.wrap(text, max(width, 1))
    ]


# ---------------------------------------------------------------- files


def write_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


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
)

CSV_RUN_KEYS = CSV_COLUMNS[2:9]  # is_baseline ... quantize_seconds, as in Report.to_dict()


def to_csv(report: Report) -> str:
    """Long format: one line per model × run × task (a run without scores gets one line)."""
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
            }
            scores = run["scores"] or {None: {}}
            for task, score in scores.items():
                writer.writerow({**common, "task": task, **score})
    return stream.getvalue()


def to_markdown(report: Report) -> str:
    """GitHub Markdown: a section per model, its tables, the legend and the warnings."""
    parts = ["# qeval report", ""]
    for comparison in report.comparisons:
        parts += [f"## {_md(comparison.name)}", "", _md(comparison.baseline_reason), ""]
        for grid in grids(comparison):
            own = grid.title != comparison.name  # the summary's title and caption head the section
            parts += [f"**{_md(grid.title)}**", ""] if own else []
            parts.append("| " + " | ".join(_md(one_line(h)) for h in grid.headers) + " |")
            parts.append("|" + "|".join("---:" if r else ":---" for r in grid.right) + "|")
            parts += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in grid.rows]
            parts.append("")
            parts += [_md(grid.caption), ""] if own and grid.caption else []
    parts += [_md(LEGEND), ""] if report.comparisons else ["No runs to report.", ""]
    if report.warnings:
        parts += ["## Warnings", "", *(f"- {_md(warning)}" for warning in report.warnings), ""]
    return "\n".join(parts)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


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


def to_html(report: Report) -> str:
    """A standalone HTML page with the same tables and colours as the terminal."""
    body = ["<h1>qeval report</h1>"]
    for comparison in report.comparisons:
        body.append(f"<h2>{html.escape(comparison.name)}</h2>")
        for grid in grids(comparison):
            if grid.title != comparison.name:
                body.append(f"<h3>{html.escape(grid.title)}</h3>")
            body.append(_html_table(grid))
    body.append(f'<p class="dim">{html.escape(LEGEND)}</p>' if report.comparisons else "")
    body += [f'<p class="warning">warning: {html.escape(w)}</p>' for w in report.warnings]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>qeval report</title>'
        f"<style>{HTML_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _html_table(grid: Grid) -> str:
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
    caption = f"<caption>{html.escape(grid.caption)}</caption>" if grid.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def export(report: Report, fmt: str, path: str | Path) -> Path:
    """Write the report as ``fmt`` (one of :data:`FORMATS`) to ``path`` atomically."""
    if fmt not in EXPORTERS:
        raise QevalError(f"unknown report format '{fmt}'; choose one of {', '.join(FORMATS)}.")
    return write_atomic(Path(path), EXPORTERS[fmt](report).encode("utf-8"))


EXPORTERS: dict[str, Callable[[Report], str]] = {
    "markdown": to_markdown,
    "csv": to_csv,
    "json": to_json,
    "html": to_html,
}
FORMATS = tuple(EXPORTERS)


# ---------------------------------------------------------------- charts


def plot(report: Report, directory: str | Path) -> list[Path]:
    """PNG charts per model: each task's main metric per run (± stderr, baseline dashed), the
    weight SQNR per layer of every run (one line each) and, per sampling sweep, rougeL by setting
    (one line per run, ``sensitivity_<model>_<sweep>.png``). Returns the files written."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise QevalError("plots need matplotlib; run: pip install 'qeval[plot]'") from error
    directory = Path(directory)
    written = []
    for comparison in report.comparisons:
        for task, metric in comparison.tasks.items():
            figure = _metric_chart(Figure, comparison, task, metric)
            if figure is not None:
                written.append(
                    _save(figure, directory / f"{_slug(comparison.name)}__{_slug(task)}.png")
                )
        figure = _sqnr_chart(Figure, comparison)
        if figure is not None:
            written.append(_save(figure, directory / f"{_slug(comparison.name)}__sqnr_layers.png"))
        for sweep in comparison.sensitivity:
            figure = _sensitivity_chart(Figure, comparison.name, sweep)
            if figure is not None:
                name = f"sensitivity_{_slug(comparison.name)}_{sweep.name}.png"
                written.append(_save(figure, directory / name))
    return written


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
        range(len(scored)), [row.run.label for row, _ in scored], rotation=30, ha="right"
    )
    direction = {True: "higher is better", False: "lower is better"}.get(
        scored[0][1].higher_is_better, ""
    )
    axes.set_title(f"{comparison.name} · {task}", fontsize=10)
    axes.set_ylabel(f"{metric} ({direction})" if direction else metric)
    return figure


def _sqnr_chart(figure_class: Any, comparison: Comparison) -> Any:
    lines = [run for run in comparison.sqnr if any(math.isfinite(v) for v in run.layers.values())]
    if not lines:
        return None
    figure = figure_class(figsize=(7.0, 3.6), layout="constrained")
    axes = figure.add_subplot()
    for run in lines:
        values = [v if math.isfinite(v) else math.nan for v in run.layers.values()]
        axes.plot(range(len(values)), values, marker=".", linewidth=1, label=run.label)
    axes.set_title(f"{comparison.name} · weight SQNR per layer", fontsize=10)
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
            label=run.label + (" (baseline)" if run.is_baseline else ""),
        )
    if log:
        axes.set_xscale("log", base=2)
    axes.set_xticks([position(s) for s in sweep.settings], [sweep.label(s) for s in sweep.settings])
    axes.minorticks_off()
    axes.set_title(f"{name} · {sweep.name} sensitivity", fontsize=10)
    axes.set_xlabel(sweep.name + (" (log scale)" if log else ""))
    axes.set_ylabel("rougeL (higher is better)")
    axes.legend(loc="best", fontsize=8)
    return figure


def _save(figure: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return write_atomic(path, buffer.getvalue())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"
