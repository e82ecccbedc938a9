"""Advisory file locks between qeval processes (POSIX ``flock``).

A lock belongs to an open file: the OS releases it when the holder closes the file or dies, even by
SIGKILL, so a lock file left on disk never blocks anyone. Locks are advisory: only qeval processes
that take them are kept apart.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def _open(path: Path) -> int:
    """Open (creating if needed) the lock file; read-only where the folder is not writable."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        return os.open(path, os.O_RDONLY)  # flock works on a read-only descriptor


@contextlib.contextmanager
def locked(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold ``path``'s lock for the with-block, waiting for it: shared (readers) or exclusive."""
    handle = _open(path)
    try:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


@contextlib.contextmanager
def try_locked(path: Path) -> Iterator[bool]:
    """Take ``path``'s exclusive lock without waiting; yields whether it was taken.

    The holder writes its process id into the file, for :func:`holder_pid`.
    """
    handle = _open(path)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
        yield True
    finally:
        os.close(handle)


def is_locked(path: Path) -> bool:
    """True when some open file holds a lock on ``path`` (e.g. its writer is still alive)."""
    handle = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(handle)
    return False


def holder_pid(path: Path) -> int | None:
    """The process id recorded in a lock file by :func:`try_locked`, or None when unknown."""
    try:
        text = Path(path).read_text(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and len(text) < 12 else None
