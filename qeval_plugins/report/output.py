"""Where a report file goes: checking an ``--out`` destination and writing files safely.

A regular file is written atomically (a symlink's target is replaced, the link kept); a pipe, a
terminal or ``/dev/stdout`` is written in place after the console's output, and ``-``
(:data:`STDOUT`) means standard output (``./-`` names a file called ``-``); a folder, a block
device or a socket is a one-line :class:`~qeval_plugins.core.errors.QevalError`. Files get the
permissions of a new file (0o666 less the umask).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.text import printable
from qeval_plugins.storage import atomic

STDOUT = "-"  # ``--out -``: standard output


def write_output(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` without ever replacing a link, a pipe or a device; returns
    ``path``.

    * a path that leads through ``/proc`` (``/dev/stdout``, ``/dev/fd/N``: a descriptor the shell
      opened) or names an existing FIFO or character device (a pipe, a terminal, ``/dev/null``)
      is written in place after the console's own output (:func:`_write_in_place`);
    * a symlink is followed: the file it resolves to is replaced atomically, the link kept;
    * a new or regular file is replaced atomically (:func:`write_atomic`);
    * any other existing thing (a block device, a socket) is a one-line :class:`QevalError`.
    * ``-`` (:data:`STDOUT`) is written to standard output (descriptor 1), in place too.
    """
    if writes_in_place(path):
        return _write_in_place(path, data)
    write_atomic(Path(os.path.realpath(path)) if path.is_symlink() else path, data)
    return path


def writes_in_place(path: Path) -> bool:
    """Whether :func:`write_output` appends to ``path`` rather than replacing it: it leads
    through ``/proc``, is a FIFO or character device, or is ``-``. Raises a one-line
    :class:`QevalError` when ``path`` is a block device, a socket or another special file."""
    if str(path) == STDOUT:
        return True
    kind = _existing_kind(path)
    if kind in ("fifo", "character device") or _proc_entry(path) is not None:
        return True
    if kind not in (None, "file", "folder"):
        raise QevalError(
            f"cannot write {printable(str(path))}: it is a {kind}; name a file, a pipe or a "
            "terminal"
        )
    return False


def _existing_kind(path: Path) -> str | None:
    """What ``path`` names, following symlinks: None when nothing (or a dangling link), else
    "file", "folder", "fifo", "character device", "block device", "socket" or "special file"."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    for test, kind in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return kind
    return "special file"


MAX_LINK_HOPS = 40  # as the kernel's limit on symlinks followed in one lookup


def _proc_entry(path: Path) -> Path | None:
    """Where ``path``, or a link on the way to its target, first enters ``/proc`` (``/dev/stdout``
    → ``/proc/<pid>/fd/1``), its folder resolved; None when it never does."""
    for _ in range(MAX_LINK_HOPS):
        folder = Path(os.path.realpath(path.parent))
        if folder.parts[:2] == ("/", "proc"):
            return folder / path.name
        if not path.is_symlink():
            return None
        try:
            path = path.parent / os.readlink(path)
        except OSError:
            return None
    return None


def _own_descriptor(path: Path) -> int | None:
    """N when ``path`` leads to ``/proc/self/fd/N`` (``/dev/stdout``, ``/dev/fd/N``): one of this
    process's open descriptors, to be written through (as a shell does), sharing its offset."""
    entry = _proc_entry(path)
    if entry is None or entry.parent != Path(os.path.realpath("/proc/self/fd")):
        return None
    return int(entry.name) if entry.name.isascii() and entry.name.isdigit() else None


def is_stdout(path: str | Path) -> bool:
    """Whether ``path`` is this process's standard output: ``-``, or a path leading to
    descriptor 1 (``/dev/stdout``, ``/dev/fd/1``)."""
    return str(path) == STDOUT or _own_descriptor(Path(path)) == 1


def _write_in_place(path: Path, data: bytes) -> Path:
    """Write ``data`` through this process's descriptor that ``path`` names, else append it to
    ``path`` (opened as ``>>`` would), after flushing stdout and stderr so it follows the
    terminal output already printed; an OS error is a one-line :class:`QevalError`."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        descriptor = 1 if str(path) == STDOUT else _own_descriptor(path)
        if descriptor is None:
            with open(path, "ab") as handle:
                handle.write(data)
        else:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
    except OSError as error:
        raise QevalError(
            f"cannot write {printable(str(path))}: {error.strerror or error}"
        ) from error
    return path


def write_atomic(path: Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` through :func:`qeval_plugins.storage.atomic.write_atomic`.

    Never half-written, with a new file's permissions; an OS error (no space, no permission) is a
    one-line :class:`QevalError`.
    """
    try:
        atomic.write_atomic(path, data)
    except OSError as error:
        raise QevalError(
            f"cannot write {printable(str(path))}: {error.strerror or error}"
        ) from error
    return path


def make_folder(folder: Path) -> Path:
    """Create ``folder`` (and its parents) unless it exists; an OS error (a file in the way, no
    permission) is a one-line :class:`QevalError`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        shown = printable(str(folder))
        raise QevalError(f"cannot create the folder {shown}: {error.strerror or error}") from error
    return folder


def not_a_folder(path: Path) -> Path:
    """``path``, or a one-line :class:`QevalError` when it is an existing folder."""
    if path.is_dir():
        shown = printable(str(path / "qeval-report.md"))
        raise QevalError(f"{printable(str(path))} is a folder; name a file in it, e.g. {shown}")
    return path


def destination(path: str | Path) -> Path:
    """``path`` as a file for ``--out``, or a one-line :class:`QevalError` when it names a folder,
    a block device or a socket, or its folder (a symlink's: its target's) does not exist (the
    command line never creates a folder from a typo). Pipes, terminals, ``/dev/stdout`` and ``-``
    are fine (:func:`writes_in_place`)."""
    if str(path) == STDOUT:
        return Path(STDOUT)
    path = not_a_folder(Path(path))
    if str(path) == STDOUT:  # ``./-``: the file named "-" (pathlib drops the "./")
        path = path.absolute()
    if writes_in_place(path):
        return path
    shown = printable(str(path))
    folder = Path(os.path.realpath(path)).parent if path.is_symlink() else path.parent
    if not folder.is_dir():
        kind = "is not a folder" if folder.exists() else "does not exist"
        raise QevalError(
            f"cannot write {shown}: {printable(str(folder))} {kind}; create the folder or "
            "choose another --out"
        )
    return path
