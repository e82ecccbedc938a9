"""``qeval run``: evaluate every model × quantizer spec with lm-eval, resumably and safely.

Before the first run every model, spec, passed-on lm-eval option and task name is checked, and
``--output`` must be a writable folder: a mistake is one line, not a failure per run.

Each run is a fresh ``python -m lm_eval --model qeval ...`` process (memory is fully released
between runs) writing into a private ``.partial-*`` folder of ``DIR/<model>__<spec>/``.

Resume. A run is skipped when its ``results.json`` holds every requested task and its settings
record ``qeval_run.json`` (:mod:`qeval_plugins.cli.run_settings`: limit, few-shot, seeds, chat
template, model args, versions, ...) matches this sweep's. Results made with other settings, with
unknown settings (no record: an older qeval), or lacking a requested task are never silently
reused or replaced: the sweep refuses before any run, in one line naming the differences, and
``--force`` recomputes and replaces them.

Safety.

* New results replace the old only once validated (valid JSON holding every requested task);
  otherwise the run is reported failed and nothing is replaced (lm-eval exits 0 even when it could
  not write its results, e.g. on a full disk). The settings record is written first and names the
  results by checksum, then the results are written atomically (temporary file, fsync, rename): a
  crash leaves the old pair, or a pair that counts as unknown settings, never a false match.
* Each run folder has a lock (``.lock``, flock). A second ``qeval run`` on the same ``--output``
  skips a run another one is computing ("being computed by another qeval run (pid N)") and goes
  on with the next, so two sweeps share the work instead of doing it twice. Only the lock holder
  deletes the folder's ``.partial-*`` folders and temporary files: while it holds the lock, any
  that exist were left by a process that died.
* Every attempt keeps its own log, ``lm_eval.<date>-<time>.log``; ``lm_eval.log`` links to the
  latest. A failed run's line names its cause: the log's ``qeval: error:`` line, else a full
  disk (the filesystem's mount point and free space), else the exit status and the log's last
  exception.
* The lm_eval process dies with the sweep, ``kill -9`` included (Linux: :func:`die_with_parent`).
* Files already in ``--output`` are read only when regular and within a size cap (never a FIFO,
  never a link to a device: :mod:`qeval_plugins.core.safe_read`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from qeval_plugins.backend.checkpoints import checked_quantization, resolve_pretrained
from qeval_plugins.backend.preflight import preflight
from qeval_plugins.cli.checked_specs import CheckedSpec, check_spec_text
from qeval_plugins.cli.heartbeat import elapsed_text, heartbeat, heartbeat_interval, log_phase
from qeval_plugins.cli.run_settings import (
    SETTINGS_FILE,
    LmEvalOptions,
    differences,
    parse_lm_eval_args,
    record_bytes,
    recorded_settings,
    run_settings,
)
from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.kv_settings import check_head_dim, config_head_dim, take_kv_cache
from qeval_plugins.core.plan import check_dtype
from qeval_plugins.core.safe_read import read_regular, read_tail
from qeval_plugins.core.text import one_line
from qeval_plugins.storage.atomic import remove_stale_temporaries, write_atomic
from qeval_plugins.storage.locks import holder_pid, try_locked
from qeval_plugins.storage.writable import check_writable_dir

RESULTS_FILE = "results.json"
MAX_RESULTS_BYTES = 256 << 20  # as qeval report reads them (report.load.MAX_RESULTS_BYTES)
MAX_CONFIG_BYTES = 16 << 20  # a model's config.json
LOG_TAIL_BYTES = 256 << 10  # of a failed run's log, searched for its cause
HEARTBEAT_TAIL_BYTES = 4 << 10  # of a running run's log, for its last line
LOG_FILE = "lm_eval.log"
LOCK_FILE = ".lock"
STAMP = "%Y%m%d-%H%M%S-%f"  # of each attempt's log: date, time, microseconds (sorts in time order)


def slug(text: str) -> str:
    """A folder-safe form of a model name or spec: ``rtn:bits=4`` -> ``rtn_bits-4``."""
    text = text.rstrip("/").replace("/", "--").replace(":", "_").replace("=", "-")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


@dataclass(frozen=True)
class PlannedRun:
    model: str
    checked: CheckedSpec  # the quantizer spec, read and validated once for the whole sweep
    directory: Path

    @property
    def spec(self) -> str:
        """The quantizer spec as the user wrote it."""
        return self.checked.text

    @property
    def label(self) -> str:
        return f"{Path(self.model).name or self.model} × {self.spec}"


def plan_runs(models: list[str], specs: list[str], output: Path, device: str) -> list[PlannedRun]:
    """Read and validate every spec once and every model (no model is loaded); name each
    run's folder."""
    if not specs:
        raise QevalError("--quantizers names no quantizer; give specs such as none,bnb-nf4.")
    same_run: dict[tuple, str] = {}
    checked = [check_spec_text(spec, device) for spec in specs]
    for spec in checked:
        plan = spec.plan
        key = (plan.quantizer.name, tuple(sorted(plan.options.items())), plan.kv)
        if key in same_run:  # aliases, option order and defaults resolved
            raise QevalError(
                f"quantizer specs '{same_run[key]}' and '{spec.text}' are the same run "
                f"({plan.quantizer.name} with the same options and KV cache); give it once."
            )
        same_run[key] = spec.text
    repeated = sorted({model for model in models if models.count(model) > 1})
    if repeated:
        raise QevalError(f"--model '{repeated[0]}' is given twice; give each once.")
    runs = []
    for model in models:
        resolved = resolve_pretrained(model)  # a missing local path fails here, before any run
        head_dim = local_head_dim(resolved)
        for spec in checked:
            checked_quantization(resolved, spec.plan.quantizer.name)
            check_head_dim(spec.plan.kv, head_dim)
        name = Path(model).name if Path(model).exists() else model
        runs += [
            PlannedRun(model, spec, output / f"{slug(name)}__{slug(spec.text)}") for spec in checked
        ]
    names = [str(run.directory).lower() for run in runs]  # case-insensitive disks (macOS)
    if len(set(names)) != len(names):
        raise QevalError(
            "two runs would share a folder (models or specs that differ only in characters a "
            "folder name cannot hold); give each --model a distinct name."
        )
    return runs


