"""``qeval run``'s launcher options: read, checked against each other, and turned into the
launcher that runs the sweep's units (:mod:`.local`, :mod:`.slurm`, :mod:`.ray_cluster`)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from qeval_plugins.core.arguments import non_negative_int, positive_int
from qeval_plugins.core.errors import QevalError
from qeval_plugins.sweep.launch_settings import RaySettings, SlurmSettings


def _slurm_time(text: str) -> int:
    """``--slurm-time`` in sbatch's own formats — ``MINUTES``, ``MINUTES:SECONDS``,
    ``HOURS:MINUTES:SECONDS``, ``DAYS-HOURS``, ``DAYS-HOURS:MINUTES``,
    ``DAYS-HOURS:MINUTES:SECONDS`` — as whole minutes >= 1 (seconds rounded up)."""
    text = text.strip()
    days, dash, clock = text.partition("-") if "-" in text else ("0", "", text)
    fields = clock.split(":")
    numbers = [days, *fields]
    bad = argparse.ArgumentTypeError(
        f"must be sbatch's --time: MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS "
        f"(240, 04:00:00, 1-12), got '{text}'"
    )
    if not all(part.isascii() and part.isdecimal() for part in numbers) or len(fields) > 3:
        raise bad
    values = [int(part) for part in fields]
    if dash:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = [*values, 0, 0][:3]
        limits = (23, 59, 59)
    elif len(values) == 3:  # HH:MM:SS
        hours, minutes, seconds = values
        limits = (hours, 59, 59)
    else:  # MM or MM:SS
        hours, minutes, seconds = 0, values[0], values[1] if len(values) == 2 else 0
        limits = (0, minutes, 59)
    if any(value > limit for value, limit in zip((hours, minutes, seconds), limits, strict=True)):
        raise bad
    total = ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if total < 60:
        raise argparse.ArgumentTypeError(f"must be at least one minute, got '{text}'")
    return -(-total // 60)


_MEMORY = re.compile(r"\d+[KMGT]?")


def _slurm_mem(text: str) -> str:
    """``--slurm-mem``: sbatch's ``--mem`` size, a whole number with an optional unit K, M, G
    or T (``64G``; megabytes without one)."""
    size = text.strip().upper()
    if not _MEMORY.fullmatch(size) or not int(size.rstrip("KMGT")):
        raise argparse.ArgumentTypeError(f"must be a size such as 64G or 500M, got '{text}'")
    return size


def _key_value(text: str) -> tuple[str, str]:
    """``--slurm-arg KEY=VALUE``: an sbatch parameter (``account=proj``, ``qos=high``)."""
    key, equals, value = text.partition("=")
    key = key.strip().removeprefix("--").replace("-", "_")
    if not equals or not key.replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE (account=proj), got '{text}'")
    return key, value.strip()


def add_slurm_arguments(parser: argparse.ArgumentParser) -> None:
    """``--slurm-*`` and ``--detach``."""
    group = parser.add_argument_group("--launcher slurm (pip install 'qeval[slurm]')")
    group.add_argument("--slurm-partition", default=None, metavar="NAME", help="sbatch --partition")
    group.add_argument(
        "--slurm-time",
        type=_slurm_time,
        metavar="TIME",
        default=240,
        help="each run's time limit, as sbatch's --time: MINUTES, MM:SS, HH:MM:SS, D-HH, "
        "D-HH:MM or D-HH:MM:SS (default 240 minutes)",
    )
    group.add_argument(
        "--slurm-gpus-per-run",
        type=non_negative_int,
        default=0,
        metavar="K",
        help="GPUs each run gets",
    )
    group.add_argument(
        "--slurm-cpus-per-run", type=positive_int, default=1, metavar="N", help="CPUs each run gets"
    )
    group.add_argument(
        "--slurm-mem",
        type=_slurm_mem,
        default=None,
        metavar="SIZE",
        help="memory each run gets, e.g. 64G",
    )
    group.add_argument(
        "--slurm-arg",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another sbatch parameter (repeat), e.g. account=proj or qos=high",
    )
    group.add_argument(
        "--slurm-local",
        action="store_true",
        help="run the job array as local processes (submitit's local executor): try a SLURM "
        "sweep on one machine",
    )
    group.add_argument(
        "--detach",
        action="store_true",
        help="submit and exit; the same command later shows what is pending, running or "
        "failed, collects the results and resubmits only what failed",
    )


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray-*``."""
    group = parser.add_argument_group("--launcher ray (pip install 'qeval[ray]')")
    group.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="auto or HOST:PORT of a running Ray cluster (default: start a local Ray instance)",
    )
    group.add_argument(
        "--ray-gpus-per-run",
        type=non_negative_int,
        default=None,
        metavar="K",
        help="GPUs each run's Ray task requests (default: 1 with --device cuda, else 0)",
    )
    group.add_argument(
        "--ray-cpus-per-run",
        type=positive_int,
        default=1,
        metavar="N",
        help="CPUs each run's task requests",
    )
    group.add_argument(
        "--ray-retries",
        type=non_negative_int,
        default=2,
        metavar="N",
        help="times a run is retried when its Ray worker dies (default 2)",
    )


