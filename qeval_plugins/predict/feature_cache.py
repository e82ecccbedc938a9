"""The on-disk cache of predictor features: one small JSON file per entry in
``cache_root()/predict/``, named by the SHA-256 of what the entry depends on (the checkpoint's
content hash, the RTN twin, the noise radius, the texts' hash, the pass settings).

Writes are atomic (:func:`qeval_plugins.storage.atomic.write_atomic`); a cache folder that cannot
be written is one warning (the values are used uncached); an entry that cannot be read, is not
JSON, or is not a mapping of names to finite numbers is recomputed and replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qeval_plugins.core.safe_read import read_regular
from qeval_plugins.storage.atomic import write_atomic
from qeval_plugins.storage.cache_layout import cache_root

MAX_ENTRY_BYTES = 1 << 20
logger = logging.getLogger(__name__)


def predict_cache_dir() -> Path:
    """``cache_root()/predict``."""
    return cache_root() / "predict"


def entry_key(parts: dict[str, Any]) -> str:
    """SHA-256 (hex, 32 characters) of ``parts`` as sorted JSON."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached(parts: dict[str, Any], compute: Callable[[], dict[str, float]]) -> tuple[dict, bool]:
    """The entry for ``parts`` and whether it came from the cache; ``compute()`` (name → finite
    number) runs and is stored when the entry is missing or unusable."""
    path = predict_cache_dir() / f"{entry_key(parts)}.json"
    found = _read(path)
    if found is not None:
        return found, True
    values = compute()
    payload = {"depends_on": parts, "values": values}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(payload, sort_keys=True, default=str).encode())
    except OSError as error:  # the cache only saves time: the values stand without it
        logger.warning("predictor features not cached in %s: %s", path.parent, error)
    return values, False


def _read(path: Path) -> dict[str, float] | None:
    try:
        values = json.loads(read_regular(path, MAX_ENTRY_BYTES)).get("values")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    if not isinstance(values, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in values.values()
    ):
        return None
    return values
