"""The ``qeval demo`` table, built by the report package from lm-eval results (no model run).

``tests/snapshots/demo_120.txt`` is the table ``COLUMNS=120 qeval demo --limit 4`` printed before
the demo rendered through the report package; the same figures must print the same text.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from qeval_plugins.core.errors import QevalError
from qeval_plugins.report.demo_table import demo_grid, demo_run, print_demo

MIB = 2**20
SNAPSHOT = Path(__file__).resolve().parents[1] / "snapshots" / "demo_120.txt"


def results(spec: str, facts: float, cloze: float, ppl: float, mib: float, seconds: float):
    """lm-eval ``simple_evaluate`` results of one demo run, as the qeval backend records them."""
    return {
        "results": {
            "qeval_demo": {" ": " ", "alias": "qeval_demo"},
            "qeval_demo_facts": {
                "alias": " - qeval_demo_facts",
                "acc,none": facts,
                "acc_stderr,none": 0.25,
                "acc_norm,none": facts,
                "acc_norm_stderr,none": 0.25,
            },
            "qeval_demo_cloze": {"exact_match,none": cloze, "exact_match_stderr,none": 0.25},
            "qeval_demo_ppl": {
                "word_perplexity,none": ppl,
                "word_perplexity_stderr,none": "N/A",
                "byte_perplexity,none": 1.1,
                "bits_per_byte,none": 0.2,
            },
        },
        "group_subtasks": {
            "qeval_demo": ["qeval_demo_facts", "qeval_demo_cloze", "qeval_demo_ppl"]
        },
        "higher_is_better": {
            "qeval_demo_facts": {"acc": True, "acc_norm": True},
            "qeval_demo_cloze": {"exact_match": True},
            "qeval_demo_ppl": {"word_perplexity": False},
        },
        "config": {
            "model": "qeval",
            "model_args": f"pretrained=qeval-tiny,{spec.replace(':', ',')}",
            "qeval": {"spec": spec, "param_bytes_after": mib * MIB, "quantize_seconds": seconds},
        },
        "date": 1_700_000_000.0,
    }


# figures that print as the old demo's table did, load times included
RUNS = [
    ("none", 1.0, 1.0, 1.7354, 5.0, 0.94),
    ("bnb-int8", 1.0, 1.0, 1.7352, 2.77, 0.60),
    ("bnb-nf4", 1.0, 1.0, 1.7371, 2.43, 0.06),
    ("bnb-fp4-dq", 1.0, 1.0, 1.7353, 2.42, 0.03),
    ("rtn:bits=4", 1.0, 1.0, 1.7412, 5.0, 0.02),
    ("rtn:format=mxfp4", 1.0, 1.0, 1.7346, 5.0, 0.01),
    ("rtn:bits=3", 0.75, 1.0, 1.7533, 5.0, 0.01),
    ("rtn:bits=2", 0.75, 0.25, 7.2, 5.0, 0.02),
]


def runs(specs=RUNS):
    return [demo_run(spec, results(spec, *figures)) for spec, *figures in specs]


def test_demo_table_text_is_unchanged():
    """The text the demo printed (COLUMNS=120) before it rendered through the report package."""
    console = Console(width=120, record=True, color_system=None)
    print_demo(demo_grid(runs()), console)
    assert console.export_text() == SNAPSHOT.read_text(encoding="utf-8")


def test_changes_are_coloured_by_the_metric_direction():
    grid = demo_grid(runs())
    none, int8, *_, bits2 = grid.rows
    assert none[1:4] == [[("1.000", "")], [("1.000", "")], [("1.735", "")]]  # no change shown
    assert int8[3] == [("1.735", ""), ("(-0.000)", "green")]  # lower perplexity: not worse
    assert bits2[1] == [("0.750", ""), ("(-0.250)", "red")]  # lower accuracy: worse
    assert bits2[3] == [("7.200", ""), ("(+5.465)", "red")]  # higher perplexity: worse
    assert bits2[4:] == [[("5.00", "")], [("0.02", "")]]


def test_without_a_none_run_nothing_is_compared_and_missing_tasks_are_dashes():
    data = results("rtn:bits=4", 1.0, 1.0, 1.7, 5.0, 0.1)
    del data["results"]["qeval_demo_cloze"]
    grid = demo_grid([demo_run("rtn:bits=4", data), *runs(RUNS[1:2])])
    assert grid.rows[0][2] == [("-", "")]
    assert grid.rows[1][1] == [("1.000", "")]  # no baseline: no (Δ)
    assert grid.title.endswith("(no none run: no changes)")  # it said "(change vs none)"


def test_a_run_without_metrics_is_a_one_line_error():
    with pytest.raises(QevalError, match="the demo run of none gave no results"):
        demo_run("none", {"results": {"qeval_demo": {"alias": "qeval_demo"}}, "config": {}})
