"""The ``qeval`` command: plugins, quantizers, tasks-path, demo, run, scan and report.

User errors print one line (``qeval: error: ...``) and exit with status 2; ``QEVAL_DEBUG=1``
shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence

from qeval_plugins.core.errors import QevalError, debug_enabled, format_error


def _console():
    from rich.console import Console

    return Console()


def cmd_plugins(args: argparse.Namespace) -> int:
    """Every plugin: name, version, source, its quantizers, load errors and disabled quantizers."""
    from qeval_plugins.cli.listing import print_plugins
    from qeval_plugins.core.registry import TROUBLED_SUMMARY, get_registry

    def not_the_pointer_here(record: logging.LogRecord) -> bool:
        return record.msg != TROUBLED_SUMMARY  # this command prints the details it points to

    qeval_logger = logging.getLogger("qeval")
    qeval_logger.addFilter(not_the_pointer_here)
    try:
        registry = get_registry()
    finally:
        qeval_logger.removeFilter(not_the_pointer_here)
    print_plugins(registry, _console())
    return 0


def cmd_quantizers(args: argparse.Namespace) -> int:
    """Every quantizer: aliases, description, options (type, default, range, help), availability."""
    from qeval_plugins.cli.listing import print_quantizers
    from qeval_plugins.core.registry import get_registry

    print_quantizers(get_registry(), _console())
    return 0


def cmd_tasks_path(args: argparse.Namespace) -> int:
    """Print the directory to pass to ``lm_eval --include_path``."""
    from qeval_plugins.paths import tasks_path

    print(tasks_path())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the baseline and several quantizers over qeval_demo on the embedded model."""
    from qeval_plugins.cli.demo import run_demo

    run_demo(
        quantizers=[spec for spec in args.quantizers.split(",") if spec],
        model=args.model,
        device=args.device,
        limit=args.limit,
        output=args.output,
        console=_console(),
        scan=None if args.scan.strip().lower() in ("", "none") else args.scan,
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Sweep models × quantizers over tasks, resumably; then print the report."""
    from pathlib import Path

    from qeval_plugins.cli.sweep import sweep

    console = _console()
    failures = sweep(
        models=args.model,
        specs=_split(args.quantizers),
        tasks=_split(args.tasks),
        output=Path(args.output),
        device=args.device or _default_device(),
        extra=args.lm_eval_args,
        force=args.force,
        console=console,
        log_samples=not args.no_log_samples,
    )
    # a sweep whose every run failed ends with its failure lines only (not "No runs to report.")
    _print_report([args.output], None, console, skip_empty=bool(failures))
    for line in failures:
        print(f"qeval: error: {line}", file=sys.stderr)
    return 1 if failures else 0


def cmd_cache(args: argparse.Namespace) -> int:
    """List, prune or clear the reference cache."""
    from qeval_plugins.cli.cache import run

    return run(args, _console())


def cmd_scan(args: argparse.Namespace) -> int:
    """Layer-sensitivity scan, mixed-precision recommendation and its verification."""
    from qeval_plugins.cli.scan import run

    return run(args, _console())


def cmd_report(args: argparse.Namespace) -> int:
    """Compare runs: rich table, optional export and plots.

    The export format is ``--format``, else the ``--out`` file's extension. A missing input, an
    ``--out`` that names a folder, lies in a missing folder or has an unknown extension, and a
    ``--baseline`` that names no run are one error line each, before the report is printed.
    ``wrote PATH`` lines go to stderr; an export to standard output (``--out -``,
    ``/dev/stdout``) gets stdout to itself: the table goes to stderr, and no ``wrote`` line.
    """
    from pathlib import Path

    from rich.console import Console

    from qeval_plugins.core.text import printable
    from qeval_plugins.report.export import export, format_for
    from qeval_plugins.report.output import destination, is_stdout
    from qeval_plugins.report.plot import plot
    from qeval_plugins.report.scan import (
        find_scans,
        has_results,
        is_scan_file,
        plot_scans,
        render_scans,
    )

    missing = [path for path in args.paths if not Path(path).exists()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise QevalError(
            f"{printable(missing[0])}: no such file or folder{more}; pass results files or "
            "folders that exist"
        )
    out = destination(args.out) if args.out else None
    fmt = args.format or (format_for(out) if out else None)
    if fmt and out is None:
        out = destination(f"qeval-report.{_EXTENSIONS.get(fmt, fmt)}")
    to_stdout = out is not None and is_stdout(out)
    console = Console(stderr=True) if to_stdout else _console()
    scans, scan_warnings = find_scans(args.paths)  # qeval scan's "Layer sensitivity" section
    run_paths = [path for path in args.paths if not is_scan_file(path)]
    if scans and not has_results(run_paths):
        render_scans(scans, scan_warnings, console)
        for path in plot_scans(scans, args.plot) if args.plot else []:
            print(f"wrote {printable(str(path))}", file=sys.stderr)
        return 0
    report = _print_report(run_paths or args.paths, args.baseline, console, empty_is_error=True)
    if report is None:
        render_scans([], scan_warnings, console)
        return 1
    render_scans(scans, scan_warnings, console)
    if fmt:
        written = export(report, fmt, out)
        if not to_stdout:
            print(f"wrote {printable(str(written))}", file=sys.stderr)
    if args.plot:
        for path in [*plot(report, args.plot), *plot_scans(scans, args.plot)]:
            print(f"wrote {printable(str(path))}", file=sys.stderr)
    return 0


_EXTENSIONS = {"markdown": "md"}


def _print_report(paths, baseline, console, empty_is_error=False, skip_empty=False):
    """Load, compare and print the runs in ``paths``; returns the report. With
    ``empty_is_error``, paths that give no run print the reasons (the load warnings, when there
    were results files) and one error line on stderr instead, and return None; with
    ``skip_empty``, they print nothing and return None."""
    from qeval_plugins.report.compare import compare
    from qeval_plugins.report.load import load_runs, no_runs_message
    from qeval_plugins.report.render import render

    runs, warnings = load_runs(paths)
    if skip_empty and not runs:
        return None
    report = compare(runs, baseline, warnings=warnings)
    if empty_is_error and not runs:
        message, found = no_runs_message(paths)
        if found:
            render(report, console, empty_note=False)
        print(format_error(QevalError(message)), file=sys.stderr)
        return None
    render(report, console)  # load warnings included, one line each
    return report


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_parser() -> argparse.ArgumentParser:
    from qeval_plugins.cli.cache import add_arguments as add_cache_arguments
    from qeval_plugins.cli.demo import DEFAULT_DEMO_QUANTIZERS, DEMO_SCAN_SPEC
    from qeval_plugins.cli.scan import add_arguments as add_scan_arguments
    from qeval_plugins.core.version import qeval_version

    parser = OneLineErrorParser(
        prog="qeval",
        description="Measure what post-training quantization does to an LLM, in lm-eval.",
    )
    parser.add_argument("--version", action="version", version=f"qeval {qeval_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("plugins", help="list loaded plugins").set_defaults(run=cmd_plugins)
    commands.add_parser("quantizers", help="list quantizers, options, availability").set_defaults(
        run=cmd_quantizers
    )
    commands.add_parser(
        "tasks-path", help="print the directory for lm_eval --include_path"
    ).set_defaults(run=cmd_tasks_path)
    demo = commands.add_parser(
        "demo", help="baseline + quantizers on the embedded model, offline, in minutes"
    )
    demo.add_argument(
        "--model", default="qeval-tiny", help="model path or name (default: %(default)s)"
    )
    demo.add_argument(
        "--quantizers",
        default=",".join(DEFAULT_DEMO_QUANTIZERS),
        help="comma-separated quantizer specs, options after colons, e.g. rtn:bits=3:group_size=0 "
        "(default: %(default)s)",
    )
    demo.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    demo.add_argument(
        "--limit", type=positive_int, default=None, help="documents per task (default: all)"
    )
    demo.add_argument("--output", default=None, help="also write each run's results JSON here")
    demo.add_argument(
        "--scan",
        default=DEMO_SCAN_SPEC,
        metavar="SPEC",
        help="quantizer spec whose layer sensitivity the demo scans; 'none' skips the scan "
        "(default: %(default)s)",
    )
    demo.set_defaults(run=cmd_demo)

    run = commands.add_parser(
        "run",
        allow_abbrev=False,
        help="evaluate models × quantizers with lm-eval (resumable), then report",
        description="Every other option (e.g. --limit 100 --batch_size 8 --num_fewshot 5) is "
        "passed to lm_eval unchanged.",
    )
    run.add_argument(
        "--model",
        action="append",
        required=True,
        help="model path, hub id or qeval-tiny (repeat for several)",
    )
    run.add_argument(
        "--quantizers",
        required=True,
        help="comma-separated specs NAME[:option=value...], e.g. none,bnb-nf4,rtn:bits=4",
    )
    run.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    run.add_argument("--output", required=True, help="folder for the runs (one sub-folder each)")
    run.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    run.add_argument(
        "--force",
        action="store_true",
        help="recompute runs that already exist, replacing results made with other settings",
    )
    run.add_argument(
        "--no-log-samples",
        action="store_true",
        help="do not pass --log_samples to lm_eval (per-document scores, ~1-5 kB a document, "
        "that qeval report's paired significance test needs)",
    )
    run.set_defaults(run=cmd_run, passthrough=True)

    scan = commands.add_parser(
        "scan", help="rank layers by sensitivity to a quantizer; recommend which to keep"
    )
    add_scan_arguments(scan)
    scan.set_defaults(run=cmd_scan)

    cache = commands.add_parser("cache", help="list, prune or clear the reference cache")
    add_cache_arguments(cache)
    cache.set_defaults(run=cmd_cache)

    report = commands.add_parser("report", help="compare runs in one table (rich, exports, plots)")
    report.add_argument("paths", nargs="+", help="results files or folders (searched recursively)")
    report.add_argument(
        "--baseline", default=None, help="spec of the baseline run per model (default: none)"
    )
    report.add_argument("--format", choices=("markdown", "csv", "json", "html"), default=None)
    report.add_argument(
        "--out",
        "--output",
        "-o",
        dest="out",
        default=None,
        help="write the report to this file in an existing folder, or to stdout with '-'; its "
        "extension (.md, .csv, .json, .html) sets the format unless --format is given (default "
        "qeval-report.EXT)",
    )
    report.add_argument("--plot", default=None, metavar="DIR", help="write PNG charts into DIR")
    report.set_defaults(run=cmd_report)
    return parser


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose usage mistakes are one line, like every other user error.

    ``qeval: error: MESSAGE (see 'qeval COMMAND --help')`` on stderr and exit status 2, instead of
    the usage block plus a ``prog: error:`` line.
    """

    def error(self, message: str):
        command = self.prog.removeprefix("qeval").strip()
        where = f"qeval {command} --help" if command else "qeval --help"
        self.exit(2, f"qeval: error: {message} (see '{where}')\n")


# ---------------------------------------------------------------- argparse types
# One place for the numbers qeval reads and for those ``qeval run`` passes on to lm-eval
# (:func:`qeval_plugins.cli.run_settings.lm_eval_types`): each refuses a bad value in one line.


def _whole(text: str) -> int | None:
    """``text`` as a whole number >= 0 written in ASCII digits, else None."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdecimal() else None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (ASCII digits)."""
    number = _whole(text)
    if number is None or number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got '{text}'")
    return number


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (ASCII digits)."""
    number = _whole(text)
    if number is None:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got '{text}'")
    return number


def document_limit(text: str) -> float:
    """argparse type of lm-eval's ``--limit``: a count of documents (a whole number >= 1) or a
    fraction of them in (0, 1); returned as lm-eval reads it, a float (``20`` → 20.0)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0 and (value < 1 or value.is_integer())):
        raise argparse.ArgumentTypeError(
            f"must be a count of documents (a whole number >= 1) or a fraction of them in "
            f"(0, 1), got '{text}'"
        )
    return value


