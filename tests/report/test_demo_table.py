"""The ``qeval demo`` table, built by the report package from lm-eval results (no model run).

``tests/snapshots/demo_120.txt`` is the table of :data:`RUNS` (the figures of a full
``COLUMNS=120 qeval demo``) at 120 columns;
``QEVAL_UPDATE_SNAPSHOTS=1 python -m pytest tests/report/test_demo_table.py`` rewrites it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rich.console import Console

from qeval_plugins.core.errors import QevalError
from qeval_plugins.report.demo_table import demo_grid, demo_run, print_demo
from qeval_plugins.report.sqnr import kl_figure

MIB = 2**20
SNAPSHOT = Path(__file__).resolve().parents[1] / "snapshots" / "demo_120.txt"


def results(
    spec: str,
    facts: float,
    cloze: float,
    ppl: float,
    rouge: tuple[float, float],
    kl: tuple[float, float, float],
    mib: float,
    seconds: float,
):
    """lm-eval ``simple_evaluate`` results of one demo run, as the qeval backend records them:
    ``rouge`` at temperatures 0 and 1, ``kl`` its mean, median and 99th percentile."""
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
            **{
                f"qeval_demo_temperature_{t}": {
                    "rougeL,none": value,
                    "rougeL_stderr,none": "N/A",
                    "reference_rougeL,none": rouge[0],
                    "distinct_1,none": 0.5,
                }
                for t, value in (("0.0", rouge[0]), ("1.0", rouge[1]))
            },
            "qeval_sqnr": {
                "logit_sqnr_db,none": 20.0,
                "kl_mean,none": kl[0],
                "kl_median,none": kl[1],
                "kl_p99,none": kl[2],
                "top1_agreement,none": 0.9,
            },
        },
        "group_subtasks": {
            "qeval_demo": ["qeval_demo_facts", "qeval_demo_cloze", "qeval_demo_ppl"],
            "qeval_demo_temperature": ["qeval_demo_temperature_0.0", "qeval_demo_temperature_1.0"],
            "qeval_demo_divergence": ["qeval_sqnr"],
        },
        "higher_is_better": {
            "qeval_demo_facts": {"acc": True, "acc_norm": True},
            "qeval_demo_cloze": {"exact_match": True},
            "qeval_demo_ppl": {"word_perplexity": False},
            "qeval_demo_temperature_0.0": {"rougeL": True, "distinct_1": True},
            "qeval_demo_temperature_1.0": {"rougeL": True, "distinct_1": True},
            "qeval_sqnr": {"kl_mean": False, "kl_median": False, "kl_p99": False},
        },
        "config": {
            "model": "qeval",
            "model_args": f"pretrained=qeval-tiny,{spec.replace(':', ',')}",
            "qeval": {"spec": spec, "param_bytes_after": mib * MIB, "quantize_seconds": seconds},
        },
        "date": 1_700_000_000.0,
    }


# the figures of a full `qeval demo` on qeval-tiny, load times included
RUNS = [
    ("none", 1.0, 0.85, 1.6927, (0.7252, 0.5871), (5.1e-16, 1.1e-16, 5.4e-15), 5.0, 0.59),
    ("bnb-int8", 1.0, 0.85, 1.6924, (0.7252, 0.5965), (1.7e-05, 6.3e-07, 1.6e-04), 2.77, 0.08),
    ("bnb-nf4", 1.0, 0.85, 1.6934, (0.7252, 0.5833), (9.2e-04, 2.4e-05, 0.0078), 2.43, 0.03),
    ("bnb-fp4-dq", 1.0, 0.85, 1.6919, (0.7085, 0.5914), (1.9e-03, 5.7e-05, 0.0210), 2.42, 0.03),
    ("rtn:bits=4", 1.0, 0.85, 1.6933, (0.7153, 0.5980), (1.0e-03, 4.6e-05, 0.0118), 5.0, 0.03),
    ("rtn:format=mxfp4", 1.0, 0.85, 1.6946, (0.7414, 0.5962), (1.2e-3, 5.7e-5, 0.019), 5.0, 0.02),
    ("rtn:bits=3", 0.9891, 0.85, 1.6993, (0.7252, 0.5759), (0.0092, 4.3e-04, 0.0828), 5.0, 0.01),
    ("rtn:bits=2", 0.8478, 0.525, 7.1568, (0.1790, 0.1210), (1.1483, 0.5323, 6.3252), 5.0, 0.01),
]


def runs(specs=RUNS):
    return [demo_run(spec, results(spec, *figures)) for spec, *figures in specs]


def test_an_80_column_terminal_gets_every_figure_whole():
    """Ten columns do not fit 80: the table splits into blocks that repeat the run column
    instead of cutting numbers to '1.0…' (as the rich table did)."""
    console = Console(width=80, record=True, color_system=None)
    print_demo(demo_grid(runs()), console)
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert text.count("rtn:bits=2") == 2  # once per block of columns
    assert all(figure in text for figure in ("0.848", "(-0.152)", "0.532", "6.325", "7.157"))


def test_demo_table_text_is_the_snapshot():
    """The text the demo prints at COLUMNS=120 for :data:`RUNS`."""
    console = Console(width=120, record=True, color_system=None)
    print_demo(demo_grid(runs()), console)
    text = console.export_text()
    if os.environ.get("QEVAL_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(text, encoding="utf-8")
    assert text == SNAPSHOT.read_text(encoding="utf-8")


def test_columns_and_their_directions():
    grid = demo_grid(runs())
    assert grid.headers == [
        "quantizer",
        "facts acc ↑",
        "cloze EM ↑",
        "word ppl ↓",
        "ROUGE-L T=0 ↑",
        "ROUGE-L T=1 ↑",
        "KL median ↓",
        "KL p99 ↓",
        "MiB",
        "load s",
    ]


def test_changes_are_coloured_by_the_metric_direction():
    grid = demo_grid(runs())
    none, int8, *_, bits2 = grid.rows
    shown = [[("1.000", "")], [("0.850", "")], [("1.693", "")], [("0.725", "")], [("0.587", "")]]
    assert none[1:6] == shown  # no change shown
    assert int8[3] == [("1.692", ""), ("(-0.000)", "green")]  # lower perplexity: not worse
    assert int8[5] == [("0.597", ""), ("(+0.009)", "green")]  # higher ROUGE-L: not worse
    assert bits2[1] == [("0.848", ""), ("(-0.152)", "red")]  # lower accuracy: worse
    assert bits2[3] == [("7.157", ""), ("(+5.464)", "red")]  # higher perplexity: worse
    assert bits2[4] == [("0.179", ""), ("(-0.546)", "red")]  # lower ROUGE-L at T=0: worse
    assert bits2[5] == [("0.121", ""), ("(-0.466)", "red")]  # and at T=1
    assert bits2[8:] == [[("5.00", "")], [("0.01", "")]]


def test_kl_columns_show_median_and_p99_without_changes():
    """The baseline's KL is float rounding (0); small KL keeps two significant digits."""
    rows = demo_grid(runs()).rows
    assert [row[6:8] for row in rows] == [
        [[("0", "")], [("0", "")]],
        [[("6.3e-07", "")], [("0.00016", "")]],
        [[("2.4e-05", "")], [("0.0078", "")]],
        [[("5.7e-05", "")], [("0.021", "")]],
        [[("4.6e-05", "")], [("0.012", "")]],
        [[("5.7e-05", "")], [("0.019", "")]],
        [[("0.00043", "")], [("0.083", "")]],
        [[("0.532", "")], [("6.325", "")]],
    ]


