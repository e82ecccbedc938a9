"""The worst-layers table's bars (:func:`~.sqnr.hbar`) span the figures shown, not 0 dB up."""

from __future__ import annotations

import math
from pathlib import Path

from qeval_plugins.report.compare import compare
from qeval_plugins.report.load import load_runs
from qeval_plugins.report.sqnr import BAR_WIDTH, bar_scale, hbar, sqnr_grids

DATA = Path(__file__).resolve().parents[1] / "data" / "report" / "qeval-tiny"


def eighths(bar: str) -> int:
    return 8 * bar.count("█") + sum(" ▏▎▍▌▋▊▉".index(c) for c in bar if c != "█")


def test_close_figures_get_visibly_different_bars():
    """Bars from 0 dB drew 18.15 and 18.43 dB alike (both ~ a full bar)."""
    low, high = hbar(18.15, 18.15, 18.43), hbar(18.43, 18.15, 18.43)
    assert (eighths(low), eighths(high)) == (1, BAR_WIDTH * 8)
    assert eighths(hbar(18.29, 18.15, 18.43)) == 1 + round(0.5 * (BAR_WIDTH * 8 - 1))
    assert hbar(-math.inf, 18.15, 18.43) == ""
    assert eighths(hbar(5.0, 5.0, 5.0)) == BAR_WIDTH * 8  # one figure: a full bar


def test_the_worst_layers_caption_states_the_scale():
    runs, warnings = load_runs([DATA / "none", DATA / "bnb-nf4", DATA / "rtn-bits4-sqnr"])
    [comparison] = compare(runs, warnings=warnings).comparisons
    [worst] = [grid for grid in sqnr_grids(comparison) if "worst layers" in grid.title]
    values = [float(row[2][0][0]) for row in worst.rows]
    assert worst.caption == bar_scale(min(values), max(values))
    assert worst.caption == "bars from 16.42 dB (▏) to 20.69 dB (full), not from 0 dB"
    bars = {float(row[2][0][0]): eighths(row[3][0][0]) for row in worst.rows}
    assert bars[min(values)] == 1 and bars[max(values)] == BAR_WIDTH * 8
