"""The outlier-features section: a run's ``qeval_outliers`` figures (outlier features of the
quantized model and its reference), their table and data.

The counts, the largest activation magnitude and the mean kurtosis come from the task's metrics;
the outlier dimensions themselves from the qeval block's ``outliers`` entry
(``config.qeval.outliers``). Both are read defensively: any JSON value may stand anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qeval_plugins.core.text import printable
from qeval_plugins.report.grid import SCIENTIFIC_FROM, Cell, Grid, number
from qeval_plugins.report.runs import Run
from qeval_plugins.report.section import Section
from qeval_plugins.report.values import as_mapping, as_value

if TYPE_CHECKING:
    from qeval_plugins.report.comparison import Comparison

OUTLIERS_TASK = "qeval_outliers"
MAX_DIMENSION = 2**31  # a hidden dimension index beyond this is not one
SHOWN_DIMENSIONS = 8  # dimensions listed in a table cell, then "+N"
SIDES = ("reference", "quantized")
COLUMNS = (  # metric, header: the table's numeric columns
    ("outlier_features_reference", "features\nref"),
    ("outlier_features_quantized", "features\nquant"),
    ("outliers_created", "created"),
    ("outliers_destroyed", "destroyed"),
    ("act_absmax_reference", "absmax\nref"),
    ("act_absmax_quantized", "absmax\nquant"),
    ("act_kurtosis_reference", "kurtosis\nref"),
    ("act_kurtosis_quantized", "kurtosis\nquant"),
)
INDEXED = {"outliers_created": "created", "outliers_destroyed": "destroyed"}
COUNTS = {"outlier_features_reference", "outlier_features_quantized", *INDEXED}
DEFAULT_SETTINGS = {"threshold": 6.0, "layer_share": 0.25, "position_share": 0.06}
CAPTION = (
    "features: hidden dimensions with |x| ≥ threshold in ≥ layer_share of the layers and at ≥ "
    "position_share of the positions (LLM.int8(): 6.0, 25 %, 6 %) in the hidden states the "
    "attention and MLP projections read; created / destroyed: features only the quantized model / "
    "only the reference has; absmax: max |x|; kurtosis: excess (normal = 0), mean over layers."
)


@dataclass
class OutlierRun:
    """A run's ``qeval_outliers`` figures: the task's metrics, the outlier dimensions of both
    models, those created and destroyed, and the per-layer absmax and kurtosis."""

    label: str
    metrics: dict[str, float]
    dimensions: dict[str, list[int]]  # "reference", "quantized", "created", "destroyed"
    settings: dict[str, float] = field(default_factory=dict)
    layers: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)


def dimension_list(raw: object) -> list[int]:
    """Hidden dimension indices from a results file: the integers 0 ≤ i < 2³¹ of a JSON list,
    sorted and unique; anything else in it (or anything but a list) is left out."""
    if not isinstance(raw, list):
        return []
    return sorted({item for item in raw if type(item) is int and 0 <= item < MAX_DIMENSION})


def value_list(raw: object) -> list[float | None]:
    """Per-layer figures from a results file: each a number (``"inf"`` included) or None."""
    return [as_value(item) for item in raw] if isinstance(raw, list) else []


def outlier_summary(run: Run) -> OutlierRun | None:
    """The run's ``qeval_outliers`` metrics and ``config.qeval.outliers`` details; None without
    either."""
    block = as_mapping(run.qeval.get("outliers"))
    metrics = {name: metric.value for name, metric in run.metrics.get(OUTLIERS_TASK, {}).items()}
    if not block and not metrics:
        return None
    sides = {side: as_mapping(block.get(side)) for side in SIDES}
    dimensions = {side: dimension_list(sides[side].get("outlier_features")) for side in SIDES}
    dimensions.update({name: dimension_list(block.get(name)) for name in INDEXED.values()})
    settings = {
        name: value
        for name, raw in as_mapping(block.get("settings")).items()
        if name in ("threshold", "layer_share", "position_share")
        and (value := as_value(raw)) is not None
    }
    layers = {
        side: {name: value_list(sides[side].get(name)) for name in ("absmax", "kurtosis")}
        for side in SIDES
    }
    return OutlierRun(run.label, metrics, dimensions, settings, layers)


def outlier_runs(comparison: Comparison) -> list[OutlierRun]:
    """The ``qeval_outliers`` figures of every run of ``comparison`` that has them, in its
    order (what :meth:`Outliers.read` found)."""
    return comparison.figures.get(OUTLIERS.name) or []


def dimensions_text(dimensions: list[int]) -> str:
    """``5, 40, 99`` — the first :data:`SHOWN_DIMENSIONS`, then ``+N``; "—" when none."""
    if not dimensions:
        return "—"
    shown = ", ".join(map(str, dimensions[:SHOWN_DIMENSIONS]))
    more = len(dimensions) - SHOWN_DIMENSIONS
    return shown + (f" +{more}" if more > 0 else "")


def _count_cell(summary: OutlierRun, metric: str) -> Cell:
    """A metric's value (a count as a whole number); for created / destroyed the dimensions
    dimmed beneath it."""
    value = summary.metrics.get(metric)
    whole = metric in COUNTS and value is not None and value.is_integer()
    whole = whole and abs(value) < SCIENTIFIC_FROM
    cell: Cell = [(f"{value:,.0f}" if whole else number(value), "")]
    side = INDEXED.get(metric)
    if side and summary.dimensions[side]:
        cell.append((dimensions_text(summary.dimensions[side]), "dim"))
    return cell


def settings_note(summary: OutlierRun) -> str:
    """``label: threshold 4, ...`` for a run whose settings differ from the defaults, else ""."""
    changed = {k: v for k, v in summary.settings.items() if DEFAULT_SETTINGS.get(k) != v}
    if not changed:
        return ""
    return f"{printable(summary.label)}: " + ", ".join(
        f"{k} {number(v)}" for k, v in changed.items()
    )


def outlier_grids(comparison: Comparison) -> list[Grid]:
    """The outlier-feature table of one model (a row per run with ``qeval_outliers`` figures;
    texts :func:`printable`); none without such runs."""
    summaries = outlier_runs(comparison)
    if not summaries:
        return []
    grid = Grid(
        title=f"{comparison.name}: outlier features, unquantized reference vs quantized",
        caption="\n".join([CAPTION, *filter(None, map(settings_note, summaries))]),
        headers=["run", *(title for _, title in COLUMNS), "feature dims\n(quantized)"],
        right=[False] + [True] * len(COLUMNS) + [False],
    )
    for summary in summaries:
        grid.rows.append(
            [[(summary.label, "bold")]]
            + [_count_cell(summary, metric) for metric, _ in COLUMNS]
            + [[(dimensions_text(summary.dimensions["quantized"]), "")]]
        )
    return [grid.escaped()]


def outlier_data(comparison: Comparison) -> list[dict[str, object]]:
    """Every run's figures as data for the JSON report (made JSON-safe by its writer)."""
    return [
        {
            "label": summary.label,
            "metrics": summary.metrics,
            "outlier_features": summary.dimensions,
            "settings": summary.settings,
            "layers": summary.layers,
        }
        for summary in outlier_runs(comparison)
    ]


class Outliers(Section):
    """The outlier-feature table and every run's outlier figures."""

    name = "outliers"

    def read(self, comparison: Comparison, notes: list[str]) -> list[OutlierRun]:
        runs = [row.run for row in comparison.rows]
        return [summary for run in runs if (summary := outlier_summary(run)) is not None]

    def grids(self, comparison: Comparison) -> list[Grid]:
        return outlier_grids(comparison)

    def data(self, comparison: Comparison) -> dict[str, Any]:
        return {"outliers": outlier_data(comparison)}


OUTLIERS = Outliers()