def local_head_dim(pretrained: str) -> int | None:
    """The head dimension a local checkpoint's ``config.json`` states; None for a hub id or a
    config that cannot be read (loading reports that)."""
    try:
        raw = read_regular(Path(pretrained) / "config.json", MAX_CONFIG_BYTES)
        config = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return config_head_dim(config)


def check_model_args(specs: list[CheckedSpec], options: LmEvalOptions) -> None:
    """``--model_args`` must not override an option a spec sets (the run's folder would lie);
    its ``dtype`` must be a model dtype; its ``kv_*`` settings, with each spec's, must be valid
    (:func:`~qeval_plugins.core.kv_settings.take_kv_cache`)."""
    check_dtype(options.model_args.get("dtype"))
    for spec in specs:
        clash = sorted(set(spec.options) & {str(k).strip() for k in options.model_args})
        if clash:
            raise QevalError(
                f"--model_args sets '{clash[0]}', which quantizer spec '{spec.text}' sets too; "
                f"give quantizer options in the spec only."
            )
        take_kv_cache({**options.model_args, **spec.options})


# ---------------------------------------------------------------- what results hold


def covered(data: Any) -> set[str]:
    """Task and group names a results file holds: the keys of ``results`` and ``groups``, plus
    each group of ``group_subtasks`` whose subtasks are all held."""
    if not isinstance(data, dict):
        return set()
    names: set[str] = set()
    for section in ("results", "groups"):
        if isinstance(data.get(section), dict):
            names |= set(data[section])
    groups = data.get("group_subtasks")
    groups = groups if isinstance(groups, dict) else {}
    grew = True
    while grew:
        complete = {
            group
            for group, children in groups.items()
            if group not in names
            and isinstance(children, list)
            and all(isinstance(child, str) and child in names for child in children)
        }
        names |= complete
        grew = bool(complete)
    return names