LOCAL_ONLY = {"jobs": None, "gpus": None, "gpus_per_run": None}
SLURM_ONLY = {
    "slurm_partition": None,
    "slurm_time": 240,
    "slurm_gpus_per_run": 0,
    "slurm_cpus_per_run": 1,
    "slurm_mem": None,
    "slurm_arg": [],
    "slurm_local": False,
    "detach": False,
}
RAY_ONLY = {"ray_address": None, "ray_gpus_per_run": None, "ray_cpus_per_run": 1, "ray_retries": 2}
OWN_OPTIONS = {"local": LOCAL_ONLY, "slurm": SLURM_ONLY, "ray": RAY_ONLY}


def _refuse_foreign_options(args: argparse.Namespace) -> None:
    """An option of another launcher than ``--launcher`` is one line, not silently ignored."""
    for launcher, defaults in OWN_OPTIONS.items():
        if launcher == args.launcher:
            continue
        for name, default in defaults.items():
            if getattr(args, name) != default:
                option = "--" + name.replace("_", "-")
                raise QevalError(
                    f"{option} is an option of --launcher {launcher}, not {args.launcher}; "
                    f"add --launcher {launcher} or leave it out."
                )


def make_launcher(args: argparse.Namespace, device: str):
    """The launcher ``qeval run``'s options ask for (checked before any run)."""
    _refuse_foreign_options(args)
    if args.launcher == "slurm":
        from qeval_plugins.sweep.slurm import SlurmLauncher

        settings = SlurmSettings(
            folder=Path(args.output) / ".slurm",
            partition=args.slurm_partition,
            time=args.slurm_time,
            gpus_per_run=args.slurm_gpus_per_run,
            cpus_per_run=args.slurm_cpus_per_run,
            mem=args.slurm_mem,
            extra=dict(args.slurm_arg),
            detach=args.detach,
            local=args.slurm_local,
        )
        return SlurmLauncher(settings)
    if args.launcher == "ray":
        from qeval_plugins.sweep.ray_cluster import RayLauncher

        gpus = args.ray_gpus_per_run
        if gpus and not device.startswith("cuda"):
            raise QevalError(
                f"--ray-gpus-per-run {gpus} gives runs GPUs, but --device is {device}; use "
                f"--device cuda."
            )
        settings = RaySettings(
            address=args.ray_address,
            gpus_per_run=(1 if device.startswith("cuda") else 0) if gpus is None else gpus,
            cpus_per_run=args.ray_cpus_per_run,
            retries=args.ray_retries,
        )
        return RayLauncher(settings)
    return _local_launcher(args, device)


def _local_launcher(args: argparse.Namespace, device: str):
    from qeval_plugins.sweep.local import (
        LocalLauncher,
        cpu_count,
        cpu_slots,
        gpu_slots,
        parse_gpus,
        visible_gpus,
    )
    from qeval_plugins.sweep.settings import parse_lm_eval_args

    if args.gpus is None:
        if args.gpus_per_run is not None:
            raise QevalError("--gpus-per-run needs --gpus (the GPUs to share), e.g. --gpus all.")
        if device.startswith("cuda"):  # the runs share the GPU(s) they see
            return LocalLauncher(tuple({} for _ in range(args.jobs or 1)))
        return LocalLauncher(tuple(cpu_slots(args.jobs or 1, cpu_count())))
    if not device.startswith("cuda"):
        raise QevalError(f"--gpus gives runs GPUs, but --device is {device}; use --device cuda.")
    per_run = args.gpus_per_run or 1
    if per_run > 1:
        model_args = parse_lm_eval_args(args.lm_eval_args).model_args
        if str(model_args.get("parallelize", "")).lower() != "true":
            raise QevalError(
                f"--gpus-per-run {per_run} gives each run {per_run} GPUs, "
                f"which a model uses only when split over them: add --model_args "
                f"parallelize=True."
            )
    slots = gpu_slots(parse_gpus(args.gpus), per_run, args.jobs, visible_gpus())
    return LocalLauncher(tuple(slots))
