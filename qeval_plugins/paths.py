"""Where qeval's shipped files are, in a wheel install and in a source checkout alike."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def tasks_path() -> Path:
    """Directory of qeval's lm-eval task YAMLs, for ``--include_path``.

    In a wheel the ``tasks/`` folder is installed as ``qeval_plugins/tasks``; in a source checkout
    (editable install) it is the repository's top-level ``tasks/``.
    """
    for candidate in (_PACKAGE / "tasks", _PACKAGE.parent / "tasks"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("qeval's tasks directory is missing from this installation")
