"""On-disk cache of what the unquantized reference model produced, shared by quantizer runs.

The SQNR and sampling tasks need the unquantized model's outputs on the task's texts. They are
computed once per (model, texts, settings) and stored, so runs of other quantizers on the same
model reuse them and never load the full-precision model again. The key hashes: the checkpoint's
identity (resolved path, and name and SHA-256 of every weight, config and code file, memoised per
file version by :mod:`.content_hash`), the token ids of the texts, the settings, the reference
dtype and the cache format version. Changing any of them gives a new key: a stale entry is never
reused, also when a file is replaced by other bytes of the same size and modification time.

Location: ``cache_root()/reference`` (:mod:`.cache_layout`: ``$QEVAL_CACHE_DIR/reference``, else
``~/.cache/qeval/reference``). An entry is two files: ``KEY.pt`` (the ``torch.save`` payload) and
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

Size: after each save ``QEVAL_CACHE_MAX_SIZE`` is applied to this cache and the quantized-model
cache together (:mod:`.cache_pruning`, which also lists, prunes and clears entries for
``qeval cache``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.storage import content_hash
from qeval_plugins.storage.atomic import probe_writable, remove_stale_temporaries, write_atomic
from qeval_plugins.storage.cache_layout import (
    CACHE_ENV,
    LOCK_NAME,
    read_reference_meta,
    reference_dir,
)
from qeval_plugins.storage.cache_pruning import apply_size_cap, max_size
from qeval_plugins.storage.locks import locked

FORMAT_VERSION = 1
_IDENTITY_SUFFIXES = (".safetensors", ".bin", ".json", ".py")

logger = logging.getLogger("qeval")


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
    directory = reference_dir()
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
            meta = read_reference_meta(directory / f"{key}.json")
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
            meta = read_reference_meta(path)
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
    directory = reference_dir()
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

    directory = reference_dir()
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
    directory = reference_dir()
    blocking = _blocking_file(directory)
    if blocking is not None:
        raise QevalError(
            f"the reference cache folder {directory} cannot exist: {blocking} is a file, not a "
            f"folder; point {CACHE_ENV} at a folder."
        )
    return directory if directory.is_dir() else None
