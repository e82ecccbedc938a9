"""The reference cache: checksummed, structure-checked, atomic, bounded; and ``qeval cache``."""

from __future__ import annotations

import errno
import logging
import math
import os
import time
from types import SimpleNamespace

import pytest
import torch
from conftest import replace_keeping_size_and_mtime

from qeval_plugins import QevalError
from qeval_plugins.cli.main import main
from qeval_plugins.evals.sampling.engine import check_samples
from qeval_plugins.evals.sqnr.engine import SqnrSettings, check_reference, compute_reference
from qeval_plugins.storage import atomic, cache_pruning, reference_cache
from qeval_plugins.storage.locks import locked

KEY = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"
THIRD = "00000000000000000000000000000003"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache folder (returned: the ``reference/`` folder inside it), no size cap."""
    monkeypatch.setenv("QEVAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("QEVAL_CACHE_MAX_SIZE", raising=False)
    return tmp_path / "cache" / "reference"


@pytest.fixture
def clock(monkeypatch):
    """The caches' clock (saving, loading, pruning), set by the test (seconds since the epoch)."""
    now = SimpleNamespace(value=1_000_000.0)
    for module in (reference_cache, cache_pruning):
        monkeypatch.setattr(module, "time", SimpleNamespace(time=lambda: now.value))
    return now


def reference(n: int = 64) -> dict:
    return {"texts": [{"logits": torch.arange(n, dtype=torch.float32) / 7}]}


def garble(path, tensor: torch.Tensor) -> None:
    """Zero ``tensor``'s stored bytes inside a torch.save file; the zip structure survives."""
    data = bytearray(path.read_bytes())
    needle = tensor.numpy().tobytes()
    start = data.find(needle)
    assert start > 0, "tensor bytes not found in the file"
    data[start : start + len(needle)] = bytes(len(needle))
    path.write_bytes(bytes(data))


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_an_entry_round_trips_with_its_metadata_and_last_use(cache, clock):
    meta = {"kind": "qeval_sqnr", "model": "org/model", "settings": {"top_k": 32}}
    path = reference_cache.save(KEY, reference(), meta={**meta, "dtype": "float32"})
    assert path == cache / f"{KEY}.pt"
    clock.value += 3600
    loaded = reference_cache.load(KEY)
    assert torch.equal(loaded["texts"][0]["logits"], reference()["texts"][0]["logits"])
    [entry] = cache_pruning.entries()
    assert entry.meta["model"] == "org/model" and entry.meta["settings"] == {"top_k": 32}
    assert entry.meta["created"] == 1_000_000.0 and entry.last_used == 1_003_600.0
    assert entry.size == path.stat().st_size + (cache / f"{KEY}.json").stat().st_size
    assert oct((cache / f"{KEY}.pt").stat().st_mode & 0o777) != "0o600"  # normal permissions


def test_garbled_bytes_are_caught_by_the_checksum_and_the_entry_replaced(cache, caplog):
    good = reference()
    reference_cache.save(KEY, good)
    payload = cache / f"{KEY}.pt"
    garble(payload, good["texts"][0]["logits"])
    # the hazard: torch.load still reads the garbled file, with wrong numbers
    silently_wrong = torch.load(payload, weights_only=True)["texts"][0]["logits"]
    assert not torch.equal(silently_wrong, good["texts"][0]["logits"])

    with caplog.at_level(logging.WARNING, logger="qeval"):
        assert reference_cache.load(KEY) is None
    [warning] = warnings_of(caplog)
    assert "SHA-256" in warning and str(payload) in warning

    reference_cache.save(KEY, good)  # what the engine does next: recompute and replace
    caplog.clear()
    again = reference_cache.load(KEY)
    assert torch.equal(again["texts"][0]["logits"], good["texts"][0]["logits"])
    assert warnings_of(caplog) == []


def test_an_entry_without_metadata_is_recomputed(cache, caplog):
    """Entries of qeval before checksums, or whose metadata was lost, are never trusted."""
    reference_cache.save(KEY, reference())
    (cache / f"{KEY}.json").unlink()
    with caplog.at_level(logging.WARNING, logger="qeval"):
        assert reference_cache.load(KEY) is None
    assert "no valid metadata" in warnings_of(caplog)[0]


