"""The SQNR tables' figures: the worst-layers bars (:func:`~.sqnr.hbar`) span the figures
shown, not 0 dB up; a KL that is rounding is 0 in the divergence table."""

from __future__ import annotations

import math
from pathlib import Path

from test_report_trust import NONE_RUN, fixture, put

from qeval_plugins.report.compare import compare
from qeval_plugins.report.grid import header_line
from qeval_plugins.report.load import load_runs
from qeval_plugins.report.sqnr import (
    BAR_WIDTH,
    SqnrRun,
    bar_scale,
    divergence_grid,
    hbar,
    sqnr_grids,
    sqnr_summary,
)

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


def divergence_row(run: SqnrRun) -> dict[str, str]:
    grid = divergence_grid("m", [run])
    return {
        header_line(header): "".join(text for text, _ in cell)
        for header, cell in zip(grid.headers, grid.rows[0], strict=True)
    }


def figures(kl: float) -> dict[str, float]:
    return {
        "kl_mean": kl,
        "kl_mean_err": kl / 30,
        "kl_median": kl / 2,
        "kl_p99": kl * 3,
        "kl_max": kl * 9,
        "top1_agreement": 1.0,
    }


def test_the_unquantized_run_shows_kl_0_and_no_worst_token(tmp_path):
    """``none`` against itself showed KL ``7.7e-10 ±2.3e-11`` and a "worst token": the
    reference's 2-byte log-probability codes round, within ``kl_error_bound_max``."""
    data = fixture(NONE_RUN)
    data["results"]["qeval_sqnr"].update(
        {f"{name},none": value for name, value in figures(7.7e-10).items()}
    )
    data["config"]["qeval"]["sqnr"]["divergence"] = {
        "kl_mode": "exact",
        "kl_error_bound_max": 1e-8,
        "worst_tokens": [{"context": "the", "token": " cat"}],
    }
    (run,) = load_runs([put(tmp_path, "results.json", data)])[0]
    summary = sqnr_summary(run)
    assert summary.worst_token == ""
    row = divergence_row(summary)
    kls = ("KL mean nats", "KL median nats", "KL p99 nats", "KL max nats")
    assert [row[name] for name in kls] == ["0", "0", "0", "0"]
    assert row["worst token"] == "—" and row["top-1 agree"] == "1.000"


def test_a_quantized_run_within_the_bound_shows_0_and_above_it_its_figures():
    within = SqnrRun("q", figures(1e-10), {}, [], [], "exact", False, 1e-8, "…the⟨ cat⟩")
    assert divergence_row(within)["KL mean nats"] == "0"
    assert divergence_row(within)["worst token"] == "—"  # its largest KL is rounding too
    above = SqnrRun("q", figures(0.012), {}, [], [], "exact", False, 1e-8, "…the⟨ cat⟩")
    row = divergence_row(above)
    assert row["KL mean nats"] == "0.012 ±0.0004" and row["worst token"] == "…the⟨ cat⟩"
