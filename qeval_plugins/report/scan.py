"""The "Layer sensitivity" section of ``qeval report``: ``scan.json`` files of ``qeval scan``,
read beside the runs (:mod:`.inputs`) and kept in the whole report (``Report.scans``).

:func:`find_scans` reads every ``scan.json`` (given, or under given folders, hidden folders
skipped) into a :class:`ScanSummary`; a file that cannot be one — unreadable, too large, not
UTF-8 JSON, another format version, a field of the wrong type — is one warning line and is
skipped, never a crash. :func:`scan_grid` is a scan's table (rows of
:func:`scan_grid_rows`, texts made :func:`printable`, the verdict in its caption), which
:func:`render_scans` prints for ``qeval scan`` and ``qeval demo``; :func:`scan_chart` draws the
ranking as a bar chart. No torch import.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from qeval_plugins.core.safe_read import read_regular
from qeval_plugins.core.text import printable
from qeval_plugins.report.chart import Chart, digest, slug
from qeval_plugins.report.comparison import Report, ScanSummary, UnitRow
from qeval_plugins.report.grid import Grid
from qeval_plugins.report.layout import print_grid
from qeval_plugins.report.section import Section

SCAN_FILE = "scan.json"
FORMAT_VERSION = 1
MAX_BYTES = 50_000_000  # a scan of a 1,000-layer model is well under 1 MB
TOP = 10  # units shown per scan in the terminal and the chart
NAME_LIMIT = 60  # characters of a unit name shown
MAX_COUNT = 10**15  # no unit has more weights (or a lower rank) than this


def is_scan_file(path: str | Path) -> bool:
    """Whether ``path`` is a file named ``scan.json``."""
    return Path(path).name == SCAN_FILE and Path(path).is_file()


def scan_files_in(folder: Path) -> list[Path]:
    """The ``scan.json`` files under ``folder`` outside hidden folders, sorted."""
    return sorted(
        path
        for path in folder.rglob(SCAN_FILE)
        if not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def find_scans(paths: list[str | Path]) -> tuple[list[ScanSummary], list[str]]:
    """Every readable scan in ``paths`` and one warning line per unreadable one."""
    found, warnings, seen = [], [], set()
    for given in map(Path, paths):
        files = scan_files_in(given) if given.is_dir() else [given] if is_scan_file(given) else []
        for path in files:
            key = str(path.resolve())
            if key in seen:
                continue
            seen.add(key)
            summary, problem = read_scan(path)
            if summary is not None:
                found.append(summary)
            else:
                warnings.append(f"{printable(str(path))}: {problem}; skipped")
    return found, warnings


def read_scan(path: Path) -> tuple[ScanSummary | None, str | None]:
    """The scan in ``path``, or None and why not (one line)."""
    try:
        text = read_regular(path, MAX_BYTES).decode("utf-8")  # never a FIFO or a device
        data = json.loads(text, parse_constant=lambda name: name)  # NaN stays the text "NaN"
    except OSError as error:
        return None, f"cannot read ({printable(error.strerror or str(error))})"
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError as error:
        return None, f"not JSON ({printable(str(error))[:120]})"
    try:
        return summarize(data, str(path)), None
    except KeyError as error:
        return None, f"not a qeval scan (no {printable(str(error))[:80]} field)"
    except (ArithmeticError, TypeError, ValueError) as error:
        return None, f"not a qeval scan ({printable(str(error))[:160]})"


def summarize(data: Any, path: str) -> ScanSummary:
    """:class:`ScanSummary` of a parsed ``scan.json``; TypeError/ValueError/KeyError naming the
    first field that is missing or of the wrong type."""
    if not isinstance(data, dict):
        raise TypeError("the file is not a JSON object")
    if data.get("qeval_scan") != FORMAT_VERSION:
        raise ValueError(f"qeval_scan must be {FORMAT_VERSION}")
    units = _field(data, "units", list)
    rows = tuple(_unit_row(entry, number) for number, entry in enumerate(units))
    advice = _field(data, "recommendation", dict)
    recommended = _field(advice, "units", list)
    if not all(isinstance(name, str) for name in recommended):
        raise TypeError("recommendation.units must be a list of names")
    checks = data.get("verification") if isinstance(data.get("verification"), dict) else {}
    return ScanSummary(
        path=path,
        model=_field(data, "model", str),
        spec=_field(data, "spec", str),
        unit=_field(data, "unit", str),
        units=rows,
        recommended=tuple(recommended),
        bits_per_param=_number_or_none(advice.get("bits_per_param")),
        checks={key: _check_kl(checks.get(key)) for key in CHECKS},
        improves=_bool_or_none(checks.get("improves")),
        beats_least_sensitive=_bool_or_none(checks.get("beats_least_sensitive")),
    )


CHECKS = ("all_quantized", "recommended", "least_sensitive")


def _field(data: dict, key: str, kind: type) -> Any:
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"'{key}' must be a {kind.__name__}")
    return value


def _unit_row(entry: Any, number: int) -> UnitRow:
    if not isinstance(entry, dict):
        raise TypeError(f"units[{number}] must be an object")
    params = _field(entry, "params", int)
    rank = _field(entry, "rank", int)
    if not 0 <= params <= MAX_COUNT or not 1 <= rank <= MAX_COUNT:
        raise ValueError(f"units[{number}]: rank and params must be counts up to {MAX_COUNT:.0e}")
    kl, delta = _number(entry.get("kl_mean")), _number(entry.get("delta_nll"))
    if kl is None or delta is None:
        raise TypeError(f"units[{number}]: kl_mean and delta_nll must be numbers")
    return UnitRow(rank, _field(entry, "name", str), params, kl, delta)


def _number(value: Any) -> float | None:
    """A JSON number, or ``"NaN"``/``"Infinity"`` (as Python writes non-finite floats)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an integer of more than 308 digits
            return None
    if value in ("NaN", "Infinity", "-Infinity", "nan", "inf", "-inf"):
        return float(value.replace("Infinity", "inf"))
    return None