def batch_size(text: str) -> str:
    """argparse type of lm-eval's ``--batch_size``: a whole number >= 1, ``auto``, or ``auto:N``
    (N >= 1: how many times the size is re-tuned); returned unchanged, as lm-eval reads it."""
    automatic, _, times = text.strip().partition(":")
    number = _whole(times if automatic == "auto" else text)
    if (automatic == "auto" and not times) or (number is not None and number >= 1):
        return text
    raise argparse.ArgumentTypeError(
        f"must be a whole number >= 1, 'auto' or 'auto:N' with N >= 1, got '{text}'"
    )


MAX_SEED = 2**32 - 1  # numpy's seeds: 0 to 2**32 - 1


def seed_list(text: str) -> str:
    """argparse check of lm-eval's ``--seed``: one seed, or 3 or 4 comma-separated ones (python,
    numpy, torch, few-shot), each a whole number from 0 to :data:`MAX_SEED` or ``None``.
    Returns ``text`` for lm-eval's own parsing of the list."""
    items = text.split(",")
    if len(items) not in (1, 3, 4):
        raise argparse.ArgumentTypeError(f"must be 1, 3 or 4 comma-separated seeds, got '{text}'")
    for item in items:
        number = _whole(item)
        if item.strip().lower() != "none" and (number is None or number > MAX_SEED):
            raise argparse.ArgumentTypeError(
                f"each seed must be a whole number from 0 to {MAX_SEED} or None, got '{text}'"
            )
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:  # a bare ``qeval``: the command list
        parser.print_help()
        return 0
    if unknown and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.lm_eval_args = unknown
    try:
        return args.run(args)
    except QevalError as error:
        if debug_enabled():
            raise
        print(format_error(error), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qeval: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
