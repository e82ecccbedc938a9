"""print the directory for lm_eval --include_path

The folder of qeval's task YAML files (qeval_sqnr, qeval_temperature, qeval_demo, ...), for
'lm_eval --include_path "$(qeval tasks-path)"'.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``qeval tasks-path`` takes no options."""


def run(args: argparse.Namespace) -> int:
    """Print the folder."""
    from qeval_plugins.paths import tasks_path

    print(tasks_path())
    return 0
