"""Every number the seed study's report quotes, with where it came from.

A *raw* number is read from a file of the report folder (a run's ``results.json``,
``predictor.json``, ``speed.json``, ``family.json``) at a JSON key path; a *derived* number is
one of :data:`OPS` applied to other numbers of the ledger. ``numbers.json`` lists both, so a test
can check each raw number against its file, recompute each derived one, and find each one's text
in the Markdown.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qeval_plugins.core.safe_read import read_regular
from qeval_plugins.study import verdicts

MAX_FILE_BYTES = 256 * 1024 * 1024


def _difference(values: Sequence[float]) -> float:
    return values[0] - values[1]


def _halves(values: Sequence[float]) -> tuple[Sequence[float], Sequence[float]]:
    half = len(values) // 2
    return values[:half], values[half:]


def _mean_abs_deviation(values: Sequence[float]) -> float:
    center = verdicts.mean(values)
    return verdicts.mean([abs(v - center) for v in values])


def _range(values: Sequence[float]) -> float:
    return max(values) - min(values)


#: derived-number operations: name -> function of the input values (in order)
OPS: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": verdicts.mean,
    "range": _range,
    "sum": math.fsum,
    "difference": _difference,  # inputs[0] - inputs[1]
    "spearman": lambda v: verdicts.spearman(*_halves(v)),  # first half vs second half
    "spearman_p": lambda v: verdicts.spearman_p_greater(*_halves(v)),
    # P(ρ ≤ observed) = P(ρ(x, −y) ≥ its observed value): ranks of −y are those of y reversed
    "spearman_p_less": lambda v: verdicts.spearman_p_greater(
        _halves(v)[0], [-value for value in _halves(v)[1]]
    ),
    "mean_abs_deviation": _mean_abs_deviation,
    "tokens_per_second": lambda v: v[0] / v[1],  # new tokens / seconds
}


def number_text(value: float) -> str:
    """How a number is written in the report: 4 significant digits (``0.01234``, ``-3.21``),
    whole numbers as such."""
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}"


@dataclass
class Number:
    """One quoted number: its value, its text in the report and its origin."""

    id: int
    value: float
    file: str | None = None
    key: list[Any] | None = None
    op: str | None = None
    inputs: list[int] = field(default_factory=list)

    @property
    def text(self) -> str:
        return number_text(self.value)

    def __str__(self) -> str:
        return self.text

    def record(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": self.id, "text": self.text, "value": self.value}
        if self.op is None:
            entry |= {"file": self.file, "key": self.key}
        else:
            entry |= {"op": self.op, "inputs": self.inputs}
        return entry


def read_json(path: Path) -> Any:
    """A JSON file of the report folder (regular file, size-capped)."""
    return json.loads(read_regular(path, MAX_FILE_BYTES))


def lookup(data: Any, key: Sequence[Any]) -> Any:
    """``data[key[0]][key[1]]...``; None where a step is missing."""
    for step in key:
        in_dict = isinstance(data, dict) and step in data
        in_list = (
            isinstance(data, list) and isinstance(step, int) and -len(data) <= step < len(data)
        )
        if not (in_dict or in_list):
            return None
        data = data[step]
    return data


def finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class Ledger:
    """The numbers of one report, files read relative to ``root`` (the report folder)."""

    def __init__(self, root: Path):
        self.root = root
        self.numbers: list[Number] = []
        self._files: dict[Path, Any] = {}

    def data(self, path: Path) -> Any:
        if path not in self._files:
            try:
                self._files[path] = read_json(path) if path.is_file() else None
            except (OSError, ValueError):
                self._files[path] = None
        return self._files[path]

    def raw(self, path: Path, key: Sequence[Any]) -> Number | None:
        """The number at ``key`` of the JSON file ``path``; None when missing or not finite."""
        value = finite_number(lookup(self.data(path), key))
        if value is None:
            return None
        relative = path.relative_to(self.root).as_posix()
        number = Number(len(self.numbers), value, file=relative, key=list(key))
        self.numbers.append(number)
        return number

    def derived(self, op: str, inputs: Sequence[Number]) -> Number:
        """``OPS[op]`` of ``inputs``' values, recorded with them."""
        value = OPS[op]([n.value for n in inputs])
        number = Number(len(self.numbers), value, op=op, inputs=[n.id for n in inputs])
        self.numbers.append(number)
        return number

    def record(self, quoted: set[int]) -> list[dict[str, Any]]:
        """The ``numbers.json`` entries of the numbers the report quotes, and every number
        those were derived from."""
        needed, stack = set(), list(quoted)
        while stack:
            index = stack.pop()
            if index not in needed:
                needed.add(index)
                stack.extend(self.numbers[index].inputs)
        return [self.numbers[i].record() | {"quoted": i in quoted} for i in sorted(needed)]