def tiny_reference(positions: int = 9, vocab: int = 16) -> dict:
    """A hand-made reference of the structure compute_reference gives (settings below)."""
    return {
        "texts": [
            {
                "topk_logprobs": torch.zeros(positions, 4),
                "topk_indices": torch.zeros(positions, 4, dtype=torch.int32),
                "tail_logprob": torch.zeros(positions),
                "nll": torch.zeros(positions, dtype=torch.float64),
                "logits": torch.zeros(3, vocab),
                "blocks": torch.zeros(2, 5, 8),
            }
        ]
    }


TINY_SETTINGS = SqnrSettings(top_k=4, logit_positions=3, activation_tokens=5, kl="topk")
TINY_TEXTS = [torch.arange(10)]


BROKEN = {
    "no texts": {"texts": []},
    "not a dict": [],
    "nll float32": {"nll": torch.zeros(9)},
    "too many logit rows": {"logits": torch.zeros(4, 16)},
    "token id beyond the vocabulary": {"topk_indices": torch.full((9, 4), 16, dtype=torch.int32)},
    "blocks of the wrong length": {"blocks": torch.zeros(2, 6, 8)},
    "a missing tensor": {"tail_logprob": None},
    "NaN logits": {"logits": torch.zeros(3, 16).index_fill(1, torch.tensor([5]), math.nan)},
    "an infinite block output": {
        "blocks": torch.zeros(2, 5, 8).index_fill(2, torch.tensor([1]), math.inf)
    },
    "a NaN NLL": {"nll": torch.full((9,), math.nan, dtype=torch.float64)},
    "a NaN top-k log-probability": {"topk_logprobs": torch.full((9, 4), math.nan)},
    "a NaN tail log-mass": {"tail_logprob": torch.full((9,), math.nan)},
}


def test_a_reference_of_the_right_structure_passes():
    check_reference(tiny_reference(), TINY_TEXTS, TINY_SETTINGS)
    empty_tail = tiny_reference()  # k = V: the rest has no mass, log-mass -inf
    empty_tail["texts"][0]["tail_logprob"] = torch.full((9,), -math.inf)
    check_reference(empty_tail, TINY_TEXTS, TINY_SETTINGS)


@pytest.mark.parametrize("what", list(BROKEN))
def test_a_reference_of_the_wrong_structure_fails(what):
    change = BROKEN[what]
    value = tiny_reference()
    if isinstance(change, dict) and "texts" not in change:
        value["texts"][0].update(change)
    else:
        value = change
    with pytest.raises(ValueError):
        check_reference(value, TINY_TEXTS, TINY_SETTINGS)


