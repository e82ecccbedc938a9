"""The one grammar of quantizer specs: ``NAME[:option=value[:option=value...]]``.

``rtn:bits=3:group_size=0`` is the same run as ``--model_args quantizer=rtn,bits=3,group_size=0``.
:func:`parse_spec` reads a spec (the command line), :func:`format_spec` writes the canonical one
(the ``spec`` a run records, the report's run labels), :func:`spec_model_args` turns one into
lm-eval model_args. Validating a spec against the registry is :func:`~.plan.check_spec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qeval_plugins.core.errors import QevalError


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``NAME:a=1:b=2`` into ``("NAME", {"a": "1", "b": "2"})``."""
    name, *pairs = spec.strip().split(":")
    if not name:
        raise QevalError(f"empty quantizer name in spec '{spec}'; write NAME[:option=value...].")
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise QevalError(
                f"bad option '{pair}' in quantizer spec '{spec}'; write NAME:option=value."
            )
        if key.strip() in options:
            raise QevalError(
                f"option '{key.strip()}' is given twice in quantizer spec '{spec}'; give it once."
            )
        options[key.strip()] = value.strip()
    return name.strip(), options


def spec_model_args(spec: str) -> str:
    """The lm-eval model_args fragment of a spec: ``quantizer=NAME,a=1,b=2``."""
    name, options = parse_spec(spec)
    return ",".join([f"quantizer={name}", *(f"{k}={v}" for k, v in options.items())])


def format_spec(name: str, options: Mapping[str, Any]) -> str:
    """The canonical spec ``NAME:a=1:b=x``: options sorted by name, true/false in lower case."""
    return ":".join([name, *(f"{key}={option_text(options[key])}" for key in sorted(options))])


def option_text(value: Any) -> str:
    """An option value as a spec writes it: ``true``/``false`` for booleans, else ``str()``."""
    return str(value).lower() if isinstance(value, bool) else str(value)
