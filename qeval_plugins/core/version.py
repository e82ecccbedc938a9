"""The installed qeval's version, recorded in every run and printed by ``qeval --version``."""

from __future__ import annotations


def qeval_version() -> str:
    """The qeval distribution's version (``unknown`` when run from a tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qeval")
    except PackageNotFoundError:
        return "unknown"