def test_a_real_reference_passes_its_check_after_a_round_trip(cache, tiny_model_dir):
    """Else every run would recompute: the check accepts exactly what the engine stores."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    texts = [torch.arange(1, 12), torch.arange(3, 30), torch.arange(5, 9)]
    settings = SqnrSettings(top_k=8, logit_positions=20, activation_tokens=30, kl="topk")
    reference_cache.save(KEY, compute_reference(model, texts, settings))
    loaded = reference_cache.load(KEY, check=lambda ref: check_reference(ref, texts, settings))
    assert loaded is not None
    other = SqnrSettings(top_k=8, logit_positions=21, activation_tokens=30, kl="topk")
    with pytest.raises(ValueError, match="logits"):
        check_reference(loaded, texts, other)


def test_a_wrong_structure_entry_is_recomputed_not_fatal(cache, caplog):
    reference_cache.save(KEY, {"texts": []})
    with caplog.at_level(logging.WARNING, logger="qeval"):
        found = reference_cache.load(
            KEY, check=lambda ref: check_reference(ref, TINY_TEXTS, TINY_SETTINGS)
        )
    assert found is None
    assert "wrong structure" in warnings_of(caplog)[0]
    reference_cache.save(KEY, tiny_reference())
    assert reference_cache.load(
        KEY, check=lambda ref: check_reference(ref, TINY_TEXTS, TINY_SETTINGS)
    )


def test_an_entry_with_nan_values_and_a_valid_checksum_is_recomputed(cache, caplog):
    """Right structure, right checksum, NaN logits: it crashed every later run
    (``energies must be >= 0``) and was never recomputed."""
    poisoned = tiny_reference()
    poisoned["texts"][0]["logits"][1, 3] = math.nan
    reference_cache.save(KEY, poisoned)  # a checksum over the NaN bytes: it verifies

    def check(ref):
        check_reference(ref, TINY_TEXTS, TINY_SETTINGS)

    with caplog.at_level(logging.WARNING, logger="qeval"):
        assert reference_cache.load(KEY, check=check) is None
    [warning] = warnings_of(caplog)
    assert "wrong structure or values (text 0 logits: not finite)" in warning
    assert "recomputing and replacing it" in warning
    reference_cache.save(KEY, tiny_reference())
    assert torch.equal(
        reference_cache.load(KEY, check=check)["texts"][0]["logits"], torch.zeros(3, 16)
    )


def test_sampling_cache_structure_is_checked():
    check_samples({"samples": [[[1, 2], []], [[3]]]}, [2, 1])
    for bad in ({"samples": [[[1, 2]], [[3]]]}, {"samples": [[[1, -2], []], [[3]]]}, {}, []):
        with pytest.raises(ValueError):
            check_samples(bad, [2, 1])


def test_stale_temporaries_are_removed_when_the_cache_is_opened(cache):
    cache.mkdir(parents=True)
    old, fresh, writing = (cache / f".{name}.pt.x.tmp" for name in ("old", "fresh", "writing"))
    for path in (old, fresh, writing):
        path.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    for path in (old, writing):
        os.utime(path, (two_hours_ago, two_hours_ago))
    with locked(writing):  # a writer that is still alive holds its temporary file's lock
        assert reference_cache.load(KEY) is None  # a miss opens the cache for writing
    assert not old.exists()
    assert fresh.exists() and writing.exists()


def test_an_unusable_cache_folder_is_one_line_before_any_computation(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("QEVAL_CACHE_DIR", str(blocker))
    with pytest.raises(QevalError, match=r"not-a-folder is a file.*QEVAL_CACHE_DIR"):
        reference_cache.load(KEY)

    monkeypatch.setenv("QEVAL_CACHE_DIR", str(tmp_path / "full"))

    def disk_full(folder):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(reference_cache, "probe_writable", disk_full)
    with pytest.raises(QevalError, match=r"full/reference is not usable \(No space left"):
        reference_cache.load(KEY)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_folder_is_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    (folder / "reference").mkdir(parents=True)
    (folder / "reference").chmod(0o500)
    monkeypatch.setenv("QEVAL_CACHE_DIR", str(folder))
    try:
        with pytest.raises(QevalError, match="Permission denied"):
            reference_cache.load(KEY)
    finally:
        (folder / "reference").chmod(0o700)


def test_a_read_only_cache_still_serves_its_entries(cache, monkeypatch):
    """A shared cache on a read-only file system: hits work, last use is simply not recorded."""
    from qeval_plugins.storage import locks

    reference_cache.save(KEY, reference())
    real_open = os.open

    def read_only_open(path, flags, *args):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    def no_write(path, data):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(locks.os, "open", read_only_open)
    monkeypatch.setattr(reference_cache, "write_atomic", no_write)
    assert reference_cache.load(KEY) is not None
    with pytest.raises(QevalError, match="Read-only file system"):
        reference_cache.load(OTHER)  # a miss needs a writable folder


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "file.json"
    atomic.write_atomic(target, b"old")

    def no_space(handle):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        atomic.write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_a_save_that_fails_warns_and_keeps_the_entry(cache, monkeypatch, caplog):
    reference_cache.save(KEY, reference(8))

    def no_space(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(reference_cache, "write_atomic", no_space)
    with caplog.at_level(logging.WARNING, logger="qeval"):
        assert reference_cache.save(KEY, reference(16)) is None
    assert "results are unaffected" in warnings_of(caplog)[0]
    monkeypatch.undo()
    monkeypatch.setenv("QEVAL_CACHE_DIR", str(cache.parent))
    assert reference_cache.load(KEY)["texts"][0]["logits"].numel() == 8


def test_prune_by_age_and_by_size_least_recently_used_first(cache, clock):
    day = 86400.0
    for key in (KEY, OTHER, THIRD):
        reference_cache.save(key, reference())
        clock.value += day
    reference_cache.load(KEY)  # the oldest entry is the most recently used now
    size = cache_pruning.entries()[0].size
    assert [e.key for e in cache_pruning.entries()] == [OTHER, THIRD, KEY]

    assert cache_pruning.prune(older_than=10 * day) == []
    assert [e.key for e in cache_pruning.prune(max_bytes=2 * size)] == [OTHER]
    clock.value += 2 * day
    assert [e.key for e in cache_pruning.prune(older_than=2.5 * day)] == [THIRD]
    assert [e.key for e in cache_pruning.entries()] == [KEY]
    assert not (cache / f"{OTHER}.json").exists()


def test_the_size_cap_evicts_after_each_save(cache, clock, monkeypatch):
    reference_cache.save(KEY, reference())
    size = cache_pruning.entries()[0].size
    monkeypatch.setenv("QEVAL_CACHE_MAX_SIZE", str(2 * size))
    for key in (OTHER, THIRD):
        clock.value += 60
        reference_cache.save(key, reference())
    assert sorted(e.key for e in cache_pruning.entries()) == sorted([OTHER, THIRD])
    monkeypatch.setenv("QEVAL_CACHE_MAX_SIZE", "1")  # smaller than any entry: keeps the new one
    clock.value += 60
    reference_cache.save(KEY, reference())
    assert [e.key for e in cache_pruning.entries()] == [KEY]
    monkeypatch.setenv("QEVAL_CACHE_MAX_SIZE", "2 gigs")
    with pytest.raises(QevalError, match="QEVAL_CACHE_MAX_SIZE '2 gigs' is not a size"):
        reference_cache.load(OTHER)  # checked before a reference would be computed


def test_qeval_cache_list_prune_clear(cache, clock, capsys):
    reference_cache.save(
        KEY,
        reference(),
        meta={"kind": "qeval_sqnr", "model": "org/llm", "settings": {"top_k": 32}},
    )
    clock.value += 60
    reference_cache.save(OTHER, reference(), meta={"model": "\x1b]0;owned\x07\x1b[2Jevil"})

    assert main(["cache", "list"]) == 0
    listing = capsys.readouterr().out
    assert "org/llm" in listing and "top_k=32" in listing and "2 entries" in listing
    assert "\x1b" not in listing and "evil" in listing  # control sequences never reach the terminal

    assert main(["cache", "prune", "--older-than", "1"]) == 0
    assert "removed 0 entries" in capsys.readouterr().out
    size = cache_pruning.entries()[0].size
    assert main(["cache", "prune", "--max-size", str(size)]) == 0
    out = capsys.readouterr().out
    assert "removed 1 entry (" in out and "; 1 entry (" in out and ") remains" in out
    assert [e.key for e in cache_pruning.entries()] == [OTHER]  # the least recently used went

    assert main(["cache", "clear"]) == 0
    assert "removed 1 entry (" in capsys.readouterr().out
    assert main(["cache", "list"]) == 0
    assert "is empty" in capsys.readouterr().out

    assert main(["cache", "prune"]) == 2
    assert main(["cache", "prune", "--max-size", "lots"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        "qeval: error: give --older-than DAYS and/or --max-size SIZE (e.g. --max-size 2G).",
        "qeval: error: --max-size 'lots' is not a size; write e.g. 500M, 2G or 1.5T.",
    ]


def sqnr_run(model_dir, tasks_dir, quantizer: str = "rtn,bits=3,group_size=0") -> dict:
    """lm-eval's results of ``qeval_sqnr`` on 3 texts of at most 32 tokens."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model="qeval",
        model_args=f"pretrained={model_dir},quantizer={quantizer}",
        tasks=["qeval_sqnr"],
        device="cpu",
        limit=3,
        task_manager=TaskManager(
            include_path=str(tasks_dir),
            include_defaults=False,
            metadata={"max_tokens": 32, "logit_positions": 48, "activation_tokens": 32},
        ),
    )


