"""compare runs in one table (rich, exports, plots)

Reads lm-eval results files and qeval scan's scan.json files (given, or in folders searched
recursively), compares every run of a model with its baseline and prints the tables; --out
exports them (Markdown, CSV, JSON, HTML), --plot draws PNG charts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qeval_plugins.core.errors import QevalError, format_error
from qeval_plugins.core.text import printable
from qeval_plugins.report.file_formats import FORMAT_NAMES

if TYPE_CHECKING:
    from qeval_plugins.report.comparison import Report

EXTENSIONS = {"markdown": "md"}  # a format's file extension where it is not the format's name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``qeval report``'s arguments: paths, ``--baseline``, ``--format``, ``--out``, ``--plot``."""
    parser.add_argument("paths", nargs="+", help="results files or folders (searched recursively)")
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="SPEC",
        help="spec of the run every other run of a model is compared with, e.g. rtn:bits=8 "
        "(default: the model's unquantized run, quantizer none, else its plain --model hf run)",
    )
    parser.add_argument(
        "--format",
        type=str.lower,
        choices=tuple(FORMAT_NAMES),
        default=None,
        metavar="{md,csv,json,html}",
        help="export format (markdown and htm also work), written to --out, else to "
        "qeval-report.EXT (default: --out's extension; without --out, no export)",
    )
    parser.add_argument(
        "--out",
        "--output",
        "-o",
        dest="out",
        default=None,
        help="write the report to this file in an existing folder, or to stdout with '-'; its "
        "extension (.md, .csv, .json, .html) sets the format unless --format is given (default "
        "qeval-report.EXT)",
    )
    parser.add_argument("--plot", default=None, metavar="DIR", help="write PNG charts into DIR")


def run(args: argparse.Namespace) -> int:
    """Compare runs: rich table, optional export and plots.

    The export format is ``--format``, else the ``--out`` file's extension. A missing input, an
    ``--out`` that names a folder, lies in a missing folder or has an unknown extension, and a
    ``--baseline`` that names no run are one error line each, before the report is printed.
    ``wrote PATH`` lines go to stderr; an export to standard output (``--out -``,
    ``/dev/stdout``) gets stdout to itself: the table goes to stderr, and no ``wrote`` line.
    """
    from rich.console import Console

    from qeval_plugins.report.export import export, format_for
    from qeval_plugins.report.output import destination, is_stdout
    from qeval_plugins.report.plot import plot

    missing = [path for path in args.paths if not Path(path).exists()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise QevalError(
            f"{printable(missing[0])}: no such file or folder{more}; pass results files or "
            "folders that exist"
        )
    out = destination(args.out) if args.out else None
    fmt = FORMAT_NAMES[args.format] if args.format else (format_for(out) if out else None)
    if fmt and out is None:
        out = destination(f"qeval-report.{EXTENSIONS.get(fmt, fmt)}")
    to_stdout = out is not None and is_stdout(out)
    console = Console(stderr=True) if to_stdout else Console()
    report = print_report(args.paths, args.baseline, console, empty_is_error=True)
    if report is None:
        return 1
    if fmt:
        written = export(report, fmt, out)
        if not to_stdout:
            print(f"wrote {printable(str(written))}", file=sys.stderr)
    for path in plot(report, args.plot) if args.plot else []:
        print(f"wrote {printable(str(path))}", file=sys.stderr)
    return 0


def print_report(
    paths: Sequence[str | Path],
    baseline: str | None,
    console: Any,
    empty_is_error: bool = False,
    skip_empty: bool = False,
) -> Report | None:
    """Load, compare and print the runs and scans in ``paths``; returns the report. With
    ``empty_is_error``, paths that give neither a run nor a scan print the reasons (the load
    warnings, when there were results files) and one error line on stderr instead, and return
    None; with ``skip_empty``, they print nothing and return None."""
    from qeval_plugins.report.compare import compare
    from qeval_plugins.report.inputs import load_inputs
    from qeval_plugins.report.load import no_runs_message
    from qeval_plugins.report.render import render

    inputs = load_inputs(paths)
    empty = not inputs.runs and not inputs.scans
    if skip_empty and empty:
        return None
    message, found = no_runs_message(paths) if not inputs.runs else ("", True)
    # without any results file, the loader's "no results*.json" lines say nothing new
    warnings = inputs.warnings if found else inputs.scan_warnings
    report = compare(inputs.runs, baseline, warnings=warnings, scans=inputs.scans)
    if empty_is_error and empty:
        render(report, console, empty_note=False)
        print(format_error(QevalError(message)), file=sys.stderr)
        return None
    render(report, console)  # load warnings included, one line each
    return report
