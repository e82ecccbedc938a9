"""SHA-256 of files, computed once per file version: what identifies a checkpoint's contents.

A cache key built from a file's name, size and modification time reuses a stale entry when the
file is replaced by other bytes of the same size and its modification time restored (``cp -p``,
``rsync -t``). The reference cache, the quantized-model cache and a sweep's resume record
therefore key a checkpoint on the SHA-256 of its files' bytes. Hashing reads the whole file
(about 1.1 GB per CPU second from the page cache on a 2-core AMD EPYC: ~13 s for a 14 GB
checkpoint, longer where the disk reads slower; ``benchmarks/content_hash.py``), so each digest
is memoised per file version, identified by its *stamp*: ``(st_dev, st_ino, st_size,
st_mtime_ns, st_ctime_ns)`` of ``stat`` (links followed). Every write, replacement or ``utime``
sets the change time to the current time, and no program can set it back (only setting the
system clock back can), so a known stamp never stands for other bytes; what a stamp cannot see
is a storage medium that corrupts bytes without a write.

Racy versions, as in git's index: a file changed less than :data:`RACY_NS` before its stamp was
taken could change again within the same timestamp tick without getting a new stamp, so its
digest is not memoised (it is hashed again until it has been left alone for that long). Neither
is a file whose stamp changed while it was read.

The memo lives in the process (a dict) and on disk in ``cache_root()/hashes/sha256.json``:
``{stamp: [sha256, stored_at]}`` (epoch seconds), at most :data:`MAX_ENTRIES` rows (the oldest
go first). New rows are merged in under the folder's ``.lock``, re-reading the file first, and
written atomically, so processes that meet lose no row. A memo file that is missing, not a
regular file, larger than :data:`MAX_BYTES`, not JSON, or whose rows are malformed is ignored
(row by row: those files are hashed again); one that cannot be written (read-only or full
cache) costs only the hashing next time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from qeval_plugins.storage.atomic import remove_stale_temporaries, write_atomic
from qeval_plugins.storage.cache_layout import cache_root
from qeval_plugins.storage.locks import locked

MEMO_NAME = "sha256.json"
LOCK_NAME = ".lock"
RACY_NS = 2_000_000_000  # 2 s: the coarsest timestamp tick of a common file system (FAT)
MAX_ENTRIES = 20_000  # ~110 bytes a row: ~2 MB
MAX_BYTES = 8 << 20
_CHUNK = 4 << 20
_STAMP = re.compile(r"\d+:\d+:\d+:-?\d+:-?\d+")
_DIGEST = re.compile(r"[0-9a-f]{64}")

logger = logging.getLogger("qeval")
_known: dict[str, str] = {}  # this process's memo: stamp -> digest


def memo_dir() -> Path:
    """The folder of the on-disk memo: ``cache_root()/hashes``."""
    return cache_root() / "hashes"


def file_digest(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 4 MiB chunks; never memoised."""
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            digest.update(view[:read])
    return digest.hexdigest()


def stamp(info: os.stat_result) -> str:
    """``dev:ino:size:mtime_ns:ctime_ns``: changes whenever the file is written or replaced."""
    return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"


def digests(paths: Iterable[Path]) -> list[str]:
    """SHA-256 (hex) of each file in ``paths``, from the memo where its stamp is known.

    A file is hashed only when its stamp is in neither memo; new digests are memoised (see the
    module docstring for which are not) with one write of the on-disk memo. Raises OSError when
    a file cannot be read.
    """
    found, new = [], {}
    memo: dict[str, list] | None = None
    for path in paths:
        taken = time.time_ns()
        before = os.stat(path)
        key = stamp(before)
        if key not in _known:
            memo = _read_memo(memo_dir() / MEMO_NAME) if memo is None else memo
            if key in memo:
                _known[key] = memo[key][0]
        if key in _known:
            found.append(_known[key])
            continue
        digest = file_digest(path)
        found.append(digest)
        if stamp(os.stat(path)) == key and taken - before.st_ctime_ns >= RACY_NS:
            _known[key] = new[key] = digest
    if new:
        _store(new)
    return found


def _read_memo(path: Path) -> dict[str, list]:
    """The valid rows of the memo file at ``path``; {} when it is absent or unusable."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block
    except OSError:
        return {}
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES:
            return {}
        chunks, left = [], MAX_BYTES + 1
        while left > 0 and (chunk := os.read(handle, min(left, _CHUNK))):
            chunks.append(chunk)
            left -= len(chunk)
        memo = json.loads(b"".join(chunks)) if left > 0 else None
    except (OSError, ValueError, RecursionError):
        return {}
    finally:
        os.close(handle)
    if not isinstance(memo, dict):
        return {}
    return {key: row for key, row in memo.items() if _valid(key, row)}


def _valid(key: object, row: object) -> bool:
    """True for a memo row ``"stamp": ["sha256", stored_at]``."""
    return (
        isinstance(key, str)
        and _STAMP.fullmatch(key) is not None
        and isinstance(row, list)
        and len(row) == 2
        and isinstance(row[0], str)
        and _DIGEST.fullmatch(row[0]) is not None
        and isinstance(row[1], (int, float))
        and not isinstance(row[1], bool)
    )


def _store(new: dict[str, str]) -> None:
    """Merge ``new`` (stamp -> digest) into the on-disk memo; a failure costs only a rehash."""
    folder = memo_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with locked(folder / LOCK_NAME):
            remove_stale_temporaries(folder)
            memo = _read_memo(folder / MEMO_NAME)
            now = time.time()
            memo.update({key: [digest, now] for key, digest in new.items()})
            if len(memo) > MAX_ENTRIES:
                newest = sorted(memo, key=lambda key: memo[key][1])[-MAX_ENTRIES:]
                memo = {key: memo[key] for key in newest}
            write_atomic(folder / MEMO_NAME, json.dumps(memo, sort_keys=True).encode())
    except OSError as error:
        logger.debug("content hashes not memoised in %s: %s", folder, error)