def results_problem(raw: bytes, tasks: list[str]) -> str | None:
    """Why ``raw`` is not a usable results file for ``tasks``, or None when it is."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as error:
        return f"is not valid JSON ({' '.join(str(error).split())[:80]})"
    held = covered(data)
    lacking = [task for task in tasks if task not in held]
    if lacking:
        return f"lacks {', '.join(lacking[:5])}{' ...' if len(lacking) > 5 else ''}"
    return None if held else "holds no results"


def read_results(path: Path) -> bytes:
    """A run's results file: a regular file (never a FIFO, which would block, or a link to a
    device such as /dev/zero, which never ends) of at most :data:`MAX_RESULTS_BYTES`; raises
    ``OSError`` (:class:`~qeval_plugins.core.safe_read.RefusedFile` for those)."""
    return read_regular(path, MAX_RESULTS_BYTES)


def is_complete(directory: Path, tasks: list[str]) -> bool:
    """True when ``directory`` holds a readable results file covering every task in ``tasks``."""
    try:
        return results_problem(read_results(directory / RESULTS_FILE), tasks) is None
    except OSError:
        return False


def existing_state(directory: Path, settings: dict, tasks: list[str]) -> tuple[str, str]:
    """``("missing", "")``, ``("complete", "")`` or ``("conflict", why)`` for a run's folder:
    conflict means results exist that this sweep may neither reuse nor silently replace."""
    results = directory / RESULTS_FILE
    if not results.exists():
        return "missing", ""
    try:
        raw = read_results(results)
    except OSError as error:
        return "conflict", f"its {RESULTS_FILE} cannot be read ({error.strerror or error})"
    recorded = recorded_settings(directory, raw)
    if recorded is None and not (directory / SETTINGS_FILE).exists():
        return "conflict", f"no {SETTINGS_FILE} for its results: made by an older qeval?"
    if recorded is None:
        return "conflict", (
            f"its {SETTINGS_FILE} is unreadable or records other results (a results file "
            f"changed or damaged since the run)"
        )
    changed = differences(recorded, settings)
    if changed:
        return "conflict", ", ".join(changed)
    problem = results_problem(raw, tasks)
    return ("conflict", f"results {problem}") if problem else ("complete", "")


def refuse_conflicts(runs: list[PlannedRun], settings: dict, tasks: list[str], output: Path):
    """One QevalError line naming the runs whose existing results this sweep would not reuse."""
    conflicts = []
    for run in runs:
        state, why = existing_state(run.directory, settings[run], tasks)
        if state == "conflict":
            conflicts.append(f"{run.label} ({why})")
    if conflicts:
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        raise QevalError(
            f"{output} holds results made with other settings: {'; '.join(conflicts[:3])}{more}. "
            f"Pass --force to recompute and replace them, or give another --output."
        )


# ---------------------------------------------------------------- one run


def lm_eval_command(
    run: PlannedRun, tasks: list[str], device: str, partial: Path, extra: list[str]
) -> list[str]:
    from qeval_plugins.paths import tasks_path

    return [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "qeval",
        "--model_args",
        f"pretrained={run.model},{run.checked.model_args}",
        "--tasks",
        ",".join(tasks),
        "--include_path",
        str(tasks_path()),
        "--device",
        device,
        "--output_path",
        str(partial),
        *extra,
    ]


def _remove_leftovers(directory: Path) -> None:
    """Delete ``.partial-*`` folders and temporary files: call only while holding the run lock
    (then no live qeval process is using them)."""
    for stale in directory.glob(".partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    remove_stale_temporaries(directory, older_than=0)


def _new_log(directory: Path, stamp: str) -> Path:
    """This attempt's log file; ``lm_eval.log`` is made a link to it (older logs are kept)."""
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
    return log_path


# ---------------------------------------------------------------- why a run failed

_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")
# ENOSPC as Python (``OSError: [Errno 28] No space left on device: 'PATH'``), C libraries and
# safetensors/torch word it; the path, when the line names one.
_NO_SPACE = re.compile(r"\[Errno 28\]|No space left on device|\bENOSPC\b", re.IGNORECASE)
_NO_SPACE_PATH = re.compile(r"No space left on device: '([^']+)'")
LOW_FREE_BYTES = 64 << 20  # less free on --output's filesystem makes a failure "a full disk?"


