"""``qeval report`` flags a run whose scores are NaN: its model's outputs were not finite.

Results files written before the backend refused such models hold runs of a quantizer that made
NaN weights: NaN accuracy or perplexity, NaN logit SQNR and KL, next to an accuracy of 0.0 that
reads like a bad model's. Such a run gets one warning line and ``[NaN outputs]`` in its label,
in the terminal table and in every export.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from qeval_plugins.cli.main import main
from qeval_plugins.report.compare import compare
from qeval_plugins.report.load import load_runs
from qeval_plugins.report.render import render

DATA = Path(__file__).resolve().parents[1] / "data" / "report" / "qeval-tiny"
NONE_RUN = DATA / "none" / "results_2026-11-23T10-00-00.000000.json"
RTN2_RUN = next((DATA / "rtn-bits2").glob("results*.json"))


def nan_run(folder: Path, **scores: str) -> Path:
    """The ``rtn:bits=2`` fixture with ``task/metric=value`` scores written as JSON numbers
    (``NaN`` as Python's json writes it, which lm-eval's results files use)."""
    data = json.loads(RTN2_RUN.read_text())
    for name, value in scores.items():
        task, metric = name.split("__")
        data["results"].setdefault(task, {"alias": task})[f"{metric},none"] = float(value)
    path = folder / "rtn-bits2" / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    return path


def table(paths: list[Path]) -> tuple[str, list[str]]:
    runs, warnings = load_runs(paths)
    report = compare(runs, None, warnings=warnings)
    console = Console(width=120, record=True, color_system=None, file=io.StringIO())
    render(report, console)
    return console.export_text(), report.warnings


def test_nan_accuracy_flags_the_run_in_the_warnings_and_the_table(tmp_path):
    """acc NaN, acc_norm 0.0 (what NaN log-likelihoods give): before, the run was a row
    like any other, and the warning only said the NaN was left out."""
    path = nan_run(tmp_path, qeval_demo_facts__acc="nan", qeval_demo_facts__acc_norm="0.0")
    text, warnings = table([NONE_RUN, path])
    (warning,) = [w for w in warnings if str(path) in w]
    assert "NaN in qeval_demo_facts/acc: the model's outputs were not finite" in warning
    assert "no score of this run is a measurement; left out, run marked [NaN outputs]" in warning
    (row,) = [line for line in text.splitlines() if line.lstrip().startswith("rtn:bits=2")]
    assert "rtn:bits=2 [NaN outputs]" in row
    nones = [line for line in text.splitlines() if line.lstrip().startswith("none")]
    assert nones and not any("NaN outputs" in line for line in nones)


def test_nan_logit_sqnr_and_kl_flag_the_run(tmp_path):
    path = nan_run(tmp_path, qeval_sqnr__logit_sqnr_db="nan", qeval_sqnr__kl_mean="nan")
    runs, warnings = load_runs([path])
    (run,) = runs
    assert run.label == "rtn:bits=2 [NaN outputs]"
    assert run.nan_scores == ("qeval_sqnr/logit_sqnr_db", "qeval_sqnr/kl_mean")
    (warning,) = warnings
    assert "NaN in qeval_sqnr/logit_sqnr_db, qeval_sqnr/kl_mean: the model's outputs" in warning


def test_a_flagged_run_is_still_named_by_its_spec(tmp_path, capsys):
    """``--baseline rtn:bits=2`` names the flagged run (the note is not part of the spec), and
    the JSON export carries the marked label."""
    path = nan_run(tmp_path, qeval_demo_facts__acc="nan")
    out = tmp_path / "report.json"
    assert (
        main(["report", str(NONE_RUN), str(path), "--baseline", "rtn:bits=2", "--out", str(out)])
        == 0
    )
    exported = json.loads(out.read_text())
    labels = [run["label"] for model in exported["models"] for run in model["runs"]]
    assert "rtn:bits=2 [NaN outputs]" in labels
    assert "warning: " in capsys.readouterr().out


def test_finite_runs_are_not_flagged():
    runs, warnings = load_runs([NONE_RUN, RTN2_RUN])
    assert [run.label for run in runs] == ["none", "rtn:bits=2"]
    assert not any("NaN" in warning for warning in warnings)
