"""list quantizers, their options and availability

With no NAME, one line per quantizer: its name, aliases, whether it can run here and what it
does. With NAMEs (names or aliases), or with --options, each quantizer in full: also its
scheme at the default options, every option (type, default, range, help) and its plugin.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Optional quantizer names, and ``--options``."""
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="show only these quantizers, in full"
    )
    parser.add_argument(
        "--options",
        "-v",
        action="store_true",
        help="show every quantizer in full: scheme, options, plugin",
    )


def run(args: argparse.Namespace) -> int:
    """Print the listing; an unknown name is one error line with the closest known name."""
    from rich.console import Console

    from qeval_plugins.cli.listing import print_quantizer_lines, print_quantizers
    from qeval_plugins.core.registry import get_registry

    registry = get_registry()
    chosen = {}  # canonical name -> entry: a name and its alias are listed once
    for name in args.names:
        entry = registry.get(name)  # an unknown name: one QevalError line, "Did you mean ..."
        chosen[entry.quantizer.name] = entry
    if chosen:
        print_quantizers(registry, Console(), list(chosen.values()))
    elif args.options:
        print_quantizers(registry, Console())
    else:
        print_quantizer_lines(registry, Console())
    return 0
