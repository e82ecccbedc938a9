"""The ``ray`` launcher: each unit is a Ray task requesting its CPUs and GPUs; results come back
through Ray, so the nodes need no filesystem shared with this machine (every node needs qeval
installed, and the models reachable from it).

This process (the *driver*) holds each unit's run-folder lock from before the task is submitted
until its results are installed, so two sweeps never compute the same unit; a unit whose lock
another process holds is skipped. The task (:mod:`.ray_task`) runs lm_eval in a scratch folder of
its node (``OMP_NUM_THREADS = MKL_NUM_THREADS = --ray-cpus-per-run``) and sends back its exit
status, files and log; the driver writes the log as the attempt's log and installs the files
with the validated atomic protocol (:func:`~.unit.install_validated`). A worker that dies
mid-unit never leaves a partial result: Ray runs the unit again, at most ``--ray-retries`` times,
and then the unit fails with a line saying how often its worker died.

Without ``--ray-address`` the driver starts a local Ray instance and shuts it down at the end;
a cluster it connected to is left running. Ray's own INFO lines and the workers' output stay
off the terminal (Ray's logs are in its session folder, ``/tmp/ray/session_latest/logs``).
Ctrl-C cancels the tasks (their workers are killed, lm_eval with them), releases the locks and
installs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import time
from dataclasses import replace
from pathlib import Path, PurePosixPath

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.text import one_line
from qeval_plugins.storage.locks import try_locked
from qeval_plugins.sweep.failures import os_failure
from qeval_plugins.sweep.launch_settings import RaySettings
from qeval_plugins.sweep.local import THREAD_VARIABLES, SweepInterrupted
from qeval_plugins.sweep.progress import NOT_STARTED, SweepProgress
from qeval_plugins.sweep.ray_task import Started, TaskResult, compute_unit
from qeval_plugins.sweep.unit import (
    LOCK_FILE,
    Outcome,
    Unit,
    held_elsewhere,
    install_validated,
    locked_state,
    new_attempt,
    remove_leftovers,
)

RAY_MISSING = "--launcher ray needs Ray: pip install 'qeval[ray]'"
PROBE_SECONDS = 5.0  # to reach --ray-address before Ray is asked to (Ray retries for minutes)
WAIT_SECONDS = 0.5  # between two looks at the tasks (Ctrl-C reaches the driver between them)


def import_ray():
    """The ``ray`` module, or the one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise QevalError(RAY_MISSING) from None
    return ray


def check_address(address: str | None) -> None:
    """``--ray-address``: ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT`` (Ray Client); a
    ``HOST:PORT`` must accept a connection within :data:`PROBE_SECONDS` (one line if not)."""
    if address is None or address == "auto":
        return
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not (colon and host and port.isascii() and port.isdecimal() and 0 < int(port) < 65536):
        raise QevalError(
            f"--ray-address must be auto, HOST:PORT or ray://HOST:PORT (e.g. 10.0.0.5:6379), "
            f"got '{address}'."
        )
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_SECONDS).close()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise QevalError(
            f"--ray-address {address}: nothing answers there ({reason}); start the cluster's "
            f"head with 'ray start --head' and give the address it prints."
        ) from None


