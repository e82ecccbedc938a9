"""What a run's folder holds: whether its results cover the requested tasks and were made with
this sweep's settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qeval_plugins.core.safe_read import read_regular
from qeval_plugins.sweep.settings import SETTINGS_FILE, differences, recorded_settings

RESULTS_FILE = "results.json"
MAX_RESULTS_BYTES = 256 << 20  # as qeval report reads them (report.load.MAX_RESULTS_BYTES)


def covered(data: Any) -> set[str]:
    """Task and group names a results file holds: the keys of ``results`` and ``groups``, plus
    each group of ``group_subtasks`` whose subtasks are all held."""
    if not isinstance(data, dict):
        return set()
    names: set[str] = set()
    for section in ("results", "groups"):
        if isinstance(data.get(section), dict):
            names |= set(data[section])
    groups = data.get("group_subtasks")
    groups = groups if isinstance(groups, dict) else {}
    grew = True
    while grew:
        complete = {
            group
            for group, children in groups.items()
            if group not in names
            and isinstance(children, list)
            and all(isinstance(child, str) and child in names for child in children)
        }
        names |= complete
        grew = bool(complete)
    return names


def results_problem(raw: bytes, tasks: list[str]) -> str | None:
    """Why ``raw`` is not a usable results file for ``tasks``, or None when it is."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as error:
        return f"is not valid JSON ({' '.join(str(error).split())[:80]})"
    held = covered(data)
    lacking = [task for task in tasks if task not in held]
    if lacking:
        return f"lacks {', '.join(lacking[:5])}{' ...' if len(lacking) > 5 else ''}"
    return None if held else "holds no results"


def read_results(path: Path) -> bytes:
    """A run's results file: a regular file (never a FIFO, which would block, or a link to a
    device such as /dev/zero, which never ends) of at most :data:`MAX_RESULTS_BYTES`; raises
    ``OSError`` (:class:`~qeval_plugins.core.safe_read.RefusedFile` for those)."""
    return read_regular(path, MAX_RESULTS_BYTES)


def is_complete(directory: Path, tasks: list[str]) -> bool:
    """True when ``directory`` holds a readable results file covering every task in ``tasks``."""
    try:
        return results_problem(read_results(directory / RESULTS_FILE), tasks) is None
    except OSError:
        return False


def existing_state(directory: Path, settings: dict, tasks: list[str]) -> tuple[str, str]:
    """``("missing", "")``, ``("complete", "")`` or ``("conflict", why)`` for a run's folder:
    conflict means results exist that this sweep may neither reuse nor silently replace."""
    results = directory / RESULTS_FILE
    if not results.exists():
        return "missing", ""
    try:
        raw = read_results(results)
    except OSError as error:
        return "conflict", f"its {RESULTS_FILE} cannot be read ({error.strerror or error})"
    recorded = recorded_settings(directory, raw)
    if recorded is None and not (directory / SETTINGS_FILE).exists():
        return "conflict", f"no {SETTINGS_FILE} for its results: made by an older qeval?"
    if recorded is None:
        return "conflict", (
            f"its {SETTINGS_FILE} is unreadable or records other results (a results file "
            f"changed or damaged since the run)"
        )
    changed = differences(recorded, settings)
    if changed:
        return "conflict", ", ".join(changed)
    problem = results_problem(raw, tasks)
    return ("conflict", f"results {problem}") if problem else ("complete", "")
