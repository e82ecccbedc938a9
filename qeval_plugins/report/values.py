"""Values read from a results file, which may be hostile: numbers, mappings and text made safe.

A results file is untrusted JSON: a figure may be a string ("inf", "NaN"), a boolean, a container
or an integer too long for a float; a name may hold terminal control sequences. These helpers
read each value defensively (None when unusable, never an exception) and :func:`printable` makes
any text safe to print; every view of the report applies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# A JSON integer of more digits may not fit a float (max ≈ 1.8·10³⁰⁸); it is not read as a figure.
MAX_INTEGER_DIGITS = 308
# Control characters (C0, DEL, C1), bidirectional overrides and lone surrogates: never printed raw.


@dataclass(frozen=True)
class HugeInteger:
    """A JSON integer of more than :data:`MAX_INTEGER_DIGITS` digits: kept as its digit count,
    never converted (``int()`` of 4,300+ digits raises, ``float()`` of 309+ overflows)."""

    digits: int

    def __str__(self) -> str:
        return f"<{self.digits}-digit integer>"


def parse_int(text: str, huge: list[int]) -> int | HugeInteger:
    """A JSON integer as ``int``, or as :class:`HugeInteger` (its digits noted in ``huge``)."""
    digits = len(text) - text.startswith("-")
    if digits <= MAX_INTEGER_DIGITS:
        return int(text)
    huge.append(digits)
    return HugeInteger(digits)


def as_number(raw: Any) -> float | None:
    """A JSON number, or a string such as "inf" / "NaN", as float; None for anything else."""
    kind = type(raw)  # exact types: fast, and bool (an int subclass) is not a number here
    if kind is float:
        return raw
    if kind is int:
        return float(raw)
    if kind is str:
        try:
            return float(raw)
        except ValueError:
            return None
    return None


def as_score(raw: Any) -> float | None:
    """A metric's value in ``results``: a JSON number, or a text that spells a value strict JSON
    has no number for ("inf", "-inf", "NaN", as qeval writes infinite dB figures); None for
    anything else — a number written as text ("0.5"), true/false, null, a container."""
    kind = type(raw)
    if kind is float:
        return raw
    if kind is int:
        return float(raw)
    value = as_number(raw) if kind is str else None
    return value if value is not None and not math.isfinite(value) else None


def is_placeholder(raw: Any) -> bool:
    """Whether ``raw`` stands for "no value" rather than a wrong one: null, "", lm-eval's "N/A",
    or an integer too long to read (:class:`HugeInteger`, warned about on its own)."""
    return raw is None or raw in ("", "N/A") or isinstance(raw, HugeInteger)


def value_kind(raw: Any) -> str:
    """What a JSON value is, in a word: "null", "text", "true/false", "list", "object" or
    "number"."""
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true/false"
    for kind, word in ((str, "text"), (list, "list"), (dict, "object")):
        if isinstance(raw, kind):
            return word
    return "number"


def as_value(raw: Any) -> float | None:
    """:func:`as_number` without NaN: a figure that is missing or unusable is None."""
    value = as_number(raw)
    return None if value is None or math.isnan(value) else value


def as_finite(raw: Any) -> float | None:
    """:func:`as_number` when finite, else None."""
    value = as_number(raw)
    return value if value is not None and math.isfinite(value) else None


def as_mapping(raw: Any) -> dict[str, Any]:
    """``raw`` when it is a JSON object, else an empty one."""
    return raw if isinstance(raw, dict) else {}


def is_given(value: Any) -> bool:
    """Whether a ``model_args`` value switches something on: not null, false, "", "False",
    "false" or "0"."""
    return value not in (None, False, "", "False", "false", "0")


def scalar_text(value: Any) -> str | None:
    """A JSON scalar (text, number, true/false) as text; None for null, "" and containers (whose
    text could be huge or too deeply nested to build)."""
    if isinstance(value, str | int | float | HugeInteger) and value != "":
        return str(value)
    return None


def listing(items: list[str], limit: int = 4, separator: str = ", ") -> str:
    """The first ``limit`` items joined, then "and N more" (a warning stays one short line)."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return separator.join(items[:limit]) + more
