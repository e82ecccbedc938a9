"""What ``qeval report`` reads from its paths: the runs of the results files (:mod:`.load`) and
the layer-sensitivity scans (``scan.json`` of ``qeval scan``, :mod:`.scan`) beside them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qeval_plugins.report.comparison import ScanSummary
from qeval_plugins.report.load import load_runs
from qeval_plugins.report.runs import Run
from qeval_plugins.report.scan import find_scans, is_scan_file


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
    ``paths``; a ``scan.json`` named itself is read as a scan only."""
    scans, scan_warnings = find_scans(list(paths))
    runs, warnings = load_runs([path for path in paths if not is_scan_file(path)])
    return Inputs(runs, warnings, scans, scan_warnings)
