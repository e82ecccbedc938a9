"""The ``slurm`` launcher: the sweep's units as one SLURM job array, through submitit.

Each array task runs one unit on its node (:func:`run_on_node`: :func:`~.unit.attempt`, with
``OMP_NUM_THREADS = MKL_NUM_THREADS =`` the CPUs a run gets), so the guarantees are the local
launcher's: the run folder's lock, resume, validated atomic install. The nodes must see
``--output`` (the units, their results and submitit's files are there): ``--output`` in memory
(tmpfs, ramfs, ``/dev/shm``) is refused before anything is submitted, and a task whose node does
not see the marker file the driver wrote for it fails in one line naming the node.

Deciding and submitting hold a lock in ``--output`` (:data:`LAUNCHER_LOCK`), and each submitted
unit gets a job record in its run folder (:mod:`.slurm_jobs`), so two ``qeval run`` never
submit the same unit twice. For each unit, the same command decides: a job still pending or
running is followed, not submitted again; a job that ended with results is reported ``done``;
one that failed, was preempted or ended without results is submitted again; a job that
skipped its unit (results existed, or another qeval run held the run folder's lock) is judged
against the folder now, like a unit without a job: skipped when its results exist, else
submitted. A unit is never submitted while another process holds its run folder's lock
(``qeval run --jobs 2`` computing it): it is skipped, naming that process. With ``--detach``
the command returns then (each unit ``pending`` or ``running``); without, it waits, polling
every :data:`POLL_SECONDS`, and returns every unit's outcome. Ctrl-C while waiting leaves the jobs
running: the command to collect them and the one to cancel them are printed.

``--slurm-local`` runs each unit as a process of submitit's local executor on this machine
instead of a SLURM job (all at once; each in its own session, so Ctrl-C and the end of
``qeval run`` leave it running, as on a cluster; the GPUs this machine shows are shared).
GPUs per run (``--slurm-gpus-per-run``) with ``--device cpu`` are refused before anything is
submitted. A failed submission is one line (sbatch's error in it, not also printed raw).
"""

from __future__ import annotations

import contextlib
import io
import re
import secrets
import shutil
import socket
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.text import one_line
from qeval_plugins.storage.atomic import write_atomic
from qeval_plugins.storage.locks import locked, try_locked
from qeval_plugins.sweep.launch_settings import SlurmSettings
from qeval_plugins.sweep.local import THREAD_VARIABLES, SweepInterrupted
from qeval_plugins.sweep.progress import SweepProgress
from qeval_plugins.sweep.results import existing_state
from qeval_plugins.sweep.slurm_jobs import (
    JobRecord,
    check_extra,
    ended_outcome,
    job_paths,
    job_phase,
    local_executor,
    local_state,
    mark_collected,
    read_record,
    sacct_states,
    slurm_parameters,
    write_record,
)
from qeval_plugins.sweep.unit import LOCK_FILE, Outcome, Unit, attempt, held_elsewhere

POLL_SECONDS = 3.0  # result files and local processes
SACCT_POLL_SECONDS = 15.0  # sacct, which asks SLURM's database
LAUNCHER_LOCK = ".slurm-launcher.lock"
MARKER_FILE = "output-visible"
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


def require_submitit() -> None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise QevalError("--launcher slurm needs submitit: pip install 'qeval[slurm]'") from None


