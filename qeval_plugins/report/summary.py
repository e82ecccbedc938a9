"""The summary section: one table per model, one row per run.

The table: bits/param, size (MiB = bytes/2²⁰), quantization time, tokens/s, peak memory, and per
task its main metric ± stderr, Δ versus the baseline and the relative degradation in % (positive
= worse), green ≤ 1 %, yellow ≤ 5 %, red > 5 %, dim when Δ is not significant (``ns``), and under
it the paired interval ``[lo, hi]`` of Δ with McNemar's ``p`` when both runs logged samples
(:mod:`.compare` says which test decided), the caption saying how the documents were paired
(:func:`pairing_note`). Its data: every run's figures and scores (JSON), one CSV line per run ×
task (:data:`CSV_COLUMNS`); its charts: each task's main metric per run.

Nothing here computes a comparison (:mod:`.compare` does). Every text read from a results file
goes through ``printable``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from qeval_plugins.core.text import printable
from qeval_plugins.report.chart import (
    TITLE_POINTS,
    Chart,
    chart_lines,
    slug,
    tick_label,
    title_room,
    ylabel_room,
)
from qeval_plugins.report.comparison import Comparison, Row, Score
from qeval_plugins.report.grid import Cell, Grid, arrow, fixed, number
from qeval_plugins.report.paired import CONFIDENCE, RESAMPLES, SEED
from qeval_plugins.report.runs import Run
from qeval_plugins.report.section import Section
from qeval_plugins.report.values import HugeInteger, as_mapping

GREEN_MAX_PCT = 1.0
YELLOW_MAX_PCT = 5.0
PEAK_KINDS = {"cuda_max_allocated": "cuda", "cpu_peak_rss": "rss"}
LEGEND = (
    "Δ = run − baseline. % = relative degradation, 100·(base − q)/|base| for ↑ metrics and "
    "100·(q − base)/|base| for ↓ ones: positive = worse (green ≤ 1 %, yellow ≤ 5 %, red > 5 %). "
    f"[lo, hi] = paired bootstrap {CONFIDENCE:.0%} interval of Δ over the documents both runs "
    f"scored ({RESAMPLES:,} resamples, seed {SEED}), p = McNemar's exact test (0/1 metrics); ns = "
    "the interval contains 0; documents are matched by lm-eval's doc_hash, or by position when "
    "neither run's samples have hashes (the note under each table says which). Without an "
    "interval (no lm-eval --log_samples files, or a metric "
    "not averaged over documents): ns = |Δ| within √(se_base² + se_run²), an unpaired screen."
)
SIM_LEGEND = "sim = simulated quantization: effective bits, stored unquantized."


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
        caption="\n".join(
            part
            for part in (comparison.baseline_reason, note, pairing, throughput_note(comparison))
            if part
        ),
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
    """Seconds the quantization took (:func:`~.compare.quantize_seconds`: the load left out;
    nothing for ``quantizer=none``), as the exports give them."""
    if row.quantize_seconds is None:
        return []
    return [(fixed(row.quantize_seconds, 2), "")]


def _bits_cell(row: Row) -> Cell:
    if row.bits_per_param is None:
        return []
    return [(fixed(row.bits_per_param, 2), "")] + ([("sim", "dim")] if row.simulated else [])


def _throughput_cell(row: Row) -> Cell:
    short = {"loglikelihood": "ll", "generate": "gen"}
    return [(f"{rate_text(rate)} {short[kind]}", "") for kind, rate in row.tokens_per_s.items()]


def rate_text(rate: float) -> str:
    """A rate in whole units with grouped thousands (``1,200``), two significant digits below 10
    (``0.33``, ``4.5``): a slow run never reads as 0."""
    return f"{rate:.2g}" if 0 < abs(rate) < 10 else fixed(rate, 0)


THROUGHPUT_CONDITIONS = {"device": "devices", "batch_size": "batch sizes"}
THROUGHPUT_NOTE = "tokens/s: wall-clock; machine load not recorded, compare runs measured alike"
LOAD_GAP = 0.25  # per CPU: runs further apart were timed on a differently busy machine
LOAD_MEASURES = {"other_cpus": "other processes' CPU use", "load_average": "load average"}


def throughput_note(comparison: Comparison) -> str:
    """A caption line when two or more runs have a tokens/s figure and their machine loads
    cannot be compared: one does not say how busy its machine was (results written before qeval
    recorded ``machine_load``), or they measured it differently."""
    timed = [row for row in comparison.rows if row.tokens_per_s]
    loads = [row.machine_load for row in timed]
    comparable = None not in loads and len({load.measure for load in loads if load}) == 1
    return THROUGHPUT_NOTE if len(timed) > 1 and not comparable else ""


def load_difference(timed: list[Row]) -> str | None:
    """``machine loads (other processes' CPU use per CPU: A 0.05; B 0.5)`` when the loads of
    ``timed`` recorded in one measure span more than :data:`LOAD_GAP`, else None."""
    loads = {row.run.label: row.machine_load for row in timed if row.machine_load is not None}
    measures = {load.measure for load in loads.values()}
    if len(loads) < 2 or len(measures) != 1:
        return None
    per_cpu = {label: load.per_cpu for label, load in loads.items()}
    if max(per_cpu.values()) - min(per_cpu.values()) <= LOAD_GAP:
        return None
    shown = "; ".join(f"{label} {load:.2g}" for label, load in per_cpu.items())
    return f"machine loads ({LOAD_MEASURES[measures.pop()]} per CPU: {shown})"


def throughput_conditions(comparison: Comparison) -> str | None:
    """A warning line when the runs with a tokens/s figure were measured on different devices or
    with different batch sizes (lm-eval's ``config.device``, ``config.batch_size``), naming which
    run had which; None when they agree (or tell nothing)."""
    timed = [row for row in comparison.rows if row.tokens_per_s]
    differences = []
    for key, plural in THROUGHPUT_CONDITIONS.items():
        values: dict[str, list[str]] = {}
        for row in timed:
            value = row.run.config.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                values.setdefault(printable(str(value)), []).append(row.run.label)
        if len(values) > 1:
            shown = "; ".join(f"{value}: {', '.join(labels)}" for value, labels in values.items())
            differences.append(f"{plural} ({shown})")
    if (load := load_difference(timed)) is not None:
        differences.append(load)
    if not differences:
        return None
    return (
        f"{comparison.name}: tokens/s were measured on different {' and '.join(differences)}: "
        "their ratios measure the setup, not the quantization"
    )


def _peak_cell(row: Row) -> Cell:
    if row.peak_memory_mib is None:
        return []
    kind = PEAK_KINDS.get(row.peak_memory_kind or "", row.peak_memory_kind or "")
    return [(fixed(row.peak_memory_mib, 0), "")] + ([(kind, "dim")] if kind else [])


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


CSV_COLUMNS = (
    "model",
    "run",
    "is_baseline",
    "backend",
    "quantizer",
    "bits_per_param",
    "simulated",
    "size_mib",
    "quantize_seconds",
    "loglikelihood_tokens_per_s",
    "generate_tokens_per_s",
    "peak_memory_mib",
    "peak_memory_kind",
    "task",
    "metric",
    "higher_is_better",
    "value",
    "stderr",
    "delta",
    "relative_degradation_pct",
    "significant",
    "significance_method",
    "delta_ci_low",
    "delta_ci_high",
    "ci_level",
    "mcnemar_p",
    "paired_docs",
    "paired_by",
    "limit",
    "num_fewshot",
)
CSV_RUN_KEYS = CSV_COLUMNS[2:9]  # is_baseline ... quantize_seconds, as in the JSON run entry


def metric_chart(figure_class: Any, comparison: Comparison, task: str, metric: str) -> Any:
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


class Summary(Section):
    """The summary table, the runs' figures and scores, each task's chart."""

    name = "summary"

    def read(self, comparison: Comparison, notes: list[str]) -> None:
        """Warns when the runs' tokens/s were measured under different conditions."""
        warning = throughput_conditions(comparison)
        if warning is not None:
            notes.append(warning)

    def grids(self, comparison: Comparison) -> list[Grid]:
        return [summary_grid(comparison).escaped()]

    def data(self, comparison: Comparison) -> dict[str, Any]:
        base = comparison.baseline
        return {
            "model": comparison.model,
            "name": comparison.name,
            "baseline": None if base is None else base.label,
            "baseline_reason": comparison.baseline_reason,
            "tasks": comparison.tasks,
            "runs": [_row_dict(row) for row in comparison.rows],
        }

    def csv_rows(self, model: dict[str, Any]) -> list[dict[str, Any]]:
        """One line per run × task (a run without scores gets one line)."""
        rows = []
        for run in model["runs"]:
            common = {
                "model": model["model"],
                "run": run["label"],
                **{key: run[key] for key in CSV_RUN_KEYS},
                "loglikelihood_tokens_per_s": run["tokens_per_s"].get("loglikelihood"),
                "generate_tokens_per_s": run["tokens_per_s"].get("generate"),
                "peak_memory_mib": run["peak_memory_mib"],
                "peak_memory_kind": run["peak_memory_kind"],
                "limit": run["settings"].get("limit"),
            }
            scores = run["scores"] or {None: {}}
            for task, score in scores.items():
                num_fewshot = run["num_fewshot"].get(task)
                rows.append({**common, "task": task, **score, "num_fewshot": num_fewshot})
        return rows

    def charts(self, comparison: Comparison) -> list[Chart]:
        """``<model>__<task>.png``: each task's main metric per run (± stderr, baseline
        dashed)."""
        return [
            Chart(
                f"{slug(comparison.name)}__{slug(task)}",
                f"{comparison.model}\0task\0{task}",
                lambda figure_class, t=task, m=metric: metric_chart(figure_class, comparison, t, m),
            )
            for task, metric in comparison.tasks.items()
        ]


SUMMARY = Summary()
