"""The report's tables as :class:`~.grid.Grid` objects, per model, in order:

* summary: one row per run — bits/param, size (MiB = bytes/2²⁰), quantization time, tokens/s,
  peak memory, and per task its main metric ± stderr, Δ versus the baseline and the relative
  degradation in % (positive = worse), green ≤ 1 %, yellow ≤ 5 %, red > 5 %, dim when Δ is
  not significant (``ns``), and under it the paired interval ``[lo, hi]`` of Δ with McNemar's
  ``p`` when both runs logged samples (:mod:`.compare` says which test decided), the caption
  saying how the documents were paired (:func:`pairing_note`);
* SQNR per run (when ``qeval_sqnr`` ran) with a one-character-per-layer bar view of the weight
  SQNR (▁ = the model's worst layer, █ = its best; the worst layer of a bucket when the layers
  outnumber the width; a top-k KL shown ``≥ value``, a lower bound), and the worst layers with
  proportional bars (0 dB → empty);
* sampling sensitivity per sweep (when ``qeval_temperature_*``, ``qeval_top_k_*`` or
  ``qeval_max_new_tokens_*`` ran): per run, rougeL and agree_tokens at each setting in numeric
  order (top_k ``all`` last), the settings of the ``rougeL_gap`` band starred (temperature
  0.5–0.8), and the summary task's slope, spread and gap.

Nothing here computes a comparison (:mod:`.compare` does) or draws one (:mod:`.render`,
:mod:`.export`). Every text read from a results file goes through ``printable``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from qeval_plugins.core.text import printable
from qeval_plugins.metrics.directions import direction
from qeval_plugins.report.compare import Comparison, Row, Score
from qeval_plugins.report.grid import Cell, Grid, arrow, fixed, number, small_number
from qeval_plugins.report.paired import CONFIDENCE, RESAMPLES, SEED
from qeval_plugins.report.runs import Metric, Run
from qeval_plugins.report.sensitivity import SWEEP_SUMMARY_METRICS, TEMPERATURE_BAND, Sweep
from qeval_plugins.report.sqnr import divergence_grid, kl_text

GREEN_MAX_PCT = 1.0
YELLOW_MAX_PCT = 5.0
SPARK = "▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉█"
SPARK_WIDTH = 28
BAR_WIDTH = 24
PEAK_KINDS = {"cuda_max_allocated": "cuda", "cpu_peak_rss": "rss"}
LEGEND = (
    "Δ = run − baseline. % = relative degradation, 100·(base − q)/|base| for ↑ metrics and "
    "100·(q − base)/|base| for ↓ ones: positive = worse (green ≤ 1 %, yellow ≤ 5 %, red > 5 %). "
    f"[lo, hi] = paired bootstrap {CONFIDENCE:.0%} interval of Δ over the documents both runs "
    f"scored ({RESAMPLES:,} resamples, seed {SEED}), p = McNemar's exact test (0/1 metrics); ns = "
    "the interval contains 0; documents are matched by lm-eval's doc_hash, or by position when "
    "neither run's samples have hashes (the note under each table says which). Without an "
    "interval (no lm-eval --log_samples files, or a metric "
    "not averaged over documents): ns = |Δ| within √(se_base² + se_run²), an unpaired screen. "
    "sim = simulated quantization: effective bits, stored unquantized."
)


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
        second += f" {fixed(score.relative_degradation_pct, 1, signed=True)}%"
    if score.significant is False:
        second += " ns"
    return [(first, ""), (second, degradation_style(score)), *interval_line(score)]


def interval_line(score: Score) -> Cell:
    """A paired score's ``[lo, hi]`` interval of Δ and McNemar's ``p=`` (0/1 metrics), dimmed;
    nothing for a score of the unpaired screen."""
    if score.delta_ci_low is None or score.delta_ci_high is None:
        return []
    low, high = (number(end, signed=True) for end in (score.delta_ci_low, score.delta_ci_high))
    text = f"[{low}, {high}]"
    if score.mcnemar_p is not None:
        text += f" p={p_value(score.mcnemar_p)}"
    return [(text, "dim")]


def p_value(p: float) -> str:
    """A p-value in two significant digits (``0.043``, ``1``), ``<1e-04`` below 10⁻⁴."""
    return "<1e-04" if p < 1e-4 else f"{p:.2g}"


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
    settings = {
        row.run.label: (limit_text(row.run), shots_text(row.run)) for row in comparison.rows
    }
    uniform = len(set(settings.values())) == 1
    if not uniform:
        cost[:0] = [
            ("limit", lambda row: [(settings[row.run.label][0], "")]),
            ("shots", lambda row: [(settings[row.run.label][1], "")]),
        ]
    note = settings_note(*next(iter(settings.values()))) if uniform and settings else ""
    pairing = pairing_note(comparison)
    directions = {
        task: next(
            (row.scores[task].higher_is_better for row in comparison.rows if task in row.scores),
            None,
        )
        for task in comparison.tasks
    }
    grid = Grid(
        title=comparison.name,
        caption="\n".join(part for part in (comparison.baseline_reason, note, pairing) if part),
        headers=["run", *(title for title, _ in cost)]
        + [
            f"{printable(task)}\n{printable(metric)} {arrow(directions[task])}"
            for task, metric in comparison.tasks.items()
        ],
        right=[False] + [True] * (len(cost) + len(comparison.tasks)),
    )
    for row in comparison.rows:
        label: Cell = [(row.run.label, "bold")] + ([("baseline", "dim")] if row.is_baseline else [])
        label += [(row.scheme, "dim")] if row.scheme and not row.is_baseline else []
        grid.rows.append(
            [label, *(cell(row) or [("—", "dim")] for _, cell in cost)]
            + [score_cell(row.scores.get(task)) for task in comparison.tasks]
        )
    return grid


PAIRINGS = {
    "doc_hash": "paired by document hash",
    "position": "paired by position: no document hashes",
}


def pairing_note(comparison: Comparison) -> str:
    """How the paired intervals' documents were matched, as a caption line: ``[lo, hi] paired by
    document hash`` (both runs' lm-eval ``doc_hash`` agree) or ``[lo, hi] paired by position: no
    document hashes`` (neither run's samples have them: same count and order), each followed by
    its tasks when a table has both; "" when nothing is paired."""
    tasks: dict[str, list[str]] = {}
    for task in comparison.tasks:
        found = {row.scores[task].paired_by for row in comparison.rows if task in row.scores}
        for pairing in sorted(found - {None}):
            tasks.setdefault(pairing, []).append(task)
    if not tasks:
        return ""
    if len(tasks) == 1:
        [pairing] = tasks
        return f"[lo, hi] {PAIRINGS.get(pairing, pairing)}"
    return "[lo, hi] " + "; ".join(
        f"{PAIRINGS.get(pairing, pairing)} ({', '.join(names)})"
        for pairing, names in sorted(tasks.items())
    )


def limit_text(run: Run) -> str:
    """The run's lm-eval ``--limit``: documents per task (a fraction below 1), "all" when it ran
    without one, "—" when the file does not say."""
    limit = run.settings.get("limit")
    return "—" if limit is None else "all" if limit == "none" else limit


def shots_text(run: Run) -> str:
    """The run's few-shot count ("0"), its range over tasks ("0–5"), or "—" when unknown."""
    counts = set(run.fewshot.values())
    if not counts:
        return "—"
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}–{high}"


def settings_note(limit: str, shots: str) -> str:
    """The limit and few-shot count every run of a model shares, as a caption phrase."""
    parts = [] if limit == "—" else ["no limit" if limit == "all" else f"limit {limit} per task"]
    parts += [] if shots == "—" else [f"{shots}-shot"]
    return f"every run: {', '.join(parts)}" if parts else ""


def _plain(value: float | None) -> Cell:
    return [] if value is None else [(number(value), "")]


def _seconds_cell(row: Row) -> Cell:
    return [] if row.quantize_seconds is None else [(fixed(row.quantize_seconds, 2), "")]


def _bits_cell(row: Row) -> Cell:
    if row.bits_per_param is None:
        return []
    return [(fixed(row.bits_per_param, 2), "")] + ([("sim", "dim")] if row.simulated else [])


def _throughput_cell(row: Row) -> Cell:
    short = {"loglikelihood": "ll", "generate": "gen"}
    return [(f"{fixed(rate, 0)} {short[kind]}", "") for kind, rate in row.tokens_per_s.items()]


def _peak_cell(row: Row) -> Cell:
    if row.peak_memory_mib is None:
        return []
    kind = PEAK_KINDS.get(row.peak_memory_kind or "", row.peak_memory_kind or "")
    return [(fixed(row.peak_memory_mib, 0), "")] + ([(kind, "dim")] if kind else [])


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
    lower = any(run.kl_is_lower_bound for run in comparison.sqnr)
    summary = Grid(
        title=f"{comparison.name}: SQNR vs the unquantized model (higher = closer)",
        caption="KL ≥: top-k mode, a lower bound of the exact KL" if lower else "",
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
        keys=3,  # a bar split off on a narrow console keeps its run, layer and value
    )
    for run in comparison.sqnr:
        summary.rows.append(
            [[(run.label, "bold")]]
            + [
                [(kl_text(run, name, number(run.metrics.get(name))), "")]
                for name, _ in SQNR_COLUMNS
            ]
            + [[(sparkline(list(run.layers.values()), low, high), "")]]
        )
        for layer, value in run.worst:
            if value != math.inf:  # −∞ (all-zero reference, nonzero noise) is the worst of all
                bar = hbar(value, high)
                worst.rows.append(
                    [[(run.label, "bold")], [(layer, "")], [(number(value), "")], [(bar, "")]]
                )
    divergence = divergence_grid(comparison.name, comparison.sqnr)
    return [summary] + ([worst] if worst.rows else []) + ([divergence] if divergence else [])


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


def grids(comparison: Comparison) -> list[Grid]:
    """Every table of one model, in order, their texts :func:`printable`."""
    return [
        grid.printable()
        for grid in (
            summary_grid(comparison),
            *sqnr_grids(comparison),
            *(sensitivity_grid(comparison.name, sweep) for sweep in comparison.sensitivity),
        )
    ]
