"""What one Ray task does with a unit, on whichever node Ray runs it (:mod:`.ray_cluster` is the
driver's side).

The task needs no filesystem shared with the driver: lm_eval writes into a private scratch
folder of the node (``$TMPDIR/qeval-ray/tmpXXXX``), and the task sends back lm_eval's exit
status, the files it wrote (``results_*.json``, ``samples_*.jsonl``: path relative to its output
folder -> bytes, :data:`RETURN_CAP` bytes at most) and the log (its last :data:`LOG_CAP`
bytes). The driver installs them with the same validated atomic protocol as a local run.

A task is a generator: it first yields :class:`Started` (the driver then knows the unit runs,
and where), then its :class:`TaskResult`. When Ray retries a task whose worker died, Ray drops
the retry's repeated :class:`Started`, so the driver sees each message once.

Every scratch folder is flock'ed while its task runs (``tmpXXXX.lock``): a worker killed
mid-unit (SIGKILL, a node's OOM killer) leaves its folder unlocked, and the next task on that
node deletes it (:func:`remove_abandoned`).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qeval_plugins.core.safe_read import read_tail, size_text
from qeval_plugins.storage.locks import try_locked
from qeval_plugins.sweep.child import run_child
from qeval_plugins.sweep.unit import Unit, lm_eval_command

RETURN_CAP = 256 << 20  # bytes of results and samples one task may send back
LOG_CAP = 16 << 20  # bytes of the log sent back (its end: where a failure's cause is)
SCRATCH_FOLDER = "qeval-ray"  # under the node's temporary folder
ABANDONED_AFTER = 60.0  # seconds: a younger unlocked scratch folder may be one being made
RETURNED_FILES = ("results_*.json", "samples_*.jsonl")


@dataclass(frozen=True)
class Started:
    """The task began on ``node`` (its host name)."""

    node: str


@dataclass(frozen=True)
class TaskResult:
    """What lm_eval did: exit status ``code``; ``files`` it wrote (path relative to its output
    folder -> bytes; none when ``refused``); its ``log`` (the end, when longer than
    :data:`LOG_CAP`); ``refused``: why the files were not sent back, else None."""

    code: int
    files: dict[str, bytes]
    log: bytes
    node: str
    refused: str | None = None


def collect_files(output: Path, cap: int) -> tuple[dict[str, bytes], str | None]:
    """(``results_*.json`` and ``samples_*.jsonl`` under ``output`` by relative path, None), or
    (nothing, why) when together they exceed ``cap`` bytes."""
    if not output.is_dir():
        return {}, None
    found = sorted({path for pattern in RETURNED_FILES for path in output.rglob(pattern)})
    found = [path for path in found if path.is_file()]
    total = sum(path.stat().st_size for path in found)
    if total > cap:
        return {}, (
            f"lm_eval wrote {size_text(total)} of results and samples, more than the "
            f"{size_text(cap)} a Ray task sends back (fewer documents: --limit; no samples: "
            f"--no-log-samples)"
        )
    return {path.relative_to(output).as_posix(): path.read_bytes() for path in found}, None


def remove_abandoned(root: Path, older_than: float = ABANDONED_AFTER) -> None:
    """Delete the scratch folders under ``root`` whose lock no task holds (their worker died),
    once their lock file is ``older_than`` seconds old (a new task locks its folder at once)."""
    for lock in root.glob("*.lock"):
        try:
            if time.time() - lock.stat().st_mtime < older_than:
                continue
            with try_locked(lock) as free:
                if free:
                    shutil.rmtree(lock.with_suffix(""), ignore_errors=True)
                    lock.unlink(missing_ok=True)
        except OSError:  # removed meanwhile by another task of this node
            continue


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    """A new private folder under ``$TMPDIR/qeval-ray``, locked while in use, then deleted
    (abandoned ones are deleted first)."""
    root = Path(tempfile.gettempdir()) / SCRATCH_FOLDER
    root.mkdir(exist_ok=True)
    remove_abandoned(root)
    folder = Path(tempfile.mkdtemp(dir=root))
    lock = folder.with_suffix(".lock")
    try:
        with try_locked(lock):  # a new name: always taken
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        lock.unlink(missing_ok=True)


def compute_unit(unit: Unit, env: dict[str, str]) -> Iterator[Started | TaskResult]:
    """The Ray task: lm_eval of ``unit`` (``env`` added to its environment) in a scratch folder
    of this node; yields :class:`Started`, then the :class:`TaskResult`."""
    node = socket.gethostname()
    yield Started(node)
    with scratch_folder() as scratch:
        output, log_path = scratch / "output", scratch / "lm_eval.log"
        with open(log_path, "w") as log:
            code = run_child(lm_eval_command(unit, output), log, env)
        files, refused = collect_files(output, RETURN_CAP)
        log_bytes = read_tail(log_path, LOG_CAP)
    yield TaskResult(code, files, log_bytes, node, refused)
