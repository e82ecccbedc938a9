"""list loaded plugins

Every plugin qeval found (its own built-ins and the packages registered under the 'qeval' entry
point group): name, version, where it comes from, its quantizers, and whether it loaded, with
the load error, its disabled quantizers and name clashes when it has any.
"""

from __future__ import annotations

import argparse
import logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``qeval plugins`` takes no options."""


def run(args: argparse.Namespace) -> int:
    """Print every plugin; the registry's one-line warning pointing to this very command is
    left out (the details it points to are printed here)."""
    from rich.console import Console

    from qeval_plugins.cli.listing import print_plugins
    from qeval_plugins.core.registry import TROUBLED_SUMMARY, get_registry

    def not_the_pointer_here(record: logging.LogRecord) -> bool:
        return record.msg != TROUBLED_SUMMARY

    qeval_logger = logging.getLogger("qeval")
    qeval_logger.addFilter(not_the_pointer_here)
    try:
        registry = get_registry()
    finally:
        qeval_logger.removeFilter(not_the_pointer_here)
    print_plugins(registry, Console())
    return 0
