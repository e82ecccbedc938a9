"""A run's ``qeval_sqnr`` figures: the task's metrics, weight SQNR per layer, activation SQNR.

The task's metrics come from the results; the per-layer and per-block values and the number of
worst layers to show from the qeval block's ``sqnr`` entry (``config.qeval.sqnr``).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from operator import itemgetter

from qeval_plugins.report.runs import Run
from qeval_plugins.report.values import as_mapping, as_value

SQNR_TASK = "qeval_sqnr"
DEFAULT_WORST_LAYERS = 5


@dataclass
class SqnrRun:
    """A run's ``qeval_sqnr`` figures: task metrics, weight SQNR per layer, activation SQNR."""

    label: str
    metrics: dict[str, float]
    layers: dict[str, float]  # weight SQNR (dB) per layer, checkpoint order
    worst: list[tuple[str, float]]
    activation_blocks_db: list[float]


def sqnr_summary(run: Run) -> SqnrRun | None:
    """The run's ``qeval_sqnr`` metrics and ``config.qeval.sqnr`` details; None without either."""
    block = as_mapping(run.qeval.get("sqnr"))
    metrics = {name: metric.value for name, metric in run.metrics.get(SQNR_TASK, {}).items()}
    if not block and not metrics:
        return None
    weights = as_mapping(block.get("weights"))
    layers = {
        name: value
        for name, raw in as_mapping(weights.get("layers")).items()
        if (value := as_value(raw)) is not None
    }
    count = as_mapping(block.get("settings")).get("worst_layers")
    blocks = block.get("activation_blocks_db")
    return SqnrRun(
        label=run.label,
        metrics=metrics,
        layers=layers,
        worst=heapq.nsmallest(
            count if type(count) is int and count >= 0 else DEFAULT_WORST_LAYERS,
            layers.items(),
            key=itemgetter(1),
        ),
        activation_blocks_db=[
            value
            for raw in (blocks if isinstance(blocks, list) else [])
            if (value := as_value(raw)) is not None
        ],
    )
