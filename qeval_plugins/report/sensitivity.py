"""The sampling-sensitivity sweeps of a model's runs, gathered from their per-setting tasks.

The sampling-sensitivity tasks of a sweep (``qeval_temperature_0.5``, ``qeval_top_k_all``, …;
see ``evals.sampling.task``) are gathered into a :class:`Sweep` per model: each run's
metrics per setting, read from the task's ``configs`` metadata (else its name), and its
``qeval_<sweep>_summary`` figures. These per-setting tasks are still scored against the baseline
(JSON, CSV) but are no columns of the summary table; the summary tasks are, with ``rougeL_gap``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from qeval_plugins.metrics.text import BAND_EDGE_TOLERANCE
from qeval_plugins.report.runs import Metric, Run
from qeval_plugins.report.values import as_finite, listing

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