def test_kl_column_falls_back_to_kl_mean_when_no_run_has_the_median():
    """qeval_sqnr results written before it reported kl_median still fill the column."""
    data = [results(spec, *figures) for spec, *figures in RUNS]
    for one in data:
        del one["results"]["qeval_sqnr"]["kl_median,none"]
    grid = demo_grid([demo_run(spec, one) for (spec, *_), one in zip(RUNS, data, strict=True)])
    assert grid.headers[6:8] == ["KL mean ↓", "KL p99 ↓"]
    assert grid.rows[-1][6] == [("1.148", "")]  # rtn:bits=2's kl_mean


def test_a_topk_kl_is_marked_a_lower_bound():
    """A demo run whose qeval_sqnr fell back to top-k KL (its cache over kl_cache_budget): its KL
    figures are lower bounds of the exact KL, shown ``≥``; exact ones are as they are."""
    data = [results(spec, *figures) for spec, *figures in RUNS[-2:]]
    data[1]["config"]["qeval"]["sqnr"] = {"divergence": {"kl_mode": "topk"}}
    data[0]["config"]["qeval"]["sqnr"] = {"divergence": {"kl_mode": "exact"}}
    grid = demo_grid([demo_run(spec, one) for (spec, *_), one in zip(RUNS[-2:], data, strict=True)])
    assert [row[6:8] for row in grid.rows] == [
        [[("0.00043", "")], [("0.083", "")]],
        [[("≥ 0.532", "")], [("≥ 6.325", "")]],
    ]
    assert grid.rows[1][1] == [("0.848", "")]  # not a KL: never marked


def test_an_exact_kl_within_its_error_bound_is_zero():
    """Exact KL (the default) reads the reference's log-probabilities from 16-bit codes: the
    baseline's KL to itself is their rounding (3e-9 nats on qeval-tiny), within the error bound
    the run states (kl_error_bound_max, 1e-7): shown as 0; a KL above the bound is shown."""
    data = [results(spec, *figures) for spec, *figures in RUNS[:2]]
    data[0]["results"]["qeval_sqnr"].update({"kl_median,none": 1.3e-11, "kl_p99,none": 2.1e-09})
    for one in data:
        divergence = {"kl_mode": "exact", "kl_error_bound_max": 1.02e-07}
        one["config"]["qeval"]["sqnr"] = {"divergence": divergence}
    grid = demo_grid([demo_run(spec, one) for (spec, *_), one in zip(RUNS[:2], data, strict=True)])
    assert [row[6:8] for row in grid.rows] == [
        [[("0", "")], [("0", "")]],
        [[("6.3e-07", "")], [("0.00016", "")]],
    ]


def test_kl_figure():
    assert [
        kl_figure(v) for v in (0.0, 5e-16, -2e-12, 6.3e-07, 0.00043, 0.0099, 0.532, 6.32522)
    ] == [
        "0",
        "0",
        "0",
        "6.3e-07",
        "0.00043",
        "0.0099",
        "0.532",
        "6.325",
    ]


def test_without_a_none_run_nothing_is_compared_and_missing_tasks_are_dashes():
    data = results("rtn:bits=4", 1.0, 1.0, 1.7, (0.7, 0.6), (0.1, 0.01, 1.0), 5.0, 0.1)
    del data["results"]["qeval_demo_cloze"]
    grid = demo_grid([demo_run("rtn:bits=4", data), *runs(RUNS[1:2])])
    assert grid.rows[0][2] == [("-", "")]
    assert grid.rows[1][1] == [("1.000", "")]  # no baseline: no (Δ)
    assert grid.title.endswith("(no none run: no changes)")  # it said "(change vs none)"


def test_a_run_without_metrics_is_a_one_line_error():
    with pytest.raises(QevalError, match="the demo run of none gave no results"):
        demo_run("none", {"results": {"qeval_demo": {"alias": "qeval_demo"}}, "config": {}})
