"""The SQNR section: a run's ``qeval_sqnr`` figures (the task's metrics, weight SQNR per layer,
activation SQNR) and their tables, data and chart.

The task's metrics come from the results; the per-layer and per-block values and the number of
worst layers to show from the qeval block's ``sqnr`` entry (``config.qeval.sqnr``); the KL mode
and the most divergent token from its ``divergence`` entry. :func:`divergence_grid` is the
output-divergence table (KL distribution, Δp, perplexity ratio), drawn when a run has them. A KL
of the top-k mode is a lower bound of the exact KL: every table shows it as ``≥ value``
(:func:`kl_text`).

Tables (:func:`sqnr_grids`): SQNR per run; a one-character-per-layer bar view of each run's
weight SQNR on its own scale (:func:`layers_grid`, :func:`sparkline`; the worst layer of a
bucket when the layers outnumber the width); the worst layers with bars scaled between the
lowest and highest figure shown (:func:`hbar`, the scale in the caption); the output divergence.
Chart: the weight SQNR per layer of every run.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from qeval_plugins.core.text import printable
from qeval_plugins.report.chart import (
    LEGEND_POINTS,
    TITLE_POINTS,
    Chart,
    chart_lines,
    fitted,
    slug,
    title_room,
)
from qeval_plugins.report.grid import Grid, number, small_number
from qeval_plugins.report.runs import Run
from qeval_plugins.report.section import Section
from qeval_plugins.report.values import as_finite, as_mapping, as_value

if TYPE_CHECKING:
    from qeval_plugins.report.comparison import Comparison

SQNR_TASK = "qeval_sqnr"
DEFAULT_WORST_LAYERS = 5
SPARK = "▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉█"
SPARK_WIDTH = 28
BAR_WIDTH = 24
KL_ZERO = 1e-9  # nats: a KL below it is float rounding (the baseline's own top-k KL is ~1e-16)


@dataclass
class SqnrRun:
    """A run's ``qeval_sqnr`` figures: task metrics, weight SQNR per layer, activation SQNR."""

    label: str
    metrics: dict[str, float]
    layers: dict[str, float]  # weight SQNR (dB) per layer, checkpoint order
    worst: list[tuple[str, float]]
    activation_blocks_db: list[float]
    kl_mode: str = ""  # "exact", "topk" (a lower bound), or "" when the file does not say
    kl_is_lower_bound: bool = False  # top-k mode: every KL figure is a lower bound
    kl_error_bound_max: float | None = None  # exact mode: bound on every per-token KL's error
    # the most divergent token in its context, as "…context⟨token⟩"; "" for quantizer=none (the
    # reference model compared with itself: its divergence is rounding, its "worst" token noise)
    worst_token: str = ""

    @property
    def kl_zero(self) -> float:
        """The KL (nats) below which a figure is rounding, shown ``0``: :data:`KL_ZERO`, or
        the exact mode's bound on every token's KL error if larger (the reference's
        log-probabilities are cached as 2-byte codes, so ``none`` against itself gives ~1e-9)."""
        return max(KL_ZERO, self.kl_error_bound_max or 0.0)


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
    divergence = as_mapping(block.get("divergence"))
    mode = divergence.get("kl_mode")
    bound = as_finite(divergence.get("kl_error_bound_max"))
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
        kl_mode=mode if mode in KL_MODES else "",
        kl_is_lower_bound=mode == "topk",
        kl_error_bound_max=bound if mode == "exact" and bound is not None and bound >= 0 else None,
        worst_token="" if run.quantizer == "none" else _worst_token(divergence.get("worst_tokens")),
    )


KL_MODES = ("exact", "topk")
LOWER_BOUND = "≥ "  # before a KL figure of the top-k mode
TOKEN_CONTEXT = 24  # characters of context shown before the most divergent token
# (metric, header, metric holding its uncertainty or None); shown when a run has kl_median
DIVERGENCE_COLUMNS = (
    ("kl_mean", "KL mean\nnats", "kl_mean_err"),
    ("kl_median", "KL median\nnats", None),
    ("kl_p99", "KL p99\nnats", None),
    ("kl_max", "KL max\nnats", None),
    ("kl_reverse_mean", "KL(Q‖P)\nnats", None),
    ("rms_dp", "Δp RMS", "rms_dp_err"),
    ("top1_agreement", "top-1\nagree", "top1_agreement_err"),
    ("ppl_ratio", "PPL\nratio", "ppl_ratio_err"),
    ("ln_ppl_corr", "ln PPL\ncorr", None),
)


