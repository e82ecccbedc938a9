"""On-disk cache of what the unquantized reference model produced, shared by quantizer runs.

The SQNR task needs the unquantized model's outputs on the task's texts. They are computed once
per (model, texts, settings) and stored as one ``torch.save`` file, so runs of other quantizers
on the same model reuse them and never load the full-precision model again. The key hashes:
the checkpoint's identity (resolved path, and name, size and modification time of every weight
and config file), the token ids of the texts, the settings, the reference dtype and the cache
format version. Changing any of them gives a new key: a stale entry is never reused.

Location: ``$QEVAL_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/qeval`` (``~/.cache/qeval``),
subfolder ``reference/``. Files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

CACHE_ENV = "QEVAL_CACHE_DIR"
FORMAT_VERSION = 1
_IDENTITY_SUFFIXES = (".safetensors", ".bin", ".json")


def cache_dir() -> Path:
    """The reference cache folder (see the module docstring)."""
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base).expanduser() / "reference"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "qeval" / "reference"


def checkpoint_identity(model_dir: str) -> list[Any]:
    """Path plus (name, size, mtime_ns) of every weight/config file: changes when files change."""
    directory = Path(model_dir).resolve()
    files = sorted(p for p in directory.iterdir() if p.suffix in _IDENTITY_SUFFIXES)
    return [str(directory), *[(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]]


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


def load(key: str) -> dict[str, Any] | None:
    """The cached reference for ``key``, or None when absent or unreadable (then recomputed)."""
    import torch

    path = cache_dir() / f"{key}.pt"
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a corrupt entry is recomputed, never fatal
        return None


def save(key: str, reference: dict[str, Any]) -> Path:
    """Store ``reference`` under ``key`` atomically; returns the file path."""
    import torch

    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{key}.pt"
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{key}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(reference, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
