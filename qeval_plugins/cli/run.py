"""evaluate models × quantizers with lm-eval (resumable), then report

Runs lm_eval once per model and quantizer spec, each in its own process, into one sub-folder of
--output per run; a run whose results exist with the same settings is skipped, so an interrupted
sweep resumes where it stopped. Every check (models, specs, tasks, lm-eval options, --output)
comes before the first run. Then the report of every run in --output is printed. Every other
option (e.g. --limit 100 --batch_size 8 --num_fewshot 5) is passed to lm_eval unchanged. On a
terminal a progress bar shows the sweep; to a pipe or a file each run prints a line every 30
seconds (QEVAL_HEARTBEAT_SECONDS) with what it is doing. Exit status 1 when a run failed.
"""

from __future__ import annotations

import argparse
import sys

from qeval_plugins.cli.arguments import comma_list


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``qeval run`` options; the rest of the command line goes to lm_eval."""
    parser.allow_abbrev = False  # --out would be read as --output, not passed to lm_eval
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        help="model path, hub id or qeval-tiny (repeat for several)",
    )
    parser.add_argument(
        "--quantizers",
        required=True,
        help="comma-separated specs NAME[:option=value...], e.g. none,bnb-nf4,rtn:bits=4",
    )
    parser.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    parser.add_argument("--output", required=True, help="folder for the runs (one sub-folder each)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="recompute runs that already exist, replacing results made with other settings",
    )
    parser.add_argument(
        "--no-log-samples",
        action="store_true",
        help="do not pass --log_samples to lm_eval (per-document scores, ~1-5 kB a document, "
        "that qeval report's paired significance test needs)",
    )
    parser.set_defaults(passthrough=True)  # unknown options: args.lm_eval_args


def run(args: argparse.Namespace) -> int:
    """Sweep, then print the report; 1 when a run failed (its line on stderr), else 0."""
    from pathlib import Path

    from rich.console import Console

    from qeval_plugins.cli.report import print_report
    from qeval_plugins.cli.sweep import sweep

    console = Console()
    failures = sweep(
        models=args.model,
        specs=comma_list(args.quantizers),
        tasks=comma_list(args.tasks),
        output=Path(args.output),
        device=args.device or _default_device(),
        extra=args.lm_eval_args,
        force=args.force,
        console=console,
        log_samples=not args.no_log_samples,
    )
    # a sweep whose every run failed ends with its failure lines only (not "No runs to report.")
    print_report([args.output], None, console, skip_empty=bool(failures))
    for line in failures:
        print(f"qeval: error: {line}", file=sys.stderr)
    return 1 if failures else 0


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