def test_a_garbled_sqnr_entry_is_recomputed_with_the_right_numbers(
    tiny_model_dir, tasks_dir, tmp_path, monkeypatch, caplog
):
    """The reported case: zip intact, bytes garbled, logit SQNR silently wrong."""
    monkeypatch.setenv("QEVAL_CACHE_DIR", str(tmp_path / "cache"))

    def run() -> dict:
        return sqnr_run(tiny_model_dir, tasks_dir)

    first = run()
    assert first["config"]["qeval"]["sqnr"]["reference_cache"]["reused"] is False
    [payload] = (tmp_path / "cache" / "reference").glob("*.pt")
    stored = torch.load(payload, weights_only=True)
    garble(payload, stored["texts"][0]["logits"])
    with caplog.at_level(logging.WARNING, logger="qeval"):
        second = run()
    assert second["config"]["qeval"]["sqnr"]["reference_cache"]["reused"] is False
    assert any("SHA-256" in message for message in warnings_of(caplog))
    metrics = first["results"]["qeval_sqnr"]
    assert second["results"]["qeval_sqnr"]["logit_sqnr_db,none"] == metrics["logit_sqnr_db,none"]
    assert second["results"]["qeval_sqnr"]["kl_mean,none"] == metrics["kl_mean,none"]
    third = run()  # the replaced entry is reused
    assert third["config"]["qeval"]["sqnr"]["reference_cache"]["reused"] is True
    assert third["results"]["qeval_sqnr"]["logit_sqnr_db,none"] == metrics["logit_sqnr_db,none"]