def _worst_token(raw: object) -> str:
    """The first of ``worst_tokens`` as ``…context⟨token⟩`` (printable), or ""."""
    first = as_mapping(raw[0]) if isinstance(raw, list) and raw else {}
    context, token = first.get("context"), first.get("token")
    if not isinstance(context, str) or not isinstance(token, str):
        return ""
    cut = "…" if len(context) > TOKEN_CONTEXT else ""
    return printable(f"{cut}{context[-TOKEN_CONTEXT:]}⟨{token}⟩")


def kl_figure(value: float, zero: float = KL_ZERO) -> str:
    """A KL in nats: ``0`` below ``zero`` (:data:`KL_ZERO`), two significant digits below 0.01
    (``0.00041``, ``6.3e-07``: small is not shown as 0), else three decimals
    (:func:`~.grid.small_number`)."""
    return "0" if abs(value) < zero else small_number(value)


def kl_text(run: SqnrRun, metric: str, text: str) -> str:
    """``text`` (the figure of ``metric``) marked ``≥ text`` when it is a KL of a top-k run (a
    lower bound of the exact KL); as it is otherwise."""
    lower = run.kl_is_lower_bound and metric.startswith("kl_") and not metric.endswith("_err")
    return LOWER_BOUND + text if lower and text not in ("—", "") else text


def divergence_grid(name: str, runs: list[SqnrRun]) -> Grid | None:
    """Output divergence per run: KL distribution, Δp RMS, top-1, PPL ratio (value ±err), the
    KL mode (``exact``, or ``top-k ≥`` for top-k: every KL of the run a lower bound, shown
    ``≥ value``) and the most divergent token; None when no run has the statistics (results from
    before they existed). A KL below the run's :attr:`~SqnrRun.kl_zero` is ``0`` (without ±);
    a run without a worst token (the unquantized one), or whose largest KL is such rounding,
    shows —."""
    shown = [run for run in runs if "kl_median" in run.metrics]
    if not shown:
        return None
    grid = Grid(
        title=f"{name}: output divergence vs the unquantized model (lower KL = closer)",
        caption="KL in nats; ≥: top-k mode, the KL a lower bound of the exact KL; "
        "Δp = p_Q(correct) − p_ref(correct)",
        headers=["run", *(header for _, header, _ in DIVERGENCE_COLUMNS), "KL", "worst token"],
        right=[False] + [True] * len(DIVERGENCE_COLUMNS) + [False, False],
    )
    for run in shown:
        cells = [[(run.label, "bold")]]
        for metric, _, error in DIVERGENCE_COLUMNS:
            value, spread = run.metrics.get(metric), run.metrics.get(error) if error else None
            figure = kl_figure if metric.startswith("kl_") else lambda v, _zero: small_number(v)
            text = "—" if value is None else kl_text(run, metric, figure(value, run.kl_zero))
            if spread is not None and text != "0":
                text += f" ±{small_number(spread)}"
            cells.append([(text, "")])
        mode = {"exact": "exact", "topk": "top-k ≥"}.get(run.kl_mode, "")
        largest = run.metrics.get("kl_max")
        rounding = largest is not None and abs(largest) < run.kl_zero
        cells += [[(mode, "dim")], [("—" if rounding else run.worst_token or "—", "")]]
        grid.rows.append(cells)
    return grid


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
    """The SQNR summary, the weight SQNR per layer (:func:`layers_grid`), the worst layers and
    the output divergence; none without SQNR runs."""
    runs = sqnr_runs(comparison)
    if not runs:
        return []
    lower = any(run.kl_is_lower_bound for run in runs)
    summary = Grid(
        title=f"{comparison.name}: SQNR vs the unquantized model (higher = closer)",
        caption="KL ≥: top-k mode, a lower bound of the exact KL" if lower else "",
        headers=["run", *(title for _, title in SQNR_COLUMNS)],
        right=[False] + [True] * len(SQNR_COLUMNS),
    )
    shown = [value for run in runs for _, value in run.worst if math.isfinite(value)]
    low, high = min(shown, default=0.0), max(shown, default=0.0)
    worst = Grid(
        title=f"{comparison.name}: worst layers (weight SQNR)",
        caption=bar_scale(low, high) if shown else "",
        headers=["run", "layer", "dB", ""],
        right=[False, False, True, False],
        keys=3,  # a bar split off on a narrow console keeps its run, layer and value
    )
    for run in runs:
        summary.rows.append(
            [[(run.label, "bold")]]
            + [
                [(kl_text(run, name, number(run.metrics.get(name))), "")]
                for name, _ in SQNR_COLUMNS
            ]
        )
        for layer, value in run.worst:
            if value != math.inf:  # −∞ (all-zero reference, nonzero noise) is the worst of all
                bar = hbar(value, low, high)
                worst.rows.append(
                    [[(run.label, "bold")], [(layer, "")], [(number(value), "")], [(bar, "")]]
                )
    layers = layers_grid(comparison.name, runs)
    divergence = divergence_grid(comparison.name, runs)
    return [
        summary,
        *([layers] if layers.rows else []),
        *([worst] if worst.rows else []),
        *([divergence] if divergence else []),
    ]


