"""What a sweep shows while it runs, whatever the launcher.

On a terminal: a live view (rich) — the sweep's bar (``3/8 runs, 2 running, 3 queued``,
elapsed) and one row per unit running now with its own elapsed time; a line per unit as it ends
(``done``, ``skip``, ``failed``). To a pipe or a file: the same end lines, and every
:func:`~.heartbeat.heartbeat_interval` seconds one heartbeat line per running unit
(``[2/5] model × spec: lm_eval: Running loglikelihood requests 40% (80/200), 8 min 05 s
elapsed``). Launchers call :meth:`SweepProgress.start` and :meth:`SweepProgress.finish` from any
thread.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from qeval_plugins.core.text import one_line
from qeval_plugins.sweep.heartbeat import elapsed_text, heartbeat, heartbeat_interval
from qeval_plugins.sweep.unit import Outcome, Unit, run_phase

NOT_STARTED = "not started"  # the detail of an ``interrupted`` unit Ctrl-C kept from starting
STYLES = {
    "skip": "[dim]skip[/dim]",
    "done": "[green]done[/green]",
    "failed": "[red]failed[/red]",
    "interrupted": "[yellow]interrupted[/yellow]",
    "pending": "[cyan]pending[/cyan]",
    "running": "[cyan]running[/cyan]",
}


class SweepProgress:
    """The live view (terminal) or heartbeat lines (pipe) of a sweep of ``units``.

    ``phase(unit, since)`` says what a running unit is doing for its heartbeat (default: the
    last line of its lm_eval log, :func:`~.unit.run_phase`; a launcher whose logs are on other
    machines passes its own)."""

    def __init__(
        self,
        console,
        units: list[Unit],
        phase: Callable[[Unit, float], str] = run_phase,
    ) -> None:
        self.console = console
        self.units = units
        self.phase = phase
        self.counts: Counter[str] = Counter()
        self._position = {id(unit): index for index, unit in enumerate(units, 1)}
        self._rows: dict[int, tuple[int | None, float, float]] = {}  # unit -> (row, start, epoch)
        self._lock = threading.Lock()
        self._live = console.is_terminal
        self._progress = None
        self._overall = None
        self._beating = None

    def position(self, unit: Unit) -> str:
        """``[2/5] model × spec``."""
        return f"[{self._position[id(unit)]}/{len(self.units)}] {unit.label}"

    def __enter__(self) -> SweepProgress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
        )
        self._progress = Progress(*columns, console=self.console, disable=not self._live)
        self._progress.__enter__()
        self._overall = self._progress.add_task(
            "sweep", total=len(self.units), count=f"0/{len(self.units)} runs"
        )
        if not self._live:
            self._beating = heartbeat(self._describe, self._write, heartbeat_interval())
            self._beating.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._beating is not None:
            self._beating.__exit__(None, None, None)
        self._progress.__exit__(*exc)

    def start(self, unit: Unit) -> None:
        """``unit`` begins running (gets its own row on a terminal)."""
        from rich.markup import escape

        with self._lock:
            row = None
            if self._live:
                row = self._progress.add_task(
                    escape(f"  {self.position(unit)}"), total=None, count="running"
                )
            self._rows[id(unit)] = (row, time.monotonic(), time.time())
            self._progress.update(self._overall, count=self._count())

    def finish(self, unit: Unit, outcome: Outcome) -> None:
        """``unit`` ended with ``outcome``: its line is printed and the sweep's bar advances."""
        from rich.markup import escape

        with self._lock:
            row, _, _ = self._rows.pop(id(unit), (None, 0.0, 0.0))
            if row is not None:
                self._progress.remove_task(row)
            self.counts[outcome.kind] += 1
            if outcome.kind == "failed":
                line = f"{STYLES['failed']} {escape(outcome.detail)}"
            else:
                separator = "" if outcome.kind == "done" else ":"
                label = f"{escape(unit.label)}{separator}"
                line = f"{STYLES[outcome.kind]} {label} {escape(outcome.detail)}"
            self._progress.console.print(line)
            ended = sum(self.counts.values())
            self._progress.update(self._overall, completed=ended, count=self._count())

    def _count(self) -> str:
        """``3/8 runs, 2 running, 3 queued`` (the caller holds the lock)."""
        ended, running = sum(self.counts.values()), len(self._rows)
        queued = len(self.units) - ended - running
        parts = [f"{ended}/{len(self.units)} runs"]
        parts += [f"{running} running"] * bool(running) + [f"{queued} queued"] * bool(queued)
        return ", ".join(parts)

    def summary(self, outcomes: list[Outcome] | None = None) -> str:
        """``sweep: 3 done, 1 skipped, 1 failed`` (kinds that occurred, in a fixed order) of
        the units ended so far, or of every unit's ``outcomes`` (a sweep stopped by Ctrl-C: units
        that never started count as ``not started``)."""
        if outcomes is None:
            counts = self.counts
        else:
            counts = Counter(
                "not started" if outcome.detail == NOT_STARTED else outcome.kind
                for outcome in outcomes
            )
        names = {"skip": "skipped"}
        order = ("done", "skip", "failed", "interrupted", "not started", "pending", "running")
        parts = [f"{counts[kind]} {names.get(kind, kind)}" for kind in order if counts[kind]]
        return f"sweep: {', '.join(parts) or 'nothing to run'}"

    def _describe(self, _seconds: float) -> str:
        with self._lock:
            running = [
                (unit, self._rows[id(unit)]) for unit in self.units if id(unit) in self._rows
            ]
        now = time.monotonic()
        return "\n".join(
            f"{self.position(unit)}: {self.phase(unit, epoch)}, "
            f"{elapsed_text(now - started)} elapsed"
            for unit, (_, started, epoch) in running
        )

    def _write(self, lines: str) -> None:
        from rich.text import Text

        for line in lines.splitlines():
            self.console.print(Text(one_line(line)), soft_wrap=True)
