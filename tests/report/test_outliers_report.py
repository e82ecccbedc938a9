"""``qeval report``'s outlier-features section (``qeval_outliers``): the figures of both models,
outliers created and destroyed, in every format; hostile values never crash it.

Fixtures: the ``none`` and ``bnb-nf4`` qeval-tiny runs of tests/data/report with hand-written
``qeval_outliers`` results added (none: 2 features of 2; nf4: 3 features, 1 created, 0
destroyed).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from qeval_plugins.evals.outliers.task import METRICS
from qeval_plugins.report.compare import compare
from qeval_plugins.report.data import report_data
from qeval_plugins.report.export import FORMATS, export
from qeval_plugins.report.load import load_runs
from qeval_plugins.report.outliers import OUTLIERS_TASK, dimension_list, dimensions_text
from qeval_plugins.report.render import render

DATA = Path(__file__).resolve().parents[1] / "data" / "report" / "qeval-tiny"
NONE_RUN = DATA / "none" / "results_2026-11-23T10-00-00.000000.json"
NF4_RUN = DATA / "bnb-nf4" / "results.json"


def with_outliers(path: Path, values: dict, block: dict) -> dict:
    """The results file at ``path`` with ``qeval_outliers`` metrics ``values`` (in METRICS order,
    stderr "N/A", no direction, as lm-eval writes them) and ``config.qeval.outliers`` ``block``."""
    data = json.loads(path.read_text())
    entry = {"alias": OUTLIERS_TASK}
    for name in METRICS:
        entry[f"{name},none"] = values[name]
        entry[f"{name}_stderr,none"] = "N/A"
    data["results"][OUTLIERS_TASK] = entry
    data["higher_is_better"][OUTLIERS_TASK] = dict.fromkeys(METRICS)
    data["config"]["qeval"]["outliers"] = block
    return data


def block(reference: list[int], quantized: list[int]) -> dict:
    return {
        "settings": {
            "max_tokens": 256,
            "threshold": 6.0,
            "layer_share": 0.25,
            "position_share": 0.06,
        },
        "reference": {"outlier_features": reference, "absmax": [7.5, 61.0], "kurtosis": [3.0, 9.0]},
        "quantized": {
            "outlier_features": quantized,
            "absmax": [8.0, 64.5],
            "kurtosis": [4.0, 10.0],
        },
        "created": sorted(set(quantized) - set(reference)),
        "destroyed": sorted(set(reference) - set(quantized)),
    }


NONE_VALUES = dict(zip(METRICS, (2, 2, 0, 0, 61.0, 61.0, 6.0, 6.0, 0.2, 0.2), strict=True))
NF4_VALUES = dict(zip(METRICS, (3, 2, 1, 0, 64.5, 61.0, 7.0, 6.0, 0.5, 0.2), strict=True))


@pytest.fixture
def files(tmp_path):
    none = tmp_path / "none" / "results.json"
    nf4 = tmp_path / "nf4" / "results.json"
    for path, source, values, dims in (
        (none, NONE_RUN, NONE_VALUES, [5, 40]),
        (nf4, NF4_RUN, NF4_VALUES, [5, 40, 77]),
    ):
        path.parent.mkdir()
        reference = [5, 40]
        path.write_text(json.dumps(with_outliers(source, values, block(reference, dims))))
    return none, nf4


def terminal(report, width: int = 160) -> str:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    render(report, console)
    return console.export_text()


def test_the_section_shows_both_models_and_what_quantization_changed(files, tmp_path):
    runs, warnings = load_runs(list(files))
    report = compare(runs, warnings=warnings)
    text = terminal(report)
    assert "qeval-tiny: outlier features, unquantized reference vs quantized" in text
    (row,) = [line for line in text.splitlines() if line.startswith("bnb-nf4") and "77" in line]
    # features ref, quant, created, destroyed, absmax ref, quant, kurtosis ref, quant, dims
    assert row.split()[1:9] == ["2", "3", "1", "0", "61.00", "64.50", "6.000", "7.000"]
    assert row.rstrip().endswith("5, 40, 77")
    (created,) = [line for line in text.splitlines() if line.strip() == "77"]  # under created
    assert created
    data = report_data(report)["models"][0]["outliers"]
    nf4 = next(entry for entry in data if entry["label"] == "bnb-nf4")
    assert nf4["outlier_features"] == {
        "reference": [5, 40],
        "quantized": [5, 40, 77],
        "created": [77],
        "destroyed": [],
    }
    assert nf4["metrics"]["outliers_created"] == 1.0
    assert nf4["layers"]["quantized"]["absmax"] == [8.0, 64.5]
    for fmt in FORMATS:
        export(report, fmt, tmp_path / f"report.{fmt}")
    markdown = (tmp_path / "report.markdown").read_text()
    assert "**qeval-tiny: outlier features, unquantized reference vs quantized**" in markdown
    assert re.search(r"\| \*\*bnb-nf4\*\* \| 2 \| 3 \| 1<br>77 \| 0 \|", markdown)
    assert (
        "outlier features, unquantized reference vs quantized</h3>"
        in (tmp_path / "report.html").read_text()
    )
    exported = json.loads((tmp_path / "report.json").read_text())
    assert exported["models"][0]["outliers"] == json.loads(json.dumps(data))


def test_outlier_metrics_are_never_a_degradation(files):
    """The summary table's qeval_outliers column (main metric: the first, the quantized count)
    shows Δ but no relative degradation and no colour: the metrics have no direction."""
    runs, warnings = load_runs(list(files))
    comparison = compare(runs, warnings=warnings).comparisons[0]
    assert comparison.tasks[OUTLIERS_TASK] == "outlier_features_quantized"
    nf4 = next(row for row in comparison.rows if row.run.label == "bnb-nf4")
    score = nf4.scores[OUTLIERS_TASK]
    assert (score.value, score.delta, score.higher_is_better) == (3.0, 1.0, None)
    assert score.relative_degradation_pct is None


def test_a_run_without_the_task_has_no_section(tmp_path):
    runs, warnings = load_runs([NONE_RUN])
    report = compare(runs, warnings=warnings)
    assert "outlier features" not in terminal(report)
    assert report_data(report)["models"][0]["outliers"] == []


HOSTILE = [
    "text",
    None,
    True,
    12,
    [],
    {"reference": "x", "quantized": [1, 2], "created": {"a": 1}, "destroyed": "5"},
    {"reference": {"outlier_features": [True, -1, 2**40, "5", 3.0, None, [1], 7, 7, 2]}},
    {"quantized": {"outlier_features": list(range(500)), "absmax": {"x": 1}, "kurtosis": "k"}},
    {"quantized": {"absmax": ["inf", "NaN", "-inf", 10**400, "\x1b[31m", [1], 3]}},
    {"settings": {"threshold": "\x1b]0;x\x07", "layer_share": [0.5], "position_share": "inf"}},
    {
        "reference": {
            "outlier_features": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
        }
    },
]


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_blocks_never_crash_any_format(files, tmp_path, hostile):
    none, nf4 = files
    data = json.loads(nf4.read_text())
    data["config"]["qeval"]["outliers"] = hostile
    data["results"][OUTLIERS_TASK]["outliers_created,none"] = "\x1b[2J"
    nf4.write_text(json.dumps(data))
    runs, warnings = load_runs([none, nf4])
    report = compare(runs, warnings=warnings)
    text = terminal(report, width=80)
    assert "\x1b" not in text
    for fmt in FORMATS:
        export(report, fmt, tmp_path / f"report.{fmt}")
        assert "\x1b" not in (tmp_path / f"report.{fmt}").read_text()
    entry = next(e for e in report_data(report)["models"][0]["outliers"] if e["label"] == "bnb-nf4")
    for dims in entry["outlier_features"].values():
        assert all(type(d) is int and 0 <= d < 2**31 for d in dims)


def test_dimension_lists_are_validated_and_shortened():
    assert dimension_list([7, 7, 2, True, -1, 2**40, "5", 3.0, None]) == [2, 7]
    assert dimension_list({"a": 1}) == []
    assert dimensions_text([]) == "—"
    assert dimensions_text(list(range(10))) == "0, 1, 2, 3, 4, 5, 6, 7 +2"


def test_settings_other_than_the_defaults_are_named_in_the_caption(files):
    none, nf4 = files
    data = json.loads(nf4.read_text())
    data["config"]["qeval"]["outliers"]["settings"].update(threshold=4, position_share=0.1)
    nf4.write_text(json.dumps(data))
    runs, warnings = load_runs([none, nf4])
    text = terminal(compare(runs, warnings=warnings), width=200)
    assert "bnb-nf4: threshold 4.000, position_share 0.100" in text
    assert "none: " not in text
