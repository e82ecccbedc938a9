"""The argument types of every ``qeval`` command, and of the lm-eval options ``qeval run`` passes
on (:func:`qeval_plugins.sweep.settings.lm_eval_types`): each refuses a bad value in one line
(``argparse.ArgumentTypeError``, printed by the parser as ``qeval: error: ...``).

May import: nothing of qeval's.
"""

from __future__ import annotations

import argparse
import math


def _whole(text: str) -> int | None:
    """``text`` as a whole number >= 0 written in ASCII digits, else None."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdecimal() else None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (ASCII digits)."""
    number = _whole(text)
    if number is None or number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got '{text}'")
    return number


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (ASCII digits)."""
    number = _whole(text)
    if number is None:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got '{text}'")
    return number


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got '{text}'")
    return value


def document_limit(text: str) -> float:
    """argparse type of lm-eval's ``--limit``: a count of documents (a whole number >= 1) or a
    fraction of them in (0, 1); returned as lm-eval reads it, a float (``20`` → 20.0)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0 and (value < 1 or value.is_integer())):
        raise argparse.ArgumentTypeError(
            f"must be a count of documents (a whole number >= 1) or a fraction of them in "
            f"(0, 1), got '{text}'"
        )
    return value


def batch_size(text: str) -> str:
    """argparse type of lm-eval's ``--batch_size``: a whole number >= 1, ``auto``, or ``auto:N``
    (N >= 1: how many times the size is re-tuned); returned unchanged, as lm-eval reads it."""
    automatic, _, times = text.strip().partition(":")
    number = _whole(times if automatic == "auto" else text)
    if (automatic == "auto" and not times) or (number is not None and number >= 1):
        return text
    raise argparse.ArgumentTypeError(
        f"must be a whole number >= 1, 'auto' or 'auto:N' with N >= 1, got '{text}'"
    )


MAX_SEED = 2**32 - 1  # numpy's seeds: 0 to 2**32 - 1


def seed_list(text: str) -> str:
    """argparse check of lm-eval's ``--seed``: one seed, or 3 or 4 comma-separated ones (python,
    numpy, torch, few-shot), each a whole number from 0 to :data:`MAX_SEED` or ``None``.
    Returns ``text`` for lm-eval's own parsing of the list."""
    items = text.split(",")
    if len(items) not in (1, 3, 4):
        raise argparse.ArgumentTypeError(f"must be 1, 3 or 4 comma-separated seeds, got '{text}'")
    for item in items:
        number = _whole(item)
        if item.strip().lower() != "none" and (number is None or number > MAX_SEED):
            raise argparse.ArgumentTypeError(
                f"each seed must be a whole number from 0 to {MAX_SEED} or None, got '{text}'"
            )
    return text


def comma_list(text: str) -> list[str]:
    """``a, b,,c`` -> ``["a", "b", "c"]``: a comma-separated option's items, blanks left out."""
    return [item.strip() for item in text.split(",") if item.strip()]
