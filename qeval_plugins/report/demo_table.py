"""The ``qeval demo`` table, built from the report's parts and drawn as the report draws its tables.

Each demo run's lm-eval results are read as the report reads a results file
(:func:`~.load.results_run`, through JSON), named by the spec the user gave, and compared with
the ``none`` run. The table has a column per entry of :data:`COLUMNS`: a task and the metric it
shows, the first of the column's candidate names that any run reports (so the KL columns follow
qeval_sqnr's metric names, listed once in :data:`KL_METRICS`). A cell is the value with three
decimals (a KL by :func:`run_figure`: 0 within its error bound, ``≥``-marked when qeval_sqnr
ran in top-k mode, a lower bound) and, where the column compares, Δ = run − baseline by
:func:`~.compare.score` (red when worse by the metric's direction — the file's
``higher_is_better``, else :mod:`qeval_plugins.metrics.directions` — green otherwise). The KL
columns do not compare: the baseline's KL to itself is 0, so Δ would repeat the value. Then the
weights as stored in MiB (bytes / 2²⁰, headed "MiB") and the load + quantize time in seconds. A
row per run in the order run. Warnings of the reading (no stderr for a perplexity) are not
shown.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.report.compare import load_and_quantize_seconds, make_row
from qeval_plugins.report.compare import score as compare_score
from qeval_plugins.report.comparison import Score
from qeval_plugins.report.grid import Cell, Grid, arrow, fixed
from qeval_plugins.report.labels import display_names
from qeval_plugins.report.load import results_run
from qeval_plugins.report.runs import Run
from qeval_plugins.report.sqnr import kl_figure, sqnr_summary
from qeval_plugins.report.sqnr import kl_text as sqnr_kl_text

BASELINE = "none"
SQNR_TASK = "qeval_sqnr"
#: the KL columns, each the first of its qeval_sqnr metric names that the runs report (nats)
KL_METRICS = (("kl_median", "kl_mean"), ("kl_p99",))
DIGITS = 3  # decimals of a metric and its change
MISSING = "-"


def three_decimals(value: float) -> str:
    """``value`` with :data:`DIGITS` decimals (:func:`~.grid.fixed`)."""
    return fixed(value, DIGITS)


@dataclass(frozen=True)
class Column:
    """One column of the demo table: ``task``'s first metric of ``metrics`` that a run reports,
    headed ``title`` (``{}``: that metric's name without its ``kl_`` prefix), its value written
    by ``figure``; ``changes``: show Δ against the baseline."""

    title: str
    task: str
    metrics: tuple[str, ...]
    changes: bool = True
    figure: Callable[[float], str] = three_decimals


COLUMNS = (
    Column("facts acc", "qeval_demo_facts", ("acc",)),
    Column("cloze EM", "qeval_demo_cloze", ("exact_match",)),
    Column("word ppl", "qeval_demo_ppl", ("word_perplexity",)),
    Column("ROUGE-L T=0", "qeval_demo_temperature_0.0", ("rougeL",)),
    Column("ROUGE-L T=1", "qeval_demo_temperature_1.0", ("rougeL",)),
    *(Column("KL {}", SQNR_TASK, names, False, kl_figure) for names in KL_METRICS),
)
NOTE = (
    "facts, cloze, ppl: questions and held-out text of the model's world. ROUGE-L T=0 / T=1: "
    "greedy / temperature-1 continuations of held-out story openings of that world scored "
    "against the story's own ending (0-1): sampling lowers even the unquantized model's score, "
    "Δ is what quantization costs on top at each temperature (a few hundredths is noise of the "
    "few prompts). KL: per-token KL(unquantized ‖ quantized) in nats on held-out passages of "
    "the world (qeval_sqnr), at the statistic named (0: within its error bound): the median"
    " shows the typical token, p99 the tail where quantization does its damage. MiB: weights as "
    "stored (bitsandbytes: packed, scales included). rtn is simulated quantization, stored "
    "unquantized. load s: load + quantize wall time."
)


def demo_run(spec: str, results: dict[str, Any]) -> Run:
    """``results`` of :func:`lm_eval.simple_evaluate` as a :class:`Run` labelled ``spec``, read
    through JSON as from a results file (values of other types become their text); a
    :class:`QevalError` when they hold no metric."""
    data = json.loads(json.dumps(results, default=str))
    run, warnings = results_run(data, Path(spec))
    if run is None:
        raise QevalError(f"the demo run of {spec} gave no results: {'; '.join(warnings)}")
    run.label = spec
    return run


def demo_grid(runs: list[Run]) -> Grid:
    """The demo table of ``runs`` (:func:`demo_run`), compared with the run labelled
    :data:`BASELINE` when there is one."""
    base = next((run for run in runs if run.label == BASELINE), None)
    shown = [(column, _metric(column, runs)) for column in COLUMNS]
    names = display_names([run.model for run in runs])
    model = names[runs[0].model] if runs else "?"
    grid = Grid(
        title=f"qeval demo: {model} "
        + (f"(change vs {BASELINE})" if base is not None else f"(no {BASELINE} run: no changes)"),
        caption=NOTE,
        headers=[
            "quantizer",
            *(
                f"{_title(column, metric)} {arrow(_direction(runs, column, metric))}".rstrip()
                for column, metric in shown
            ),
            "MiB",
            "load s",
        ],
        right=[False] + [True] * (len(shown) + 2),
    )
    for run in runs:
        row = make_row(run, base, {})
        grid.rows.append(
            [[(run.label, "")]]
            + [
                _score_cell(_score(run, base, column, metric), run_figure(run, column, metric))
                for column, metric in shown
            ]
            + [_figure(row.size_mib), _figure(load_and_quantize_seconds(run))]
        )
    return grid.escaped()


def _metric(column: Column, runs: list[Run]) -> str:
    """The first of the column's metric names that any run reports for its task, else the
    first name (a column of dashes)."""
    reported = {name for run in runs for name in run.metrics.get(column.task, {})}
    return next((name for name in column.metrics if name in reported), column.metrics[0])


def _title(column: Column, metric: str) -> str:
    return column.title.format(metric.removeprefix("kl_"))


def _score(run: Run, base: Run | None, column: Column, metric: str) -> Score | None:
    """``run``'s ``metric`` of the column's task, with Δ against ``base`` where the column
    compares (never for the baseline itself); None when the run lacks it."""
    found = run.metrics.get(column.task, {}).get(metric)
    if found is None:
        return None
    reference = None
    if column.changes and base is not None and base is not run:
        reference = base.metrics.get(column.task, {}).get(metric)
    return compare_score(metric, found, reference)


def _direction(runs: list[Run], column: Column, metric: str) -> bool | None:
    """Whether higher is better for the column's metric, as the first run with it says."""
    found = (run.metrics.get(column.task, {}).get(metric) for run in runs)
    return next((m.higher_is_better for m in found if m is not None), None)


def run_figure(run: Run, column: Column, metric: str) -> Callable[[float], str]:
    """How ``run``'s value of the column's ``metric`` is written: by the column's ``figure``;
    a KL of qeval_sqnr by :func:`~.sqnr.kl_figure`, ``0`` below the run's
    :attr:`~.sqnr.SqnrRun.kl_zero` (the exact mode's error bound of every token, the
    log-probability codes' rounding: 1e-7 nats on the embedded model, whose KL to itself is then
    3e-9; at least :data:`~.sqnr.KL_ZERO`), and ``≥ value`` in top-k mode (a lower bound,
    :func:`~.sqnr.kl_text`)."""
    summary = sqnr_summary(run) if metric.startswith("kl_") else None
    if summary is None:
        return column.figure
    return lambda value: sqnr_kl_text(summary, metric, kl_figure(value, summary.kl_zero))


def _score_cell(score: Score | None, figure: Callable[[float], str]) -> Cell:
    """``value`` written by ``figure`` and, against the baseline, ``(Δ)``: red when worse
    (beyond rounding noise), green otherwise."""
    if score is None:
        return [(MISSING, "")]
    cell = [(figure(score.value), "")]
    if score.delta is not None:
        cell.append((f"({fixed(score.delta, DIGITS, signed=True)})", _change_style(score)))
    return cell


def _change_style(score: Score) -> str:
    """ "red" when the change is for the worse and not ≈ 0 (:func:`math.isclose`), else "green";
    no colour when the metric's direction is unknown."""
    delta = score.delta or 0.0
    if score.higher_is_better is None:
        return ""
    worse = delta < 0 if score.higher_is_better else delta > 0
    return "red" if worse and not math.isclose(delta, 0) else "green"


def _figure(value: float | None) -> Cell:
    return [(MISSING if value is None else fixed(value, 2), "")]


def print_demo(grid: Grid, console: Any) -> None:
    """Draw ``grid`` as the report draws its tables (:func:`~.layout.print_grid`: fitted to the
    console, split into blocks of whole columns that repeat the run column when too wide, never
    cutting a number), caption included."""
    from qeval_plugins.report.layout import print_grid

    print_grid(grid, console)