def filesystem_type(path: Path) -> str | None:
    """The type (``ext4``, ``tmpfs``, ``nfs``) of the filesystem holding ``path`` (which may
    not exist yet), from ``/proc/mounts``; None where that cannot be read."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    path = path.resolve()
    best, kind = None, None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(re.sub(r"\\([0-7]{3})", lambda code: chr(int(code[1], 8)), fields[1]))
        if (path == point or point in path.parents) and (
            best is None or len(point.parts) > len(best.parts)
        ):
            best, kind = point, fields[2]
    return kind


def check_shared_filesystem(output: Path) -> None:
    """``--output`` in this machine's memory is refused: SLURM's nodes cannot see it."""
    kind = filesystem_type(output)
    resolved = output.resolve()
    if kind in MEMORY_FILESYSTEMS or Path("/dev/shm") in (resolved, *resolved.parents):
        raise QevalError(
            f"--launcher slurm: --output {output} is in this machine's memory "
            f"({kind or 'shared memory'}), which the nodes cannot see; give an --output on a "
            f"filesystem the nodes share (or add --slurm-local)."
        )


def run_on_node(unit: Unit, env: dict[str, str], output: Path, marker: Path, token: str):
    """What each array task runs: :func:`~.unit.attempt`, once this node sees the ``marker``
    file (holding ``token``) the driver wrote in ``--output``."""
    try:
        seen = marker.read_text()
    except OSError:
        seen = None
    if seen != token:
        line = (
            f"run {unit.label}: node {socket.gethostname()} cannot see --output {output} (no "
            f"{marker} there); give an --output on a filesystem the nodes share"
        )
        print(line, file=sys.stderr)
        return Outcome("failed", line)
    return attempt(unit, env)


def shippable(unit: Unit) -> Unit:
    """``unit`` with its folder and a local model path absolute (it runs elsewhere)."""
    model = str(Path(unit.model).absolute()) if Path(unit.model).exists() else unit.model
    return replace(unit, directory=unit.directory.absolute(), model=model)


@dataclass
class Tracked:
    """A unit's job this command follows: its record, the submitit job when this process
    submitted it, its phase (``pending``, ``running``) and what ``qeval run`` shows of it."""

    record: JobRecord
    handle: object | None
    phase: str
    detail: str
    started: bool = False


class SlurmLauncher:
    """Submits the units as a SLURM job array (or local processes) and follows the jobs, as
    ``settings`` ask. ``runs_elsewhere``: on SLURM's nodes (not with ``--slurm-local``)."""

    def __init__(self, settings: SlurmSettings) -> None:
        require_submitit()
        check_extra(settings.extra)
        self.settings = replace(settings, folder=settings.folder.absolute())
        self.output = self.settings.folder.parent
        self.runs_elsewhere = not settings.local
        if not settings.local:
            check_shared_filesystem(self.output)
            if shutil.which("sbatch") is None:
                raise QevalError(
                    "--launcher slurm submits with sbatch, which is not on this machine's "
                    "PATH: run qeval run on the cluster's login node, or add --slurm-local to "
                    "run the job array as processes on this machine."
                )

    def launch(self, units: list[Unit], progress: SweepProgress) -> list[Outcome]:
        """Every unit's outcome, in ``units``' order (``pending``/``running`` with
        ``--detach``); raises :class:`~.local.SweepInterrupted` on Ctrl-C, jobs left running."""
        if units and self.settings.gpus_per_run and not units[0].device.startswith("cuda"):
            raise QevalError(
                f"--slurm-gpus-per-run {self.settings.gpus_per_run} gives runs GPUs, but "
                f"--device is {units[0].device}; use --device cuda (or drop "
                f"--slurm-gpus-per-run)."
            )
        shipped = [shippable(unit) for unit in units]
        outcomes: list[Outcome | None] = [None] * len(units)
        self.output.mkdir(parents=True, exist_ok=True)
        with locked(self.output / LAUNCHER_LOCK):
            previous = [read_record(unit.directory) for unit in shipped]
            records = [None if r is None or r.collected else r for r in previous]
            states = self._states(records)
            tracked: dict[int, Tracked] = {}
            to_submit: dict[int, str] = {}  # unit -> why it is submitted again ("" first time)
            for index, (unit, record) in enumerate(zip(shipped, records, strict=True)):
                if record is not None:
                    state, node = states[index]
                    phase = self._phase(record, state)
                    if phase != "ended":
                        detail = f"job {record.job_id} (submitted {record.submitted})"
                        tracked[index] = Tracked(record, None, phase, detail)
                        continue
                    outcome = ended_outcome(unit, record, state, node)
                    if outcome.kind == "failed":
                        to_submit[index] = outcome.detail
                        continue
                    mark_collected(unit.directory, record)
                    if outcome.kind == "skip" and not self._complete(unit):
                        to_submit[index] = f"job {record.job_id} skipped it: {outcome.detail}"
                        continue
                    outcomes[index] = self._settled(unit, outcome)
                elif not unit.force and self._complete(unit):
                    outcomes[index] = Outcome("skip", "results exist")
                else:
                    to_submit[index] = ""
            for index in list(to_submit):
                if (held := self._held(shipped[index])) is not None:
                    outcomes[index] = held
                    del to_submit[index]
            if to_submit:
                tracked |= self._submit(shipped, previous, to_submit)
        for index, outcome in enumerate(outcomes):
            if outcome is not None:
                progress.finish(units[index], outcome)
        if self.settings.detach:
            return self._detached(units, tracked, outcomes, progress)
        return self._wait(units, shipped, tracked, outcomes, progress)

    @staticmethod
    def _complete(unit: Unit) -> bool:
        return existing_state(unit.directory, unit.settings, list(unit.expected))[0] == "complete"

    @classmethod
    def _settled(cls, unit: Unit, outcome: Outcome) -> Outcome:
        """An ended job's ``outcome`` as the folder shows it now: a skip (results existed, or
        another qeval run held the unit when the job ran) is ``results exist`` once they do."""
        if outcome.kind == "skip" and cls._complete(unit):
            return Outcome("skip", "results exist")
        return outcome

    @staticmethod
    def _held(unit: Unit) -> Outcome | None:
        """The skip of a unit another process (a local ``qeval run``) holds the run folder's
        lock of, else None; the lock is let go at once (the job takes it when it runs)."""
        unit.directory.mkdir(parents=True, exist_ok=True)
        with try_locked(unit.directory / LOCK_FILE) as mine:
            return None if mine else held_elsewhere(unit)

    @staticmethod
    def _phase(record: JobRecord, state: str) -> str:
        """The job's phase; ended once its result file exists, whatever its state says."""
        return "ended" if job_paths(record).result_pickle.exists() else job_phase(state)

    @staticmethod
    def _states(records: list[JobRecord | None]) -> list[tuple[str, str]]:
        """(state, node) of each record's job (one sacct call for the SLURM jobs)."""
        slurm = [record.job_id for record in records if record is not None and not record.local]
        found = sacct_states(slurm) if slurm else {}
        states = []
        for record in records:
            if record is None:
                states.append(("", ""))
            elif record.local:
                states.append((local_state(record), ""))
            else:
                states.append(found.get(record.job_id, ("UNKNOWN", "")))
        return states

    def _submit(
        self, shipped: list[Unit], previous: list[JobRecord | None], to_submit: dict[int, str]
    ) -> dict[int, Tracked]:
        """Submit the units ``to_submit`` names as one array; record each unit's job (its
        ``previous`` record counts the submissions)."""
        folder = self.settings.folder / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        folder.mkdir(parents=True, exist_ok=True)
        marker, token = folder / MARKER_FILE, secrets.token_hex(16)
        write_atomic(marker, token.encode())
        units = [shipped[index] for index in to_submit]
        count = len(units)
        env = dict.fromkeys(THREAD_VARIABLES, str(self.settings.cpus_per_run))
        try:  # submitit prints sbatch's error before raising it: it is in the one line instead
            executor = self._executor(folder)
            with contextlib.redirect_stderr(io.StringIO()):
                jobs = executor.map_array(
                    run_on_node, units, [env] * count, [self.output] * count, [marker] * count,
                    [token] * count,
                )  # fmt: skip
        except Exception as error:  # sbatch's refusal, a missing srun
            raise QevalError(f"submitting {count} runs failed: {one_line(error)}") from None
        submitted = datetime.now().isoformat(sep=" ", timespec="seconds")
        tracked = {}
        for (index, why), unit, job in zip(to_submit.items(), units, jobs, strict=True):
            old = previous[index]
            record = JobRecord(
                job_id=str(job.job_id),
                folder=str(folder),
                submitted=submitted,
                submissions=(old.submissions if old else 0) + 1,
                local=self.settings.local,
                host=socket.gethostname(),
            )
            unit.directory.mkdir(parents=True, exist_ok=True)
            write_record(unit.directory, record)
            detail = f"submitted as job {record.job_id}"
            if why:
                detail += f" (submission {record.submissions}; the last one: {why})"
            handle = job if self.settings.local else None
            tracked[index] = Tracked(record, handle, "pending", detail)
        return tracked

    def _executor(self, folder: Path):
        if self.settings.local:
            return local_executor(folder, self.settings.time)
        from submitit import SlurmExecutor

        executor = SlurmExecutor(folder)
        executor.update_parameters(**slurm_parameters(self.settings))
        return executor

    def _detached(self, units, tracked, outcomes, progress) -> list[Outcome]:
        for index, job in tracked.items():
            outcomes[index] = Outcome(job.phase, job.detail)
            progress.finish(units[index], outcomes[index])
        if tracked:
            self._print_hints(progress, tracked)
        return outcomes

    def _wait(self, units, shipped, tracked, outcomes, progress) -> list[Outcome]:
        """Poll the jobs until each ended; each one's outcome as it ends."""
        last_sacct, states = float("-inf"), {}
        try:
            while tracked:
                records = {index: job.record for index, job in tracked.items()}
                if time.monotonic() - last_sacct >= SACCT_POLL_SECONDS:
                    listed = list(records.values())
                    states = dict(zip(records, self._states(listed), strict=True))
                    last_sacct = time.monotonic()
                for index, job in list(tracked.items()):
                    state, node = states.get(index, ("UNKNOWN", ""))
                    if job.record.local:
                        state = local_state(job.record, job.handle)
                    job.phase = self._phase(job.record, state)
                    if job.phase == "running" and not job.started:
                        progress.start(units[index])
                        job.started = True
                    if job.phase == "ended":
                        outcome = ended_outcome(shipped[index], job.record, state, node)
                        outcomes[index] = self._settled(shipped[index], outcome)
                        with locked(self.output / LAUNCHER_LOCK):
                            mark_collected(shipped[index].directory, job.record)
                        progress.finish(units[index], outcomes[index])
                        del tracked[index]
                if tracked:
                    time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            for index, job in tracked.items():
                outcomes[index] = Outcome(job.phase, f"job {job.record.job_id} left running")
                progress.finish(units[index], outcomes[index])
            self._print_hints(progress, tracked)
            raise SweepInterrupted(outcomes) from None
        return outcomes

    def _print_hints(self, progress: SweepProgress, tracked: dict[int, Tracked]) -> None:
        """How to collect the jobs left running, and how to cancel them."""
        records = [job.record for job in tracked.values()]
        pids = [record.job_id for record in records if record.local]
        arrays = [record.job_id.split("_")[0] for record in records if not record.local]
        cancel = [f"scancel {' '.join(dict.fromkeys(arrays))}"] * bool(arrays)
        cancel += [f"kill -INT {' '.join(pids)}"] * bool(pids)  # submitit's LocalJob.cancel
        progress.console.print(
            f"{len(records)} runs go on as jobs: run the same qeval run command again to see "
            f"them and collect their results (it submits again only what failed); cancel them "
            f"with: {' and '.join(cancel)}",
            markup=False,
            highlight=False,
        )
