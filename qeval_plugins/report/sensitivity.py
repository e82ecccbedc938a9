"""The sampling-sensitivity section: the sweeps of a model's runs, gathered from their
per-setting tasks, with a table, data and chart per sweep.

The sampling-sensitivity tasks of a sweep (``qeval_temperature_0.5``, ``qeval_top_k_all``, …;
see ``evals.sampling.task``) are gathered into a :class:`Sweep` per model: each run's
metrics per setting, read from the task's ``configs`` metadata (else its name), and its
``qeval_<sweep>_summary`` figures. These per-setting tasks are still scored against the baseline
(JSON, CSV) but are no columns of the summary table; the summary tasks are, with ``rougeL_gap``.

The table of a sweep (:func:`sensitivity_grid`): per run, rougeL and agree_tokens at each setting
in numeric order (top_k ``all`` last), the settings of the ``rougeL_gap`` band starred
(temperature 0.5–0.8), and the summary task's slope, spread and gap; its chart: rougeL by
setting, one line per run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qeval_plugins.metrics.directions import direction
from qeval_plugins.metrics.text import BAND_EDGE_TOLERANCE
from qeval_plugins.report.chart import (
    LEGEND_POINTS,
    TITLE_POINTS,
    Chart,
    chart_lines,
    fitted,
    slug,
    title_room,
)
from qeval_plugins.report.grid import Cell, Grid, arrow, number, small_number
from qeval_plugins.report.runs import Metric, Run
from qeval_plugins.report.section import Section
from qeval_plugins.report.values import as_finite, listing

if TYPE_CHECKING:
    from qeval_plugins.report.comparison import Comparison

# Sampling-sensitivity sweeps: tasks qeval_<sweep>_<setting> and qeval_<sweep>_summary.
SWEEPS = ("temperature", "top_k", "max_new_tokens")
SWEEP_TASK = re.compile(rf"qeval_({'|'.join(SWEEPS)})_(.+)")
SWEEP_SUMMARY = "summary"
INTEGER_SWEEPS = frozenset({"top_k", "max_new_tokens"})
SWEEP_SUMMARY_METRICS = ("rougeL_slope", "rougeL_spread", "rougeL_gap")
# The band of the temperature summary's rougeL_gap when its metadata gives none (Roy 2023).
TEMPERATURE_BAND = (0.5, 0.8)


@dataclass
class SweepRun:
    """One run's share of a sampling sweep: its metrics per setting and its summary metrics."""

    label: str
    is_baseline: bool
    points: dict[float, dict[str, Metric]]  # setting -> metric -> Metric, settings ascending
    summary: dict[str, Metric]  # metrics of qeval_<sweep>_summary (rougeL_slope, ...)


@dataclass
class Sweep:
    """One model's sampling sweep (temperature, top_k or max_new_tokens) over all its runs."""

    name: str
    settings: list[float]  # every setting any run covers, ascending (top_k "all" = +∞, last)
    band: tuple[float, float] | None  # the settings rougeL_gap averages over; None: not marked
    runs: list[SweepRun]  # in the summary table's row order

    def in_band(self, setting: float) -> bool:
        """Whether ``setting`` lies in the band: low − ε ≤ setting ≤ high + ε (ε = 1e-9)."""
        return self.band is not None and (
            self.band[0] - BAND_EDGE_TOLERANCE <= setting <= self.band[1] + BAND_EDGE_TOLERANCE
        )

    def label(self, setting: float) -> str:
        """:func:`setting_label` of one of this sweep's settings."""
        return setting_label(self.name, setting)


def is_sweep_point(task: str) -> bool:
    """Whether ``task`` is one setting of a sampling sweep (``qeval_temperature_0.5``), by name."""
    match = SWEEP_TASK.fullmatch(task)
    return match is not None and match[2] != SWEEP_SUMMARY


def sweep_setting(sweep: str, suffix: str, metadata: dict[str, Any]) -> float | None:
    """The setting of task ``qeval_<sweep>_<suffix>``: ``metadata[sweep]`` (the task's generation
    settings in the results file's ``configs``), else the number ``suffix``; None if neither is a
    finite number.

    top_k ≤ 0 and the name's ``all`` mean unrestricted top-k: +∞, so it sorts last.
    """
    value = as_finite(metadata.get(sweep))
    if value is None:
        value = math.inf if suffix == "all" and sweep == "top_k" else as_finite(suffix)
    if value is not None and sweep == "top_k" and value <= 0:
        return math.inf
    return value


def setting_label(sweep: str, setting: float) -> str:
    """A setting as text: "all" for +∞, counts as "64", temperatures as "1.0" or "0.5"."""
    if setting == math.inf:
        return "all"
    if setting.is_integer():
        return f"{setting:.0f}" if sweep in INTEGER_SWEEPS else f"{setting:.1f}"
    return f"{setting:g}"


