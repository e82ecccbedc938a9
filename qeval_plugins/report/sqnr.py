"""A run's ``qeval_sqnr`` figures: the task's metrics, weight SQNR per layer, activation SQNR.

The task's metrics come from the results; the per-layer and per-block values and the number of
worst layers to show from the qeval block's ``sqnr`` entry (``config.qeval.sqnr``); the KL mode
and the most divergent token from its ``divergence`` entry. :func:`divergence_grid` is the
output-divergence table (KL distribution, Δp, perplexity ratio), drawn when a run has them. A KL
of the top-k mode is a lower bound of the exact KL: every table shows it as ``≥ value``
(:func:`kl_text`).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from operator import itemgetter

from qeval_plugins.core.text import printable
from qeval_plugins.report.grid import Grid, small_number
from qeval_plugins.report.runs import Run
from qeval_plugins.report.values import as_finite, as_mapping, as_value

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
    kl_mode: str = ""  # "exact", "topk" (a lower bound), or "" when the file does not say
    kl_is_lower_bound: bool = False  # top-k mode: every KL figure is a lower bound
    kl_error_bound_max: float | None = None  # exact mode: bound on every per-token KL's error
    worst_token: str = ""  # the most divergent token in its context, as "…context⟨token⟩"


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
        worst_token=_worst_token(divergence.get("worst_tokens")),
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


def kl_text(run: SqnrRun, metric: str, text: str) -> str:
    """``text`` (the figure of ``metric``) marked ``≥ text`` when it is a KL of a top-k run (a
    lower bound of the exact KL); as it is otherwise."""
    lower = run.kl_is_lower_bound and metric.startswith("kl_") and not metric.endswith("_err")
    return LOWER_BOUND + text if lower and text not in ("—", "") else text


def divergence_grid(name: str, runs: list[SqnrRun]) -> Grid | None:
    """Output divergence per run: KL distribution, Δp RMS, top-1, PPL ratio (value ±err), the
    KL mode (``exact``, or ``top-k ≥`` for top-k: every KL of the run a lower bound, shown
    ``≥ value``) and the most divergent token; None when no run has the statistics (results from
    before they existed)."""
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
            text = "—" if value is None else kl_text(run, metric, small_number(value))
            cells.append([(text + (f" ±{small_number(spread)}" if spread is not None else ""), "")])
        mode = {"exact": "exact", "topk": "top-k ≥"}.get(run.kl_mode, "")
        cells += [[(mode, "dim")], [(run.worst_token, "")]]
        grid.rows.append(cells)
    return grid
