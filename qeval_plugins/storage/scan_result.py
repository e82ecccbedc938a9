"""``scan.json``, the file a layer-sensitivity scan's result is kept in: strict JSON, written
atomically. ``qeval scan --output`` and ``qeval demo --output`` write it;
:mod:`qeval_plugins.report.scan` reads it back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from qeval_plugins.storage.atomic import write_atomic


def json_ready(value: Any) -> Any:
    """``value`` with non-finite floats as the strings ``"NaN"``, ``"Infinity"``,
    ``"-Infinity"`` (strict JSON has no such numbers; :mod:`qeval_plugins.report.scan` reads
    them back)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value


def write_scan(path: Path, result: dict) -> None:
    """``result`` as strict JSON, written atomically (a crash leaves the old file or none)."""
    text = json.dumps(json_ready(result), indent=1, allow_nan=False, ensure_ascii=False)
    write_atomic(path, (text + "\n").encode("utf-8"))
