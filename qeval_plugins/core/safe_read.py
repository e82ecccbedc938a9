"""Reading a file a user supplied without hanging or running out of memory.

Only a regular file is read: a FIFO (named pipe) blocks its reader until some process writes
into it, which may be never, and a device such as ``/dev/zero`` never ends. Symbolic links are
followed and judged by their target, wherever it lies: a link to a regular file reads as that
file (a hub cache's snapshot is made of links into its ``blobs/`` folder, and users link result
files), a link to a FIFO or a device is refused like the FIFO or device itself.

Every read has a size cap, checked before any byte is read. The steps:

1. ``stat`` the path (links followed): refuse what is not a regular file or is over the cap
   without opening it (opening some devices has effects of its own);
2. open it with ``O_NONBLOCK``, so that a FIFO swapped in after step 1 cannot block the open;
3. ``fstat`` the open descriptor and check again: what is read is what was checked, with no race
   between the check and the read;
4. read at most cap + 1 bytes, so a file that grows while it is read is refused, not followed.

A refusal is a :class:`RefusedFile`, an ``OSError``: callers that already turn an unreadable file
into one line (``cannot be read (...)``) need no new branch. Its text is the reason:
``not a regular file`` or ``over 16 MiB (20 MiB)``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


class RefusedFile(OSError):
    """A file not read: not a regular file, or larger than the cap. ``str()`` is the reason."""

    def __str__(self) -> str:
        return str(self.strerror)


def size_text(count: int) -> str:
    """A byte count as ``16 MiB`` when a whole number of MiB, else ``4,096 bytes``."""
    return f"{count >> 20} MiB" if count and count % (1 << 20) == 0 else f"{count:,} bytes"


def _check(status: os.stat_result, path: Path, max_bytes: int) -> None:
    """:class:`RefusedFile` unless ``status`` is a regular file of at most ``max_bytes``."""
    if not stat.S_ISREG(status.st_mode):
        raise RefusedFile(errno.EINVAL, "not a regular file", str(path))
    if status.st_size > max_bytes:
        reason = f"over {size_text(max_bytes)} ({size_text(status.st_size)})"
        raise RefusedFile(errno.EFBIG, reason, str(path))


@contextmanager
def open_regular(path: str | os.PathLike[str], max_bytes: int) -> Iterator[BinaryIO]:
    """``path`` opened for binary reading, if it is a regular file of at most ``max_bytes``
    (module docstring: steps 1 to 3); raises :class:`RefusedFile` or the ``OSError`` of a file
    that cannot be opened. Read at most ``max_bytes`` + 1 bytes from it, or use
    :func:`read_regular`."""
    path = Path(path)
    _check(os.stat(path), path, max_bytes)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    descriptor = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    try:
        _check(os.fstat(descriptor), path, max_bytes)
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with handle:
        yield handle


def read_regular(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes``; raises
    :class:`RefusedFile` (not a regular file, too large, or grew past the cap while read) or the
    ``OSError`` of a file that cannot be read."""
    with open_regular(path, max_bytes) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        reason = f"over {size_text(max_bytes)} (it grew while read)"
        raise RefusedFile(errno.EFBIG, reason, str(path))
    return data


def read_tail(path: str | os.PathLike[str], count: int) -> bytes:
    """The last ``count`` bytes (at most) of the regular file ``path``, however large it is;
    raises :class:`RefusedFile` when ``path`` is not a regular file, else an ``OSError``."""
    with open_regular(path, max_bytes=2**63 - 1) as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(max(0, size - count))
        return handle.read(count)
