"""Atomic file writes: a reader sees the old file or the new one, never a part of either.

:func:`write_atomic` writes the bytes to a temporary file in the target's folder (``.NAME.*.tmp``,
flock'ed by the writer while it exists), flushes and fsyncs it, renames it over the target (atomic
on POSIX) and fsyncs the folder, so the rename survives a power loss. On any error the temporary
file is removed and the old file is untouched. A process killed mid-write (SIGKILL) leaves its
temporary file behind with no lock on it: :func:`remove_stale_temporaries` deletes those.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path

from qeval_plugins.storage.locks import is_locked

STALE_SECONDS = 3600.0
PROBE_BYTES = 4096


def _file_mode() -> int:
    """0o666 less the process umask: what ``open()`` would give a new file (mkstemp gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(folder: Path) -> None:
    """Make renames and deletions in ``folder`` durable (a no-op where the OS cannot)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see the module docstring)."""
    path = Path(path)
    # the name is cut so that a target name of up to 255 bytes still leaves a legal temporary name
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name[:64]}.", suffix=".tmp"
    )
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)  # tells remove_stale_temporaries that we are alive
        os.fchmod(handle, _file_mode())
        view = memoryview(data)
        while view:
            view = view[os.write(handle, view) :]
        os.fsync(handle)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    finally:
        os.close(handle)
    fsync_dir(path.parent)


def probe_writable(folder: Path) -> None:
    """Create, fill (``PROBE_BYTES``), fsync and delete a file in ``folder``; raises OSError.

    Fails on a read-only or full file system and on a folder that is not writable.
    """
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".qeval-probe.", suffix=".tmp")
    try:
        os.write(handle, b"\0" * PROBE_BYTES)
        os.fsync(handle)
    finally:
        os.close(handle)
        Path(temporary).unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path, older_than: float = STALE_SECONDS) -> list[Path]:
    """Delete ``.*.tmp`` files in ``folder`` not modified for ``older_than`` s and not locked.

    Returns the deleted paths. A temporary file still being written is always locked by its
    writer; the age guard also spares writers that do not lock (older qeval versions).
    """
    removed = []
    now = time.time()
    for temporary in folder.glob(".*.tmp"):
        try:
            if now - temporary.stat().st_mtime < older_than or is_locked(temporary):
                continue
            temporary.unlink()
        except OSError:  # gone meanwhile, or not ours to delete
            continue
        removed.append(temporary)
    return removed
