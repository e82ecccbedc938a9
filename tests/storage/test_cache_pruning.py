"""Listing and pruning both caches' entries on disk, and the size cap; sizes as text."""

from __future__ import annotations

import json
import os
import time

import pytest

from qeval_plugins import QevalError
from qeval_plugins.storage import cache_pruning
from qeval_plugins.storage.cache_pruning import apply_size_cap, entries, prune

REFERENCE_KEY = "0123456789abcdef0123456789abcdef"
MODEL_KEY = "fedcba9876543210fedcba9876543210"
DAY = 86400.0


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A private cache root with no size cap."""
    monkeypatch.setenv("QEVAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("QEVAL_CACHE_MAX_SIZE", raising=False)
    return tmp_path / "cache"


def add_reference(root, key: str, payload: bytes, last_used: float | None) -> None:
    """A reference entry as :mod:`.reference_cache` writes it (``last_used`` None: none kept)."""
    folder = root / "reference"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{key}.pt").write_bytes(payload)
    meta = {"sha256": "00" * 32, "model": "org/llm"}
    meta |= {} if last_used is None else {"last_used": last_used}
    (folder / f"{key}.json").write_text(json.dumps(meta))


def add_model(root, key: str, payload: bytes, last_used: float) -> None:
    """A quantized-model entry as :mod:`.model_cache` writes it."""
    folder = root / "quantized" / key
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(payload)
    meta = {"files": {"model.safetensors": "00" * 32}, "last_used": last_used}
    (root / "quantized" / f"{key}.json").write_text(json.dumps(meta))


def json_size(root, store: str, key: str) -> int:
    return (root / store / f"{key}.json").stat().st_size


def test_sizes():
    parse = cache_pruning.parse_size
    assert parse("2G") == 2 * 1024**3 and parse("1.5k") == 1536 and parse("500MiB") == 500 << 20
    assert parse("123") == 123
    for bad in ("", "-1G", "G", "1e9", "2X"):
        with pytest.raises(QevalError):
            parse(bad)


def test_the_cap_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("QEVAL_CACHE_MAX_SIZE", raising=False)
    assert cache_pruning.max_size() is None
    monkeypatch.setenv("QEVAL_CACHE_MAX_SIZE", " 2G ")
    assert cache_pruning.max_size() == 2 * 1024**3
    monkeypatch.setenv("QEVAL_CACHE_MAX_SIZE", "lots")
    with pytest.raises(QevalError, match=r"^QEVAL_CACHE_MAX_SIZE 'lots' is not a size"):
        cache_pruning.max_size()


def test_entries_of_both_stores_least_recently_used_first(root):
    now = time.time()
    add_reference(root, REFERENCE_KEY, b"r" * 100, now - 3 * DAY)
    add_model(root, MODEL_KEY, b"m" * 1000, now - DAY)
    (root / "reference" / "notes.pt").write_bytes(b"not qeval's")  # not a key: never an entry
    (root / "quantized" / "not-a-key").mkdir()
    (root / "quantized" / f".{MODEL_KEY}.x.tmp").mkdir()  # a save under way
    reference, model = entries()
    assert (reference.key, reference.store, reference.meta["model"]) == (
        REFERENCE_KEY,
        "reference",
        "org/llm",
    )
    assert reference.size == 100 + json_size(root, "reference", REFERENCE_KEY)
    assert reference.last_used == pytest.approx(now - 3 * DAY)
    assert (model.key, model.store, model.last_used) == (MODEL_KEY, "quantized", now - DAY)
    assert model.size == 1000 + json_size(root, "quantized", MODEL_KEY)


def test_an_entry_without_a_last_use_falls_back_to_its_modification_time(root):
    add_reference(root, REFERENCE_KEY, b"r", last_used=None)
    payload = root / "reference" / f"{REFERENCE_KEY}.pt"
    os.utime(payload, (1_000_000.0, 1_000_000.0))
    (root / "quantized").mkdir()
    [entry] = entries()
    assert entry.last_used == 1_000_000.0 and entry.meta["model"] == "org/llm"
    (root / "reference" / f"{REFERENCE_KEY}.json").write_text('{"model": "no checksum"}')
    assert entries()[0].meta == {}  # not what the reference cache writes: not its metadata


def test_prune_by_age_then_size_across_both_stores(root):
    now = time.time()
    add_reference(root, REFERENCE_KEY, b"r" * 100, now - 3 * DAY)
    add_model(root, MODEL_KEY, b"m" * 1000, now - DAY)
    third = "00000000000000000000000000000003"
    add_reference(root, third, b"t" * 100, now)
    assert prune(older_than=4 * DAY) == []
    assert [e.key for e in prune(older_than=2 * DAY)] == [REFERENCE_KEY]
    assert not (root / "reference" / f"{REFERENCE_KEY}.pt").exists()
    assert not (root / "reference" / f"{REFERENCE_KEY}.json").exists()
    left = 100 + json_size(root, "reference", third)
    assert [e.key for e in prune(max_bytes=left)] == [MODEL_KEY]  # the least recently used
    assert [p.name for p in (root / "quantized").iterdir()] == [".lock"]  # folder, json gone
    assert [e.key for e in entries()] == [third]


def test_prune_removes_temporaries_of_killed_writers(root):
    (root / "reference").mkdir(parents=True)
    (root / "quantized").mkdir()
    killed, saving = (root / "quantized" / f".{MODEL_KEY}.{n}.tmp" for n in ("a", "b"))
    killed.mkdir()
    saving.mkdir()
    old = time.time() - 2 * DAY
    os.utime(killed, (old, old))
    stale_file = root / "reference" / f".{REFERENCE_KEY}.pt.x.tmp"
    stale_file.write_bytes(b"partial")
    os.utime(stale_file, (old, old))
    assert prune(max_bytes=0) == []
    assert not killed.exists() and saving.exists() and not stale_file.exists()


def test_the_cap_keeps_the_entry_just_saved(root, monkeypatch):
    now = time.time()
    add_reference(root, REFERENCE_KEY, b"r" * 100, now - DAY)
    add_model(root, MODEL_KEY, b"m" * 1000, now - 2 * DAY)
    apply_size_cap(keep={MODEL_KEY})  # no cap: nothing goes
    assert len(entries()) == 2
    monkeypatch.setenv("QEVAL_CACHE_MAX_SIZE", "1")
    apply_size_cap(keep={MODEL_KEY})
    assert [e.key for e in entries()] == [MODEL_KEY]
