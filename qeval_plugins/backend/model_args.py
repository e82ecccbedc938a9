"""Reading ``--model_args`` strictly: no silently dropped key, no silently overwritten one.

lm-eval's own parsers keep spaces in keys (``quantizer = rtn`` becomes the key ``"quantizer "``,
which ``from_pretrained`` ignores, so the run silently becomes ``quantizer=none``) and let a
repeated key win silently (the ``lm_eval`` command only logs "Overwriting key").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qeval_plugins.core.errors import QevalError

_LM_EVAL_COMMANDS = ("lm_eval", "lm-eval")
_MODEL_ARGS_FLAGS = ("--model_args", "-a")


def parse_model_args(text: str | None) -> dict[str, Any]:
    """``"a=1, b = x"`` → ``{"a": 1, "b": "x"}``.

    Keys and values are stripped, values typed as lm-eval types them (``True``, ints, floats); a
    repeated key or an item without ``=`` is a QevalError.
    """
    from lm_eval.utils import handle_arg_string

    parsed: dict[str, Any] = {}
    for item in _top_level_items(text or ""):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise QevalError(
                f"model_arg '{item.strip()}' is not key=value; write --model_args "
                f"pretrained=MODEL,quantizer=NAME,option=value."
            )
        _check_new(key, parsed)
        parsed[key] = handle_arg_string(value.strip())
    return parsed


def checked_model_args(arguments: dict[str, Any], argv: Sequence[str]) -> dict[str, Any]:
    """``arguments`` with keys (and string values) stripped of spaces.

    A key that appears twice once stripped, or twice among the ``--model_args`` of an ``lm_eval``
    command line ``argv`` (lm-eval's parser already kept only the last), is a QevalError.
    """
    checked: dict[str, Any] = {}
    for key, value in arguments.items():
        name = str(key).strip()
        _check_new(name, checked)
        checked[name] = value.strip() if isinstance(value, str) else value
    repeated = repeated_command_line_keys(argv)
    if repeated:
        raise QevalError(
            f"model_arg '{repeated[0]}' is given twice in --model_args; give each key once."
        )
    return checked


def repeated_command_line_keys(argv: Sequence[str]) -> list[str]:
    """Keys given more than once in the ``--model_args`` / ``-a`` values of an ``lm_eval`` command.

    ``key=value,...`` items only (JSON values are left to lm-eval); [] for other programs.
    """
    program = Path(argv[0]).name if argv else ""
    if program not in _LM_EVAL_COMMANDS and not str(argv[0] if argv else "").endswith(
        "lm_eval/__main__.py"
    ):
        return []
    seen: set[str] = set()
    repeated: list[str] = []
    for value in _model_args_values(argv[1:]):
        for item in _top_level_items(value):
            key = item.partition("=")[0].strip()
            if key in seen and key not in repeated:
                repeated.append(key)
            seen.add(key)
    return repeated


def _model_args_values(args: Sequence[str]) -> list[str]:
    values, taking = [], False
    for arg in args:
        flag, sep, inline = arg.partition("=")
        if flag in _MODEL_ARGS_FLAGS:
            taking = not sep
            if sep:
                values.append(inline)
        elif arg.startswith("-"):
            taking = False
        elif taking and not arg.lstrip().startswith("{"):
            values.append(arg)
    return values


def _top_level_items(text: str) -> list[str]:
    """Split on commas outside brackets and quotes (lm-eval's rule), keeping non-empty items."""
    items, current, depth, quote = [], [], 0, None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[({":
            depth += 1
        elif char in "])}":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return [item for item in items if item.strip()]


def _check_new(key: str, seen: dict[str, Any]) -> None:
    if key in seen:
        raise QevalError(f"model_arg '{key}' is given twice in --model_args; give each key once.")
