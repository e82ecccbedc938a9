"""Every view of ``qeval report`` pinned as text: the terminal at 120 and 80 columns, the Markdown,
CSV, JSON and HTML exports and the chart names, for three reports:

* ``report``: tests/data/report (summary and SQNR tables, warnings), read from tests/;
* ``report_sensitivity``: tests/data/report/sensitivity/sens-model (the sampling sweeps);
* ``full``: the qeval-tiny runs with hand-written ``qeval_outliers`` figures added to ``none``
  and ``bnb-nf4`` (:mod:`test_outliers_report`'s) and a ``scan.json`` of 12 units beside them,
  through ``qeval report`` itself (temporary paths written ``<tmp>``).

A change to any view shows here as a diff; ``QEVAL_UPDATE_SNAPSHOTS=1`` rewrites the files.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from test_outliers_report import NF4_RUN, NF4_VALUES, NONE_RUN, NONE_VALUES, block, with_outliers
from test_report import check_snapshot

from qeval_plugins.cli.main import main
from qeval_plugins.report.compare import compare
from qeval_plugins.report.export import FORMATS, export
from qeval_plugins.report.load import load_runs
from qeval_plugins.report.render import render

TESTS = Path(__file__).resolve().parents[1]
SNAPSHOTS = TESTS / "snapshots"
EXTENSIONS = {"markdown": "md", "csv": "csv", "json": "json", "html": "html"}
WIDTHS = (120, 80)


def terminal(report, width: int) -> str:
    """The report as plain terminal text ``width`` columns wide, trailing spaces stripped."""
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    render(report, console)
    return "".join(line.rstrip() + "\n" for line in console.export_text().splitlines())


def library_report(name: str):
    """The ``report`` or ``report_sensitivity`` report, loaded with paths relative to tests/."""
    previous = os.getcwd()
    os.chdir(TESTS)
    try:
        paths = (
            ["data/report"]
            if name == "report"
            else sorted(
                str(path.relative_to(TESTS))
                for path in (TESTS / "data/report/sensitivity/sens-model").glob("*.json")
            )
        )
        runs, warnings = load_runs(paths)
    finally:
        os.chdir(previous)
    return compare(runs, warnings=warnings)


@pytest.mark.parametrize("name", ["report", "report_sensitivity"])
@pytest.mark.parametrize("width", WIDTHS)
def test_terminal(name, width):
    check_snapshot(terminal(library_report(name), width), SNAPSHOTS / f"{name}_{width}.txt")


@pytest.mark.parametrize("name", ["report", "report_sensitivity"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_exports(name, fmt, tmp_path):
    written = export(library_report(name), fmt, tmp_path / f"report.{EXTENSIONS[fmt]}")
    check_snapshot(
        written.read_text(encoding="utf-8"),
        SNAPSHOTS / written.name.replace("report.", f"{name}_export.", 1),
    )


def scan_file() -> dict:
    """A ``qeval scan`` result of 12 blocks (2 more than the report lists), 2 to keep."""
    units = [
        {
            "rank": rank,
            "name": f"model.layers.{12 - rank}",
            "params": 1_000_000 + rank,
            "kl_mean": round(0.5 / rank, 4),
            "delta_nll": round(0.1 / rank, 4),
        }
        for rank in range(1, 13)
    ]
    return {
        "qeval_scan": 1,
        "model": "qeval-tiny",
        "spec": "rtn:bits=3:group_size=0",
        "unit": "block",
        "units": units,
        "recommendation": {"units": ["model.layers.11", "model.layers.10"], "bits_per_param": 4.5},
        "verification": {
            "all_quantized": {"kl_mean": 0.9},
            "recommended": {"kl_mean": 0.2},
            "least_sensitive": {"kl_mean": 0.8},
            "improves": True,
            "beats_least_sensitive": False,
        },
    }


@pytest.fixture
def full(tmp_path):
    """tests/data/report/qeval-tiny with outlier figures in two runs and a scan.json."""
    runs = tmp_path / "runs"
    shutil.copytree(TESTS / "data" / "report" / "qeval-tiny", runs)
    for source, values, dims in (
        (NONE_RUN, NONE_VALUES, [5, 40]),
        (NF4_RUN, NF4_VALUES, [5, 40, 77]),
    ):
        target = runs / source.relative_to(NONE_RUN.parents[1])
        target.write_text(json.dumps(with_outliers(source, values, block([5, 40], dims))))
    (runs / "scan").mkdir()
    (runs / "scan" / "scan.json").write_text(json.dumps(scan_file()))
    return tmp_path


def cli_text(tmp_path: Path, text: str) -> str:
    """``text`` with ``tmp_path`` (as is, or Markdown-escaped) written ``<tmp>``, trailing
    spaces stripped."""
    for shown in (str(tmp_path), str(tmp_path).replace("_", "\\_")):
        text = text.replace(shown, "<tmp>")
    return "".join(line.rstrip() + "\n" for line in text.splitlines())


@pytest.mark.parametrize("width", WIDTHS)
def test_full_terminal(full, width, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(width))
    assert main(["report", str(full / "runs")]) == 0
    check_snapshot(cli_text(full, capsys.readouterr().out), SNAPSHOTS / f"full_{width}.txt")


@pytest.mark.parametrize("fmt", FORMATS)
def test_full_exports(full, fmt, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    out = full / f"report.{EXTENSIONS[fmt]}"
    assert main(["report", str(full / "runs"), "--out", str(out)]) == 0
    capsys.readouterr()
    text = cli_text(full, out.read_text(encoding="utf-8"))
    check_snapshot(text, SNAPSHOTS / f"full_export.{EXTENSIONS[fmt]}")


def test_full_chart_names(full, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["report", str(full / "runs"), "--plot", str(full / "charts")]) == 0
    capsys.readouterr()
    # a scan chart's name ends in 8 hex digits of its file's (temporary) path
    names = sorted(
        re.sub(r"^(scan_.*)-[0-9a-f]{8}\.png$", r"\1-HASH.png", path.name)
        for path in (full / "charts").iterdir()
    )
    check_snapshot("".join(f"{name}\n" for name in names), SNAPSHOTS / "full_charts.txt")


def test_a_folder_of_scans_alone_gives_no_missing_results_warning(full, capsys, monkeypatch):
    """``qeval report runs scan`` warned "scan: no results*.json files in this folder" (in the
    exports too) although that folder's scan.json is read and shown."""
    monkeypatch.setenv("COLUMNS", "120")
    out = full / "report.md"
    assert main(["report", str(full / "runs"), str(full / "runs" / "scan"), "-o", str(out)]) == 0
    shown = capsys.readouterr()
    assert "Layer sensitivity" in shown.out
    for text in (shown.out, shown.err, out.read_text(encoding="utf-8")):
        assert "no results*.json" not in text
    assert main(["report", str(full / "runs" / "scan")]) == 0
    assert "no results*.json" not in capsys.readouterr().out


@pytest.mark.parametrize("name", ["md", "MARKDOWN", "markdown"])
def test_format_takes_the_names_out_takes_as_extensions(full, name, capfd, monkeypatch):
    """``--format md`` was refused (invalid choice) while ``--out x.md`` worked."""
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["report", str(full / "runs"), "--format", name, "--out", "-"]) == 0
    exported = cli_text(full, capfd.readouterr().out)  # written to descriptor 1
    assert exported == (SNAPSHOTS / "full_export.md").read_text(encoding="utf-8")
