"""Typed, validated quantizer options.

A quantizer declares its options as :class:`Option` objects; :func:`resolve_options` checks the
values a user gave (from ``--model_args`` strings, already type-guessed by lm-eval, or from Python)
against them before any model is loaded, and fills in defaults. :meth:`Option.problems` checks a
declaration itself (at registration), :func:`requirement_problems` the :class:`Requires` links
between a quantizer's options, and :class:`FrozenOptions` is the read-only mapping plugin code
receives. Every accepted value is JSON-safe: floats are finite.

The rule for options that depend on others: an option the user gives explicitly must have an
effect. When its :class:`Requires` do not hold (``act_bits`` without ``act_format=int``), the
spec is refused with one line naming the option and value that enable it, unless the value given
is the one the combination sets anyway (``bits=8`` with ``format=fp8_e4m3``). Defaults never
trigger it.
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
class Requires:
    """Where an option has an effect: while option ``option`` holds one of ``values`` (with
    ``other_than=True``: any value but those).

    ``implies`` pairs a value of ``option`` outside the requirement with the value the dependent
    option takes there anyway, e.g. ``(("fp8_e4m3", 8),)`` for ``bits`` under ``format``: given
    explicitly, that value states what happens and is accepted. Declared on
    :attr:`Option.requires`; checked by :func:`resolve_options` on explicitly given options only.
    """

    option: str
    values: tuple[Any, ...]
    other_than: bool = False
    implies: tuple[tuple[Any, Any], ...] = ()

    def holds(self, options: Mapping[str, Any]) -> bool:
        """Whether ``options`` (every option resolved) meet the requirement."""
        return _among(options[self.option], self.values) != self.other_than

    def implied(self, options: Mapping[str, Any]) -> tuple[Any, ...]:
        """``(value,)``: what the dependent option takes at ``options``, or ``()`` if nothing."""
        current = options[self.option]
        return next(((value,) for key, value in self.implies if _same(key, current)), ())

    def describe(self) -> str:
        """``act_format=int``, ``format=int, fp8_e4m3 or fp8_e5m2``, ``smooth other than 0``."""
        shown = [show_value(value) for value in self.values]
        listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
        return f"{self.option}{' other than ' if self.other_than else '='}{listed}"

    def problems(self, declared: Mapping[str, Option], dependent: Option) -> list[str]:
        """What is wrong with this requirement of ``dependent`` among ``declared`` (by name)."""
        where = f"option {dependent.name!r}: requires {self.option!r}"
        target = declared.get(self.option)
        if target is None or target is dependent:
            return [f"{where}, which is not another option of this quantizer"]
        if not isinstance(self.values, tuple) or not self.values:
            return [f"{where}: values must be a non-empty tuple"]
        if not isinstance(self.implies, tuple) or not all(
            isinstance(pair, tuple) and len(pair) == 2 for pair in self.implies
        ):
            return [f"{where}: implies must be a tuple of (value, implied value) pairs"]
        found = [
            f"{where}: {v!r} is not a valid value" for v in self.values if not target.accepts(v)
        ]
        for key, value in self.implies:
            if not target.accepts(key) or _among(key, self.values) != self.other_than:
                found.append(f"{where}: implies {key!r}, not a value outside the requirement")
            if not dependent.accepts(value):
                found.append(f"{where}: implied value {value!r} is not a valid value")
        return found


@dataclass(frozen=True)
class Option:
    """One option of a quantizer.

    ``type`` is one of ``int``, ``float``, ``bool``, ``str``. ``minimum``/``maximum`` bound numbers
    (inclusive); ``choices`` restricts values to a fixed set. ``requires``: the option has an
    effect only while one of these :class:`Requires` holds (empty: always); given explicitly where
    none holds, it is refused.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    requires: tuple[Requires, ...] = ()

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

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is already of this option's type and passes its rules."""
        return _is_value_of(value, self.type) and self._rule_broken(self.type(value)) is None

    def inert(self, options: Mapping[str, Any]) -> str | None:
        """Why this option, set to ``options[self.name]``, has no effect among ``options`` (every
        option resolved), or None when it has one (see :class:`Requires`)."""
        if not self.requires or any(need.holds(options) for need in self.requires):
            return None
        value = options[self.name]
        if any(need.implied(options) == (value,) for need in self.requires):
            return None
        others = dict.fromkeys(need.option for need in self.requires)
        context = " and ".join(f"{name}={show_value(options[name])}" for name in others)
        sets = [need.implied(options) for need in self.requires if need.implied(options)]
        if sets:
            context += f" (which sets {self.name}={show_value(sets[0][0])})"
        needs = " or ".join(need.describe() for need in self.requires)
        return (
            f"{self.name}={show_value(value)} has no effect with {context}; it takes effect only "
            f"with {needs}: give that, or drop {self.name}."
        )

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
        if not isinstance(self.requires, tuple) or not all(
            isinstance(need, Requires) for need in self.requires
        ):
            found.append(f"{where}: requires must be a tuple of qeval_plugins.Requires")
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


def requirement_problems(options: Sequence[Option]) -> list[str]:
    """What is wrong with the :class:`Requires` of ``options`` (one quantizer's declarations):
    each names another declared option, with valid values of it, and implies valid values."""
    declared = {option.name: option for option in options}
    return [
        problem
        for option in options
        if isinstance(option.requires, tuple)
        for need in option.requires
        if isinstance(need, Requires)
        for problem in need.problems(declared, option)
    ]


def show_value(value: Any) -> str:
    """A value as a user writes it in a spec: ``true``, ``0.5``, ``0``, ``int``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _same(a: Any, b: Any) -> bool:
    """Equal and both bools or both not (``True == 1`` in Python, not in an option)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _among(value: Any, values: tuple[Any, ...]) -> bool:
    return any(_same(value, candidate) for candidate in values)


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

    An unknown option name is an error listing the valid ones; an option in ``given`` (set
    explicitly) that has no effect among the resolved options (:meth:`Option.inert`) is an error
    naming the option that enables it.
    """
    by_name = {option.name: option for option in declared}
    unknown = [name for name in given if name not in by_name]
    if unknown:
        valid = ", ".join(by_name) or "none"
        hint = did_you_mean(unknown[0], by_name)
        raise QevalError(
            f"quantizer '{quantizer}' has no option '{unknown[0]}'.{hint} Valid options: {valid}."
        )
    resolved = {
        name: option.coerce(given.get(name, option.default), quantizer)
        for name, option in by_name.items()
    }
    for name in given:  # a default never has to have an effect
        problem = by_name[name].inert(resolved)
        if problem:
            raise QevalError(f"quantizer '{quantizer}': {problem}")
    return resolved


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
