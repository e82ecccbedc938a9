"""Why a run failed, in one line: the log's ``qeval: error:`` line, a full disk (naming its
filesystem and free space), or lm_eval's exit status with the log's last exception."""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path
from typing import Protocol

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.safe_read import read_tail
from qeval_plugins.core.text import one_line


class Run(Protocol):
    """What a failure line needs of a run (a :class:`~.unit.Unit`, a planned run)."""

    label: str
    directory: Path


LOG_TAIL_BYTES = 256 << 10  # of a failed run's log, searched for its cause


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


def disk_cause(lines: list[str], directory: Path) -> str | None:
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


def log_lines(log_path: Path) -> list[str]:
    """The last :data:`LOG_TAIL_BYTES` of a run's log as lines (none when it cannot be read)."""
    try:
        return read_tail(log_path, LOG_TAIL_BYTES).decode(errors="replace").splitlines()
    except OSError:
        return []


def run_failure(run: Run, log_path: Path, code: int) -> QevalError:
    """The failed run's line: the last ``qeval: error:`` line of its log, else a full disk
    (:func:`disk_cause`), else the exit status with the log's last exception line
    (``ValueError: ...``, at most 200 characters)."""
    lines = log_lines(log_path)
    errors = [line for line in lines if line.startswith("qeval: error:")]
    raised = [line.strip() for line in lines if _EXCEPTION_LINE.match(line.strip())]
    last = f": {one_line(raised[-1])[:200]}" if raised else ""
    status = f"lm_eval exited with status {code}{last}"
    if errors:
        reason = errors[-1].removeprefix("qeval: error:").strip()
    elif disk := disk_cause(lines, run.directory):
        reason = f"{disk}: {status}"
    else:
        reason = status
    return QevalError(f"run {run.label} failed: {reason} (log: {log_path})")


def os_failure(run: Run, doing: str, error: OSError) -> QevalError:
    """The failed run's line for an ``OSError`` of qeval's own (writing the log or the results):
    a full disk names its filesystem."""
    if error.errno == errno.ENOSPC:
        reason = _no_space(Path(error.filename) if error.filename else run.directory)
    else:
        reason = error.strerror or str(error)
    return QevalError(f"run {run.label} failed: cannot {doing} ({reason})")
