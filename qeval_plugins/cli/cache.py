"""list, prune or clear the cache of reference outputs and quantized models

qeval's cache holds the unquantized model's reference outputs and the quantized models, each
computed once and reused by later runs. 'list' shows every entry (model, what it was computed
on, size, creation, last use); 'prune' deletes entries unused for --older-than DAYS and/or the
least recently used until the cache fits --max-size SIZE; 'clear' deletes every entry at once,
without asking, like 'pip cache purge': an entry is only ever a saving of time, recomputed when a
run needs it again. Its folder is QEVAL_CACHE_DIR (one error line when that names a file).
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
    listed = "entries with model, settings, size and last use"
    actions.add_parser("list", help=listed, description=f"List the cache's {listed}.")
    prune = actions.add_parser(
        "prune",
        help="delete old or least recently used entries",
        description="Delete entries unused for --older-than days, then the least recently used "
        "until the cache fits --max-size.",
    )
    prune.add_argument(
        "--older-than", type=float, metavar="DAYS", help="delete entries unused for DAYS days"
    )
    prune.add_argument(
        "--max-size",
        metavar="SIZE",
        help="then delete the least recently used until the cache fits SIZE (e.g. 500M, 2G)",
    )
    cleared = "delete every entry (they are recomputed when needed)"
    actions.add_parser("clear", help=cleared, description=f"Clear the cache: {cleared}.")


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


def _when(seconds: Any) -> str:
    """Epoch seconds as local ``YYYY-MM-DD HH:MM``; "?" for anything else."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return "?"
    try:
        return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):
        return "?"


def count(number: int, one: str, many: str) -> str:
    """``1 entry``, ``2 entries``: ``number`` and the word that agrees with it."""
    return f"{number} {one if number == 1 else many}"


# Metadata the listing shows in columns of their own, that only check the payload, or that a
# run reads back (a plugin's record, up to 64 KiB).
SHOWN_APART = frozenset(
    {"kind", "model", "settings", "dtype", "created", "last_used", "format", "sha256"}
    | {"payload_bytes", "files", "stamps", "calibration", "options", "quantizer", "plugin_record"}
)


def details(meta: dict[str, Any]) -> str:
    """What tells an entry apart from others of its model and kind, as one printable line:
    a quantized model's spec first, its other metadata (``texts``: how many texts it was
    computed on), then its settings, then
    its dtype — ``texts=4, top_k=32, dtype="auto"``; "" when it records none."""
    settings = meta.get("settings")
    first = {"spec": meta["spec"]} if "spec" in meta else {}  # a quantized model's: never cut off
    found = first | {key: value for key, value in meta.items() if key not in SHOWN_APART}
    found.update(settings if isinstance(settings, dict) else {"settings": settings})
    found["dtype"] = meta.get("dtype")
    found = {name: value for name, value in found.items() if value is not None}
    return _plain(found, limit=300) if found else ""


def list_entries(console) -> None:
    """The cache's entries, least recently used first, then their number and total size.

    Per entry: short key, kind, size, created and last used, model, and its :func:`details`. A
    table when every cell fits on one line of the console, else a list (a heading line per
    entry, its model and details below), wrapped at spaces, as ``qeval quantizers`` does.
    """
    from rich.text import Text

    from qeval_plugins.cli.listing import INDENT, SEPARATOR, fits_one_table, print_indented
    from qeval_plugins.storage import cache_pruning, reference_cache
    from qeval_plugins.storage.cache_layout import cache_root

    reference_cache.existing_cache_dir()
    found = cache_pruning.entries()
    if not found:
        console.print(Text(f"the qeval cache {cache_root()} is empty"), soft_wrap=True)
        return
    rows = [
        [
            Text(entry.key[:8]),
            Text(_plain(entry.meta.get("kind", "?")).removeprefix("qeval_")),
            Text(_plain(entry.meta.get("model", "? (no metadata: an older qeval)"))),
            Text(details(entry.meta), style="dim"),
            Text(format_size(entry.size)),
            Text(_when(entry.meta.get("created"))),
            Text(_when(entry.last_used)),
        ]
        for entry in found
    ]
    title = f"qeval cache: {cache_root()}"
    columns = ("entry", "kind", "model", "spec, texts, settings", "size", "created", "last used")
    if not fits_one_table(console, columns, rows, title=title):
        print_indented(console, [Text(title, style="bold")], 0)
        for key, kind, model, described, size, created, used in rows:
            heading = [key, kind, size, Text("created ") + created, Text("used ") + used]
            print_indented(console, [Text(SEPARATOR).join(heading)], 0)
            print_indented(console, [model] + ([described] if described.plain else []), INDENT)
    total = sum(entry.size for entry in found)
    console.print(Text(f"{count(len(found), 'entry', 'entries')}, {format_size(total)}"))


def _removed_line(removed: list) -> str:
    from qeval_plugins.storage.cache_layout import cache_root

    size = format_size(sum(entry.size for entry in removed))
    return f"removed {count(len(removed), 'entry', 'entries')} ({size}) from {cache_root()}"


def prune_entries(older_than_days: float | None, max_size: str | None, console) -> None:
    """``qeval cache prune``: by age, then by size (least recently used first)."""
    from rich.text import Text

    from qeval_plugins.storage import cache_pruning, reference_cache

    if older_than_days is None and max_size is None:
        raise QevalError("give --older-than DAYS and/or --max-size SIZE (e.g. --max-size 2G).")
    if older_than_days is not None and not (
        math.isfinite(older_than_days) and older_than_days >= 0
    ):
        raise QevalError(f"--older-than must be a number of days >= 0, got {older_than_days}.")
    max_bytes = None if max_size is None else cache_pruning.parse_size(max_size, "--max-size")
    older_than = None if older_than_days is None else older_than_days * SECONDS_PER_DAY
    reference_cache.existing_cache_dir()
    removed = _changing(lambda: cache_pruning.prune(older_than, max_bytes))
    left = cache_pruning.entries()
    remain = "remains" if len(left) == 1 else "remain"
    console.print(
        Text(
            f"{_removed_line(removed)}; "
            f"{count(len(left), 'entry', 'entries')} "
            f"({format_size(sum(entry.size for entry in left))}) {remain}"
        ),
        soft_wrap=True,
    )


def clear_entries(console) -> None:
    """``qeval cache clear``: every entry."""
    from rich.text import Text

    from qeval_plugins.storage import cache_pruning, reference_cache

    reference_cache.existing_cache_dir()
    removed = _changing(lambda: cache_pruning.prune(max_bytes=0))
    console.print(Text(_removed_line(removed)), soft_wrap=True)


def _changing(change):
    """Run ``change()``; an OSError (read-only folder, ...) becomes one QevalError line."""
    from qeval_plugins.storage.cache_layout import CACHE_ENV, cache_root

    try:
        return change()
    except OSError as error:
        raise QevalError(
            f"cannot change the cache folder {cache_root()} "
            f"({error.strerror or error}); check its permissions or {CACHE_ENV}."
        ) from None


def run(args: argparse.Namespace) -> int:
    """Dispatch ``qeval cache ACTION``."""
    from rich.console import Console

    console = Console()
    if args.cache_action == "list":
        list_entries(console)
    elif args.cache_action == "prune":
        prune_entries(args.older_than, args.max_size, console)
    else:
        clear_entries(console)
    return 0