def disk_space(path: Path) -> tuple[Path, int] | None:
    """(mount point, free bytes for this user) of the filesystem holding ``path`` (or its
    nearest existing parent); None when it cannot be read."""
    try:
        path = Path(os.path.abspath(path))
        while not path.exists() and path != path.parent:
            path = path.parent
        free = shutil.disk_usage(path).free
        mount = path
        while not os.path.ismount(mount) and mount != mount.parent:
            mount = mount.parent
        return mount, free
    except OSError:
        return None


def _no_space(path: Path) -> str:
    """``no space left on device (the filesystem mounted at /data, 12 KiB free now)`` for the
    filesystem that holds ``path``."""
    found = disk_space(path)
    where = f"the filesystem mounted at {found[0]}, {_bytes(found[1])} free now" if found else path
    return f"no space left on device ({where})"


def _bytes(count: float) -> str:
    """A byte count in binary units (1 KiB = 1024 bytes): ``512 bytes``, ``1.5 KiB``, ``12 GiB``
    (one decimal below 10)."""
    unit = "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if count < 1024:
            break
        count, unit = count / 1024, larger
    if unit == "bytes":
        return f"{int(count)} bytes"
    return f"{count:.1f} {unit}" if count < 10 else f"{count:.0f} {unit}"


def _disk_cause(lines: list[str], directory: Path) -> str | None:
    """``no space left on device (...)`` when the log says so (naming the filesystem of the
    path the log names, else of ``directory``), or ``only N free ... (a full disk?)`` when
    ``directory``'s filesystem has less than :data:`LOW_FREE_BYTES` free; None otherwise."""
    full = [line for line in lines if _NO_SPACE.search(line)]
    if full:
        named = _NO_SPACE_PATH.search(full[-1])
        return _no_space(Path(named[1]) if named else directory)
    found = disk_space(directory)
    if found is not None and found[1] < LOW_FREE_BYTES:
        mount, free = found
        return f"only {_bytes(free)} free on the filesystem mounted at {mount} (a full disk?)"
    return None


def _log_lines(log_path: Path) -> list[str]:
    """The last :data:`LOG_TAIL_BYTES` of a run's log as lines (none when it cannot be read)."""
    try:
        return read_tail(log_path, LOG_TAIL_BYTES).decode(errors="replace").splitlines()
    except OSError:
        return []


def _failure(run: PlannedRun, log_path: Path, code: int) -> QevalError:
    """The failed run's line: the last ``qeval: error:`` line of its log, else a full disk
    (:func:`_disk_cause`), else the exit status with the log's last exception line
    (``ValueError: ...``, at most 200 characters)."""
    lines = _log_lines(log_path)
    errors = [line for line in lines if line.startswith("qeval: error:")]
    raised = [line.strip() for line in lines if _EXCEPTION_LINE.match(line.strip())]
    last = f": {one_line(raised[-1])[:200]}" if raised else ""
    status = f"lm_eval exited with status {code}{last}"
    if errors:
        reason = errors[-1].removeprefix("qeval: error:").strip()
    elif disk := _disk_cause(lines, run.directory):
        reason = f"{disk}: {status}"
    else:
        reason = status
    return QevalError(f"run {run.label} failed: {reason} (log: {log_path})")


def _os_failure(run: PlannedRun, doing: str, error: OSError) -> QevalError:
    """The failed run's line for an ``OSError`` of qeval's own (writing the log or the results):
    a full disk names its filesystem."""
    if error.errno == errno.ENOSPC:
        reason = _no_space(Path(error.filename) if error.filename else run.directory)
    else:
        reason = error.strerror or str(error)
    return QevalError(f"run {run.label} failed: cannot {doing} ({reason})")


