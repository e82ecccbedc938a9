"""The one table of metric directions (``qeval_plugins.metrics.directions``) and its readers.

The task classes tell lm-eval their metrics' directions from it, and the report falls back on it
for a results file that states none, so the two can never disagree.
"""

from __future__ import annotations

import json

import pytest

from qeval_plugins.metrics.directions import HIGHER_IS_BETTER, direction, directions


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("acc", True),
        ("word_perplexity", False),
        ("kl_mean", False),
        ("logit_sqnr_db", True),
        ("rougeL_gap", False),
        ("fluency", True),
        ("some_new_sqnr_db", True),  # any figure in dB is an SQNR
        ("some_new_metric", None),
    ],
)
def test_direction(metric, expected):
    assert direction(metric) is expected


def test_directions_of_a_task_come_from_the_table():
    assert directions(["acc", "ppl_delta"]) == {"acc": True, "ppl_delta": False}
    with pytest.raises(KeyError):
        directions(["a_metric_nobody_listed"])


def test_the_task_classes_read_the_table():
    from qeval_plugins.evals.sampling import task as sampling
    from qeval_plugins.evals.sqnr import task as sqnr

    declared = {**sqnr.HIGHER_IS_BETTER, **sampling.METRICS, **sampling.SUMMARY}
    assert set(sqnr.HIGHER_IS_BETTER) == set(sqnr.AGGREGATIONS)  # every metric has a direction
    assert declared == {metric: direction(metric) for metric in declared}


def test_the_report_falls_back_on_the_table(tmp_path):
    """A results file without ``higher_is_better`` gets the table's direction for every metric
    a qeval task reports, ``fluency`` included (the report once had a copy without it)."""
    from qeval_plugins.report.load import read_run

    names = ["fluency", "kl_mean", "rougeL_slope", "weight_sqnr_min_db"]
    path = tmp_path / "results.json"
    results = {"t": {f"{name},none": 0.5 for name in names}}
    path.write_text(json.dumps({"results": results, "config": {"model": "qeval"}}))
    run, _ = read_run(path)
    assert {name: metric.higher_is_better for name, metric in run.metrics["t"].items()} == {
        name: HIGHER_IS_BETTER[name] for name in names
    }
