"""lm-eval's printed table of qeval_sqnr shows the headline metrics only; every other metric lands
in the results JSON's qeval block, where qeval report reads it as before."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import lm_eval_args, run_cli

from qeval_plugins.evals.sqnr.engine import BLOCK_METRICS, TABLE_METRICS
from qeval_plugins.report.load import load_runs


def table_metrics(stdout: str) -> list[str]:
    """The Metric column of every row of lm-eval's Markdown results table in ``stdout``."""
    rows = [line.split("|") for line in stdout.splitlines() if line.startswith("|")]
    column = rows[0].index(next(cell for cell in rows[0] if cell.strip() == "Metric"))
    return [row[column].strip() for row in rows[2:]]


def as_old_style(data: dict) -> dict:
    """``data`` as a results file from before the move: every metric in ``results``, written as
    lm-eval writes a metric of a custom aggregation (``name,none``, stderr "N/A")."""
    old = json.loads(json.dumps(data))
    moved = old["config"]["qeval"]["sqnr"].pop("metrics")
    for name, value in moved.items():
        old["results"]["qeval_sqnr"] |= {f"{name},none": value, f"{name}_stderr,none": "N/A"}
    return old


@pytest.fixture(scope="module")
def cli_run(tiny_model_dir, tasks_dir, tmp_path_factory):
    """The stock lm_eval command line of qeval_sqnr (rtn 4 bits), its output and results JSON."""
    out = tmp_path_factory.mktemp("sqnr-table")
    metadata = json.dumps({"max_tokens": 48, "logit_positions": 64, "activation_tokens": 64})
    done = run_cli(
        [
            "lm_eval",
            *lm_eval_args(
                f"pretrained={tiny_model_dir},quantizer=rtn,bits=4",
                "qeval_sqnr",
                tasks_dir,
                *("--limit", "3", "--metadata", metadata, "--output_path", str(out)),
            ),
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [path] = out.rglob("results*.json")
    return done.stdout, path


def test_the_printed_table_shows_the_headline_metrics_only(cli_run):
    stdout, path = cli_run
    assert sorted(table_metrics(stdout)) == sorted(TABLE_METRICS)  # 8 rows, was 55
    data = json.loads(path.read_text())
    results = data["results"]["qeval_sqnr"]
    assert {key.split(",")[0] for key in results if key.endswith(",none")} == {
        *TABLE_METRICS,
        *(f"{name}_stderr" for name in TABLE_METRICS),
    }
    moved = data["config"]["qeval"]["sqnr"]["metrics"]
    assert list(moved) == list(BLOCK_METRICS) and not set(moved) & set(TABLE_METRICS)
    assert len(moved) == 47 and {"kl_max", "ppl_quantized", "activation_sqnr_min_db"} <= set(moved)


def test_qeval_report_reads_every_metric_from_the_table_and_the_block(cli_run):
    _, path = cli_run
    data = json.loads(path.read_text())
    [run], warnings = load_runs([path])
    metrics = run.metrics["qeval_sqnr"]
    assert set(metrics) == {*TABLE_METRICS, *BLOCK_METRICS}
    stored = {
        **{key.split(",")[0]: value for key, value in data["results"]["qeval_sqnr"].items()},
        **data["config"]["qeval"]["sqnr"]["metrics"],
    }
    for name, metric in metrics.items():
        assert metric.value == float(stored[name]), name
    # the task's standard errors are read from the block for a metric in the table
    assert metrics["kl_mean"].stderr == stored["kl_mean_err"] > 0
    assert metrics["ppl_ratio"].stderr == stored["ppl_ratio_err"] > 0
    assert not any("no stderr" in warning for warning in warnings)


def test_qeval_report_is_the_same_for_an_old_and_a_new_results_file(cli_run, tmp_path):
    """A file with every metric in ``results`` (before the move) and the same run written now
    give the same report: the same metrics, values, errors and directions, the same output."""
    _, path = cli_run
    new_file = tmp_path / "runs" / path.name
    new_file.parent.mkdir()
    shutil.copy(path, new_file)
    new_runs, new_warnings = load_runs([new_file])
    new_report = run_cli(["qeval", "report", str(new_file.parent), "--format", "json", "-o", "-"])

    new_file.write_text(json.dumps(as_old_style(json.loads(path.read_text()))))
    old_runs, old_warnings = load_runs([new_file])
    old_report = run_cli(["qeval", "report", str(new_file.parent), "--format", "json", "-o", "-"])

    assert old_runs[0].metrics == new_runs[0].metrics and old_warnings == new_warnings
    assert len(old_runs[0].metrics["qeval_sqnr"]) == len(TABLE_METRICS) + len(BLOCK_METRICS)
    assert new_report.returncode == old_report.returncode == 0, old_report.stderr
    assert old_report.stdout == new_report.stdout and "kl_p999" in new_report.stdout
