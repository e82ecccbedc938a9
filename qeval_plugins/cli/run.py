"""evaluate models × quantizers with lm-eval (resumable), then report

Runs lm_eval once per model and quantizer spec, each in its own process, into one sub-folder of
--output per run; a run whose results exist with the same settings is skipped, so an interrupted
sweep resumes where it stopped. Every check (models, specs, tasks, lm-eval options, --output)
comes before the first run. Then the report of every run in --output is printed. Every other
option (e.g. --limit 100 --batch_size 8 --num_fewshot 5) is passed to lm_eval unchanged. On a
terminal a progress bar shows the sweep; to a pipe or a file each run prints a line every 30
seconds (QEVAL_HEARTBEAT_SECONDS) with what it is doing. Exit status 1 when a run failed.

Launchers: --launcher local (default) runs --jobs runs at once on this machine, each with its
share of the CPU cores or its own GPU(s) (--gpus, --gpus-per-run); --launcher slurm submits the
runs as one SLURM job array through submitit (pip install 'qeval[slurm]'; --output on a
filesystem the nodes share); --launcher ray runs each as a Ray task (pip install 'qeval[ray]'; no
shared filesystem needed).
"""

from __future__ import annotations

import argparse
import sys

from qeval_plugins.core.arguments import comma_list, positive_int
from qeval_plugins.sweep.launch_options import (
    add_ray_arguments,
    add_slurm_arguments,
    make_launcher,
)


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
    launching = parser.add_argument_group("where the runs go")
    launching.add_argument(
        "--launcher",
        choices=("local", "slurm", "ray"),
        default="local",
        help="local: this machine (default); slurm: a SLURM job array (submitit); ray: Ray tasks",
    )
    launching.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        metavar="N",
        help="local: runs at once (default 1, or one per GPU group with --gpus); on CPU each "
        "gets cores/jobs torch threads",
    )
    launching.add_argument(
        "--gpus",
        default=None,
        metavar="LIST",
        help="local: GPU numbers (0,1,2,3) or 'all'; each run gets its own through "
        "CUDA_VISIBLE_DEVICES",
    )
    launching.add_argument(
        "--gpus-per-run",
        type=positive_int,
        default=None,
        metavar="K",
        help="local: GPUs each run gets (default 1; a model split over them needs "
        "--model_args parallelize=True)",
    )
    add_slurm_arguments(parser)
    add_ray_arguments(parser)
    parser.set_defaults(passthrough=True)  # unknown options: args.lm_eval_args


def run(args: argparse.Namespace) -> int:
    """Sweep, then print the report; 1 when a run failed (its line on stderr), else 0."""
    from pathlib import Path

    from rich.console import Console

    from qeval_plugins.cli.report import print_report
    from qeval_plugins.sweep.driver import sweep

    console = Console()
    device = args.device or _default_device(args)
    failures = sweep(
        models=args.model,
        specs=comma_list(args.quantizers),
        tasks=comma_list(args.tasks),
        output=Path(args.output),
        device=device,
        extra=args.lm_eval_args,
        force=args.force,
        console=console,
        log_samples=not args.no_log_samples,
        launcher=make_launcher(args, device),
    )
    # a sweep whose every run failed ends with its failure lines only (not "No runs to report.")
    print_report([args.output], None, console, skip_empty=bool(failures))
    for line in failures:
        print(f"qeval: error: {line}", file=sys.stderr)
    return 1 if failures else 0


def _default_device(args: argparse.Namespace) -> str:
    """cuda when runs get GPUs (--gpus, --slurm-gpus-per-run, --ray-gpus-per-run) or torch
    sees one here, else cpu."""
    if args.gpus is not None or args.slurm_gpus_per_run or args.ray_gpus_per_run:
        return "cuda"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
