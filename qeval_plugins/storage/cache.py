"""On-disk cache of what the unquantized reference model produced, shared by quantizer runs.

The SQNR and sampling tasks need the unquantized model's outputs on the task's texts. They are
computed once per (model, texts, settings) and stored, so runs of other quantizers on the same
model reuse them and never load the full-precision model again. The key hashes: the checkpoint's
identity (resolved path, and name and SHA-256 of every weight, config and code file, memoised per
file version by :mod:`.content_hash`), the token ids of the texts, the settings, the reference
dtype and the cache format version. Changing any of them gives a new key: a stale entry is never
reused, also when a file is replaced by other bytes of the same size and modification time.

Location: ``$QEVAL_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/qeval`` (``~/.cache/qeval``),
subfolder ``reference/``. An entry is two files: ``KEY.pt`` (the ``torch.save`` payload) and
``KEY.json`` (its SHA-256 and size, what it was computed for — kind, model, settings, dtype — and
when it was created and last used, in seconds since the epoch).

Trust: an entry is used only when its payload's SHA-256 matches ``KEY.json`` and the caller's
check of its structure and values passes (shapes, dtypes, and finite numbers where the metrics
need them); it is read with ``torch.load(weights_only=True)``, which never runs code. Otherwise
(garbled bytes, no metadata, wrong structure, NaN values) one warning names the reason and the
entry is recomputed and replaced. Before a reference is computed the folder is checked usable
(created, and a 4 KiB probe written and fsync'ed), so a folder that is a file, read-only or full
is one line before the expensive pass, not an error after it.

Concurrency: the folder's ``.lock`` is held shared while an entry is read and exclusively while
one is written, touched or deleted; every file is written atomically (temporary file, fsync,
rename). Temporary files of a killed writer (unlocked, older than an hour) are deleted whenever
the cache is opened for writing.

Size: ``QEVAL_CACHE_MAX_SIZE`` (e.g. ``20G``; K, M, G, T are powers of 1024) caps the folder:
after each save the least recently used entries are deleted until the rest fit (the entry just
saved is kept). ``qeval cache`` lists, prunes and clears entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.storage import content_hash, model_cache
from qeval_plugins.storage.atomic import probe_writable, remove_stale_temporaries, write_atomic
from qeval_plugins.storage.locks import locked

CACHE_ENV = "QEVAL_CACHE_DIR"
MAX_SIZE_ENV = "QEVAL_CACHE_MAX_SIZE"
FORMAT_VERSION = 1
LOCK_NAME = ".lock"
_IDENTITY_SUFFIXES = (".safetensors", ".bin", ".json", ".py")
_KEY = re.compile(r"[0-9a-f]{32}")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

logger = logging.getLogger("qeval")


@dataclass(frozen=True)
class Entry:
    """One cache entry: ``size`` in bytes (payload + metadata), ``last_used`` in epoch seconds;
    ``store`` is ``reference`` (this module's entries) or ``quantized`` (:mod:`.model_cache`)."""

    key: str
    size: int
    last_used: float
    meta: dict[str, Any]
    store: str = "reference"


def cache_dir() -> Path:
    """The reference cache folder (see the module docstring)."""
    return model_cache.cache_root() / "reference"


def checkpoint_identity(model_dir: str) -> list[Any]:
    """The resolved path plus (name, SHA-256) of every weight, config and code file
    (``*.safetensors``, ``*.bin``, ``*.json``, ``*.py``) of the folder, sorted by name.

    It changes whenever a file's bytes do, whatever its size and modification time; the digests
    come from :mod:`.content_hash`'s memo, so a file is read once per version.
    """
    directory = Path(model_dir).resolve()
    files = sorted(p for p in directory.iterdir() if p.suffix in _IDENTITY_SUFFIXES and p.is_file())
    hashes = content_hash.digests(files)
    return [str(directory), *[(p.name, digest) for p, digest in zip(files, hashes, strict=True)]]


def reference_key(
    identity: list[Any], token_ids: list[list[int]], settings: dict[str, Any], dtype: str
) -> str:
    """SHA-256 over everything the cached reference depends on."""
    digest = hashlib.sha256()
    header = {"format": FORMAT_VERSION, "model": identity, "settings": settings, "dtype": dtype}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for ids in token_ids:
        digest.update(len(ids).to_bytes(4, "little"))
        digest.update(b"".join(int(i).to_bytes(4, "little", signed=True) for i in ids))
    return digest.hexdigest()[:32]


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


# ---------------------------------------------------------------- opening


def _blocking_file(directory: Path) -> Path | None:
    """The nearest of ``directory`` and its parents that exists as something other than a folder."""
    for candidate in (directory, *directory.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def _unusable(directory: Path) -> str | None:
    """Why ``directory`` cannot take a new entry (created if missing), or None when it can."""
    blocking = _blocking_file(directory)
    if blocking is not None:
        return f"{blocking} is a file, not a folder"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe_writable(directory)
    except OSError as error:
        return error.strerror or str(error)
    return None


def open_cache() -> Path:
    """The cache folder, ready for a new entry; stale temporary files removed.

    Raises QevalError (naming the folder and ``QEVAL_CACHE_DIR``) when it cannot be created or
    written — a file, read-only, full — or when ``QEVAL_CACHE_MAX_SIZE`` is not a size.
    """
    directory = cache_dir()
    max_size()
    problem = _unusable(directory)
    if problem:
        raise QevalError(
            f"the reference cache folder {directory} is not usable ({problem}); point "
            f"{CACHE_ENV} at a writable folder with free space."
        )
    with locked(directory / LOCK_NAME):
        remove_stale_temporaries(directory)
    return directory


# ---------------------------------------------------------------- entries


def _read_meta(path: Path) -> dict[str, Any] | None:
    """An entry's metadata, or None when missing, unreadable or not what :func:`save` writes."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
        return None
    return meta


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _read(directory: Path, key: str, check: Callable[[Any], None] | None) -> tuple[Any, str | None]:
    """(reference, None) if verified, (None, reason) if bad, (None, None) if absent."""
    import torch

    payload = directory / f"{key}.pt"
    if not payload.is_file():
        return None, None
    try:
        with locked(directory / LOCK_NAME, shared=True):
            meta = _read_meta(directory / f"{key}.json")
            data = payload.read_bytes()
    except OSError as error:
        return None, f"cannot be read ({error.strerror or error})"
    if meta is None:
        return None, "has no valid metadata file (written by an older qeval, or damaged)"
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        return None, "fails its SHA-256 checksum (its bytes changed since it was written)"
    try:
        reference = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:
        return None, f"cannot be loaded ({_one_line(error)})"
    try:
        if check is not None:
            check(reference)
    except Exception as error:
        return None, f"has the wrong structure or values ({_one_line(error)})"
    return reference, None


def _touch(directory: Path, key: str) -> None:
    """Record now as the entry's last use (skipped where the folder is read-only)."""
    try:
        with locked(directory / LOCK_NAME):
            path = directory / f"{key}.json"
            meta = _read_meta(path)
            if meta is not None:
                meta["last_used"] = time.time()
                write_atomic(path, json.dumps(meta, sort_keys=True).encode())
    except OSError:
        pass


def load(key: str, check: Callable[[Any], None] | None = None) -> Any:
    """The cached reference for ``key``, or None when the caller must compute (and save) it.

    ``check(reference)`` raises (any exception) when the loaded value does not have the structure
    or the values the caller needs (e.g. NaN where a finite number is required: an entry written
    by a broken run, or edited with its checksum rewritten). An entry that fails its checksum,
    has no metadata or fails ``check`` gives one warning and None, so the caller recomputes it
    and its save replaces it. Before returning None the folder is checked usable (:func:`open_cache`
    raises QevalError otherwise). A hit records its use (for ``qeval cache`` and the size cap).
    """
    directory = cache_dir()
    reference, problem = _read(directory, key, check)
    if problem is None and reference is not None:
        _touch(directory, key)
        return reference
    if problem:
        logger.warning(
            "reference cache entry %s %s; recomputing and replacing it.",
            directory / f"{key}.pt",
            problem,
        )
    open_cache()
    return None


def save(key: str, reference: Any, meta: dict[str, Any] | None = None) -> Path | None:
    """Store ``reference`` under ``key`` (payload, then metadata, each atomic) and apply the cap.

    ``meta`` says what the entry was computed for (``kind``, ``model``, ``settings``, ``dtype``;
    shown by ``qeval cache list``). Returns the payload's path, or None with a warning when the
    folder cannot take the entry (e.g. the disk filled up during the run): the run's results do
    not depend on the cache, so they are kept.
    """
    import torch

    directory = cache_dir()
    buffer = io.BytesIO()
    torch.save(reference, buffer)
    data = buffer.getvalue()
    now = time.time()
    record = {
        **(meta or {}),
        "format": FORMAT_VERSION,
        "sha256": hashlib.sha256(data).hexdigest(),
        "payload_bytes": len(data),
        "created": now,
        "last_used": now,
    }
    problem = _unusable(directory)
    if problem is None:
        try:
            with locked(directory / LOCK_NAME):
                remove_stale_temporaries(directory)
                write_atomic(directory / f"{key}.pt", data)
                write_atomic(
                    directory / f"{key}.json",
                    json.dumps(record, sort_keys=True, default=str).encode(),
                )
            apply_size_cap(keep={key})
            return directory / f"{key}.pt"
        except OSError as error:
            problem = error.strerror or str(error)
    logger.warning(
        "could not store the reference in the cache folder %s (%s); this run's results "
        "are unaffected, and the next run computes the reference again.",
        directory,
        problem,
    )
    return None


def existing_cache_dir() -> Path | None:
    """The cache folder when it exists, None when it does not yet (nothing cached).

    Raises QevalError when a file stands where the folder or one of its parents should be
    (``QEVAL_CACHE_DIR`` naming a file): listing, pruning or clearing it would report an empty
    cache that can never fill.
    """
    directory = cache_dir()
    blocking = _blocking_file(directory)
    if blocking is not None:
        raise QevalError(
            f"the reference cache folder {directory} cannot exist: {blocking} is a file, not a "
            f"folder; point {CACHE_ENV} at a folder."
        )
    return directory if directory.is_dir() else None


def entries() -> list[Entry]:
    """Every entry of both stores (reference outputs, quantized models), least recently used
    first."""
    directory, models = cache_dir(), model_cache.models_dir()
    found = _entries(directory) if directory.is_dir() else []
    found += _model_entries(models) if models.is_dir() else []
    return sorted(found, key=lambda entry: entry.last_used)


def _last_used(meta: dict[str, Any], fallback: float) -> float:
    used = meta.get("last_used")
    valid = isinstance(used, (int, float)) and not isinstance(used, bool) and math.isfinite(used)
    return float(used) if valid else fallback


def _entries(directory: Path) -> list[Entry]:
    found = []
    for payload in directory.glob("*.pt"):
        key = payload.stem
        if not _KEY.fullmatch(key):
            continue  # not a file qeval wrote: never listed, never deleted
        meta_path = directory / f"{key}.json"
        meta = _read_meta(meta_path) or {}
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
        meta = model_cache.read_meta(meta_path) or {}
        try:
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            size += meta_path.stat().st_size if meta_path.exists() else 0
            mtime = folder.stat().st_mtime
        except OSError:
            continue
        found.append(Entry(folder.name, size, _last_used(meta, mtime), meta, "quantized"))
    return found


def _remove(entry: Entry) -> None:
    if entry.store == "quantized":
        model_cache.remove_entry(model_cache.models_dir(), entry.key)
        return
    for suffix in (".pt", ".json"):
        (cache_dir() / f"{entry.key}{suffix}").unlink(missing_ok=True)


@contextlib.contextmanager
def _both_locked():
    """Both stores' folder locks, reference first (one order everywhere: no deadlock)."""
    with contextlib.ExitStack() as stack:
        for directory in (cache_dir(), model_cache.models_dir()):
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
    ones until the rest take at most ``max_bytes``; returns the deleted entries."""
    with _both_locked():
        removed = _prune_locked(older_than, max_bytes, keep=())
        if cache_dir().is_dir():
            remove_stale_temporaries(cache_dir())
        if model_cache.models_dir().is_dir():
            model_cache.remove_stale_folders(model_cache.models_dir())
    return removed
