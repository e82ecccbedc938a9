"""A whole sweep: every check, then the units, on the launcher chosen."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Protocol

from qeval_plugins.core.plan import devices_elsewhere
from qeval_plugins.sweep.local import SweepInterrupted
from qeval_plugins.sweep.planning import PlannedRun, prepare
from qeval_plugins.sweep.progress import SweepProgress
from qeval_plugins.sweep.unit import Outcome, Unit, run_phase


class Launcher(Protocol):
    """Where and when units run: :class:`~.local.LocalLauncher`,
    :class:`~.slurm.SlurmLauncher`, :class:`~.ray_cluster.RayLauncher`. ``runs_elsewhere``:
    units may run on other machines, whose devices this one cannot check. A launcher whose units
    write their logs where the driver cannot read them while they run also has
    ``phase(unit, since) -> str``, the text of a running unit's heartbeat line (default:
    :func:`~.unit.run_phase`, the last line of its lm_eval log)."""

    runs_elsewhere: bool

    def launch(self, units: list[Unit], progress: SweepProgress) -> list[Outcome]:
        """Every unit's outcome in ``units``' order (:class:`~.local.SweepInterrupted` on
        Ctrl-C, once the units it ran are stopped or left running on a cluster)."""
        ...


def make_units(
    runs: list[PlannedRun],
    settings: dict,
    tasks: list[str],
    expected: list[str],
    device: str,
    extra: list[str],
    force: bool,
) -> list[Unit]:
    """The planned runs as units (plain data a launcher can ship anywhere)."""
    return [
        Unit(
            label=run.label,
            model=run.model,
            model_args=run.checked.model_args,
            directory=run.directory,
            tasks=tuple(tasks),
            expected=tuple(expected),
            settings=settings[run],
            device=device,
            extra=tuple(extra),
            force=force,
        )
        for run in runs
    ]


def sweep(
    models: list[str],
    specs: list[str],
    tasks: list[str],
    output: Path,
    device: str,
    extra: list[str],
    force: bool,
    console,
    log_samples: bool = True,
    launcher: Launcher | None = None,
) -> list[str]:
    """Run the sweep on ``launcher`` (default: one unit at a time on this machine); returns one
    line per failed run, after printing the summary (``sweep: 3 done, 1 failed``).

    lm_eval also writes each document's scores (``--log_samples``: the report's paired test
    needs them) unless ``log_samples`` is false; the option is not a setting of the results.
    Ctrl-C: the summary of what ended, then ``KeyboardInterrupt``."""
    from qeval_plugins.sweep.local import LocalLauncher, cpu_count, cpu_slots

    extra = [*extra, "--log_samples"] if log_samples else extra
    if launcher is None:
        slots = cpu_slots(1, cpu_count()) if device == "cpu" else [{}]
        launcher = LocalLauncher(tuple(slots))
    elsewhere = launcher.runs_elsewhere and device.startswith("cuda") and not _cuda_here()
    if elsewhere:
        console.print(
            "This machine has no CUDA GPU: each run checks its device (and a quantizer's GPU "
            "needs) on the machine it runs on."
        )
    with devices_elsewhere() if elsewhere else contextlib.nullcontext():
        runs, settings, expected = prepare(models, specs, tasks, output, device, extra, force)
    units = make_units(runs, settings, tasks, expected, device, extra, force)
    phase = getattr(launcher, "phase", run_phase)  # what a running unit does (heartbeat lines)
    with SweepProgress(console, units, phase) as progress:
        try:
            outcomes = launcher.launch(units, progress)
        except SweepInterrupted as stopped:
            summary = progress.summary(stopped.outcomes)
            console.print(f"{summary} (stopped by Ctrl-C; finished results kept)", highlight=False)
            raise
    console.print(progress.summary(), highlight=False)
    return [outcome.detail for outcome in outcomes if outcome.kind == "failed"]


def _cuda_here() -> bool:
    import torch

    return torch.cuda.is_available()
