"""Where qeval's caches keep their entries, and how an entry's metadata file is read back.

One root folder: ``$QEVAL_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/qeval`` (``~/.cache/qeval``).
Inside it each store has a subfolder: ``reference/`` (reference outputs,
:mod:`.reference_cache`), ``quantized/`` (quantized models, :mod:`.model_cache`) and ``hashes/``
(the SHA-256 memo, :mod:`.content_hash`). Each store's folder has its own ``.lock``. An entry
of either cache has a ``KEY.json`` metadata file next to its payload; the readers here accept
only what each cache writes, so both caches and the pruning of :mod:`.cache_pruning` see the
same entries.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CACHE_ENV = "QEVAL_CACHE_DIR"
LOCK_NAME = ".lock"


def cache_root() -> Path:
    """``$QEVAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/qeval`` (``~/.cache/qeval``)."""
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qeval"


def reference_dir() -> Path:
    """The folder of reference-output entries: ``cache_root()/reference``."""
    return cache_root() / "reference"


def models_dir() -> Path:
    """The folder of quantized-model entries: ``cache_root()/quantized``."""
    return cache_root() / "quantized"


def _read_json(path: Path) -> Any:
    """The JSON value in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def read_reference_meta(path: Path) -> dict[str, Any] | None:
    """A reference entry's ``KEY.json``, or None when missing, unreadable or without the
    payload's ``sha256`` that :func:`.reference_cache.save` writes."""
    meta = _read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
        return None
    return meta


def read_model_meta(path: Path) -> dict[str, Any] | None:
    """A quantized-model entry's ``KEY.json``, or None when missing, unreadable or without the
    ``files`` (relative path → SHA-256) that :func:`.model_cache.save` writes."""
    meta = _read_json(path)
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(name, str) and isinstance(digest, str) for name, digest in files.items()
    ):
        return None
    return meta
