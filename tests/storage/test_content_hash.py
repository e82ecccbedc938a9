"""Content identity of checkpoints: SHA-256 of the files, memoised per file version."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import pytest

from qeval_plugins.storage import content_hash, model_cache, reference_cache
from qeval_plugins.sweep.settings import model_identity

WEIGHTS = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture
def memo(tmp_path, monkeypatch):
    """A private cache folder and an empty in-process memo; returns the memo file's path."""
    monkeypatch.setenv("QEVAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(content_hash, "_known", {})
    return tmp_path / "cache" / "hashes" / content_hash.MEMO_NAME


@pytest.fixture
def settled(monkeypatch):
    """No racy window: files written by the test are memoised like old ones."""
    monkeypatch.setattr(content_hash, "RACY_NS", 0)


@pytest.fixture
def hashed(monkeypatch):
    """The paths content_hash reads, in order."""
    paths = []
    real = content_hash.file_digest
    monkeypatch.setattr(content_hash, "file_digest", lambda path: paths.append(path) or real(path))
    return paths


def model_folder(root):
    folder = root / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(WEIGHTS)
    return folder


def rewrite_keeping_size_and_mtime(path, data: bytes) -> None:
    """What ``cp -p`` does: other bytes into the same file, the old modification time restored.

    Rewritten until the change time moved on (a coarse clock may give it the old tick)."""
    old = path.stat()
    assert len(data) == old.st_size
    for _ in range(500):
        path.write_bytes(data)
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
        if path.stat().st_ctime_ns != old.st_ctime_ns:
            return
        time.sleep(0.01)
    raise AssertionError("the change time never moved")


def keys(folder) -> tuple[str, str, object]:
    """The reference-cache key, the quantized-model key and the sweep's model identity."""
    identity = reference_cache.checkpoint_identity(str(folder))
    return (
        reference_cache.reference_key(identity, [[1, 2, 3]], {"top_k": 32}, "float32"),
        model_cache.model_key(identity, {"quantizer": "gptq", "dtype": "float32"}),
        model_identity(str(folder)),
    )


@pytest.mark.parametrize("how", ["in place (cp -p)", "renamed over (rsync -t)"])
def test_weights_replaced_with_their_size_and_mtime_kept_change_every_key(
    tmp_path, memo, settled, how
):
    """The reported case: the reference was reused, and quantizer=none scored KL 1.0 against
    itself. Name, size and mtime are unchanged; only the bytes (and the change time) differ."""
    folder = model_folder(tmp_path)
    weights = folder / "model.safetensors"
    before = keys(folder)
    assert keys(folder) == before  # memoised: the same keys again
    other = WEIGHTS[::-1]
    old = weights.stat()
    if how.startswith("in place"):
        rewrite_keeping_size_and_mtime(weights, other)
    else:
        replacement = folder / ".model.safetensors.tmp"
        replacement.write_bytes(other)
        os.utime(replacement, ns=(old.st_atime_ns, old.st_mtime_ns))
        os.replace(replacement, weights)
    new = weights.stat()
    assert (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    after = keys(folder)
    for name, old_key, new_key in zip(
        ("reference", "quantized", "sweep"), before, after, strict=True
    ):
        assert old_key != new_key, name
    digest = hashlib.sha256(other).hexdigest()
    assert ["model.safetensors", digest] in json.loads(json.dumps(after[2]))


def test_identical_bytes_give_identical_keys_and_code_files_count(tmp_path, memo, settled):
    folder = model_folder(tmp_path)
    before = keys(folder)
    copy = tmp_path / "copy" / "model"
    shutil.copytree(folder, copy)
    (folder / "model.safetensors").write_bytes(WEIGHTS)  # rewritten, same bytes
    assert keys(folder) == before
    assert reference_cache.checkpoint_identity(str(copy))[1:] == before[2][1:]  # path aside
    (folder / "modeling_custom.py").write_text("# trust_remote_code model code\n")
    assert keys(folder) != before


def test_a_file_is_read_once_per_version(tmp_path, memo, settled, hashed, monkeypatch):
    folder = model_folder(tmp_path)
    weights = folder / "model.safetensors"
    first = content_hash.digests([weights])
    assert first == [hashlib.sha256(WEIGHTS).hexdigest()] and hashed == [weights]
    assert content_hash.digests([weights]) == first and hashed == [weights]
    monkeypatch.setattr(content_hash, "_known", {})  # a new process: the memo file answers
    assert content_hash.digests([weights]) == first and hashed == [weights]
    rows = json.loads(memo.read_text())
    assert [row[0] for row in rows.values()] == first
    # a new change time (same bytes, size and mtime: os.utime, chmod) is a new version
    info = weights.stat()
    for _ in range(500):
        os.utime(weights, ns=(info.st_atime_ns, info.st_mtime_ns))
        if weights.stat().st_ctime_ns != info.st_ctime_ns:
            break
        time.sleep(0.01)
    assert content_hash.digests([weights]) == first and len(hashed) == 2
    # a new inode (a copy renamed over it) is a new version too
    shutil.copy2(weights, folder / "copy")
    os.replace(folder / "copy", weights)
    assert content_hash.digests([weights]) == first and len(hashed) == 3
    assert content_hash.digests([weights]) == first and len(hashed) == 3


def test_a_stamp_holds_device_inode_size_mtime_and_ctime(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    info = path.stat()
    assert content_hash.stamp(info) == (
        f"{info.st_dev}:{info.st_ino}:1:{info.st_mtime_ns}:{info.st_ctime_ns}"
    )


def test_a_file_changed_just_now_is_hashed_but_not_memoised(tmp_path, memo, hashed):
    """Racy: within RACY_NS of its change a file may change again without a new stamp."""
    weights = model_folder(tmp_path) / "model.safetensors"
    content_hash.digests([weights])
    content_hash.digests([weights])
    assert hashed == [weights, weights] and not memo.exists()


def test_a_file_written_while_it_is_read_is_not_memoised(tmp_path, memo, settled, monkeypatch):
    weights = model_folder(tmp_path) / "model.safetensors"
    real = content_hash.file_digest

    def read_then_write(path):
        digest = real(path)
        rewrite_keeping_size_and_mtime(path, WEIGHTS[::-1])
        return digest

    monkeypatch.setattr(content_hash, "file_digest", read_then_write)
    assert content_hash.digests([weights]) == [hashlib.sha256(WEIGHTS).hexdigest()]
    assert content_hash._known == {} and not memo.exists()


def hostile(memo, kind: str) -> None:
    memo.parent.mkdir(parents=True, exist_ok=True)
    if kind == "not JSON":
        memo.write_bytes(b"\xff{not json")
    elif kind == "deeply nested":
        memo.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "a list":
        memo.write_text("[1, 2]")
    elif kind == "malformed rows":
        rows = {"1:2:3:4:5": ["zz", 1], "x": ["0" * 64, 1], "6:7:8:9:10": ["0" * 64, True]}
        memo.write_text(json.dumps(rows))
    elif kind == "too large":
        memo.write_bytes(b" " * (content_hash.MAX_BYTES + 1))
    elif kind == "a FIFO":
        os.mkfifo(memo)
    elif kind == "a link to /dev/zero":
        memo.symlink_to("/dev/zero")
    elif kind == "a folder":
        memo.mkdir()
    elif kind == "the cache folder is a file":
        shutil.rmtree(memo.parent)
        memo.parent.write_text("not a folder")


HOSTILE = [
    "not JSON",
    "deeply nested",
    "a list",
    "malformed rows",
    "too large",
    "a FIFO",
    "a link to /dev/zero",
    "a folder",
    "the cache folder is a file",
]


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_memo_is_ignored_and_the_file_hashed(tmp_path, memo, settled, kind, hashed):
    weights = model_folder(tmp_path) / "model.safetensors"
    hostile(memo, kind)
    expected = [hashlib.sha256(WEIGHTS).hexdigest()]
    assert content_hash.digests([weights]) == expected and hashed == [weights]
    writable = kind not in ("a folder", "the cache folder is a file")
    if writable:  # replaced by a valid memo holding the new row
        rows = json.loads(memo.read_text())
        assert [row[0] for row in rows.values()] == expected
    content_hash._known.clear()
    assert content_hash.digests([weights]) == expected
    assert len(hashed) == (1 if writable else 2)


def test_rows_of_another_process_are_kept_and_the_oldest_go_beyond_the_cap(
    tmp_path, memo, settled, monkeypatch
):
    """Merged under the lock after re-reading the file: processes that meet lose no row."""
    folder = model_folder(tmp_path)
    memo.parent.mkdir(parents=True)
    theirs = {"1:2:3:4:5": ["a" * 64, 100.0], "1:2:3:4:6": ["b" * 64, 200.0]}
    memo.write_text(json.dumps(theirs))
    content_hash.digests([folder / "model.safetensors"])
    rows = json.loads(memo.read_text())
    assert len(rows) == 3 and all(rows[key] == row for key, row in theirs.items())
    monkeypatch.setattr(content_hash, "MAX_ENTRIES", 2)
    content_hash.digests([folder / "config.json"])
    rows = json.loads(memo.read_text())
    assert len(rows) == 2 and "1:2:3:4:5" not in rows and "1:2:3:4:6" not in rows
