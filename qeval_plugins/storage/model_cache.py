"""On-disk cache of quantized models, for quantizers whose quantizing is worth keeping.

A calibrating method (GPTQ) takes minutes to hours; without this cache it would run again for
the reload after every reference pass and in every run of a sweep. A quantizer that sets
``cache_quantized`` has its quantized model saved (by its ``save_quantized``) once per key and
loaded from here afterwards. The key hashes everything the quantized weights depend on: the
checkpoint's identity (as for the reference cache: the SHA-256 of every weight, config and code
file, so weights replaced in place quantize afresh), the quantizer's name, version and final
options, the versions of the packages it ``requires``, the calibration windows' SHA-256 and the
dtype, plus this cache's format version.

Location: ``cache_root()/quantized`` (:mod:`.cache_layout`: ``$QEVAL_CACHE_DIR/quantized``, else
``~/.cache/qeval/quantized``). An entry is a folder ``KEY/`` holding what ``save_quantized``
wrote, and ``KEY.json``: the SHA-256 and size of every file in the folder, what it was made from
(model, spec, options, dtype, calibration), how long quantizing took (``quantize_seconds``)
and what the quantizer recorded with ``context.record`` (``plugin_record``: a run that reuses the
entry reports it as the run that quantized did).

Trust: an entry is used only when its folder holds exactly the files ``KEY.json`` lists, each
with the listed SHA-256; otherwise one warning names the reason, the entry is deleted and the
model is quantized again. Hashing a 14 GB model on every load would cost more than loading it,
so, like git's index, ``KEY.json`` also keeps each file's *stamp* (size, inode, modification and
change time in ns) from its last full check: a file whose stamp is unchanged is not read again.
Any write to a file changes its change time (which no program can set back), so an edited,
replaced or truncated file is always hashed again; what a stamp cannot see is the storage medium
corrupting bytes without a write. Entries are written into a hidden temporary folder and renamed
into place (a killed run never leaves a half entry under a key); the folder's ``.lock`` is held
shared while an entry is verified and loaded, exclusively while one is added or deleted.
Entries count towards ``QEVAL_CACHE_MAX_SIZE`` and are listed, pruned and cleared by
``qeval cache`` with the reference entries (:mod:`.cache_pruning`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qeval_plugins.storage.atomic import fsync_dir, probe_writable, write_atomic
from qeval_plugins.storage.cache_layout import LOCK_NAME, models_dir, read_model_meta
from qeval_plugins.storage.cache_pruning import (
    apply_size_cap,
    remove_model_entry,
    remove_stale_folders,
)
from qeval_plugins.storage.content_hash import file_digest
from qeval_plugins.storage.locks import locked

FORMAT_VERSION = 1

logger = logging.getLogger("qeval")


def model_key(identity: list[Any], recipe: dict[str, Any]) -> str:
    """SHA-256 (32 hex digits) of the checkpoint ``identity`` and the quantization ``recipe``
    (quantizer, version, options, package versions, calibration hash, dtype)."""
    header = {"format": FORMAT_VERSION, "model": identity, "recipe": recipe}
    text = json.dumps(header, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _listing(folder: Path) -> dict[str, int]:
    """Relative path → size of every regular file under ``folder`` (links are not files)."""
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def _stamp(path: Path) -> list[int]:
    """What changes whenever a file is written or replaced: size, inode, mtime and ctime (ns)."""
    info = path.stat()
    return [info.st_size, info.st_ino, info.st_mtime_ns, info.st_ctime_ns]


def _verify(folder: Path, meta: dict[str, Any] | None) -> tuple[str | None, dict[str, list]]:
    """(why the entry in ``folder`` cannot be trusted or None, the stamps of its files as they
    were checked). A file whose stamp equals the recorded one is trusted without being hashed;
    a stamp is taken before its file is hashed, so a write during the check is seen next time."""
    if meta is None:
        return "has no valid metadata file", {}
    checked: dict[str, list] = {}
    try:
        present = _listing(folder)
        listed = meta["files"]
        if set(present) != set(listed):
            odd = sorted(set(present) ^ set(listed))
            return f"does not hold the files it lists ({', '.join(odd[:3])})", {}
        stamps = meta.get("stamps") if isinstance(meta.get("stamps"), dict) else {}
        for name, digest in listed.items():
            checked[name] = _stamp(folder / name)
            if stamps.get(name) != checked[name] and file_digest(folder / name) != digest:
                return f"fails its SHA-256 checksum ({name} changed since it was written)", {}
    except OSError as error:
        return f"cannot be read ({error.strerror or error})", {}
    return None, checked


@contextlib.contextmanager
def opened(key: str) -> Iterator[tuple[Path, dict[str, Any]] | None]:
    """The verified entry ``(folder, meta)`` for ``key`` while the caller loads it, or None.

    The folder lock is held shared meanwhile, so no prune deletes the entry under the loader. A
    bad entry gives one warning and is deleted (the caller quantizes again); a good one records
    its use.
    """
    directory = models_dir()
    folder = directory / key
    if not folder.is_dir():
        yield None
        return
    with locked(directory / LOCK_NAME, shared=True):
        meta = read_model_meta(directory / f"{key}.json")
        problem, stamps = _verify(folder, meta)
        if problem is None:
            yield folder, meta
    if problem is not None:
        logger.warning(
            "quantized-model cache entry %s %s; quantizing again and replacing it.", folder, problem
        )
        with contextlib.suppress(OSError), locked(directory / LOCK_NAME):
            remove_model_entry(directory, key)
        yield None
        return
    touch(directory, key, stamps)


def touch(directory: Path, key: str, stamps: dict[str, list]) -> None:
    """Record now as the entry's last use, and the ``stamps`` of its files just verified
    (skipped where the folder is read-only)."""
    with contextlib.suppress(OSError), locked(directory / LOCK_NAME):
        meta = read_model_meta(directory / f"{key}.json")
        if meta is not None:
            meta["last_used"] = time.time()
            meta["stamps"] = stamps
            write_atomic(directory / f"{key}.json", json.dumps(meta, sort_keys=True).encode())


def save(key: str, write: Callable[[Path], None], meta: dict[str, Any]) -> Path | None:
    """Store an entry: ``write(folder)`` fills a fresh temporary folder, renamed to ``KEY/``.

    Returns the entry's folder, or None with a warning when the cache cannot take it (read-only,
    full): the run itself goes on with the model in memory. An entry another process saved first
    is kept and this one discarded. ``QEVAL_CACHE_MAX_SIZE`` is applied afterwards.
    """
    directory = models_dir()
    temporary = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe_writable(directory)
        temporary = Path(tempfile.mkdtemp(dir=directory, prefix=f".{key}.", suffix=".tmp"))
        write(temporary)
        listing = _listing(temporary)
        stamps = {name: _stamp(temporary / name) for name in listing}  # a rename keeps them
        record = {
            **meta,
            "kind": "quantized",
            "format": FORMAT_VERSION,
            "files": {name: file_digest(temporary / name) for name in listing},
            "stamps": stamps,
            "payload_bytes": sum(listing.values()),
            "created": time.time(),
            "last_used": time.time(),
        }
        with locked(directory / LOCK_NAME):
            remove_stale_folders(directory)
            if (directory / key).exists():
                return directory / key
            os.rename(temporary, directory / key)
            temporary = None
            fsync_dir(directory)
            write_atomic(directory / f"{key}.json", json.dumps(record, default=str).encode())
        apply_size_cap(keep={key})
        return directory / key
    except OSError as error:
        logger.warning(
            "could not store the quantized model in the cache folder %s (%s); this run is "
            "unaffected, and the next run quantizes again.",
            directory,
            error.strerror or error,
        )
        return None
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
