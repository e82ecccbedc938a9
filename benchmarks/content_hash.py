"""What keying the caches on file contents costs: SHA-256 of a 1 GiB file, cold and memoised.

The reference cache, the quantized-model cache and a sweep's resume record identify a local
checkpoint by the SHA-256 of its weight, config and code files
(:mod:`qeval_plugins.storage.content_hash`), memoised per file version (device, inode, size,
modification and change time). This script writes a ``--size`` GiB file of random bytes into a
temporary folder (with a private ``QEVAL_CACHE_DIR``), waits until the file is past the memo's
racy window (2 s after its last change), then times, in this order:

- ``memory``: ``hashlib.sha256`` over a 64 MiB buffer in memory (the CPU's bound);
- ``page cache``: :func:`~qeval_plugins.storage.content_hash.file_digest` of the file while its
  pages are cached (what a checkpoint just loaded or written costs), best of ``--repeats``;
- ``disk``: the same after ``fsync`` and ``posix_fadvise(DONTNEED)`` dropped its pages (a cold
  read: bound by the disk where it is slower than the hash);
- ``first key``: ``digests([file])`` with an empty memo (hash plus the memo file's write);
- ``memoised``: ``digests([file])`` again (this process's memo: one ``stat``), and with the
  process memo emptied (the memo file read: what a new run pays), medians of ``--repeats``.

Each case prints wall seconds and GB/s, and this process's CPU seconds and GB per CPU second
(what an idle core would give: the two differ on a busy machine). GB are 10⁹ bytes.

``python benchmarks/content_hash.py`` (1 GiB), ``--size 0.1`` for a smoke run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

CHUNK = 64 << 20


def write_random(path: Path, size: int) -> None:
    """``size`` random bytes (64 MiB blocks of ``os.urandom``, repeated with a counter)."""
    block = bytearray(os.urandom(CHUNK))
    with open(path, "wb") as handle:
        written = 0
        while written < size:
            block[:8] = written.to_bytes(8, "little")  # no two blocks alike
            part = block[: min(CHUNK, size - written)]
            handle.write(part)
            written += len(part)
        handle.flush()
        os.fsync(handle.fileno())


def drop_pages(path: Path) -> None:
    """Ask the kernel to forget the file's cached pages (a no-op where it cannot)."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def timed(function) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of ``function()``."""
    started, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=float, default=1.0, help="GiB (default 1)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = int(args.size * (1 << 30))

    with tempfile.TemporaryDirectory() as scratch:
        os.environ["QEVAL_CACHE_DIR"] = str(Path(scratch) / "cache")
        from qeval_plugins.storage import content_hash

        path = Path(scratch) / "model.safetensors"
        write_random(path, size)
        settle = path.stat().st_ctime_ns + content_hash.RACY_NS - time.time_ns()
        time.sleep(max(0.0, settle / 1e9) + 0.1)

        buffer = os.urandom(CHUNK)
        memory = min(timed(lambda: hashlib.sha256(buffer).digest()) for _ in range(3))
        content_hash.file_digest(path)  # warm the page cache
        cached = min(timed(lambda: content_hash.file_digest(path)) for _ in range(args.repeats))
        drop_pages(path)
        disk = timed(lambda: content_hash.file_digest(path))
        drop_pages(path)
        first = timed(lambda: content_hash.digests([path]))
        process = statistics.median(
            timed(lambda: content_hash.digests([path]))[0] for _ in range(args.repeats)
        )
        fresh = []
        for _ in range(args.repeats):
            content_hash._known.clear()  # a new process: the memo file answers
            fresh.append(timed(lambda: content_hash.digests([path]))[0])
        memo_bytes = (content_hash.memo_dir() / content_hash.MEMO_NAME).stat().st_size

    print(f"file: {size / (1 << 30):.2f} GiB ({size / 1e9:.3f} GB), SHA-256")
    print(f"{'case':<36} {'wall s':>8} {'GB/s':>6} {'CPU s':>8} {'GB/CPU s':>9}")
    rows = [
        ("memory (64 MiB buffer)", memory, CHUNK),
        ("file, page cache (best)", cached, size),
        ("file, pages dropped (disk)", disk, size),
        ("first key, disk: hash + memo write", first, size),
    ]
    for name, (wall, cpu), nbytes in rows:
        print(
            f"{name:<36} {wall:>8.3f} {nbytes / wall / 1e9:>6.2f} {cpu:>8.3f} "
            f"{nbytes / cpu / 1e9:>9.2f}"
        )
    print(f"{'memoised, same process (median)':<36} {process * 1e3:>8.3f} ms")
    print(f"{'memoised, memo file read (median)':<36} {statistics.median(fresh) * 1e3:>8.3f} ms")
    print(f"memo file: {memo_bytes} bytes")


if __name__ == "__main__":
    main()
