"""The ``local`` launcher: N units at once on this machine, each with its own share of it.

Each of the ``jobs`` *slots* is an environment a unit's lm_eval process runs with: on CPU, the
slot's share of the cores (``OMP_NUM_THREADS = MKL_NUM_THREADS = cores // jobs``: torch's
intra-op threads, so units never oversubscribe the cores); with ``--gpus``, its own GPU(s)
(``CUDA_VISIBLE_DEVICES``). A unit takes a free slot, runs (:func:`~.unit.attempt`) and gives
the slot back. A failing unit never stops the others. Ctrl-C starts no further unit, ends the
running lm_eval processes (SIGTERM: their ``.partial-*`` folders are removed, nothing is
installed) and leaves every finished result in place.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

from qeval_plugins.core.errors import QevalError
from qeval_plugins.sweep.child import stop_children
from qeval_plugins.sweep.progress import NOT_STARTED, SweepProgress
from qeval_plugins.sweep.unit import Outcome, Unit, attempt

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep, after the launcher stopped its units; ``outcomes`` holds how
    every unit ended (``interrupted`` for those stopped or never started)."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        super().__init__()
        self.outcomes = outcomes


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a SLURM or cgroup share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """This process's GPUs as ``CUDA_VISIBLE_DEVICES`` names them (its entries when set, else
    ``0 .. torch.cuda.device_count()-1``), in torch's order (``cuda:0`` first)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [entry.strip() for entry in listed.split(",") if entry.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def parse_gpus(text: str) -> list[int] | str:
    """``--gpus``: ``all`` or comma-separated distinct GPU numbers as torch counts them
    (``0,1,2,3``)."""
    if text.strip().lower() == "all":
        return "all"
    numbers = []
    for entry in text.split(","):
        entry = entry.strip()
        if not (entry.isascii() and entry.isdecimal()):
            raise QevalError(f"--gpus takes 'all' or GPU numbers such as 0,1,2,3, got '{text}'.")
        numbers.append(int(entry))
    if len(set(numbers)) != len(numbers):
        raise QevalError(f"--gpus names a GPU twice ('{text}'); give each once.")
    return numbers


def gpu_slots(
    gpus: list[int] | str, per_run: int, jobs: int | None, visible: list[str]
) -> list[dict[str, str]]:
    """One ``CUDA_VISIBLE_DEVICES`` environment per slot: the chosen GPUs (numbers index
    ``visible``) cut into groups of ``per_run``; ``jobs`` slots (default: every group)."""
    chosen = list(range(len(visible))) if gpus == "all" else gpus
    if not visible:
        raise QevalError("--gpus: no GPU is visible here (torch sees none); run without --gpus.")
    missing = [number for number in chosen if number >= len(visible)]
    if missing:
        raise QevalError(
            f"--gpus names GPU {missing[0]}, but this machine shows {len(visible)} "
            f"(0 to {len(visible) - 1})."
        )
    if len(chosen) % per_run:
        raise QevalError(
            f"--gpus gives {len(chosen)} GPUs, which --gpus-per-run {per_run} cannot split "
            f"evenly; give a multiple of {per_run} GPUs."
        )
    groups = [chosen[start : start + per_run] for start in range(0, len(chosen), per_run)]
    if jobs is not None and jobs > len(groups):
        raise QevalError(
            f"--jobs {jobs} needs {jobs} GPU groups, but --gpus gives {len(groups)} of "
            f"{per_run}; give --jobs {len(groups)} or more GPUs."
        )
    groups = groups[: jobs or len(groups)]
    return [{"CUDA_VISIBLE_DEVICES": ",".join(visible[n] for n in group)} for group in groups]


def cpu_slots(jobs: int, cores: int) -> list[dict[str, str]]:
    """``jobs`` environments, each with ``cores // jobs`` torch threads; more jobs than cores
    would oversubscribe them and is refused."""
    if jobs > cores:
        raise QevalError(
            f"--jobs {jobs} on {cores} CPU cores would oversubscribe them; give --jobs {cores} "
            f"or fewer."
        )
    threads = str(cores // jobs)
    return [dict.fromkeys(THREAD_VARIABLES, threads) for _ in range(jobs)]


@dataclass(frozen=True)
class LocalLauncher:
    """Runs units on this machine, one per slot at a time (``slots``: each one's environment)."""

    slots: tuple[dict[str, str], ...]
    runs_elsewhere = False

    def launch(self, units: list[Unit], progress: SweepProgress) -> list[Outcome]:
        """Every unit's outcome, in ``units``' order; raises :class:`SweepInterrupted` on
        Ctrl-C once the running units are stopped."""
        free: queue.Queue[dict[str, str]] = queue.Queue()
        for slot in self.slots:
            free.put(slot)
        stopping = threading.Event()

        def run(unit: Unit) -> Outcome:
            if stopping.is_set():
                return Outcome("interrupted", NOT_STARTED)
            slot = free.get()
            try:
                if stopping.is_set():
                    return Outcome("interrupted", NOT_STARTED)
                progress.start(unit)
                outcome = attempt(unit, slot)
                if stopping.is_set() and outcome.kind == "failed":
                    outcome = Outcome("interrupted", "stopped by Ctrl-C; nothing was installed")
                progress.finish(unit, outcome)
                return outcome
            finally:
                free.put(slot)

        with ThreadPoolExecutor(len(self.slots), thread_name_prefix="qeval-unit") as pool:
            futures = [pool.submit(run, unit) for unit in units]
            try:
                pending = set(futures)
                while pending:  # short waits: Ctrl-C reaches this thread between them
                    _, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                stopping.set()
                while not all(future.done() for future in futures):  # one may be starting
                    stop_children()
                    wait(futures, timeout=0.5)
                raise SweepInterrupted([future.result() for future in futures]) from None
        return [future.result() for future in futures]
