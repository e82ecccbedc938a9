"""Where the caches live, and which metadata files count as each cache's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qeval_plugins.storage.cache_layout import (
    cache_root,
    models_dir,
    read_model_meta,
    read_reference_meta,
    reference_dir,
)


def test_the_root_is_qeval_cache_dir_else_xdg_cache_home_else_home(tmp_path, monkeypatch):
    monkeypatch.setenv("QEVAL_CACHE_DIR", "~/mine")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == Path("~/mine").expanduser()
    assert reference_dir() == Path("~/mine/reference").expanduser()
    assert models_dir() == Path("~/mine/quantized").expanduser()
    monkeypatch.delenv("QEVAL_CACHE_DIR")
    assert cache_root() == tmp_path / "xdg" / "qeval"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "qeval"


REFERENCE = {"sha256": "ab" * 32, "model": "org/llm"}
MODEL = {"files": {"model.safetensors": "cd" * 32}, "spec": "gptq"}


@pytest.mark.parametrize(
    "text, reference, model",
    [
        (json.dumps(REFERENCE), REFERENCE, None),
        (json.dumps(MODEL), None, MODEL),
        (json.dumps({"sha256": 5}), None, None),
        (json.dumps({"files": {"a": 1}}), None, None),
        (json.dumps({"files": ["a"]}), None, None),
        (json.dumps([REFERENCE]), None, None),
        ("null", None, None),
        ("{not json", None, None),
        ("[" * 100_000, None, None),  # nested too deep to parse
    ],
)
def test_each_cache_reads_only_its_own_metadata(tmp_path, text, reference, model):
    path = tmp_path / "0123.json"
    path.write_text(text)
    assert read_reference_meta(path) == reference
    assert read_model_meta(path) == model


def test_missing_metadata_reads_as_none(tmp_path):
    assert read_reference_meta(tmp_path / "absent.json") is None
    assert read_model_meta(tmp_path) is None  # a folder: unreadable
