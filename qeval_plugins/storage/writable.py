"""Checking, before any expensive work, that a folder qeval will write into can be written."""

from __future__ import annotations

from pathlib import Path

from qeval_plugins.core.errors import QevalError
from qeval_plugins.storage.atomic import probe_writable


def check_writable_dir(path: Path, what: str) -> None:
    """Create ``path`` (and parents) if needed and prove a file can be written there.

    ``what`` names the option or variable in the one-line error (``--output``,
    ``QEVAL_CACHE_DIR``). Raises :class:`QevalError` when ``path`` is a file, cannot be created,
    or refuses a small probe file (read-only, full disk, no permission).
    """
    if path.exists() and not path.is_dir():
        raise QevalError(f"{what} '{path}' is a file, not a folder; give a folder path.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe_writable(path)
    except OSError as error:
        raise QevalError(
            f"{what} '{path}' cannot be written ({error.strerror or error}); give a writable "
            f"folder."
        ) from error
