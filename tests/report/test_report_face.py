"""What the summary and SQNR tables show beyond the numbers: per-layer bars that fit 80 columns
on each run's own scale, no quantization time for a run that quantizes nothing, slow throughputs
in significant digits, and a note on throughputs measured under different conditions.

Fixtures: tests/data/report/qeval-tiny (none: 1,200 tokens/s, quantize_seconds 0.50 — its load
time; rtn:bits=4: 1,153.8 tokens/s, 1.25 s; bnb-nf4; rtn:bits=2), copied and edited per test.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from qeval_plugins.report.compare import compare
from qeval_plugins.report.load import load_runs
from qeval_plugins.report.render import render
from qeval_plugins.report.sqnr import SPARK, sqnr_runs
from qeval_plugins.report.summary import THROUGHPUT_NOTE, rate_text, summary_grid

DATA = Path(__file__).resolve().parents[1] / "data" / "report" / "qeval-tiny"
RTN4 = "rtn-bits4/results_2026-11-23T10-05-00.000000.json"
NONE = "none/results_2026-11-23T10-00-00.000000.json"


def terminal(report, width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    render(report, console)
    return console.export_text().splitlines()


@pytest.fixture
def tiny(tmp_path):
    shutil.copytree(DATA, tmp_path / "tiny")
    return tmp_path / "tiny"


def report_of(folder: Path):
    runs, warnings = load_runs([folder])
    return compare(runs, warnings=warnings)


def edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def cells(grid, label: str) -> dict[str, str]:
    """The texts of ``label``'s row by one-line header, a cell's lines joined by " | "."""
    row = next(row for row in grid.rows if row[0][0][0] == label)
    headers = [header.replace("\n", " ") for header in grid.headers]
    return {h: " | ".join(text for text, _ in cell) for h, cell in zip(headers, row, strict=True)}


@pytest.mark.parametrize("width", [80, 120])
def test_the_per_layer_bars_fit_beside_their_run_and_figures(width):
    report = report_of(DATA)
    lines = terminal(report, width)
    assert max(map(len, lines)) <= width
    [comparison] = [c for c in report.comparisons if c.name == "qeval-tiny"]
    for run in sqnr_runs(comparison):
        finite = [v for v in run.layers.values() if v != float("inf")]
        if not finite:
            continue
        # one line: label, worst dB, the bar, best dB (the bar is no block of its own)
        [line] = [line for line in lines if line.startswith(run.label) and SPARK[0] in line]
        assert f"{min(finite):.2f}" in line and f"{max(finite):.2f}" in line


def test_each_run_draws_its_layers_on_its_own_scale():
    """bnb-nf4's layers lie within 0.2 dB of each other, rtn:bits=4's within 2.7 dB: on one scale
    for both, bnb-nf4 drew a flat line of █; on its own, each shows its worst and best layer."""
    lines = terminal(report_of(DATA), 120)
    for label in ("bnb-nf4", "rtn:bits=4"):
        [line] = [line for line in lines if line.startswith(label) and SPARK[0] in line]
        bar = "".join(char for char in line if char in SPARK)
        assert bar.count(SPARK[0]) >= 1 and bar.count(SPARK[-1]) >= 1 and len(set(bar)) > 2
    assert any("each run on its own scale" in line for line in lines)


def test_a_run_without_quantization_has_no_quantization_time():
    [comparison] = [c for c in report_of(DATA).comparisons if c.name == "qeval-tiny"]
    grid = summary_grid(comparison)
    assert cells(grid, "none")["quant. s"] == "—"  # its recorded 0.50 s is its load time
    assert cells(grid, "rtn:bits=4")["quant. s"] == "1.25"


@pytest.mark.parametrize(
    "rate, text",
    [(0.33, "0.33"), (0.0333, "0.033"), (4.56, "4.6"), (12.4, "12"), (1153.8, "1,154"), (0, "0")],
)
def test_rates_keep_two_significant_digits_below_10(rate, text):
    assert rate_text(rate) == text


def test_a_slow_run_reads_as_its_rate_not_zero(tiny):
    def slow(data):
        data["config"]["qeval"]["throughput"]["loglikelihood"]["tokens_per_s"] = 0.33

    edit(tiny / RTN4, slow)
    [comparison] = [c for c in report_of(tiny).comparisons if c.name == "qeval-tiny"]
    assert cells(summary_grid(comparison), "rtn:bits=4")["tokens/s"] == "0.33 ll"


def test_throughputs_under_different_conditions_get_a_warning(tiny):
    report = report_of(tiny)
    assert not any("tokens/s were measured" in warning for warning in report.warnings)
    [comparison] = [c for c in report.comparisons if c.name == "qeval-tiny"]
    assert THROUGHPUT_NOTE in summary_grid(comparison).caption  # these files record no load

    def on_gpu(data):
        data["config"]["device"] = "cuda:0"
        data["config"]["batch_size"] = 16

    for path in [*tiny.glob("rtn-bits4*/*.json")]:  # its two files, merged
        edit(path, on_gpu)
    [warning] = [w for w in report_of(tiny).warnings if "tokens/s were measured" in w]
    assert "devices (cpu: none, bnb-nf4; cuda:0: rtn:bits=4)" in warning
    assert "batch sizes (" in warning and "16: rtn:bits=4" in warning
    assert warning.startswith("qeval-tiny: ")


def machine_load(load: float, measure: str, cpus: int = 2):
    def change(data):
        data["config"]["qeval"]["machine_load"] = {measure: load, "cpus": cpus}

    return change


def set_loads(folder: Path, loads: dict[str, float], measure: str = "load_average") -> None:
    """Record ``machine_load`` (on 2 CPUs) in every results file of each run folder named."""
    for name, load in loads.items():
        for path in (folder / name).glob("*.json"):
            edit(path, machine_load(load, measure))


def test_throughputs_under_very_different_load_get_a_warning(tiny):
    set_loads(tiny, {"none": 1.0, "rtn-bits4": 5.9, "bnb-nf4": 1.2})
    [warning] = [w for w in report_of(tiny).warnings if "tokens/s were measured" in w]
    assert "machine loads (load average per CPU: none 0.5; bnb-nf4 0.6; rtn:bits=4 3)" in warning
    [comparison] = [c for c in report_of(tiny).comparisons if c.name == "qeval-tiny"]
    assert THROUGHPUT_NOTE not in summary_grid(comparison).caption  # every load is recorded


def test_throughputs_under_like_load_get_no_note(tiny):
    set_loads(tiny, {"none": 1.0, "rtn-bits4": 1.4, "bnb-nf4": 1.2})  # 0.5 .. 0.7 per CPU
    report = report_of(tiny)
    assert not any("tokens/s were measured" in warning for warning in report.warnings)
    [comparison] = [c for c in report.comparisons if c.name == "qeval-tiny"]
    assert THROUGHPUT_NOTE not in summary_grid(comparison).caption


def test_other_processes_cpu_use_is_compared_when_every_run_measured_it(tiny):
    # a scan beside the bnb-nf4 run: one other CPU busy of two
    set_loads(tiny, {"none": 0.02, "rtn-bits4": 0.1, "bnb-nf4": 1.0}, measure="other_cpus")
    [warning] = [w for w in report_of(tiny).warnings if "tokens/s were measured" in w]
    assert "(other processes' CPU use per CPU: none 0.01; bnb-nf4 0.5; rtn:bits=4 0.05)" in warning
    set_loads(tiny, {"bnb-nf4": 0.3}, measure="other_cpus")  # 0.15 per CPU: within the gap
    assert not any("tokens/s were measured" in w for w in report_of(tiny).warnings)


def test_loads_measured_two_ways_are_not_compared(tiny):
    set_loads(tiny, {"none": 0.0, "bnb-nf4": 0.1}, measure="other_cpus")
    set_loads(tiny, {"rtn-bits4": 5.9})  # a load average: counts this process, smoothed
    report = report_of(tiny)
    assert not any("tokens/s were measured" in warning for warning in report.warnings)
    [comparison] = [c for c in report.comparisons if c.name == "qeval-tiny"]
    assert THROUGHPUT_NOTE in summary_grid(comparison).caption


@pytest.mark.parametrize("recorded", [{"load_average": "high", "cpus": 2}, {"cpus": 0}, None])
def test_a_load_that_is_not_a_number_counts_as_unrecorded(tiny, recorded):
    set_loads(tiny, {"none": 1.0, "bnb-nf4": 5.0})
    for path in (tiny / "rtn-bits4").glob("*.json"):
        edit(path, lambda data: data["config"]["qeval"].update(machine_load=recorded))
    [comparison] = [c for c in report_of(tiny).comparisons if c.name == "qeval-tiny"]
    assert THROUGHPUT_NOTE in summary_grid(comparison).caption
    [warning] = [w for w in report_of(tiny).warnings if "tokens/s were measured" in w]
    assert "per CPU: none 0.5; bnb-nf4 2.5)" in warning


def test_one_timed_run_gets_no_throughput_note(tiny):
    for name in ("rtn-bits4", "bnb-nf4"):
        for path in (tiny / name).glob("*.json"):
            edit(path, lambda data: data["config"]["qeval"].pop("throughput", None))
    [comparison] = [c for c in report_of(tiny).comparisons if c.name == "qeval-tiny"]
    assert THROUGHPUT_NOTE not in summary_grid(comparison).caption
