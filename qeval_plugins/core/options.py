"""Typed, validated quantizer options.

A quantizer declares its options as :class:`Option` objects; :func:`resolve_options` checks the
values a user gave (from ``--model_args`` strings, already type-guessed by lm-eval, or from Python)
against them before any model is loaded, and fills in defaults. :meth:`Option.problems` checks a
declaration itself (at registration), and :class:`FrozenOptions` is the read-only mapping plugin
code receives. Every accepted value is JSON-safe: floats are finite.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qeval_plugins.core.errors import QevalError, did_you_mean

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_INTEGER = re.compile(r"[+-]?[0-9]+")
TYPES = (int, float, bool, str)
NAME_RULE = "lower case, non-empty, printable, without commas, colons, '=' or whitespace"


def name_problem(value: Any, what: str) -> str | None:
    """Why ``value`` cannot be a quantizer name, alias or option name (``what``), or None.

    Such names are typed in ``--model_args`` (``a=b,c=d``) and specs (``name:opt=value``), so they
    must be lower case, non-empty and printable, without commas, colons, ``=`` or whitespace.
    """
    if not isinstance(value, str):
        return f"{what} must be a string, got {value!r}"
    bad = [char for char in value if char in ",:=" or char.isspace() or not char.isprintable()]
    if not value or bad or value != value.lower():
        return f"{what} {value!r} breaks the naming rule ({NAME_RULE})"
    return None


def text_problem(value: Any, what: str) -> str | None:
    """Why ``value`` cannot be a one-line description or help text (``what``), or None."""
    if not isinstance(value, str) or not value.strip():
        return f"{what} must be a non-empty string"
    if not value.isprintable():
        return f"{what} must be one line of printable characters"
    return None


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
        rule = self._rule_broken(converted)
        if rule:
            hint = did_you_mean(str(converted), map(str, self.choices or ()))
            raise QevalError(f"{where} {rule}, got {value!r}.{hint}")
        return converted

    def _rule_broken(self, value: Any) -> str | None:
        """``"must be ..."``: the rule a converted value breaks (finite, choices, range)."""
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}"
        if self.minimum is not None and value < self.minimum:
            return f"must be >= {self.minimum:g}"
        if self.maximum is not None and value > self.maximum:
            return f"must be <= {self.maximum:g}"
        return None

    def problems(self) -> list[str]:
        """What is wrong with this declaration (empty when nothing): checked at registration.

        Rules: the name follows :func:`name_problem`; ``type`` is int, float, bool or str; ``help``
        is one non-empty line; bounds are finite numbers, only for int and float, minimum <=
        maximum; choices are a non-empty tuple of values of the type; the default has the type
        (an int for a float is fine) and passes the option's own range and choices.
        """
        where = f"option {self.name!r}"
        found = [name_problem(self.name, "option name"), text_problem(self.help, f"{where}: help")]
        if self.type not in TYPES:
            return [*filter(None, found), f"{where}: type must be int, float, bool or str"]
        found += [self._bounds_problem(), self._choices_problem()]
        if not any(found):
            found.append(self._default_problem())
        return [problem for problem in found if problem]

    def _bounds_problem(self) -> str | None:
        bounds = [b for b in (self.minimum, self.maximum) if b is not None]
        if bounds and self.type not in (int, float):
            return f"option {self.name!r}: minimum/maximum apply to int and float options only"
        if any(isinstance(b, bool) or not isinstance(b, int | float) for b in bounds) or not all(
            math.isfinite(b) for b in bounds
        ):
            return f"option {self.name!r}: minimum and maximum must be finite numbers or None"
        if len(bounds) == 2 and self.minimum > self.maximum:
            return f"option {self.name!r}: minimum {self.minimum} is above maximum {self.maximum}"
        return None

    def _choices_problem(self) -> str | None:
        if self.choices is None:
            return None
        if not isinstance(self.choices, tuple | list) or not self.choices:
            return f"option {self.name!r}: choices must be a non-empty tuple (or None)"
        wrong = [c for c in self.choices if not _is_value_of(c, self.type)]
        if wrong:
            return f"option {self.name!r}: choice {wrong[0]!r} is not {_article(self.type)}"
        return None

    def _default_problem(self) -> str | None:
        where = f"option {self.name!r}: default {self.default!r}"
        if not _is_value_of(self.default, self.type):
            return f"{where} is not {_article(self.type)}"
        rule = self._rule_broken(self.type(self.default))
        return f"{where} breaks its own rule: it {rule}" if rule else None


def _is_value_of(value: Any, kind: type) -> bool:
    """True when ``value`` is a ``kind`` (an int counts as a float; a bool is never a number)."""
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)


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
        try:  # ASCII digits only ('²'.isdigit() is True); int() refuses > 4300 digits
            return int(text) if _INTEGER.fullmatch(text) else None
        except ValueError:
            return None
    if kind is float:
        if isinstance(value, bool):
            return None
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
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
        name: option.coerce(given.get(name, option.default), quantizer)
        for name, option in by_name.items()
    }


class OptionsChanged(TypeError):
    """Plugin code tried to change the read-only options it was handed."""


class FrozenOptions(dict):
    """The resolved options as handed to plugin code: a dict that refuses every change.

    The run records these options, so a quantizer must not alter them; ``dict(options)`` (or
    ``copy.copy``) gives a mutable copy. A change raises :class:`OptionsChanged`.
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise OptionsChanged("options are read-only; copy them first with dict(options)")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)

    def __reduce__(self) -> tuple:
        return (dict, (dict(self),))
