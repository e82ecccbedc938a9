"""PNG charts of a report, drawn with matplotlib (imported lazily, no pyplot state).

Per model: each task's main metric per run, the weight SQNR per layer, and rougeL by setting per
sampling sweep. Chart file names are ASCII, at most ~190 bytes and unique within a call; files
are written by :func:`~.output.write_output`.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.text import printable
from qeval_plugins.report.compare import Comparison, Report
from qeval_plugins.report.output import make_folder, write_output
from qeval_plugins.report.sensitivity import INTEGER_SWEEPS, Sweep

# Characters of a model or task name in a chart's file name: two slugs, their hashes, a sweep name
# and ".png" stay under 200 bytes (file names may have 255).
SLUG_LIMIT = 80


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
