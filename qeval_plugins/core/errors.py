"""The one user-facing error class of qeval.

Every mistake a user can make (unknown quantizer, bad option, missing package, missing model
path, ...) raises :class:`QevalError` with a one-line message that says what to do. The ``qeval``
command and the ``lm_eval`` command (through :func:`install_excepthook`) print it as
``qeval: error: ...`` without a traceback; set ``QEVAL_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterable

DEBUG_ENV = "QEVAL_DEBUG"


class QevalError(Exception):
    """A user error: its message is one line that says what went wrong and what to do."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest candidate, or ``""`` when none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def near_miss(key: str, known: Iterable[str]) -> str | None:
    """The word of ``known`` that ``key`` misspells, or None (also when ``key`` is known).

    Misspells: equal ignoring case, or a close spelling (difflib ratio >= 0.75).
    """
    known = sorted(known)
    if key in known:
        return None
    same = [word for word in known if word.lower() == str(key).strip().lower()]
    close = same or difflib.get_close_matches(str(key), known, n=1, cutoff=0.75)
    return close[0] if close else None


def refuse_near_misses(keys: Iterable[str], known: Iterable[str], what: str) -> None:
    """One QevalError, naming ``what`` and the intended key, for a key misspelling a known one.

    Misspells: :func:`near_miss`.

    For settings mixed with unrelated keys (lm-eval merges model_args into a task's metadata),
    where refusing every unknown key would refuse valid runs and ignoring them hides typos.
    """
    known = list(known)
    for key in keys:
        intended = near_miss(key, known)
        if intended is not None:
            raise QevalError(f"{what} '{key}' is not known. Did you mean '{intended}'?")


def debug_enabled() -> bool:
    """True when ``QEVAL_DEBUG`` is set to a non-empty value other than ``0``."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def format_error(error: QevalError) -> str:
    """The single line printed for a user error."""
    return f"qeval: error: {error}"


def install_excepthook() -> None:
    """Print an uncaught :class:`QevalError` as one line and exit with status 2.

    Other exceptions go to the previous hook unchanged. Installed once per process (idempotent)
    when the ``qeval`` lm-eval backend is imported, so the stock ``lm_eval`` CLI gets the same
    one-line errors as the ``qeval`` CLI. ``QEVAL_DEBUG=1`` keeps full tracebacks.
    """
    previous = sys.excepthook
    if getattr(previous, "_qeval_hook", False):
        return

    def hook(kind, value, traceback):
        if isinstance(value, QevalError) and not debug_enabled():
            print(format_error(value), file=sys.stderr)
            sys.stderr.flush()
            os._exit(2)  # skip atexit handlers of half-initialised libraries; nothing to flush
        previous(kind, value, traceback)

    hook._qeval_hook = True
    sys.excepthook = hook