# ---------------------------------------------------------------- the child process

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> Callable[[], None] | None:
    """On Linux, a ``preexec_fn`` that makes the child receive SIGTERM when this process dies,
    however it dies (``kill -9`` included): ``prctl(PR_SET_PDEATHSIG, SIGTERM)``. None elsewhere
    (macOS, Windows: no such call; the child runs on until it ends, README "Known limitations").

    The kernel sends the signal when the *thread* that started the child ends: the caller must
    wait for the child in that thread (``subprocess.call`` does). A parent that died between the
    fork and the ``prctl`` is noticed (the child's parent is then another process) and the child
    ends at once. ``prctl`` is looked up before the fork: nothing is loaded in the child.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM))
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def run_child(command: list[str], log) -> int:
    """Run ``command`` with stdout and stderr into the open file ``log``; its exit status. The
    child dies with this process (:func:`die_with_parent`)."""
    return subprocess.call(
        command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent()
    )


def _install(directory: Path, raw: bytes, settings: dict, partial: Path) -> None:
    """Settings record first (naming the new results' checksum), samples (an older attempt's
    removed: they belong to the results replaced), then the results."""
    import hashlib

    write_atomic(directory / SETTINGS_FILE, record_bytes(settings, hashlib.sha256(raw).hexdigest()))
    for stale in directory.glob("samples_*.jsonl"):
        stale.unlink(missing_ok=True)
    for samples in partial.rglob("samples_*.jsonl"):
        os.replace(samples, directory / samples.name)
    write_atomic(directory / RESULTS_FILE, raw)


def execute(
    run: PlannedRun,
    tasks: list[str],
    device: str,
    extra: list[str],
    settings: dict,
    expected: list[str],
) -> None:
    """One lm-eval process (the caller holds the run's lock); validated results are installed."""
    _remove_leftovers(run.directory)
    stamp = datetime.now().strftime(STAMP)
    partial = run.directory / f".partial-{os.getpid()}-{stamp}"
    log_path = _new_log(run.directory, stamp)
    try:
        with open(log_path, "w") as log:
            code = run_child(lm_eval_command(run, tasks, device, partial, extra), log)
    except OSError as error:
        raise _os_failure(run, f"write its log {log_path}", error) from None
    try:
        found = sorted(partial.rglob("results_*.json"))
        if code != 0 or not found:
            raise _failure(run, log_path, code)
        raw = read_results(found[-1])
        problem = results_problem(raw, expected)
        if problem:
            disk = _disk_cause(_log_lines(log_path), run.directory)
            raise QevalError(
                f"run {run.label} failed: lm_eval exited {code} but its results file {problem}"
                f"{f' ({disk})' if disk else ''}; nothing was replaced (log: {log_path})"
            )
        _install(run.directory, raw, settings, partial)
    except OSError as error:
        raise _os_failure(run, "read or install its results", error) from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)


# ---------------------------------------------------------------- the sweep


def prepare(
    models: list[str],
    specs: list[str],
    tasks: list[str],
    output: Path,
    device: str,
    extra: list[str],
    force: bool,
) -> tuple[list[PlannedRun], dict, list[str]]:
    """Every check before the first run: (runs, settings per run, names the results must hold)."""
    from qeval_plugins.cli.task_check import expected_results
    from qeval_plugins.storage.cache_pruning import max_size

    max_size()  # QEVAL_CACHE_MAX_SIZE: one line now, not in the first run that saves an entry
    runs = plan_runs(models, specs, output, device)
    options = parse_lm_eval_args(extra)
    check_model_args(list(dict.fromkeys(run.checked for run in runs)), options)
    expected = expected_results(tasks, options.include_path)
    settings = {
        run: run_settings(run.model, run.checked, device, expected, options) for run in runs
    }
    for run in runs:  # what needs the model and the device (skip= names, kernels)
        model_args = settings[run]["model_args"]
        preflight(
            resolve_pretrained(run.model),
            run.checked.plan,
            device,
            model_args.get("dtype"),
            model_args.get("revision"),
            shown=run.model,
        )
    check_writable_dir(output, "--output")  # the first thing written: no folder left by a refusal
    if not force:
        refuse_conflicts(runs, settings, expected, output)
    return runs, settings, expected


