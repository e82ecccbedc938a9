"""A line every so often while a long step runs with nobody watching a live display.

``qeval run`` to a pipe or a file (``qeval run ... | tee log``, a batch job) has no progress bar:
without these lines an eight-minute run shows nothing. Every :func:`heartbeat_interval` seconds
(``QEVAL_HEARTBEAT_SECONDS``, default 30) the step's :func:`heartbeat` writes what it is doing
and for how long.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.text import printable

HEARTBEAT_ENV = "QEVAL_HEARTBEAT_SECONDS"
DEFAULT_INTERVAL = 30.0  # seconds between two lines


def heartbeat_interval() -> float:
    """Seconds between heartbeat lines: ``QEVAL_HEARTBEAT_SECONDS`` (a number > 0), else
    :data:`DEFAULT_INTERVAL`; one QevalError line for another value."""
    text = os.environ.get(HEARTBEAT_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise QevalError(f"{HEARTBEAT_ENV} must be a number of seconds > 0, got '{text}'.")
    return seconds


def elapsed_text(seconds: float) -> str:
    """``45 s``, ``8 min 05 s``, ``1 h 02 min`` (whole seconds, rounded down)."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


@contextlib.contextmanager
def heartbeat(
    describe: Callable[[float], str], write: Callable[[str], None], interval: float
) -> Iterator[None]:
    """While the ``with`` block runs, call ``write(describe(elapsed seconds))`` every
    ``interval`` seconds from a helper thread; the block itself runs in the caller's thread."""
    stop = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not stop.wait(interval):
            write(describe(time.monotonic() - started))

    thread = threading.Thread(target=beat, name="qeval-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


PROGRESS_LINE = re.compile(  # tqdm: "DESC:  40%|████      | 80/200 [00:03<00:04, 25.1it/s]"
    r"^(?P<what>[^|]*?):?\s*(?P<percent>\d{1,3})%\|(?:[^|]*\|)?\s*(?P<count>\d+/\d+)"
)
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d:\d\d:\d\d:\d\d (?P<level>[A-Z]+)\s+\[[^\]]*\] (?P<message>.*)"
)
PHASE_WIDTH = 72  # characters of a heartbeat's phase


def log_phase(tail: str) -> str:
    """What the end of an lm_eval log says it is doing: its last progress bar as ``Running
    loglikelihood requests 40% (80/200)``, else its last INFO line's message without the time
    and logger, else ``started``; at most :data:`PHASE_WIDTH` characters (cut with ``…``).
    Warnings, results-table rows and other output are no phase."""
    for line in reversed([line.strip() for line in re.split(r"[\r\n]", tail) if line.strip()]):
        if progress := PROGRESS_LINE.match(line):
            what = progress["what"].strip() or "progress"
            return _fit(f"{what} {progress['percent']}% ({progress['count']})")
        logged = LOG_LINE.match(line)
        if logged and logged["level"] == "INFO":
            return _fit(logged["message"].strip())
    return "started"


def _fit(text: str) -> str:
    text = printable(text)
    return text if len(text) <= PHASE_WIDTH else text[: PHASE_WIDTH - 1].rstrip() + "…"
