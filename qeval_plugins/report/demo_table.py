"""The ``qeval demo`` table, built from the report's parts and drawn as one rich table.

Each demo run's lm-eval results are read as the report reads a results file
(:func:`~.load.results_run`, through JSON), named by the spec the user gave, and scored against
the ``none`` run by :func:`~.compare.make_row`: per task the report's main metric
(:func:`~.compare.main_metrics`), its direction (the file's ``higher_is_better``, else
:mod:`qeval_plugins.metrics.directions`) and Δ = run − baseline. The :class:`~.grid.Grid` has a
row per run in the order run: each task's value with three decimals and its Δ (red when worse,
green otherwise), the weights as stored in MiB (bytes / 2²⁰, headed "MB") and the load +
quantize time in seconds. Warnings of the reading (no stderr for a perplexity) are not shown.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.report.compare import Row, Score, main_metrics, make_row
from qeval_plugins.report.grid import Cell, Grid, arrow, fixed
from qeval_plugins.report.labels import display_names
from qeval_plugins.report.load import results_run
from qeval_plugins.report.runs import Run

BASELINE = "none"
DEMO_GROUP = "qeval_demo"
# short column titles of the demo tasks (their main metric named); other tasks show their names
COLUMN_TITLES = {
    "qeval_demo_facts": "facts acc",
    "qeval_demo_cloze": "cloze EM",
    "qeval_demo_ppl": "word ppl",
}
DIGITS = 3  # decimals of a metric and its change
MISSING = "-"
NOTE = (
    "MB: weights as stored (bitsandbytes: packed, scales included). rtn is simulated "
    "quantization, stored unquantized. load s: load + quantize wall time."
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
    found = main_metrics(runs, base)
    tasks = {task: found[task] for task in sorted(found, key=_column_order)}
    rows = [make_row(run, base, tasks) for run in runs]
    names = display_names([run.model for run in runs])
    model = names[runs[0].model] if runs else "?"
    grid = Grid(
        title=f"qeval demo: {model} on {DEMO_GROUP} "
        + (f"(change vs {BASELINE})" if base is not None else f"(no {BASELINE} run: no changes)"),
        caption=NOTE,
        headers=[
            "quantizer",
            *(
                f"{_title(task, metric)} {arrow(_direction(rows, task))}".rstrip()
                for task, metric in tasks.items()
            ),
            "MB",
            "load s",
        ],
        right=[False] + [True] * (len(tasks) + 2),
    )
    for row in rows:
        grid.rows.append(
            [[(row.run.label, "")]]
            + [_score_cell(row.scores.get(task)) for task in tasks]
            + [_figure(row.size_mib), _figure(row.quantize_seconds)]
        )
    return grid.printable()


def _column_order(task: str) -> tuple[int, str]:
    """The demo tasks in :data:`COLUMN_TITLES` order, then any others by name."""
    order = list(COLUMN_TITLES)
    return (order.index(task) if task in order else len(order), task)


def _title(task: str, metric: str) -> str:
    return COLUMN_TITLES.get(task, f"{task} {metric}")


def _direction(rows: list[Row], task: str) -> bool | None:
    """Whether higher is better for ``task``'s main metric, as its first score says."""
    return next((row.scores[task].higher_is_better for row in rows if task in row.scores), None)


def _score_cell(score: Score | None) -> Cell:
    """``value`` and, against the baseline, ``(Δ)``: red when worse (beyond rounding noise),
    green otherwise."""
    if score is None:
        return [(MISSING, "")]
    cell = [(fixed(score.value, DIGITS), "")]
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
    """Draw ``grid`` as a rich table (a cell's lines side by side on one line, the run column
    never wrapped), then its caption."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    table = Table(title=escape(grid.title))
    for index, (header, right) in enumerate(zip(grid.headers, grid.right, strict=True)):
        table.add_column(escape(header), justify="right" if right else "left", no_wrap=not index)
    for row in grid.rows:
        table.add_row(
            *(Text(" ").join(Text(text, style=style) for text, style in cell) for cell in row)
        )
    console.print(table)
    console.print(escape(grid.caption))