def run_phase(run: PlannedRun, since: float) -> str:
    """What ``run`` is doing, for its heartbeat line: the last line of the lm_eval log its
    attempt started at ``since`` (epoch seconds) writes, which is lm-eval's own progress (e.g.
    ``Running loglikelihood requests: 40%|████ | 80/200``); ``starting lm_eval`` before there
    is one."""
    log = run.directory / LOG_FILE
    try:
        if log.stat().st_mtime < since:  # an older attempt's log: this one's is not made yet
            return "starting lm_eval"
        tail = read_tail(log, HEARTBEAT_TAIL_BYTES).decode(errors="replace")
    except OSError:
        return "starting lm_eval"
    return f"lm_eval: {log_phase(tail)}"


def attempt(
    run: PlannedRun,
    tasks: list[str],
    device: str,
    extra: list[str],
    settings: dict,
    expected: list[str],
    force: bool,
) -> tuple[str, str]:
    """Compute ``run`` unless it is done or another sweep holds it: ``(outcome, detail)`` with
    outcome ``skip``, ``done`` or ``failed``."""
    run.directory.mkdir(parents=True, exist_ok=True)
    with try_locked(run.directory / LOCK_FILE) as mine:
        if not mine:
            pid = holder_pid(run.directory / LOCK_FILE) or "unknown"
            return "skip", f"being computed by another qeval run (pid {pid})"
        state, why = existing_state(run.directory, settings, expected)
        if not force and state == "complete":
            return "skip", "results exist"
        if not force and state == "conflict":  # written meanwhile by another sweep
            return "failed", f"run {run.label}: its results were made with other settings ({why})"
        started = time.perf_counter()
        try:
            execute(run, tasks, device, extra, settings, expected)
        except QevalError as error:
            return "failed", str(error)
        return "done", f"in {time.perf_counter() - started:.1f} s"


def _run_heartbeat(run: PlannedRun, position: str, console, interval: float):
    """The heartbeat of ``run`` (``[2/5] model × spec: lm_eval: ..., 8 min 05 s elapsed``),
    printed on ``console`` every ``interval`` seconds."""
    from rich.text import Text

    since = time.time()

    def describe(seconds: float) -> str:
        return f"{position}: {run_phase(run, since)}, {elapsed_text(seconds)} elapsed"

    def write(line: str) -> None:
        console.print(Text(one_line(line)), soft_wrap=True)

    return heartbeat(describe, write, interval)


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
) -> list[str]:
    """Run the sweep; returns one line per failed run.

    On a terminal a live progress bar shows the sweep; otherwise (a pipe, a file) each run
    being computed prints a heartbeat line every :func:`~.heartbeat.heartbeat_interval`
    seconds: its label, what it is doing (:func:`run_phase`) and for how long. lm_eval also
    writes each document's scores (``--log_samples``: the report's paired test needs them)
    unless ``log_samples`` is false; the option is not a setting of the results."""
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    interval = heartbeat_interval()
    extra = [*extra, "--log_samples"] if log_samples else extra
    runs, settings, expected = prepare(models, specs, tasks, output, device, extra, force)
    failures: list[str] = []
    live = console.is_terminal
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} runs"),
        TimeElapsedColumn(),
    )
    styles = {
        "skip": "[dim]skip[/dim]",
        "done": "[green]done[/green]",
        "failed": "[red]failed[/red]",
    }
    with Progress(*columns, console=console, transient=False, disable=not live) as progress:
        overall = progress.add_task("sweep", total=len(runs))
        for index, run in enumerate(runs, 1):
            position = f"[{index}/{len(runs)}] {run.label}"
            progress.update(overall, description=escape(position))
            beating = _run_heartbeat(run, position, console, interval) if not live else None
            with beating or contextlib.nullcontext():
                outcome, detail = attempt(run, tasks, device, extra, settings[run], expected, force)
            if outcome == "failed":
                failures.append(detail)
                progress.console.print(f"{styles[outcome]} {escape(detail)}")
            else:
                separator = ":" if outcome == "skip" else ""
                line = f"{styles[outcome]} {escape(run.label)}{separator} {escape(detail)}"
                progress.console.print(line)
            progress.advance(overall)
        progress.update(overall, description="sweep")
    return failures