def test_a_nan_sqnr_entry_with_a_valid_checksum_is_recomputed_not_fatal(
    tiny_model_dir, tasks_dir, tmp_path, monkeypatch, caplog
):
    """The reported case: NaN values, checksum rewritten to match; every later run failed with
    ``ValueError: energies must be >= 0`` and the entry was never recomputed."""
    monkeypatch.setenv("QEVAL_CACHE_DIR", str(tmp_path / "cache"))
    first = sqnr_run(tiny_model_dir, tasks_dir)
    [payload] = (tmp_path / "cache" / "reference").glob("*.pt")
    stored = torch.load(payload, weights_only=True)
    stored["texts"][0]["logits"][0, 0] = math.nan
    stored["texts"][0]["blocks"][0, 0, 0] = math.nan
    reference_cache.save(payload.stem, stored)  # NaN values, a checksum that matches them
    with caplog.at_level(logging.WARNING, logger="qeval"):
        second = sqnr_run(tiny_model_dir, tasks_dir)
    assert second["config"]["qeval"]["sqnr"]["reference_cache"]["reused"] is False
    [warning] = [m for m in warnings_of(caplog) if "reference cache entry" in m]
    assert "text 0 logits: not finite" in warning
    for name in ("logit_sqnr_db,none", "kl_mean,none"):
        assert second["results"]["qeval_sqnr"][name] == first["results"]["qeval_sqnr"][name]
    [moved, moved_before] = (run["config"]["qeval"]["sqnr"]["metrics"] for run in (second, first))
    assert moved["activation_sqnr_min_db"] == moved_before["activation_sqnr_min_db"]
    third = sqnr_run(tiny_model_dir, tasks_dir)  # the replaced entry is valid and reused
    assert third["config"]["qeval"]["sqnr"]["reference_cache"]["reused"] is True