class _HideTokenNotice(logging.Filter):
    """Drops Ray's notice that the local instance it starts uses token authentication (a
    warning on every start, about the safe default)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


def connect(ray, address: str | None) -> bool:
    """Connect to the cluster at ``address`` or start a local Ray instance (None); True when
    this call started one (the caller shuts it down). Ray's INFO lines and the workers' output
    stay off the terminal."""
    if ray.is_initialized():  # a program using qeval's API connected it already
        return False
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
        _HideTokenNotice()
    )
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address is None:
            ray.init(include_dashboard=False, **quiet)
            return True
        ray.init(address=address, **quiet)
    except Exception as error:  # ConnectionError, ValueError, RuntimeError: Ray's words vary
        where = "start a local Ray instance" if address is None else f"connect to {address}"
        raise QevalError(f"--launcher ray: cannot {where}: {one_line(error)[:300]}") from None
    return False


def check_local_resources(ray, settings: RaySettings) -> None:
    """A local instance that lacks the GPUs or CPUs one run asks for would queue it forever:
    one line instead (a cluster may add nodes on demand, so it is trusted)."""
    have = ray.cluster_resources()
    for name, option, wanted in (
        ("GPU", "--ray-gpus-per-run", settings.gpus_per_run),
        ("CPU", "--ray-cpus-per-run", settings.cpus_per_run),
    ):
        if wanted > have.get(name, 0):
            raise QevalError(
                f"{option} {wanted:g}: the local Ray instance has {have.get(name, 0):g} {name}s; "
                f"ask for fewer, or give --ray-address of a cluster that has them."
            )


def shipped(unit: Unit) -> Unit:
    """``unit`` with absolute paths (its folder; its model when a local path)."""
    model = Path(unit.model)
    return replace(
        unit,
        directory=unit.directory.absolute(),
        model=str(model.absolute()) if model.exists() else unit.model,
    )


def ray_failure(unit: Unit, error: Exception, retries: int, crashed: type) -> str:
    """The failed unit's line for a Ray error (``crashed``: Ray's WorkerCrashedError)."""
    if isinstance(error, crashed):
        return (
            f"run {unit.label} failed: the Ray worker running it died {retries + 1} times "
            f"(--ray-retries {retries}); nothing was installed"
        )
    cause = getattr(error, "cause", None) or error  # RayTaskError: the task's own exception
    first = (str(cause).strip().splitlines() or [""])[0]
    return f"run {unit.label} failed on Ray: {type(cause).__name__}: {one_line(first)[:300]}"


def install_result(unit: Unit, result: TaskResult, seconds: float) -> Outcome:
    """Write what the task sent back into a new attempt of ``unit``'s folder and install it
    (the caller holds the folder's lock): ``done``, or ``failed`` with its line."""
    partial, log_path = new_attempt(unit.directory)
    try:
        log_path.write_bytes(result.log)
        if result.refused:
            raise QevalError(
                f"run {unit.label} failed: {result.refused}; nothing was replaced (log: {log_path})"
            )
        for name, data in result.files.items():
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts:
                raise QevalError(f"run {unit.label} failed: its Ray task sent back '{name}'")
            target = partial.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        install_validated(unit, result.code, partial, log_path)
    except QevalError as error:
        return Outcome("failed", str(error))
    except OSError as error:
        return Outcome("failed", str(os_failure(unit, "write its results", error)))
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return Outcome("done", f"in {seconds:.1f} s on {result.node}")


class RayLauncher:
    """Runs each unit as a Ray task (:mod:`.ray_task`) with ``settings``' resources;
    ``runs_elsewhere``: on a cluster's nodes (not on a local instance)."""

    def __init__(self, settings: RaySettings) -> None:
        import_ray()
        check_address(settings.address)
        self.settings = settings
        self.runs_elsewhere = settings.address is not None
        self._nodes: dict[int, str] = {}  # id(unit) -> node running it

    def phase(self, unit: Unit, since: float) -> str:
        """A running unit's heartbeat phase: where it runs (its log comes back when it ends)."""
        return f"running on Ray node {self._nodes.get(id(unit), '?')}"

    def launch(self, units: list[Unit], progress: SweepProgress) -> list[Outcome]:
        """Every unit's outcome, in ``units``' order; raises :class:`SweepInterrupted` on
        Ctrl-C once the tasks are cancelled."""
        ray = import_ray()
        started_here = connect(ray, self.settings.address)
        try:
            if started_here:
                check_local_resources(ray, self.settings)
            return _RaySweep(ray, self.settings, units, progress, self._nodes).run()
        finally:
            if started_here:
                ray.shutdown()


class _RaySweep:
    """One launch: submits the units, installs results as they arrive (``ray.wait``)."""

    def __init__(self, ray, settings, units, progress, nodes) -> None:
        self.ray, self.settings, self.units, self.progress = ray, settings, units, progress
        self.nodes = nodes
        self.outcomes: list[Outcome | None] = [None] * len(units)
        self.locks: dict[int, contextlib.ExitStack] = {}  # unit index -> its held lock
        self.tasks: dict = {}  # a task's ObjectRefGenerator -> unit index
        self.started: dict[int, float] = {}  # unit index -> monotonic time it began

    def run(self) -> list[Outcome]:
        threads = str(max(1, int(self.settings.cpus_per_run)))
        task = self.ray.remote(compute_unit).options(
            num_cpus=self.settings.cpus_per_run,
            num_gpus=self.settings.gpus_per_run,
            max_retries=self.settings.retries,
            num_returns="streaming",
        )
        env = dict.fromkeys(THREAD_VARIABLES, threads)
        try:
            for index, unit in enumerate(self.units):
                if self._claim(index, unit):
                    self.tasks[task.remote(shipped(unit), env)] = index
            while self.tasks:
                ready, _ = self.ray.wait(list(self.tasks), num_returns=1, timeout=WAIT_SECONDS)
                for generator in ready:
                    self._receive(generator)
        except KeyboardInterrupt:
            self._cancel()
            raise SweepInterrupted(self._final()) from None
        finally:
            for lock in self.locks.values():
                lock.close()
        return self._final()

    def _claim(self, index: int, unit: Unit) -> bool:
        """Take ``unit``'s lock and clean its folder; False (and its outcome) when it needs no
        task: another process holds it, its results exist, or its folder cannot be made."""
        lock = contextlib.ExitStack()
        try:
            unit.directory.mkdir(parents=True, exist_ok=True)
            if not lock.enter_context(try_locked(unit.directory / LOCK_FILE)):
                known = held_elsewhere(unit)
            else:
                known = locked_state(unit)
        except OSError as error:
            known = Outcome("failed", str(os_failure(unit, "create its folder", error)))
        if known is not None:
            lock.close()
            self._end(index, known)
            return False
        self.locks[index] = lock
        remove_leftovers(unit.directory)
        return True

    def _receive(self, generator) -> None:
        """The task's next message: it started, or its result (installed) or error."""
        index = self.tasks[generator]
        unit = self.units[index]
        try:
            message = self.ray.get(next(generator))
        except self.ray.exceptions.RayError as error:
            del self.tasks[generator]
            crashed = self.ray.exceptions.WorkerCrashedError
            line = ray_failure(unit, error, self.settings.retries, crashed)
            self._end(index, Outcome("failed", line))
            return
        if isinstance(message, Started):
            self.nodes[id(unit)] = message.node
            self.started[index] = time.monotonic()
            self.progress.start(unit)
            return
        del self.tasks[generator]
        self._end(index, install_result(unit, message, time.monotonic() - self.started[index]))

    def _end(self, index: int, outcome: Outcome) -> None:
        """``outcome`` for unit ``index`` (no task of it left): its lock released, its line
        printed."""
        self.outcomes[index] = outcome
        if (lock := self.locks.pop(index, None)) is not None:
            lock.close()
        self.progress.finish(self.units[index], outcome)

    def _cancel(self) -> None:
        """Ctrl-C: cancel every task (killing its worker and lm_eval); a unit that had
        started is ``interrupted``."""
        tasks, self.tasks = self.tasks, {}
        for generator, index in tasks.items():
            with contextlib.suppress(Exception):  # Ray itself may be stopping (Ctrl-C hit it too)
                self.ray.cancel(generator, force=True)
            if index in self.started:
                self._end(index, Outcome("interrupted", "stopped by Ctrl-C; nothing was installed"))

    def _final(self) -> list[Outcome]:
        return [outcome or Outcome("interrupted", NOT_STARTED) for outcome in self.outcomes]
