"""``qeval run`` logs samples by default, keeps them next to its ``results.json`` (an older
attempt's removed), and ``qeval report`` pairs them; ``--no-log-samples`` opts out."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from rich.console import Console

from qeval_plugins.cli import main as main_module
from qeval_plugins.cli import report as report_module
from qeval_plugins.report.compare import compare
from qeval_plugins.report.load import load_runs
from qeval_plugins.sweep import driver as driver_module
from qeval_plugins.sweep import unit as sweep_module
from qeval_plugins.sweep.driver import sweep

SYNTHETIC = Path(__file__).resolve().parents[1] / "data" / "report-paired" / "synthetic"
SOURCES = {"qeval-tiny__none": "none", "qeval-tiny__rtn_bits-4": "rtn-bits4"}
# Stands in for lm_eval: copies a synthetic run's results (and, given --log_samples, its samples)
# into the output folder as lm_eval names them, dated with the given date.
FAKE_LM_EVAL = """
import re, shutil, sys
from pathlib import Path
partial, source, date, args = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
out = partial / "qeval-tiny"
out.mkdir(parents=True)
dated = re.compile(r"\\d{4}-\\d{2}-\\d{2}T[\\d.-]+(?=\\.json)")
for path in source.iterdir():
    if path.name.startswith("results_") or "--log_samples" in args:
        shutil.copy(path, out / dated.sub(date, path.name))
"""


def fake_lm_eval(tmp_path: Path, date: str, seen: list):
    script = tmp_path / "fake_lm_eval.py"
    script.write_text(FAKE_LM_EVAL)

    def command(unit, partial):
        seen.append(list(unit.extra))
        source = SYNTHETIC / SOURCES[unit.directory.name]
        return [sys.executable, str(script), str(partial), str(source), date, *unit.extra]

    return command


def run_sweep(output: Path, **options) -> list[str]:
    console = Console(file=io.StringIO(), width=200)
    specs = ["none", "rtn:bits=4"]
    return sweep(
        ["qeval-tiny"], specs, ["qeval_demo_facts"], output, "cpu", [], console=console, **options
    )


def facts_score(output: Path):
    runs, warnings = load_runs([output])
    report = compare(runs, warnings=warnings)
    [comparison] = report.comparisons
    [row] = [row for row in comparison.rows if not row.is_baseline]
    return row.scores["qeval_demo_facts"], report.warnings


def test_qeval_run_logs_samples_and_the_report_pairs_them(tmp_path, monkeypatch):
    seen: list = []
    output = tmp_path / "runs"
    monkeypatch.setattr(
        sweep_module, "lm_eval_command", fake_lm_eval(tmp_path, "2027-01-01T00-00-00.1", seen)
    )
    assert run_sweep(output, force=False) == []
    assert all("--log_samples" in extra for extra in seen) and len(seen) == 2
    folder = output / "qeval-tiny__rtn_bits-4"
    assert sorted(path.name for path in folder.glob("*.json*")) == [
        "qeval_run.json",
        "results.json",
        "samples_qeval_demo_facts_2027-01-01T00-00-00.1.jsonl",
    ]
    score, warnings = facts_score(output)
    assert (score.significance_method, score.significant, warnings) == ("paired", True, [])
    # rerun without samples: the older attempt's samples go with its results
    seen.clear()
    monkeypatch.setattr(
        sweep_module, "lm_eval_command", fake_lm_eval(tmp_path, "2027-02-01T00-00-00.1", seen)
    )
    assert run_sweep(output, force=True, log_samples=False) == []
    assert seen and all("--log_samples" not in extra for extra in seen)
    assert not list(output.rglob("samples_*.jsonl"))
    score, warnings = facts_score(output)
    assert (score.significance_method, score.significant, warnings) == ("screen", False, [])


def test_no_log_samples_option(monkeypatch):
    """``qeval run --no-log-samples`` reaches the sweep; by default samples are logged."""
    calls = []
    monkeypatch.setattr(driver_module, "sweep", lambda **kw: calls.append(kw["log_samples"]) or [])
    monkeypatch.setattr(report_module, "print_report", lambda *args, **kwargs: None)
    base = ["run", "--model", "qeval-tiny", "--quantizers", "none", "--tasks", "t", "--output", "o"]
    assert main_module.main(base) == 0
    assert main_module.main([*base, "--no-log-samples", "--limit", "3"]) == 0
    assert calls == [True, False]
