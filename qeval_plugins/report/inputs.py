"""What ``qeval report`` reads from its paths: the runs of the results files (:mod:`.load`) and
the layer-sensitivity scans (``scan.json`` of ``qeval scan``, :mod:`.scan`) beside them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qeval_plugins.report.comparison import ScanSummary
from qeval_plugins.report.load import load_runs, results_files_in
from qeval_plugins.report.runs import Run
from qeval_plugins.report.scan import find_scans, is_scan_file, scan_files_in


@dataclass
class Inputs:
    """The runs and scans read, and one warning line per problem with either."""

    runs: list[Run]
    run_warnings: list[str]
    scans: list[ScanSummary]
    scan_warnings: list[str]

    @property
    def warnings(self) -> list[str]:
        """Every warning line, the runs' first."""
        return [*self.run_warnings, *self.scan_warnings]


def load_inputs(paths: Sequence[str | Path]) -> Inputs:
    """The runs (:func:`~.load.load_runs`) and the scans (:func:`~.scan.find_scans`) in
    ``paths``; a ``scan.json`` named itself, and a folder holding scans but no results files,
    are read as scans only (no "no results*.json files" warning for them)."""
    scans, scan_warnings = find_scans(list(paths))
    runs, warnings = load_runs([path for path in paths if not _scans_only(Path(path))])
    return Inputs(runs, warnings, scans, scan_warnings)


def _scans_only(path: Path) -> bool:
    """Whether ``path`` is a ``scan.json`` file or a folder with scans and no results files."""
    if path.is_dir():
        return bool(scan_files_in(path)) and not results_files_in(path)
    return is_scan_file(path)
