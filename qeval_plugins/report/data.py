"""The report as strict-JSON-safe data: what ``--format json`` writes and the CSV is built from.

Infinities become the strings "inf" / "-inf", NaN null, and every text (keys included) goes
through ``printable``; a container read from a file is never copied (it could be
nested too deeply), only named.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from qeval_plugins.core.text import printable
from qeval_plugins.report import sections
from qeval_plugins.report.paired import SETTINGS as PAIRED_SETTINGS

if TYPE_CHECKING:
    from qeval_plugins.report.comparison import Comparison, Report


def report_data(report: Report) -> dict[str, Any]:
    """``report`` as strict-JSON-safe data: ``{"models": [...], ..., "significance": {...},
    "warnings": [...]}``: per model every section's :meth:`~.section.Section.data`, then every
    section's data of the whole report (``scans`` when there are any); ``significance``: the
    paired test's settings, :mod:`.paired`."""
    return _json_safe(
        {
            "models": [model_data(comparison) for comparison in report.comparisons],
            **{
                key: value
                for section in sections.SECTIONS
                for key, value in section.report_data(report).items()
            },
            "significance": PAIRED_SETTINGS,
            "warnings": report.warnings,
        }
    )


def model_data(comparison: Comparison) -> dict[str, Any]:
    """One model's entry: every section's data, in order."""
    return {
        key: value
        for section in sections.SECTIONS
        for key, value in section.data(comparison).items()
    }


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
