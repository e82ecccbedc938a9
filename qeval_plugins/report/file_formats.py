"""The report's export formats by name and by file extension, without importing the exporters
(``qeval``'s argument parser reads them at start-up)."""

from __future__ import annotations

FORMAT_EXTENSIONS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".csv": "csv",
    ".json": "json",
    ".html": "html",
    ".htm": "html",
}
# what ``--format`` takes: every extension without its dot (md, markdown, csv, json, html, htm)
FORMAT_NAMES = {extension[1:]: fmt for extension, fmt in FORMAT_EXTENSIONS.items()}
