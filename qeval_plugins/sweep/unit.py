"""One run of a sweep — a *unit* — and what computing it means wherever it runs.

A unit is plain data (:class:`Unit`, picklable: Ray and submitit ship it to other processes and
nodes). :func:`attempt` computes it in place: under the run folder's lock, unless its results
exist, one lm_eval process writes into a private ``.partial-*`` folder and the validated results
are installed (:func:`install_validated`). A launcher that runs lm_eval elsewhere (Ray, without a
shared filesystem) brings the files back and installs them with the same function.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.safe_read import read_tail
from qeval_plugins.storage.atomic import remove_stale_temporaries, write_atomic
from qeval_plugins.storage.locks import holder_pid, try_locked
from qeval_plugins.sweep.child import run_child
from qeval_plugins.sweep.failures import disk_cause, log_lines, os_failure, run_failure
from qeval_plugins.sweep.heartbeat import log_phase
from qeval_plugins.sweep.results import (
    RESULTS_FILE,
    existing_state,
    read_results,
    results_problem,
)
from qeval_plugins.sweep.settings import SETTINGS_FILE, record_bytes

HEARTBEAT_TAIL_BYTES = 4 << 10  # of a running run's log, for its last line
LOG_FILE = "lm_eval.log"
LOCK_FILE = ".lock"
STAMP = "%Y%m%d-%H%M%S-%f"  # of each attempt's log: date, time, microseconds (sorts in time order)


@dataclass(frozen=True, eq=False)
class Unit:
    """One run: ``model`` evaluated with one quantizer spec on ``tasks`` into ``directory``.

    ``model_args`` is the spec's part of lm_eval's ``--model_args`` (``quantizer=rtn,bits=4``);
    ``settings`` the run's settings record (:func:`~.settings.run_settings`); ``expected`` the
    task and group names its results must hold; ``extra`` the lm_eval options passed on."""

    label: str
    model: str
    model_args: str
    directory: Path
    tasks: tuple[str, ...]
    expected: tuple[str, ...]
    settings: dict = field(repr=False)
    device: str
    extra: tuple[str, ...]
    force: bool = False


@dataclass(frozen=True)
class Outcome:
    """How a unit ended: ``kind`` is ``skip``, ``done``, ``failed`` or ``interrupted`` (a
    launcher adds ``pending`` and ``running`` for units still on a cluster); ``detail`` is the
    line shown after the label (a failure's whole line, naming its log)."""

    kind: str
    detail: str


def lm_eval_command(unit: Unit, partial: Path) -> list[str]:
    """The unit's ``python -m lm_eval ...`` command line, writing its results under ``partial``."""
    from qeval_plugins.paths import tasks_path

    return [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "qeval",
        "--model_args",
        f"pretrained={unit.model},{unit.model_args}",
        "--tasks",
        ",".join(unit.tasks),
        "--include_path",
        str(tasks_path()),
        "--device",
        unit.device,
        "--output_path",
        str(partial),
        *unit.extra,
    ]


def remove_leftovers(directory: Path) -> None:
    """Delete ``.partial-*`` folders and temporary files: call only while holding the run lock
    (then no live qeval process is using them)."""
    for stale in directory.glob(".partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    remove_stale_temporaries(directory, older_than=0)


def new_attempt(directory: Path) -> tuple[Path, Path]:
    """(private results folder, log file) of a new attempt; ``lm_eval.log`` is made a link to
    the log (older logs are kept)."""
    stamp = datetime.now().strftime(STAMP)
    partial = directory / f".partial-{os.getpid()}-{stamp}"
    log_path = directory / f"lm_eval.{stamp}.log"
    link = directory / LOG_FILE
    try:
        if link.exists() and not link.is_symlink():  # the single log of an older qeval: keep it
            older = datetime.fromtimestamp(link.stat().st_mtime).strftime(STAMP)
            os.replace(link, directory / f"lm_eval.{older}.log")
        temporary = directory / f".{LOG_FILE}.{os.getpid()}.link"
        temporary.unlink(missing_ok=True)
        os.symlink(log_path.name, temporary)
        os.replace(temporary, link)
    except OSError:  # no symbolic links here: the dated log is still written and named
        pass
    return partial, log_path


def _install(directory: Path, raw: bytes, settings: dict, partial: Path) -> None:
    """Settings record first (naming the new results' checksum), samples (an older attempt's
    removed: they belong to the results replaced), then the results."""
    write_atomic(directory / SETTINGS_FILE, record_bytes(settings, hashlib.sha256(raw).hexdigest()))
    for stale in directory.glob("samples_*.jsonl"):
        stale.unlink(missing_ok=True)
    for samples in partial.rglob("samples_*.jsonl"):
        os.replace(samples, directory / samples.name)
    write_atomic(directory / RESULTS_FILE, raw)


def install_validated(unit: Unit, code: int, partial: Path, log_path: Path) -> None:
    """Install the results lm_eval (exit status ``code``) left under ``partial`` once they are
    valid JSON holding every expected task; otherwise raise the unit's failure line and replace
    nothing. The caller holds the run's lock and removes ``partial`` afterwards."""
    try:
        found = sorted(partial.rglob("results_*.json"))
        if code != 0 or not found:
            raise run_failure(unit, log_path, code)
        raw = read_results(found[-1])
        problem = results_problem(raw, list(unit.expected))
        if problem:
            disk = disk_cause(log_lines(log_path), unit.directory)
            raise QevalError(
                f"run {unit.label} failed: lm_eval exited {code} but its results file {problem}"
                f"{f' ({disk})' if disk else ''}; nothing was replaced (log: {log_path})"
            )
        _install(unit.directory, raw, unit.settings, partial)
    except OSError as error:
        raise os_failure(unit, "read or install its results", error) from None


def execute(unit: Unit, env: dict[str, str] | None = None) -> None:
    """One lm_eval process with ``env`` added to its environment (the caller holds the run's
    lock); validated results are installed."""
    remove_leftovers(unit.directory)
    partial, log_path = new_attempt(unit.directory)
    try:
        with open(log_path, "w") as log:
            code = run_child(lm_eval_command(unit, partial), log, env)
    except OSError as error:
        raise os_failure(unit, f"write its log {log_path}", error) from None
    try:
        install_validated(unit, code, partial, log_path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def locked_state(unit: Unit) -> Outcome | None:
    """The outcome of a unit that needs no computing (the caller holds its lock): ``skip`` when
    its results exist, ``failed`` when results made with other settings appeared meanwhile (a
    sweep refuses those up front); None when it must be computed."""
    if unit.force:
        return None
    state, why = existing_state(unit.directory, unit.settings, list(unit.expected))
    if state == "complete":
        return Outcome("skip", "results exist")
    if state == "conflict":  # written meanwhile by another sweep
        return Outcome(
            "failed", f"run {unit.label}: its results were made with other settings ({why})"
        )
    return None


def held_elsewhere(unit: Unit) -> Outcome:
    """The outcome of a unit whose lock another process holds."""
    pid = holder_pid(unit.directory / LOCK_FILE) or "unknown"
    return Outcome("skip", f"being computed by another qeval run (pid {pid})")


def attempt(unit: Unit, env: dict[str, str] | None = None) -> Outcome:
    """Compute ``unit`` in place unless it is done or another sweep holds it."""
    unit.directory.mkdir(parents=True, exist_ok=True)
    with try_locked(unit.directory / LOCK_FILE) as mine:
        if not mine:
            return held_elsewhere(unit)
        if (known := locked_state(unit)) is not None:
            return known
        started = time.perf_counter()
        try:
            execute(unit, env)
        except QevalError as error:
            return Outcome("failed", str(error))
        return Outcome("done", f"in {time.perf_counter() - started:.1f} s")


def run_phase(unit: Unit, since: float) -> str:
    """What ``unit`` is doing, for its heartbeat line: the last line of the lm_eval log its
    attempt started at ``since`` (epoch seconds) writes, which is lm-eval's own progress (e.g.
    ``Running loglikelihood requests: 40%|████ | 80/200``); ``starting lm_eval`` before there
    is one."""
    log = unit.directory / LOG_FILE
    try:
        if log.stat().st_mtime < since:  # an older attempt's log: this one's is not made yet
            return "starting lm_eval"
        tail = read_tail(log, HEARTBEAT_TAIL_BYTES).decode(errors="replace")
    except OSError:
        return "starting lm_eval"
    return f"lm_eval: {log_phase(tail)}"