def layers_grid(name: str, runs: list[SqnrRun]) -> Grid:
    """Per run with per-layer figures: its worst layer's weight SQNR, a :func:`sparkline` of
    every layer in checkpoint order on the run's own scale (▁ at its worst layer, █ at its best,
    so a run whose layers differ by 0.5 dB still shows which) and its best layer's SQNR."""
    grid = Grid(
        title=f"{name}: weight SQNR per layer (checkpoint order)",
        caption="each run on its own scale: ▁ = its worst layer, █ = its best",
        headers=["run", "worst\ndB", "per layer", "best\ndB"],
        right=[False, True, False, True],
    )
    for run in runs:
        values = list(run.layers.values())
        if not values:
            continue
        finite = [value for value in values if math.isfinite(value)]
        low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
        grid.rows.append(
            [
                [(run.label, "bold")],
                [(number(min(values)), "")],
                [(sparkline(values, low, high), "")],
                [(number(max(values)), "")],
            ]
        )
    return grid


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


def hbar(value: float, low: float, high: float, width: int = BAR_WIDTH) -> str:
    """A bar in eighths of a character: one eighth (▏) at ``low``, ``width`` full characters at
    ``high``, linear between, so 18.15 and 18.43 dB differ when they are the extremes shown;
    full when ``low == high``, empty for −∞. The share is computed on halves, so ±1e308 cannot
    overflow."""
    if value == -math.inf:
        return ""
    share = 1.0 if high <= low else (value / 2 - low / 2) / (high / 2 - low / 2)
    eighths = 1 + round(max(0.0, min(share, 1.0)) * (width * 8 - 1))
    return "█" * (eighths // 8) + (EIGHTHS[eighths % 8] if eighths % 8 else "")


def bar_scale(low: float, high: float) -> str:
    """The caption that states :func:`hbar`'s scale."""
    if high <= low:
        return f"bars: every layer shown at {number(low)} dB"
    return f"bars from {number(low)} dB (▏) to {number(high)} dB (full), not from 0 dB"


def sqnr_chart(figure_class: Any, comparison: Comparison) -> Any:
    """Weight SQNR (dB) per layer, one line per run; +∞ (identical) layers are gaps, −∞ layers
    (all-zero reference, nonzero noise: the worst) red ▼ marks 3 dB below the lowest figure."""
    lines = [
        run for run in sqnr_runs(comparison) if any(v != math.inf for v in run.layers.values())
    ]
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


def sqnr_runs(comparison: Comparison) -> list[SqnrRun]:
    """The ``qeval_sqnr`` figures of every run of ``comparison`` that has them, in its order
    (what :meth:`Sqnr.read` found)."""
    return comparison.figures.get(SQNR.name) or []


class Sqnr(Section):
    """The SQNR tables (summary with per-layer bars, worst layers, output divergence), each
    run's figures, the per-layer chart."""

    name = "sqnr"

    def read(self, comparison: Comparison, notes: list[str]) -> list[SqnrRun]:
        return [
            summary for row in comparison.rows if (summary := sqnr_summary(row.run)) is not None
        ]

    def grids(self, comparison: Comparison) -> list[Grid]:
        return [grid.escaped() for grid in sqnr_grids(comparison)]

    def data(self, comparison: Comparison) -> dict[str, Any]:
        return {
            "sqnr": [
                {
                    **vars(summary),
                    "worst": [{"layer": layer, "sqnr_db": value} for layer, value in summary.worst],
                }
                for summary in sqnr_runs(comparison)
            ]
        }

    def charts(self, comparison: Comparison) -> list[Chart]:
        """``<model>__sqnr_layers.png``: the weight SQNR per layer of every run."""
        return [
            Chart(
                f"{slug(comparison.name)}__sqnr_layers",
                f"{comparison.model}\0sqnr",
                lambda figure_class: sqnr_chart(figure_class, comparison),
            )
        ]


SQNR = Sqnr()
