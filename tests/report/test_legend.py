"""The legend under the tables explains only what they show (:func:`~.render.legend`)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from qeval_plugins.report.compare import compare
from qeval_plugins.report.export import export
from qeval_plugins.report.load import load_runs
from qeval_plugins.report.render import legend, render
from qeval_plugins.report.summary import LEGEND, SIM_LEGEND

DATA = Path(__file__).resolve().parents[1] / "data" / "report" / "qeval-tiny"


def terminal(report) -> str:
    console = Console(width=120, record=True, color_system=None, file=io.StringIO())
    render(report, console)
    return console.export_text()


def test_sqnr_runs_only_get_no_delta_legend(tmp_path):
    """The 10-line Δ/bootstrap/McNemar legend was printed under a report of qeval_sqnr runs,
    whose tables have none of those columns."""
    runs, warnings = load_runs([DATA / "none", DATA / "rtn-bits4-sqnr"])
    report = compare(runs, warnings=warnings)
    assert all(
        score.delta is None for row in report.comparisons[0].rows for score in row.scores.values()
    )
    assert legend(report) == SIM_LEGEND  # rtn is simulated: its bits show "sim"
    for text in (terminal(report), export(report, "markdown", tmp_path / "r.md").read_text()):
        assert "bootstrap" not in text and "McNemar" not in text and "Δ = run" not in text
    assert "sim = simulated quantization" in terminal(report)


def test_a_report_of_unquantized_runs_only_has_no_legend():
    runs, warnings = load_runs([DATA / "none"])
    report = compare(runs, warnings=warnings)
    assert legend(report) == ""
    assert "sim =" not in terminal(report)


def test_compared_scores_get_the_delta_legend():
    runs, warnings = load_runs([DATA / "none", DATA / "rtn-bits4"])
    report = compare(runs, warnings=warnings)
    assert legend(report) == f"{LEGEND} {SIM_LEGEND}"
    assert "paired bootstrap" in " ".join(terminal(report).split())
