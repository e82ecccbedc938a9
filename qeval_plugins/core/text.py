"""Text from outside (results files, plugins, logs) made safe to print in one place.

May import: nothing (part of ``core``).
"""

from __future__ import annotations

import re
from typing import Any

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with every control character (C0 such as ESC, BEL, CR, LF, TAB; DEL; C1 such as
    CSI), bidirectional override and lone surrogate written as a visible escape (``\\x1b``,
    ``\\n``, ``\\u202e``): no name read from a file can clear the screen, retitle the terminal,
    open a hyperlink, reorder text or break a table line. Other text is unchanged."""
    return CONTROL.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    code = ord(char)
    return CONTROL_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def one_line(value: Any) -> str:
    """``str(value)`` with runs of whitespace (newlines included) made one space, then
    :func:`printable`: for messages that must stay one line."""
    return printable(" ".join(str(value).split()))
