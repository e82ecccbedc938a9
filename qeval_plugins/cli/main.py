"""The ``qeval`` command: assembles one subcommand per module of :data:`COMMANDS`.

A command is a module ``qeval_plugins/cli/<command>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; its docstring's first line is its line in ``qeval --help``, the rest its
description in ``qeval COMMAND --help``. Adding a command is that file and one entry here.

User errors print one line (``qeval: error: ...``) and exit with status 2; ``QEVAL_DEBUG=1``
shows the traceback.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import textwrap
from collections.abc import Sequence
from types import ModuleType

from qeval_plugins.cli import (
    cache,
    demo,
    plugins,
    predict,
    quantizers,
    report,
    run,
    scan,
    study,
    tasks_path,
)
from qeval_plugins.core.errors import QevalError, debug_enabled, format_error

# (name, module) of every command, in the order ``qeval --help`` lists them
COMMANDS: list[tuple[str, ModuleType]] = [
    ("plugins", plugins),
    ("quantizers", quantizers),
    ("tasks-path", tasks_path),
    ("demo", demo),
    ("run", run),
    ("scan", scan),
    ("cache", cache),
    ("report", report),
    ("predict", predict),
    ("study", study),
]


def build_parser() -> argparse.ArgumentParser:
    """``qeval``'s parser: one subcommand per entry of :data:`COMMANDS`."""
    from qeval_plugins.core.version import qeval_version

    parser = OneLineErrorParser(
        prog="qeval",
        description="Measure what post-training quantization does to an LLM, in lm-eval.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"qeval {qeval_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS:
        summary, _, description = inspect.cleandoc(module.__doc__ or name).partition("\n")
        command = commands.add_parser(
            name,
            help=summary.strip(),
            description=description.strip() or summary.strip(),
            formatter_class=HelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(run=module.run)
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


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help wrapped at spaces only, never at a hyphen (a spec such as ``bnb-fp4-dq``
    stays whole), with a description's paragraphs kept apart."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = [" ".join(part.split()) for part in text.split("\n\n")]
        return "\n\n".join(
            textwrap.fill(
                paragraph,
                width,
                initial_indent=indent,
                subsequent_indent=indent,
                break_on_hyphens=False,
            )
            for paragraph in paragraphs
            if paragraph
        )


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
