"""The predictor file: JSON data, never code (no pickle), written by ``qeval predict fit`` and
read by ``qeval predict`` and the seed study.

Top level: ``"format": "qeval-predictor"``, ``"version": 1``, ``target`` (the ``--target``
name), ``target_label`` (what it measures, with units), ``features`` (column names, the order of
every row), ``trees`` (:mod:`.forest`'s arrays), ``training_range`` (feature → [min, max] over
the training rows), ``rows`` (their count), ``models`` and ``families`` (those seen),
``baselines`` (the two transparent lines, feature → [a, b] of y = a + b·x, fitted on every
row), ``validation`` (``leave_one_model_out`` and ``leave_one_family_out``: predictor →
``{"mae", "rmse"}``, null with a single model or family), ``costs`` (per training row: spec,
quantizer, parameter count and the recorded evaluation seconds) and ``texts`` (the short pass's
text file, null for the bundled passages, and the SHA-256 of the texts).

Reading never executes anything: the file must be a regular file under :data:`MAX_BYTES`, UTF-8
JSON without NaN or Infinity, and every field of the right type and shape; anything else is one
:class:`~qeval_plugins.core.errors.QevalError` line naming the file and the problem.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.safe_read import read_regular
from qeval_plugins.predict.forest import Forest, forest_from_json
from qeval_plugins.storage.atomic import write_atomic

FORMAT = "qeval-predictor"
VERSION = 1
MAX_BYTES = 256 << 20
MAX_LIST = 100_000


@dataclass
class Predictor:
    """A fitted predictor and what it was fitted on (module docstring: the fields)."""

    target: str
    target_label: str
    features: tuple[str, ...]
    forest: Forest
    training_range: dict[str, tuple[float, float]]
    rows: int
    models: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    baselines: dict[str, tuple[float, float]] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    costs: list[dict[str, Any]] = field(default_factory=list)
    texts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "target": self.target,
            "target_label": self.target_label,
            "features": list(self.features),
            "trees": self.forest.to_json(),
            "training_range": {name: list(pair) for name, pair in self.training_range.items()},
            "rows": self.rows,
            "models": self.models,
            "families": self.families,
            "baselines": {name: list(pair) for name, pair in self.baselines.items()},
            "validation": self.validation,
            "costs": self.costs,
            "texts": self.texts,
        }


def write_predictor(path: str | Path, predictor: Predictor) -> None:
    """Write ``predictor`` to ``path`` atomically (strict JSON: no NaN or Infinity)."""
    text = json.dumps(predictor.to_json(), allow_nan=False, separators=(",", ":"))
    try:
        write_atomic(Path(path), text.encode())
    except OSError as error:
        raise QevalError(
            f"cannot write the predictor to {path}: {error.strerror or error}"
        ) from None


def read_predictor(path: str | Path) -> Predictor:
    """The predictor in ``path``; one QevalError line for a file that is not a sound one."""
    try:
        return _parse(_load(Path(path)))
    except ValueError as error:
        raise QevalError(f"predictor file {path}: {error}") from None


def _load(path: Path) -> Any:
    try:
        raw = read_regular(path, MAX_BYTES)
    except OSError as error:
        raise QevalError(f"predictor file {path}: cannot read ({error})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not a text file (a pickle or other binary data is never read)") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at line {error.lineno})") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"holds {name}, not a finite number")


def _parse(data: Any) -> Predictor:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f'not a qeval predictor (no "format": "{FORMAT}")')
    if data.get("version") != VERSION:
        raise ValueError(f"version {data.get('version')!r}; this qeval reads version {VERSION}")
    features = _strings(data.get("features"), "features")
    if not features or len(set(features)) != len(features):
        raise ValueError("'features' must be distinct names")
    forest = forest_from_json(data.get("trees"), len(features))
    ranges = _mapping(data.get("training_range"), "training_range")
    training_range = {}
    for name in features:
        pair = _pair(ranges.get(name), f"training_range.{name}")
        if pair[0] > pair[1]:
            raise ValueError(f"training_range.{name}: minimum above maximum")
        training_range[name] = pair
    rows = data.get("rows")
    if type(rows) is not int or rows < 1:
        raise ValueError("'rows' must be a positive integer")
    baselines = {
        name: _pair(value, f"baselines.{name}")
        for name, value in _mapping(data.get("baselines", {}), "baselines").items()
    }
    texts = _mapping(data.get("texts", {}), "texts")
    if not (texts.get("file") is None or isinstance(texts.get("file"), str)):
        raise ValueError("'texts.file' must be a path or null")
    costs = data.get("costs", [])
    if not isinstance(costs, list) or len(costs) > MAX_LIST:
        raise ValueError(f"'costs' must be a list of at most {MAX_LIST} entries")
    return Predictor(
        target=_string(data.get("target"), "target"),
        target_label=_string(data.get("target_label", data.get("target")), "target_label"),
        features=tuple(features),
        forest=forest,
        training_range=training_range,
        rows=rows,
        models=_strings(data.get("models", []), "models"),
        families=_strings(data.get("families", []), "families"),
        baselines=baselines,
        validation=_mapping(data.get("validation", {}), "validation"),
        costs=[_cost(entry) for entry in costs],
        texts=texts,
    )


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 1000:
        raise ValueError(f"'{name}' must be a non-empty text")
    return value


def _strings(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise ValueError(f"'{name}' must be a list of at most {MAX_LIST} texts")
    return [_string(item, name) for item in value]


def _mapping(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"'{name}' must be an object")
    return value


def _number(value: Any, name: str) -> float:
    if type(value) is int and abs(value) < 2**53:
        return float(value)
    if type(value) is float and math.isfinite(value):
        return value
    raise ValueError(f"'{name}' must be a finite number")


def _pair(value: Any, name: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"'{name}' must be a list of two numbers")
    return _number(value[0], name), _number(value[1], name)


def _cost(entry: Any) -> dict[str, Any]:
    entry = _mapping(entry, "costs[]")
    return {
        "spec": _string(entry.get("spec", entry.get("quantizer")), "costs[].spec"),
        "quantizer": _string(entry.get("quantizer"), "costs[].quantizer"),
        "params": _number(entry.get("params"), "costs[].params"),
        "seconds": _number(entry.get("seconds"), "costs[].seconds"),
    }
