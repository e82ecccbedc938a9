"""The ``qeval`` command: plugins, quantizers, tasks-path and the offline demo.

User errors print one line (``qeval: error: ...``) and exit with status 2; ``QEVAL_DEBUG=1``
shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from qeval_plugins.errors import QevalError, debug_enabled, format_error


def _console():
    from rich.console import Console

    return Console()


def cmd_plugins(args: argparse.Namespace) -> int:
    """Every plugin: name, version, source, the quantizers it provides, and load errors."""
    from rich.table import Table

    from qeval_plugins.plugins import get_registry

    table = Table(title="qeval plugins")
    for column in ("plugin", "version", "from", "quantizers", "status"):
        table.add_column(column)
    for info in get_registry().plugins.values():
        status = f"[red]{info.error}[/red]" if info.error else "[green]loaded[/green]"
        table.add_row(info.name, info.version, info.source, ", ".join(info.quantizers), status)
    _console().print(table)
    return 0


def cmd_quantizers(args: argparse.Namespace) -> int:
    """Every quantizer: aliases, description, options with types/defaults, and availability."""
    from rich.table import Table

    from qeval_plugins.plan import availability
    from qeval_plugins.plugins import get_registry

    table = Table(title="qeval quantizers", show_lines=True)
    for column in ("quantizer", "aliases", "description", "options", "here", "plugin"):
        table.add_column(column, overflow="fold")
    for entry in get_registry().all():
        quantizer = entry.quantizer
        here = availability(quantizer)
        table.add_row(
            quantizer.name,
            ", ".join(quantizer.aliases),
            quantizer.description,
            "\n".join(option.describe() for option in quantizer.options) or "-",
            f"[green]{here}[/green]" if here == "ok" else f"[yellow]{here}[/yellow]",
            entry.plugin.name,
        )
    _console().print(table)
    return 0


def cmd_tasks_path(args: argparse.Namespace) -> int:
    """Print the directory to pass to ``lm_eval --include_path``."""
    from qeval_plugins.paths import tasks_path

    print(tasks_path())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the baseline and several quantizers over qeval_demo on the embedded model."""
    from qeval_plugins.demo import run_demo

    run_demo(
        quantizers=[spec for spec in args.quantizers.split(",") if spec],
        model=args.model,
        device=args.device,
        limit=args.limit,
        output=args.output,
        console=_console(),
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from qeval_plugins.demo import DEFAULT_DEMO_QUANTIZERS

    parser = argparse.ArgumentParser(
        prog="qeval",
        description="Measure what post-training quantization does to an LLM, in lm-eval.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    demo.add_argument("--limit", type=int, default=None, help="documents per task (default: all)")
    demo.add_argument("--output", default=None, help="also write each run's results JSON here")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