def _number_or_none(value: Any) -> float | None:
    return _number(value) if value is not None else None


def _bool_or_none(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _check_kl(entry: Any) -> float | None:
    return _number(entry.get("kl_mean")) if isinstance(entry, dict) else None


def _fmt(value: float | None, spec: str = ".4g") -> str:
    if value is None:
        return "—"
    return format(value, spec) if math.isfinite(value) else str(value)


def _name(text: str) -> str:
    text = printable(text)
    return text if len(text) <= NAME_LIMIT else "…" + text[-(NAME_LIMIT - 1) :]


def scan_grid_rows(summary: ScanSummary, top: int = TOP) -> list[tuple[str, ...]]:
    """Rows (rank, unit, params, KL, ΔNLL, kept) of the ``top`` most sensitive units."""
    chosen = set(summary.recommended)
    return [
        (
            str(row.rank),
            _name(row.name),
            f"{row.params:,}",
            _fmt(row.kl_mean),
            _fmt(row.delta_nll, "+.4g"),
            "keep" if row.name in chosen else "",
        )
        for row in sorted(summary.units, key=lambda r: r.rank)[:top]
    ]


def verdict_lines(summary: ScanSummary) -> list[str]:
    """The recommendation and its verification, one line each (printable text)."""
    names = ", ".join(_name(name) for name in summary.recommended) or "none"
    bits = f" → {_fmt(summary.bits_per_param)} bits/param" if summary.bits_per_param else ""
    lines = [f"keep unquantized: {names}{bits}"]
    checks = summary.checks
    if checks["recommended"] is not None:
        lines.append(
            f"verified KL mean (nats, top-k lower bounds): all quantized "
            f"{_fmt(checks['all_quantized'])}, recommended skip {_fmt(checks['recommended'])}, "
            f"same number of least-sensitive skipped {_fmt(checks['least_sensitive'])}"
        )
        better = "better" if summary.improves else "NOT better"
        control = "beats" if summary.beats_least_sensitive else "does NOT beat"
        lines.append(f"recommendation is {better} than all-quantized and {control} the control")
    return lines


def scan_grid(summary: ScanSummary, top: int = TOP) -> Grid:
    """One scan as a grid: the ``top`` most sensitive units (:func:`scan_grid_rows`), the caption
    the units left out and the verdict lines. The scan's KL is the top-k bound, a lower bound of
    the exact KL: its column is headed ``KL mean ≥``."""
    grid = Grid(
        title=f"Layer sensitivity — {printable(summary.model)} · {printable(summary.spec)}",
        caption="\n".join([*more_units(summary, top), *verdict_lines(summary)]),
        headers=["#", summary.unit, "params", "KL mean ≥", "ΔNLL", ""],
        right=[True, False, True, True, True, False],
        keys=2,
    )
    grid.rows = [[[(text, "")] for text in row] for row in scan_grid_rows(summary, top)]
    return grid.escaped()


def more_units(summary: ScanSummary, top: int = TOP) -> list[str]:
    """``… N more units in PATH`` when the scan ranks more than ``top`` units, else nothing."""
    more = len(summary.units) - top
    return [f"… {more} more units in {printable(summary.path)}"] if more > 0 else []


def render_scans(
    scans: list[ScanSummary], warnings: list[str], console: Any, top: int = TOP
) -> None:
    """Print the "Layer sensitivity" tables of ``scans`` (:func:`scan_grid`, no markup parsed),
    then the ``warnings`` (one line each): what ``qeval scan`` and ``qeval demo`` print."""
    from rich.text import Text

    for summary in scans:
        print_grid(scan_grid(summary, top), console)
    for warning in warnings:
        console.print(Text.assemble(("warning: ", "yellow"), printable(warning)))


def scan_chart(figure_class: Any, summary: ScanSummary, top: int = TOP) -> Any:
    """Horizontal bars of the ``top`` units' KL mean, most sensitive on top; recommended units
    in a second colour."""
    rows = sorted(summary.units, key=lambda r: r.rank)[:top]
    figure = figure_class(figsize=(8, 1.2 + 0.35 * max(len(rows), 1)), layout="constrained")
    axes = figure.add_subplot()
    chosen = set(summary.recommended)
    values = [row.kl_mean if math.isfinite(row.kl_mean) else 0.0 for row in rows]
    colours = ["tab:red" if row.name in chosen else "tab:blue" for row in rows]
    axes.barh(range(len(rows)), values, color=colours)
    axes.set_yticks(range(len(rows)), [_name(row.name)[-40:] for row in rows], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("KL mean vs unquantized (nats/token, top-k lower bound), one unit quantized")
    axes.set_title(
        printable(f"{summary.model} · {summary.spec}")[:90] + "\nred: recommended to keep",
        fontsize=9,
    )
    return figure


class Scans(Section):
    """The "Layer sensitivity" section: every scan read beside the runs (``Report.scans``),
    for the whole report: a table each, their data, a ranking chart each."""

    name = "scans"

    def report_grids(self, report: Report) -> list[Grid]:
        return [scan_grid(summary) for summary in report.scans]

    def report_data(self, report: Report) -> dict[str, Any]:
        return {"scans": [asdict(summary) for summary in report.scans]} if report.scans else {}

    def report_charts(self, report: Report) -> list[Chart]:
        """``scan_<model>_<unit>-<8 hex of the file's path>.png`` per scan."""
        return [
            Chart(
                f"scan_{slug(summary.model)}_{slug(summary.unit, 16)}-{digest(summary.path)}",
                summary.path,
                lambda figure_class, s=summary: scan_chart(figure_class, s),
            )
            for summary in report.scans
        ]


SCANS = Scans()
