"""Checking ``qeval run --tasks`` before the first run, and what each run's results must hold.

lm-eval searches its own tasks plus ONE ``--include_path`` folder: qeval's tasks folder, or the
user's ``--include_path`` when one is given (it replaces qeval's, as the last one given wins). The
check mirrors that. It reads only the folder's YAML index (well under a second) and indexes
lm-eval's own ~15,000 tasks (a few seconds) only when a name is not found there, which every
lm-eval run does anyway.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from qeval_plugins.core.errors import QevalError, did_you_mean


def _index(folder: Path, with_defaults: bool) -> dict:
    """lm-eval's task index (name -> Entry) of ``folder``, plus lm-eval's tasks if asked."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(folder), include_defaults=with_defaults).task_index


def _expand(name: str, index: dict) -> list[str] | None:
    """The names a results file holds for ``--tasks`` entry ``name`` (a tag becomes its tasks, a
    pattern its matches); None when ``name`` is unknown. A YAML file path needs nothing."""
    if name.endswith(".yaml"):
        return [] if Path(name).is_file() else None
    if any(char in name for char in "*?["):
        return sorted(fnmatch.filter(index, name)) or None
    entry = index.get(name)
    if entry is None:
        return None
    if getattr(entry.kind, "name", "") == "TAG":
        return sorted(task for task, other in index.items() if name in other.tags)
    return [name]


def expected_results(tasks: list[str], include_path: str | None) -> list[str]:
    """Check every name in ``tasks``; return the task and group names the results must hold.

    Raises QevalError for a missing ``--include_path`` folder or an unknown task (with the closest
    known name).
    """
    from qeval_plugins.paths import tasks_path

    if not tasks:
        raise QevalError("--tasks names no task; give lm-eval task names such as qeval_demo.")
    folder = Path(include_path).expanduser() if include_path else tasks_path()
    if not folder.is_dir():
        raise QevalError(
            f"--include_path '{include_path}' is not a folder; give the folder of "
            f"your task YAML files."
        )
    index = _index(folder, with_defaults=False)
    if any(_expand(name, index) is None for name in tasks):
        index = _index(folder, with_defaults=True)
    expected: list[str] = []
    for name in tasks:
        names = _expand(name, index)
        if names is None:
            hint = did_you_mean(name, index) or " 'lm_eval ls tasks' lists lm-eval's tasks."
            where = f"--include_path {include_path}" if include_path else "qeval's tasks"
            raise QevalError(f"unknown task '{name}' (searched lm-eval's tasks and {where}).{hint}")
        expected += [task for task in names if task not in expected]
    _refuse_members_of_given_groups(tasks, index)
    return expected


def _refuse_members_of_given_groups(tasks: list[str], index: dict) -> None:
    """A group and one of its own tasks both in ``--tasks``: lm-eval stops ("Duplicate task")."""
    for name in tasks:
        entry = index.get(name)
        members = getattr(entry, "cfg", None) or {}
        listed = members.get("task") if isinstance(members, dict) else None
        if getattr(getattr(entry, "kind", None), "name", "") != "GROUP" or not listed:
            continue
        inside = {task for task in listed if isinstance(task, str)} & set(tasks)
        if inside:
            raise QevalError(
                f"--tasks names the group '{name}' and its own task '{sorted(inside)[0]}'; "
                f"give either the group or its tasks."
            )
