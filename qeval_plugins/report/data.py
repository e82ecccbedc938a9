"""The report as strict-JSON-safe data: what ``--format json`` writes and the CSV is built from.

Infinities become the strings "inf" / "-inf", NaN null, and every text (keys included) goes
through ``printable``; a container read from a file is never copied (it could be
nested too deeply), only named.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from qeval_plugins.core.text import printable
from qeval_plugins.report.outliers import outlier_data
from qeval_plugins.report.paired import SETTINGS as PAIRED_SETTINGS
from qeval_plugins.report.values import HugeInteger, as_mapping

if TYPE_CHECKING:
    from qeval_plugins.report.compare import Comparison, Report, Row
    from qeval_plugins.report.sensitivity import Sweep


def report_data(report: Report) -> dict[str, Any]:
    """``report`` as strict-JSON-safe data: ``{"models": [...], "significance": {...},
    "warnings": [...]}`` (``significance``: the paired test's settings, :mod:`.paired`)."""
    return _json_safe(
        {
            "models": [_comparison_dict(comparison) for comparison in report.comparisons],
            "significance": PAIRED_SETTINGS,
            "warnings": report.warnings,
        }
    )


def _comparison_dict(comparison: Comparison) -> dict[str, Any]:
    base = comparison.baseline
    return {
        "model": comparison.model,
        "name": comparison.name,
        "baseline": None if base is None else base.label,
        "baseline_reason": comparison.baseline_reason,
        "tasks": comparison.tasks,
        "runs": [_row_dict(row) for row in comparison.rows],
        "sqnr": [
            {
                **vars(summary),
                "worst": [{"layer": layer, "sqnr_db": value} for layer, value in summary.worst],
            }
            for summary in comparison.sqnr
        ],
        "sensitivity": [_sweep_dict(sweep) for sweep in comparison.sensitivity],
        "outliers": outlier_data(comparison),
    }


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


def _row_dict(row: Row) -> dict[str, Any]:
    run = row.run
    return {
        "label": run.label,
        "backend": run.backend,
        "quantizer": run.quantizer,
        "options": {
            key: _option_value(value) for key, value in as_mapping(run.qeval.get("options")).items()
        },
        "settings": run.settings,
        "num_fewshot": run.fewshot,
        "is_baseline": row.is_baseline,
        "paths": [str(path) for path in [run.path, *run.merged]],
        "bits_per_param": row.bits_per_param,
        "simulated": row.simulated,
        "scheme": row.scheme,
        "size_mib": row.size_mib,
        "quantize_seconds": row.quantize_seconds,
        "tokens_per_s": row.tokens_per_s,
        "peak_memory_mib": row.peak_memory_mib,
        "peak_memory_kind": row.peak_memory_kind,
        "scores": {task: vars(score) for task, score in row.scores.items()},
    }


def _option_value(value: Any) -> Any:
    """An option's value for export: a JSON scalar as is, anything else as short text (a
    container read from a file could be nested too deeply to copy)."""
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value) if isinstance(value, HugeInteger) else f"<{type(value).__name__}>"


def _json_safe(value: Any) -> Any:
    """``value`` for strict JSON: ±inf as "inf" / "-inf", NaN as null, texts :func:`printable`."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(key)): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value