def sensitivity(runs: list[Run], baseline: Run | None, name: str, notes: list[str]) -> list[Sweep]:
    """Every sampling sweep that a run of the model covers, in :data:`SWEEPS` order.

    A task whose setting cannot be told (:func:`sweep_setting`) is one warning in ``notes`` and
    left out. The band is the summary's ``gap_low``–``gap_high`` metadata, else for temperature
    :data:`TEMPERATURE_BAND`.
    """
    found: dict[str, dict[str, SweepRun]] = {sweep: {} for sweep in SWEEPS}
    unknown = []
    for run in runs:
        for task, metrics in run.metrics.items():
            match = SWEEP_TASK.fullmatch(task)
            if match is None:
                continue
            sweep, suffix = match.groups()
            entry = found[sweep].setdefault(run.label, SweepRun(run.label, run is baseline, {}, {}))
            if suffix == SWEEP_SUMMARY:
                entry.summary = metrics
            elif (setting := sweep_setting(sweep, suffix, run.task_metadata.get(task, {}))) is None:
                unknown.append(f"{run.label} {task}")
            else:
                entry.points[setting] = metrics
    if unknown:
        notes.append(
            f"{name}: no setting in the configs metadata or task name of {listing(unknown)}; "
            "left out of the sensitivity tables"
        )
    sweeps = []
    for sweep, by_label in found.items():
        for entry in by_label.values():
            entry.points = dict(sorted(entry.points.items()))
        if by_label:
            settings = sorted({setting for entry in by_label.values() for setting in entry.points})
            sweeps.append(Sweep(sweep, settings, _band(sweep, runs), list(by_label.values())))
    return sweeps


def _band(sweep: str, runs: list[Run]) -> tuple[float, float] | None:
    for run in runs:
        metadata = run.task_metadata.get(f"qeval_{sweep}_{SWEEP_SUMMARY}", {})
        low, high = as_finite(metadata.get("gap_low")), as_finite(metadata.get("gap_high"))
        if low is not None and high is not None:
            return low, high
    return TEMPERATURE_BAND if sweep == "temperature" else None


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
        (f"{metric} {arrow(direction(metric))}", style) for metric, style in SWEEP_CELL_METRICS
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


def _sweep_dict(sweep: Sweep) -> dict[str, Any]:
    """Settings as their labels ("0.5", "all"); per run, every metric's value per setting."""
    return {
        "sweep": sweep.name,
        "settings": [sweep.label(setting) for setting in sweep.settings],
        "band": None if sweep.band is None else list(sweep.band),
        "runs": [
            {
                "label": entry.label,
                "is_baseline": entry.is_baseline,
                "metrics": {
                    sweep.label(setting): {name: metric.value for name, metric in metrics.items()}
                    for setting, metrics in entry.points.items()
                },
                "summary": {name: metric.value for name, metric in entry.summary.items()},
            }
            for entry in sweep.runs
        ],
    }


def sensitivity_chart(figure_class: Any, name: str, sweep: Sweep) -> Any:
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


def sweeps_of(comparison: Comparison) -> list[Sweep]:
    """The model's sampling sweeps in :data:`SWEEPS` order (what :meth:`Sensitivity.read`
    found); empty without sampling tasks."""
    return comparison.figures.get(SENSITIVITY.name) or []


class Sensitivity(Section):
    """Per sampling sweep: its table of metrics by setting, its data and its chart."""

    name = "sensitivity"

    def read(self, comparison: Comparison, notes: list[str]) -> list[Sweep]:
        runs = [row.run for row in comparison.rows]
        return sensitivity(runs, comparison.baseline, comparison.name, notes)

    def grids(self, comparison: Comparison) -> list[Grid]:
        return [
            sensitivity_grid(comparison.name, sweep).escaped() for sweep in sweeps_of(comparison)
        ]

    def data(self, comparison: Comparison) -> dict[str, Any]:
        return {"sensitivity": [_sweep_dict(sweep) for sweep in sweeps_of(comparison)]}

    def charts(self, comparison: Comparison) -> list[Chart]:
        """``sensitivity_<model>_<sweep>.png``: rougeL by setting, one line per run."""
        return [
            Chart(
                f"sensitivity_{slug(comparison.name)}_{sweep.name}",
                f"{comparison.model}\0sweep\0{sweep.name}",
                lambda figure_class, w=sweep: sensitivity_chart(figure_class, comparison.name, w),
            )
            for sweep in sweeps_of(comparison)
        ]


SENSITIVITY = Sensitivity()
