"""Typed, validated quantizer options.

A quantizer declares its options as :class:`Option` objects; :func:`resolve_options` checks the
values a user gave (from ``--model_args`` strings, already type-guessed by lm-eval, or from Python)
against them before any model is loaded, and fills in defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qeval_plugins.errors import QevalError, did_you_mean

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class Option:
    """One option of a quantizer.

    ``type`` is one of ``int``, ``float``, ``bool``, ``str``. ``minimum``/``maximum`` bound numbers
    (inclusive); ``choices`` restricts values to a fixed set.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def describe(self) -> str:
        """Short human form, e.g. ``bits: int = 4 (2..8)``."""
        text = f"{self.name}: {self.type.__name__} = {self.default}"
        if self.choices:
            text += f" ({'|'.join(map(str, self.choices))})"
        elif self.minimum is not None or self.maximum is not None:
            low = "" if self.minimum is None else f"{self.minimum:g}"
            high = "" if self.maximum is None else f"{self.maximum:g}"
            text += f" ({low}..{high})"
        return text

    def coerce(self, value: Any, quantizer: str) -> Any:
        """Convert ``value`` to this option's type and check its range; raise QevalError if bad."""
        where = f"option '{self.name}' of quantizer '{quantizer}'"
        converted = _convert(value, self.type)
        if converted is None:
            raise QevalError(
                f"{where} must be {_article(self.type)}, got {value!r}; {self.describe()}."
            )
        if self.choices is not None and converted not in self.choices:
            choices = ", ".join(map(str, self.choices))
            hint = did_you_mean(str(converted), map(str, self.choices))
            raise QevalError(f"{where} must be one of {choices}, got {value!r}.{hint}")
        if self.minimum is not None and converted < self.minimum:
            raise QevalError(f"{where} must be >= {self.minimum:g}, got {value!r}.")
        if self.maximum is not None and converted > self.maximum:
            raise QevalError(f"{where} must be <= {self.maximum:g}, got {value!r}.")
        return converted


def _article(kind: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[kind]


def _convert(value: Any, kind: type) -> Any:
    """Return ``value`` as ``kind``, or None when it cannot be one (bools are not numbers)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        return True if text in _TRUE else False if text in _FALSE else None
    if kind is int:
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        text = str(value).strip()
        return int(text) if text.lstrip("+-").isdigit() else None
    if kind is float:
        if isinstance(value, bool):
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    if value is None:  # lm-eval turns the string "none" into None
        return "none"
    return str(value)


def resolve_options(
    quantizer: str, declared: Sequence[Option], given: Mapping[str, Any]
) -> dict[str, Any]:
    """Validate ``given`` against ``declared`` and return every option with defaults filled in.

    An unknown option name is an error listing the valid ones.
    """
    by_name = {option.name: option for option in declared}
    unknown = [name for name in given if name not in by_name]
    if unknown:
        valid = ", ".join(by_name) or "none"
        hint = did_you_mean(unknown[0], by_name)
        raise QevalError(
            f"quantizer '{quantizer}' has no option '{unknown[0]}'.{hint} Valid options: {valid}."
        )
    return {
        name: option.coerce(given[name], quantizer) if name in given else option.default
        for name, option in by_name.items()
    }
