"""``qeval cache``: list, prune and clear the reference cache (:mod:`.reference_cache`).

``list`` shows every entry (model, settings, size, last use); ``prune`` deletes entries unused for
``--older-than DAYS`` and/or the least recently used until the cache fits ``--max-size SIZE``;
``clear`` deletes every entry at once, without asking, like ``pip cache purge``: an entry is only
ever a saving of time, recomputed when a run needs it again.
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import datetime
from typing import Any

from qeval_plugins.core.errors import QevalError

SECONDS_PER_DAY = 86400.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``list``, ``prune`` and ``clear`` actions of ``qeval cache``."""
    actions = parser.add_subparsers(dest="cache_action", required=True, metavar="ACTION")
    actions.add_parser("list", help="entries with model, settings, size and last use")
    prune = actions.add_parser("prune", help="delete old or least recently used entries")
    prune.add_argument(
        "--older-than", type=float, metavar="DAYS", help="delete entries unused for DAYS days"
    )
    prune.add_argument(
        "--max-size",
        metavar="SIZE",
        help="then delete the least recently used until the cache fits SIZE (e.g. 500M, 2G)",
    )
    actions.add_parser("clear", help="delete every entry (they are recomputed when needed)")


def format_size(size: float) -> str:
    """Bytes as ``512 B``, ``1.5 KiB``, ``12.3 MiB``, ``2.0 GiB`` (powers of 1024)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    index = 0
    while size >= 1024 and index < len(units) - 1:
        size /= 1024
        index += 1
    return f"{size:.0f} B" if index == 0 else f"{size:.1f} {units[index]}"


def _plain(value: Any, limit: int = 120) -> str:
    """A metadata value as one printable line (the metadata file may be hostile)."""
    if isinstance(value, dict):
        text = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in value.items())
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str)
    text = "".join(char if char.isprintable() else "?" for char in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _when(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):
        return "?"


def list_entries(console) -> None:
    """The cache's entries as a table, least recently used first, then the total."""
    from rich.table import Table
    from rich.text import Text

    from qeval_plugins.storage import cache as reference_cache

    directory = reference_cache.cache_dir()
    found = reference_cache.entries()
    if not found:
        console.print(Text(f"the reference cache {directory} is empty"), soft_wrap=True)
        return
    table = Table(title=Text(f"qeval reference cache: {directory}"))
    table.add_column("entry", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("model / settings", overflow="fold")
    table.add_column("size", no_wrap=True, justify="right")
    table.add_column("last used", no_wrap=True)
    for entry in found:
        meta = entry.meta
        described = Text(_plain(meta.get("model", "? (no metadata: an older qeval)")))
        settings = meta.get("settings")
        details = dict(settings) if isinstance(settings, dict) else {"settings": settings}
        details["dtype"] = meta.get("dtype")
        details = {name: value for name, value in details.items() if value is not None}
        if details:
            described.append("\n" + _plain(details, limit=300), style="dim")
        table.add_row(
            entry.key[:8],
            Text(_plain(meta.get("kind", "?")).removeprefix("qeval_")),
            described,
            format_size(entry.size),
            _when(entry.last_used),
        )
    console.print(table)
    total = sum(entry.size for entry in found)
    console.print(Text(f"{len(found)} entries, {format_size(total)}"), soft_wrap=True)


def _removed_line(removed: list, directory) -> str:
    size = format_size(sum(entry.size for entry in removed))
    return f"removed {len(removed)} entries ({size}) from {directory}"


def prune_entries(older_than_days: float | None, max_size: str | None, console) -> None:
    """``qeval cache prune``: by age, then by size (least recently used first)."""
    from rich.text import Text

    from qeval_plugins.storage import cache as reference_cache

    if older_than_days is None and max_size is None:
        raise QevalError("give --older-than DAYS and/or --max-size SIZE (e.g. --max-size 2G).")
    if older_than_days is not None and not (
        math.isfinite(older_than_days) and older_than_days >= 0
    ):
        raise QevalError(f"--older-than must be a number of days >= 0, got {older_than_days}.")
    max_bytes = None if max_size is None else reference_cache.parse_size(max_size, "--max-size")
    older_than = None if older_than_days is None else older_than_days * SECONDS_PER_DAY
    removed = _changing(lambda: reference_cache.prune(older_than, max_bytes))
    left = reference_cache.entries()
    console.print(
        Text(
            f"{_removed_line(removed, reference_cache.cache_dir())}; {len(left)} entries "
            f"({format_size(sum(entry.size for entry in left))}) remain"
        ),
        soft_wrap=True,
    )


def clear_entries(console) -> None:
    """``qeval cache clear``: every entry."""
    from rich.text import Text

    from qeval_plugins.storage import cache as reference_cache

    removed = _changing(lambda: reference_cache.prune(max_bytes=0))
    console.print(Text(_removed_line(removed, reference_cache.cache_dir())), soft_wrap=True)


def _changing(change):
    """Run ``change()``; an OSError (read-only folder, ...) becomes one QevalError line."""
    from qeval_plugins.storage import cache as reference_cache

    try:
        return change()
    except OSError as error:
        raise QevalError(
            f"cannot change the reference cache folder {reference_cache.cache_dir()} "
            f"({error.strerror or error}); check its permissions or {reference_cache.CACHE_ENV}."
        ) from None


def run(args: argparse.Namespace, console) -> int:
    """Dispatch ``qeval cache ACTION``."""
    if args.cache_action == "list":
        list_entries(console)
    elif args.cache_action == "prune":
        prune_entries(args.older_than, args.max_size, console)
    else:
        clear_entries(console)
    return 0
