"""A new section of ``qeval report`` is one module and one entry in ``SECTIONS``: a toy section,
added by monkeypatching the list only, shows in the terminal, Markdown, HTML, JSON, CSV and the
charts, after the built-in sections; and every view of the report goes through that list."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from qeval_plugins.report import sections
from qeval_plugins.report.chart import Chart
from qeval_plugins.report.compare import compare
from qeval_plugins.report.comparison import Comparison
from qeval_plugins.report.export import to_csv, to_html, to_json, to_markdown
from qeval_plugins.report.grid import Grid
from qeval_plugins.report.load import load_runs
from qeval_plugins.report.render import render
from qeval_plugins.report.section import Section

DATA = Path(__file__).resolve().parents[1] / "data" / "report" / "qeval-tiny"


class Toy(Section):
    """Counts each run's tasks: a table, a JSON entry, a CSV line per run and a chart."""

    name = "toy"

    def read(self, comparison: Comparison, notes: list[str]) -> dict[str, int]:
        notes.append(f"{comparison.name}: toy read {len(comparison.rows)} runs")
        return {row.run.label: len(row.run.metrics) for row in comparison.rows}

    def grids(self, comparison: Comparison) -> list[Grid]:
        grid = Grid(f"{comparison.name}: toy tasks", "toy caption", ["run", "toy tasks"], [0, 1])
        counts = comparison.figures[self.name]
        grid.rows = [
            [[(label, "bold")], [(f"{count} toys", "")]] for label, count in counts.items()
        ]
        return [grid.escaped()]

    def data(self, comparison: Comparison) -> dict[str, Any]:
        return {"toy": comparison.figures[self.name]}

    def csv_rows(self, model: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"model": model["model"], "run": label, "task": "toy", "metric": "tasks", "value": n}
            for label, n in model["toy"].items()
        ]

    def charts(self, comparison: Comparison) -> list[Chart]:
        def draw(figure_class: Any) -> Any:
            figure = figure_class(figsize=(2, 2))
            figure.add_subplot().bar([0], [len(comparison.figures[self.name])])
            return figure

        return [Chart(f"toy_{comparison.name}", comparison.model, draw)]


@pytest.fixture
def report(monkeypatch):
    monkeypatch.setattr(sections, "SECTIONS", [*sections.SECTIONS, Toy()])
    runs, warnings = load_runs([DATA])
    return compare(runs, warnings=warnings)


# the qeval-tiny runs: none, rtn:bits=4 (two files merged), bnb-nf4 have 3 tasks, rtn:bits=2 one
TOYS = {"none": 3, "bnb-nf4": 3, "rtn:bits=4": 3, "rtn:bits=2": 1}


def test_a_toy_section_is_read_once_per_model(report):
    [comparison] = report.comparisons
    assert comparison.figures["toy"] == TOYS
    assert "qeval-tiny: toy read 4 runs" in report.warnings


def test_a_toy_section_shows_in_every_view(report, tmp_path):
    console = Console(width=120, record=True, color_system=None, file=io.StringIO())
    render(report, console)
    terminal = console.export_text()
    assert "qeval-tiny: toy tasks" in terminal and "toy caption" in terminal
    assert terminal.index("worst layers") < terminal.index("toy tasks")  # after the built-ins
    assert "1 toys" in terminal

    markdown = to_markdown(report)
    assert "**qeval-tiny: toy tasks**" in markdown and "| **rtn:bits=2** | 1 toys |" in markdown
    page = to_html(report)
    assert "<h3>qeval-tiny: toy tasks</h3>" in page and "<td>3 toys</td>" in page.replace(
        ' class="right"', ""
    )

    [model] = json.loads(to_json(report))["models"]
    assert model["toy"] == TOYS and list(model)[-1] == "toy"
    lines = [row for row in csv.DictReader(io.StringIO(to_csv(report))) if row["task"] == "toy"]
    assert {row["run"]: int(row["value"]) for row in lines} == TOYS


def test_a_toy_section_draws_its_chart(report, tmp_path):
    pytest.importorskip("matplotlib")
    from qeval_plugins.report.plot import plot

    names = {path.name for path in plot(report, tmp_path)}
    assert "toy_qeval-tiny.png" in names and "qeval-tiny__sqnr_layers.png" in names


def test_the_built_in_sections_in_order():
    assert [section.name for section in sections.SECTIONS] == [
        "summary",
        "sqnr",
        "sensitivity",
        "outliers",
        "scans",
    ]