def test_weights_replaced_with_size_and_mtime_kept_are_not_compared_to_a_stale_reference(
    tasks_dir, tmp_path, monkeypatch
):
    """The reported case: other weights copied over ``model.safetensors`` with ``cp -p`` (same
    size, same mtime) reused the old reference, and ``quantizer=none`` reported KL 1.0 and
    logit SQNR 8 dB against itself."""

    from qeval_plugins.storage import content_hash
    from qeval_plugins.testing import make_tiny_model

    monkeypatch.setenv("QEVAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(content_hash, "RACY_NS", 0)  # the memo is used, as for an old model
    model = make_tiny_model(tmp_path / "model", seed=0) / "model.safetensors"
    other = make_tiny_model(tmp_path / "other", seed=1) / "model.safetensors"
    assert other.stat().st_size == model.stat().st_size
    first = sqnr_run(model.parent, tasks_dir, "none")
    assert first["results"]["qeval_sqnr"]["kl_mean,none"] == pytest.approx(0.0, abs=1e-9)
    replace_keeping_size_and_mtime(model, other)
    second = sqnr_run(model.parent, tasks_dir, "none")
    assert second["config"]["qeval"]["sqnr"]["reference_cache"]["reused"] is False
    metrics = second["results"]["qeval_sqnr"]
    assert metrics["kl_mean,none"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["logit_sqnr_db,none"] == first["results"]["qeval_sqnr"]["logit_sqnr_db,none"]
    assert sqnr_run(model.parent, tasks_dir, "none")["config"]["qeval"]["sqnr"]["reference_cache"][
        "reused"
    ]


def test_cache_list_at_80_columns_keeps_words_whole_and_tells_entries_apart(cache, clock):
    """The table broke the model path mid-word (``.../em`` / ``bedded/...``) and showed two
    entries of one model computed on different texts with identical settings."""
    import io

    from rich.console import Console

    from qeval_plugins.cli.cache import list_entries

    model = "/tmp/ciclone/qeval_plugins/embedded/qeval-tiny"
    settings = {"activation_tokens": 256, "logit_positions": 256, "max_tokens": 256, "top_k": 32}
    for key, texts in ((KEY, 2), (OTHER, 4)):
        meta = {"kind": "qeval_sqnr", "model": model, "settings": settings, "texts": texts}
        reference_cache.save(key, reference(), meta={**meta, "dtype": "auto"})
        clock.value += 86400
    console = Console(width=80, record=True, color_system=None, file=io.StringIO())
    list_entries(console)
    lines = console.export_text().splitlines()
    assert max(map(len, lines)) <= 80
    assert [line.strip() for line in lines].count(model) == 2  # whole, on a line of its own
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(1_000_000.0))
    headings = [line for line in lines if line.startswith((KEY[:8], OTHER[:8]))]
    assert headings[0].startswith(f"{KEY[:8]}  sqnr  ") and f"created {created}" in headings[0]
    assert headings[1].startswith(f"{OTHER[:8]}  sqnr  ")
    described = [line.strip() for line in lines if line.strip().startswith("texts=")]
    assert [line.split(",")[0] for line in described] == ["texts=2", "texts=4"]
    assert lines[-1].startswith("2 entries, ")
    wide = Console(width=250, record=True, color_system=None, file=io.StringIO())
    list_entries(wide)  # every cell fits on one line: a table
    table = wide.export_text()
    assert "┃ entry" in table and table.count(model) == 2 and table.count("texts=") == 2


@pytest.mark.parametrize("action", [["list"], ["clear"], ["prune", "--older-than", "1"]])
def test_a_cache_dir_that_is_a_file_is_one_error_line(tmp_path, monkeypatch, capsys, action):
    """``qeval cache list`` said "is empty" and exited 0 for a QEVAL_CACHE_DIR naming a file."""
    blocking = tmp_path / "afile"
    blocking.write_text("")
    monkeypatch.setenv("QEVAL_CACHE_DIR", str(blocking))
    assert main(["cache", *action]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        f"qeval: error: the reference cache folder {blocking}/reference cannot exist: {blocking} "
        "is a file, not a folder; point QEVAL_CACHE_DIR at a folder.\n"
    )
    assert blocking.read_text() == ""
