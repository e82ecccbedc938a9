"""The sections of ``qeval report``, in the order every view shows them.

Adding a section is one module with a :class:`~.section.Section` and one entry here:
:func:`~.compare.compare` reads it, :mod:`.render` and :mod:`.export` draw its grids,
:mod:`.data` and the CSV export write its data, :mod:`.plot` draws its charts.
"""

from __future__ import annotations

from qeval_plugins.report.outliers import OUTLIERS
from qeval_plugins.report.scan import SCANS
from qeval_plugins.report.section import Section
from qeval_plugins.report.sensitivity import SENSITIVITY
from qeval_plugins.report.sqnr import SQNR
from qeval_plugins.report.summary import SUMMARY

SECTIONS: list[Section] = [SUMMARY, SQNR, SENSITIVITY, OUTLIERS, SCANS]
