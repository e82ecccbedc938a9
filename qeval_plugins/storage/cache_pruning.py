"""Listing and pruning the entries of both caches, and the size cap that bounds them.

Both stores count together: the reference outputs (:mod:`.reference_cache`, ``KEY.pt`` +
``KEY.json``) and the quantized models (:mod:`.model_cache`, a folder ``KEY/`` + ``KEY.json``).
Only names of 32 hex digits are entries: other files in the folders are never listed or deleted.
An entry's last use is its metadata's ``last_used`` (epoch seconds), else its payload's
modification time.

Size: ``QEVAL_CACHE_MAX_SIZE`` (e.g. ``20G``; K, M, G, T are powers of 1024) caps the two stores
together: after each save the least recently used entries are deleted until the rest fit (the
entry just saved is kept). ``qeval cache`` lists, prunes and clears entries with
:func:`entries` and :func:`prune`. Both folders' ``.lock`` are held while entries are deleted,
the reference folder's first (one order everywhere: no deadlock).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.storage.atomic import remove_stale_temporaries
from qeval_plugins.storage.cache_layout import (
    LOCK_NAME,
    models_dir,
    read_model_meta,
    read_reference_meta,
    reference_dir,
)
from qeval_plugins.storage.locks import locked

MAX_SIZE_ENV = "QEVAL_CACHE_MAX_SIZE"
STALE_SECONDS = 24 * 3600.0  # a temporary entry folder untouched this long belongs to a killed run
_KEY = re.compile(r"[0-9a-f]{32}")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


@dataclass(frozen=True)
class Entry:
    """One cache entry: ``size`` in bytes (payload + metadata), ``last_used`` in epoch seconds;
    ``store`` is ``reference`` (:mod:`.reference_cache`) or ``quantized`` (:mod:`.model_cache`)."""

    key: str
    size: int
    last_used: float
    meta: dict[str, Any]
    store: str = "reference"


# ---------------------------------------------------------------- sizes


def parse_size(text: str, what: str = "size") -> int:
    """Bytes in ``text``: ``2G`` = 2·1024³; units K, M, G, T (powers of 1024, optional B/iB)."""
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([KMGT]?)(?:I?B)?", str(text).strip().upper())
    if not match or len(match[1]) > 20:
        raise QevalError(f"{what} '{text}' is not a size; write e.g. 500M, 2G or 1.5T.")
    return int(float(match[1]) * _UNITS[match[2]])


def max_size() -> int | None:
    """The size cap from ``QEVAL_CACHE_MAX_SIZE`` in bytes, or None when unset."""
    value = os.environ.get(MAX_SIZE_ENV, "").strip()
    return parse_size(value, MAX_SIZE_ENV) if value else None


# ---------------------------------------------------------------- listing


def entries() -> list[Entry]:
    """Every entry of both stores (reference outputs, quantized models), least recently used
    first."""
    references, models = reference_dir(), models_dir()
    found = _reference_entries(references) if references.is_dir() else []
    found += _model_entries(models) if models.is_dir() else []
    return sorted(found, key=lambda entry: entry.last_used)


def _last_used(meta: dict[str, Any], fallback: float) -> float:
    used = meta.get("last_used")
    valid = isinstance(used, (int, float)) and not isinstance(used, bool) and math.isfinite(used)
    return float(used) if valid else fallback


def _reference_entries(directory: Path) -> list[Entry]:
    found = []
    for payload in directory.glob("*.pt"):
        key = payload.stem
        if not _KEY.fullmatch(key):
            continue  # not a file qeval wrote: never listed, never deleted
        meta_path = directory / f"{key}.json"
        meta = read_reference_meta(meta_path) or {}
        try:
            size = payload.stat().st_size + (meta_path.stat().st_size if meta_path.exists() else 0)
            mtime = payload.stat().st_mtime
        except OSError:
            continue
        found.append(Entry(key, size, _last_used(meta, mtime), meta))
    return found


def _model_entries(directory: Path) -> list[Entry]:
    """Quantized-model entries: folders named by a key (their metadata may be missing)."""
    found = []
    for folder in directory.iterdir():
        if not (_KEY.fullmatch(folder.name) and folder.is_dir() and not folder.is_symlink()):
            continue
        meta_path = directory / f"{folder.name}.json"
        meta = read_model_meta(meta_path) or {}
        try:
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            size += meta_path.stat().st_size if meta_path.exists() else 0
            mtime = folder.stat().st_mtime
        except OSError:
            continue
        found.append(Entry(folder.name, size, _last_used(meta, mtime), meta, "quantized"))
    return found


# ---------------------------------------------------------------- removing


def remove_model_entry(directory: Path, key: str) -> None:
    """Delete a quantized-model entry's metadata, then its folder (the lock is the caller's)."""
    (directory / f"{key}.json").unlink(missing_ok=True)
    shutil.rmtree(directory / key, ignore_errors=True)


def remove_stale_folders(directory: Path, older_than: float = STALE_SECONDS) -> None:
    """Delete temporary entry folders of killed runs (untouched for ``older_than`` seconds)."""
    now = time.time()
    for temporary in directory.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if temporary.is_dir() and now - temporary.stat().st_mtime > older_than:
                shutil.rmtree(temporary)


def _remove(entry: Entry) -> None:
    if entry.store == "quantized":
        remove_model_entry(models_dir(), entry.key)
        return
    for suffix in (".pt", ".json"):
        (reference_dir() / f"{entry.key}{suffix}").unlink(missing_ok=True)


@contextlib.contextmanager
def _both_locked():
    """Both stores' folder locks, reference first (one order everywhere: no deadlock)."""
    with contextlib.ExitStack() as stack:
        for directory in (reference_dir(), models_dir()):
            if directory.is_dir():
                stack.enter_context(locked(directory / LOCK_NAME))
        yield


def _prune_locked(
    older_than: float | None, max_bytes: int | None, keep: Collection[str]
) -> list[Entry]:
    """:func:`prune` with the folder locks already held."""
    now = time.time()
    every = entries()
    current = [entry for entry in every if entry.key not in keep]
    removed = [e for e in current if older_than is not None and now - e.last_used > older_than]
    if max_bytes is not None:
        kept = [entry for entry in current if entry not in removed]
        total = sum(entry.size for entry in every) - sum(e.size for e in removed)
        for entry in kept:  # least recently used first
            if total <= max_bytes:
                break
            removed.append(entry)
            total -= entry.size
    for entry in removed:
        _remove(entry)
    return removed


def apply_size_cap(keep: Collection[str]) -> None:
    """Delete the least recently used entries of both stores until they fit
    ``QEVAL_CACHE_MAX_SIZE`` (unset: nothing); the entries in ``keep`` stay."""
    limit = max_size()
    if limit is not None:
        with _both_locked():
            _prune_locked(None, limit, keep)


def prune(older_than: float | None = None, max_bytes: int | None = None) -> list[Entry]:
    """Delete entries unused for more than ``older_than`` seconds, then the least recently used
    ones until the rest take at most ``max_bytes``; returns the deleted entries. Temporary files
    and folders of killed writers are deleted too."""
    with _both_locked():
        removed = _prune_locked(older_than, max_bytes, keep=())
        if reference_dir().is_dir():
            remove_stale_temporaries(reference_dir())
        if models_dir().is_dir():
            remove_stale_folders(models_dir())
    return removed
