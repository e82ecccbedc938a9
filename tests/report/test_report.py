"""``qeval report``'s engine: reading results files, deltas against hand-computed values, warnings
for bad inputs, the terminal snapshot, the four exports and the charts.

Fixtures (tests/data/report, hand-written numbers):

* qeval-tiny: ``none`` (facts acc 0.80 ± 0.040, word ppl 10.0, qeval_sqnr: all ∞),
  ``rtn:bits=4`` (0.78 ± 0.041, 10.5; its qeval_sqnr in a second, later file),
  ``bnb-nf4`` (0.60 ± 0.049, 12.0, qeval_sqnr; named results.json as ``qeval run`` writes it),
  ``rtn:bits=2`` (facts only: 0.25 ± 0.0435 — a different task set);
* HuggingFaceTB/SmolLM2-135M: a plain ``--model hf`` run (0.70 ± 0.046, 20.0; model_args as a
  string) and ``rtn:bits=8`` (0.69 ± 0.046, 19.8) plus an older duplicate of it (0.50, 25.0);
* /models/mini-llama: only ``bnb-int8`` (no baseline), its word perplexity NaN;
* broken/: a corrupt, a truncated and a foreign (``{"foo": 1}``) results*.json;
* sensitivity/sens-model (named ``*.json``, not ``results*.json``, so the folder scan above leaves
  them out; read file by file): ``none`` and ``bnb-nf4`` over qeval_temperature_{0.0,0.5,0.8,1.2}
  (listed out of order) and qeval_top_k_{1,10,40,100,all} (``all`` = metadata top_k 0, 10 without
  a ``configs`` entry) with their summaries; bnb-nf4's top_k sweep is a second, later file.

``QEVAL_UPDATE_SNAPSHOTS=1 python -m pytest tests/report/test_report.py`` rewrites the snapshots.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
from html.parser import HTMLParser
from pathlib import Path

import pytest
from rich.console import Console

from qeval_plugins.core.errors import QevalError
from qeval_plugins.report.compare import compare, relative_degradation_pct, significant
from qeval_plugins.report.data import report_data
from qeval_plugins.report.export import FORMATS, export
from qeval_plugins.report.load import load_runs, read_run
from qeval_plugins.report.paired import SETTINGS
from qeval_plugins.report.plot import plot
from qeval_plugins.report.render import render
from qeval_plugins.report.sensitivity import setting_label, sweep_setting, sweeps_of
from qeval_plugins.report.sqnr import sqnr_runs

TESTS = Path(__file__).resolve().parents[1]
DATA = TESTS / "data" / "report"
SNAPSHOT = TESTS / "snapshots" / "report_120.txt"
SENSITIVITY_SNAPSHOT = TESTS / "snapshots" / "report_sensitivity_120.txt"
SENS = DATA / "sensitivity" / "sens-model"
SMOL = "HuggingFaceTB/SmolLM2-135M"


@pytest.fixture(scope="module")
def loaded():
    """Runs and warnings of tests/data/report, read with paths relative to tests/."""
    previous = os.getcwd()
    os.chdir(TESTS)
    try:
        return load_runs(["data/report"])
    finally:
        os.chdir(previous)


@pytest.fixture(scope="module")
def report(loaded):
    runs, warnings = loaded
    return compare(runs, warnings=warnings)


@pytest.fixture(scope="module")
def exported(report, tmp_path_factory) -> dict:
    path = export(report, "json", tmp_path_factory.mktemp("export") / "report.json")
    return json.loads(path.read_text())


def scores_of(data: dict, model: str, label: str) -> dict:
    comparison = next(m for m in data["models"] if m["model"] == model)
    return next(run for run in comparison["runs"] if run["label"] == label)["scores"]


# Hand-computed: Δ = q − b; % = 100·(b − q)/|b| (↑) or 100·(q − b)/|b| (↓);
# significant = |Δ| > √(se_b² + se_q²), None when a stderr is "N/A".
EXPECTED = [
    # facts: Δ = 0.78 − 0.80; 100·0.02/0.80 = 2.5 %; √(0.040² + 0.041²) = 0.0573 ≥ 0.02 → ns
    ("qeval-tiny", "rtn:bits=4", "qeval_demo_facts", 0.78, -0.02, 2.5, False),
    # word ppl ↓: Δ = 10.5 − 10.0; 100·(10.5 − 10.0)/10.0 = 5 %; stderr N/A
    ("qeval-tiny", "rtn:bits=4", "qeval_demo_ppl", 10.5, 0.5, 5.0, None),
    # facts: Δ = −0.20; 100·0.20/0.80 = 25 %; √(0.040² + 0.049²) = 0.0633 < 0.20 → significant
    ("qeval-tiny", "bnb-nf4", "qeval_demo_facts", 0.60, -0.20, 25.0, True),
    # word ppl ↓: Δ = +2.0; 100·2.0/10.0 = 20 %
    ("qeval-tiny", "bnb-nf4", "qeval_demo_ppl", 12.0, 2.0, 20.0, None),
    # facts: Δ = −0.55; 100·0.55/0.80 = 68.75 %; √(0.040² + 0.0435²) = 0.0591 → significant
    ("qeval-tiny", "rtn:bits=2", "qeval_demo_facts", 0.25, -0.55, 68.75, True),
    # vs the plain hf run: Δ = −0.01; 100·0.01/0.70 = 1.4286 %; 0.046·√2 = 0.0651 → ns
    (SMOL, "rtn:bits=8", "qeval_demo_facts", 0.69, -0.01, 100 * 0.01 / 0.70, False),
    # word ppl ↓ improved: Δ = −0.2; 100·(19.8 − 20.0)/20.0 = −1 % (negative = better)
    (SMOL, "rtn:bits=8", "qeval_demo_ppl", 19.8, -0.2, -1.0, None),
]


@pytest.mark.parametrize(("model", "label", "task", "value", "delta", "pct", "sig"), EXPECTED)
def test_deltas_match_hand_computed_values(exported, model, label, task, value, delta, pct, sig):
    score = scores_of(exported, model, label)[task]
    assert score["value"] == pytest.approx(value)
    assert score["delta"] == pytest.approx(delta)
    assert score["relative_degradation_pct"] == pytest.approx(pct)
    assert score["significant"] is sig


def test_baseline_rows_and_infinite_sqnr_have_no_delta(exported):
    baseline = scores_of(exported, "qeval-tiny", "none")
    assert all(score["delta"] is None for score in baseline.values())
    assert baseline["qeval_sqnr"]["value"] == "inf"  # strict JSON: ∞ as the string "inf"
    nf4 = scores_of(exported, "qeval-tiny", "bnb-nf4")["qeval_sqnr"]
    assert nf4["metric"] == "logit_sqnr_db"
    assert (nf4["value"], nf4["delta"], nf4["relative_degradation_pct"]) == (11.0577, None, None)


def test_pure_formulas():
    assert relative_degradation_pct(0.80, 0.60, True) == pytest.approx(25.0)
    assert relative_degradation_pct(10.0, 12.0, False) == pytest.approx(20.0)
    # negative baseline (ppl_delta, ↓): 100·(−1 − (−2))/|−2| = 50 % worse
    assert relative_degradation_pct(-2.0, -1.0, False) == pytest.approx(50.0)
    assert relative_degradation_pct(0.0, 1.0, True) is None
    assert relative_degradation_pct(1.0, 0.5, None) is None
    # √(0.03² + 0.04²) = 0.05: within (not significant) at the boundary, significant above it
    assert significant(0.05, 0.03, 0.04) is False
    assert significant(-0.0501, 0.03, 0.04) is True
    assert significant(0.5, None, 0.04) is None


def test_each_bad_input_gives_exactly_one_warning(report):
    warnings = report.warnings
    assert len(warnings) == 6, warnings
    for needle, meaning in [
        ("results_corrupt.json", "not valid JSON"),
        ("results_truncated.json", "truncated JSON"),
        ("results_foreign.json", "not an lm-eval results file"),
        ("mini-llama/bnb-int8/", "NaN in qeval_demo_ppl/word_perplexity"),
        ("two rtn:bits=8 runs", "kept the newer data/report/smollm2/rtn-bits8/"),
        ("qeval-tiny: runs cover different tasks", "rtn:bits=2 lacks qeval_demo_ppl, qeval_sqnr"),
    ]:
        matching = [w for w in warnings if needle in w]
        assert len(matching) == 1, (needle, warnings)
        assert meaning in matching[0]


def test_grouping_baselines_and_merging(report):
    by_name = {c.name: c for c in report.comparisons}
    assert list(by_name) == [SMOL, "mini-llama", "qeval-tiny"]
    tiny = by_name["qeval-tiny"]
    assert tiny.baseline.label == "none"
    assert [row.run.label for row in tiny.rows] == ["none", "bnb-nf4", "rtn:bits=4", "rtn:bits=2"]
    assert list(tiny.tasks.items()) == [
        ("qeval_demo_facts", "acc"),
        ("qeval_demo_ppl", "word_perplexity"),
        ("qeval_sqnr", "logit_sqnr_db"),
    ]
    rtn4 = next(row for row in tiny.rows if row.run.label == "rtn:bits=4")
    assert set(rtn4.scores) == {"qeval_demo_facts", "qeval_demo_ppl", "qeval_sqnr"}  # 2 files
    assert len(rtn4.run.merged) == 1
    assert (rtn4.bits_per_param, rtn4.simulated) == (4.125, True)  # effective bits of simulated
    smol = by_name[SMOL]
    assert smol.baseline.label == "hf:dtype=float32"
    assert "plain hf run" in smol.baseline_reason
    assert smol.rows[0].bits_per_param == 32.0  # from model_dtype
    assert smol.rows[0].size_mib == pytest.approx(134515008 * 4 / 2**20)
    mini = by_name["mini-llama"]
    assert mini.baseline is None
    assert mini.baseline_reason.startswith("no baseline:")
    assert all(score.delta is None for row in mini.rows for score in row.scores.values())
    assert [s.label for s in sqnr_runs(tiny)] == ["none", "bnb-nf4", "rtn:bits=4"]
    assert sqnr_runs(tiny)[2].worst[0] == ("model.layers.0.mlp.down_proj", 16.42)


def test_compare_does_not_change_its_input(loaded, report):
    runs, warnings = loaded
    again = compare(runs, warnings=warnings)
    assert report_data(again) == report_data(report)


def test_baseline_option(loaded):
    runs, _ = loaded
    chosen = compare(runs, "rtn:bits=4")
    tiny = next(c for c in chosen.comparisons if c.name == "qeval-tiny")
    assert tiny.baseline.label == "rtn:bits=4"
    none = next(row for row in tiny.rows if row.run.label == "none")
    facts = none.scores["qeval_demo_facts"]
    # vs 0.78: Δ = +0.02, % = 100·(0.78 − 0.80)/0.78 = −2.564 (better)
    assert facts.delta == pytest.approx(0.02)
    assert facts.relative_degradation_pct == pytest.approx(-200 / 78)
    assert sum("no run is --baseline rtn:bits=4" in w for w in chosen.warnings) == 2
    by_alias = compare(runs, "nf4").comparisons[2]
    assert by_alias.baseline.label == "bnb-nf4"
    by_name = next(c for c in compare(runs, "hf").comparisons if c.model == SMOL)
    assert by_name.baseline.label == "hf:dtype=float32"


def rendered(report, width: int = 120) -> str:
    """The report as plain terminal text, trailing spaces stripped."""
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    render(report, console)
    return "".join(line.rstrip() + "\n" for line in console.export_text().splitlines())


def check_snapshot(text: str, snapshot: Path) -> None:
    if os.environ.get("QEVAL_UPDATE_SNAPSHOTS") == "1":
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot.write_text(text, encoding="utf-8")
    assert snapshot.exists(), f"missing {snapshot}; run with QEVAL_UPDATE_SNAPSHOTS=1 to create it"
    assert text == snapshot.read_text(encoding="utf-8")


def test_terminal_snapshot(report):
    check_snapshot(rendered(report), SNAPSHOT)


def test_tables_fit_a_narrow_terminal(report):
    console = Console(width=80, record=True, color_system=None, force_terminal=False)
    render(report, console)
    lines = console.export_text().splitlines()
    assert max(map(len, lines)) <= 80
    assert any("no baseline: no quantizer=none" in line for line in lines)


def test_exports_are_written_and_parse(report, tmp_path):
    paths = {
        fmt: export(report, fmt, tmp_path / f"r.{fmt}")
        for fmt in ("markdown", "csv", "json", "html")
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.html", "r.json", "r.markdown"]

    data = json.loads(paths["json"].read_text())
    assert [m["name"] for m in data["models"]] == [SMOL, "mini-llama", "qeval-tiny"]
    assert len(data["warnings"]) == 6

    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert len(rows) == sum(len(run["scores"]) for m in data["models"] for run in m["runs"])
    nf4 = next(r for r in rows if r["run"] == "bnb-nf4" and r["task"] == "qeval_demo_facts")
    assert float(nf4["relative_degradation_pct"]) == pytest.approx(25.0)
    assert nf4["significant"] == "True"
    assert (
        next(r for r in rows if r["run"] == "none" and r["task"] == "qeval_sqnr")["value"] == "inf"
    )

    markdown = paths["markdown"].read_text()
    assert "## qeval-tiny" in markdown
    assert "| **bnb-nf4** | 15.54 |" in markdown

    page = paths["html"].read_text()
    checker = _TagBalance()
    checker.feed(page)
    # 3 summaries; qeval-tiny's SQNR, per-layer and worst layers
    assert checker.open == [] and checker.tables == 6
    assert '<span class="red">-0.200 +25.0%</span>' in page


class _TagBalance(HTMLParser):
    """Counts tables and checks that every opened table element is closed."""

    def __init__(self):
        super().__init__()
        self.open: list[str] = []
        self.tables = 0

    TAGS = ("table", "thead", "tbody", "tr", "th", "td", "span")

    def handle_starttag(self, tag, attrs):
        if tag in self.TAGS:
            self.open.append(tag)
            self.tables += tag == "table"

    def handle_endtag(self, tag):
        if tag in self.TAGS:
            assert self.open and self.open.pop() == tag


def test_unknown_format_is_a_one_line_user_error(report, tmp_path):
    with pytest.raises(QevalError, match="unknown report format 'xlsx'") as error:
        export(report, "xlsx", tmp_path / "r.xlsx")
    assert "\n" not in str(error.value)
    assert not list(tmp_path.iterdir())


def test_plots_are_png_files(report, tmp_path):
    written = plot(report, tmp_path / "charts")
    names = sorted(path.name for path in written)
    assert names == sorted(
        [
            "HuggingFaceTB_SmolLM2-135M__qeval_demo_facts.png",
            "HuggingFaceTB_SmolLM2-135M__qeval_demo_ppl.png",
            "mini-llama__qeval_demo_facts.png",
            "mini-llama__qeval_demo_ppl.png",
            "qeval-tiny__qeval_demo_facts.png",
            "qeval-tiny__qeval_demo_ppl.png",
            "qeval-tiny__qeval_sqnr.png",
            "qeval-tiny__sqnr_layers.png",
        ]
    )
    for path in written:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1024, path


def write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_odd_files_never_crash(tmp_path):
    """Each odd file: at most one warning per problem, and the report still renders."""
    folder = tmp_path / "odd"
    folder.mkdir()
    write(folder, "results_list.json", [1, 2])
    write(folder, "results_empty.json", "")
    write(folder, "results_no_numbers.json", {"results": {"t": {"alias": "t", "acc,none": "x"}}})
    odd = {
        "results": {
            "t": {
                "word_perplexity,none": 5.0,
                "word_perplexity_stderr,none": "N/A",
                "acc,none": True,
                "acc_stderr,none": 0.1,
            },
            "u": "not a dict",
            "v": {"acc,none": 0.5, "acc_stderr,none": float("nan")},
        },
        "config": {"model": "vllm", "model_args": "pretrained=/m/x,tensor_parallel_size=2"},
    }
    write(folder, "results_odd.json", json.dumps(odd))
    no_stderr = {"results": {"t": {"acc,none": 0.5}}, "model_name": "other"}
    write(folder, "results_no_stderr.json", no_stderr)
    (folder / ".partial-123").mkdir()  # an unfinished ``qeval run`` folder: not read
    write(folder / ".partial-123", "results_2026.json", no_stderr)
    runs, warnings = load_runs([folder, folder / "results_odd.json", tmp_path / "missing"])
    assert len(runs) == 2
    assert len(warnings) == 8, warnings
    for name, meanings in [
        ("results_list.json", ["not an lm-eval results file"]),
        ("results_empty.json", ["empty file; skipped"]),
        ("results_no_numbers.json", ["not a number: t/acc (text)", "no numeric metrics"]),
        # read once although named twice
        (
            "results_odd.json",
            [
                "not a number: t/acc (true/false); left out, not compared",
                "stderr negative or not finite for v/acc; treated as missing",
            ],
        ),
        ("results_no_stderr.json", ["no stderr for t/acc; significance not assessed"]),
        ("missing", ["no such file or folder"]),
    ]:
        lines = [w for w in warnings if f"{name}:" in w]
        assert len(lines) == len(meanings)
        assert all(meaning in line for meaning, line in zip(meanings, lines, strict=True)), lines
    run = next(run for run in runs if run.path.name == "results_odd.json")
    assert (run.model, run.label) == ("/m/x", "vllm")
    assert set(run.metrics) == {"t", "v"}  # acc=True is not a number; "u" is not a task
    assert run.metrics["t"]["word_perplexity"].higher_is_better is False  # built-in table
    assert run.metrics["v"]["acc"].stderr is None
    console = Console(width=100, record=True, color_system=None)
    render(compare(runs, warnings=warnings), console)
    assert "no baseline" in console.export_text()


MUTANTS = (None, "x", "inf", "-inf", "NaN", "N/A", [], {}, True, -1, 0, 1e308)


def mutate(data, rng: random.Random) -> None:
    """Replace one value anywhere in ``data`` by a value of another type or an extreme."""
    slots = []
    stack = [data]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            slots.append((node, key))
            if isinstance(value, dict | list):
                stack.append(value)
    parent, key = rng.choice(slots)
    parent[key] = rng.choice(MUTANTS)


def test_mutated_results_files_never_crash(tmp_path):
    """300 fixture files with 1–4 values each replaced: everything reads, renders and exports."""
    rng = random.Random(0)
    sources = [p for p in sorted(DATA.rglob("results*.json")) if p.parent.name != "broken"]
    for index in range(300):
        data = json.loads(rng.choice(sources).read_text())
        for _ in range(rng.randint(1, 4)):
            mutate(data, rng)
        (tmp_path / f"m{index:03d}").mkdir()
        write(tmp_path / f"m{index:03d}", "results.json", data)
    runs, warnings = load_runs([tmp_path])
    assert runs
    for baseline in (None, "none", "hf"):
        report = compare(runs, baseline, warnings=warnings)
        render(report, Console(width=100, file=io.StringIO()))
        for fmt in FORMATS:
            export(report, fmt, tmp_path / "out" / f"report.{fmt}")
    json.loads((tmp_path / "out" / "report.json").read_text())


def test_hf_baseline_need_not_run_qeval_sqnr(tmp_path):
    """Only --model qeval can run qeval_sqnr: an hf run without it is not a different task set."""
    hf = json.loads((DATA / "smollm2/hf/results_2026-11-22T09-00-00.000000.json").read_text())
    quantized = json.loads((DATA / "qeval-tiny/bnb-nf4/results.json").read_text())
    quantized["config"]["model_args"]["pretrained"] = SMOL
    runs = [
        read_run(write(tmp_path, name, data))[0] for name, data in [("a", hf), ("b", quantized)]
    ]
    report = compare(runs)
    assert report.warnings == []
    assert report.comparisons[0].baseline.backend == "hf"
    assert report.comparisons[0].rows[1].scores["qeval_sqnr"].delta is None


def test_label_without_spec_and_folded_groups(tmp_path):
    data = {
        "results": {
            "mmlu": {"acc,none": 0.4, "acc_stderr,none": 0.01},
            "mmlu_stem": {"acc,none": 0.3, "acc_stderr,none": 0.02},
            "mmlu_algebra": {"acc,none": 0.2, "acc_stderr,none": 0.04},
        },
        "group_subtasks": {"mmlu": ["mmlu_stem"], "mmlu_stem": ["mmlu_algebra"]},
        "config": {
            "model": "qeval",
            "model_args": {"pretrained": "m", "quantizer": "rtn", "group_size": 0, "bits": 3},
            "qeval": {"quantizer": "rtn", "options": {"bits": 3, "group_size": 0, "format": "int"}},
        },
    }
    run, warnings = read_run(write(tmp_path, "results.json", data))
    assert warnings == []
    assert run.label == "rtn:bits=3:group_size=0"  # the options the user gave, sorted
    assert list(run.metrics) == ["mmlu"]


def test_empty_report_renders():
    console = Console(width=80, record=True, color_system=None)
    render(compare([]), console)
    assert "No runs to report." in console.export_text()
    assert report_data(compare([])) == {"models": [], "significance": SETTINGS, "warnings": []}


# ---------------------------------------------------------------- sampling sensitivity

# Hand-written in tests/data/report/sensitivity/sens-model: rougeL and agree_tokens per setting.
TEMPERATURE_ROUGE = {
    "none": {"0.0": 0.412, "0.5": 0.398, "0.8": 0.371, "1.2": 0.305},
    "bnb-nf4": {"0.0": 0.405, "0.5": 0.362, "0.8": 0.318, "1.2": 0.251},
}
NF4_AGREE = {"0.0": 0.874, "0.5": 0.612, "0.8": 0.455, "1.2": 0.301}
TOP_K_ROUGE = {
    "none": {"1": 0.409, "10": 0.388, "40": 0.372, "100": 0.366, "all": 0.358},
    "bnb-nf4": {"1": 0.401, "10": 0.347, "40": 0.320, "100": 0.311, "all": 0.296},
}
SUMMARIES = {  # qeval_temperature_summary of each run
    "none": {"rougeL_slope": -0.0872, "rougeL_spread": 0.107, "rougeL_gap": 0.0},
    "bnb-nf4": {"rougeL_slope": -0.1282, "rougeL_spread": 0.154, "rougeL_gap": 0.0445},
}


@pytest.fixture(scope="module")
def sens_report():
    runs, warnings = load_runs(sorted(SENS.glob("*.json")))
    return compare(runs, warnings=warnings)


@pytest.fixture(scope="module")
def sens_json(sens_report) -> dict:
    (model,) = report_data(sens_report)["models"]
    return {sweep["sweep"]: sweep for sweep in model["sensitivity"]}


def test_sensitivity_tables_in_numeric_order_with_the_band_marked(sens_report):
    assert sens_report.warnings == []
    text = rendered(sens_report)
    lines = text.splitlines()
    header = next(line for line in lines if "temperature →" in line).split()
    assert header[:6] == ["run", "temperature", "→", "0.0", "0.5*", "0.8*"]
    assert header[6] == "1.2"
    row = next(line for line in lines if line.startswith("bnb-nf4") and "rougeL ↑" in line)
    expected = TEMPERATURE_ROUGE["bnb-nf4"]
    assert row.split()[3:7] == [f"{expected[s]:.3f}" for s in ("0.0", "0.5", "0.8", "1.2")]
    assert row.split()[7:] == ["-0.128", "0.154", "0.044"]  # slope, spread, gap
    agree = lines[lines.index(row) + 1].split()
    assert agree[2:] == [f"{NF4_AGREE[s]:.3f}" for s in ("0.0", "0.5", "0.8", "1.2")]
    assert "* = 0.5–0.8 band (Roy 2023)" in text
    top_k = next(line for line in lines if "top_k →" in line).split()
    assert top_k[3:8] == ["1", "10", "40", "100", "all"]  # numeric order, unrestricted last
    assert text.index("temperature →") > text.index("qeval_temperature_summary")  # after summary
    check_snapshot(text, SENSITIVITY_SNAPSHOT)


def test_sensitivity_json_matches_the_input_files(sens_json):
    temperature, top_k = sens_json["temperature"], sens_json["top_k"]
    assert temperature["settings"] == ["0.0", "0.5", "0.8", "1.2"]
    assert temperature["band"] == [0.5, 0.8]
    assert top_k["settings"] == ["1", "10", "40", "100", "all"]
    assert top_k["band"] is None
    for sweep, rouge in [(temperature, TEMPERATURE_ROUGE), (top_k, TOP_K_ROUGE)]:
        assert [run["label"] for run in sweep["runs"]] == ["none", "bnb-nf4"]
        assert [run["is_baseline"] for run in sweep["runs"]] == [True, False]
        for run in sweep["runs"]:
            values = {setting: m["rougeL"] for setting, m in run["metrics"].items()}
            assert values == rouge[run["label"]]
            assert list(values) == sweep["settings"]
    assert {run["label"]: run["summary"] for run in temperature["runs"]} == SUMMARIES
    nf4 = temperature["runs"][1]["metrics"]
    assert {setting: metrics["agree_tokens"] for setting, metrics in nf4.items()} == NF4_AGREE
    # every metric of every setting is the input file's number for that task
    for path in SENS.glob("*.json"):
        data = json.loads(path.read_text())
        label = data["config"]["qeval"]["spec"]
        for task, entry in data["results"].items():
            name, _, setting = task.rpartition("_")
            sweep = sens_json.get(name.removeprefix("qeval_"))
            if sweep is None or setting == "summary":
                continue
            (run,) = [run for run in sweep["runs"] if run["label"] == label]
            numbers = {k.split(",")[0]: v for k, v in entry.items() if "_stderr" not in k}
            del numbers["alias"]
            assert run["metrics"][setting] == numbers, (path.name, task)


def test_per_setting_tasks_are_not_summary_columns(sens_report, tmp_path):
    (comparison,) = sens_report.comparisons
    assert comparison.tasks == {
        "qeval_temperature_summary": "rougeL_gap",
        "qeval_top_k_summary": "rougeL_gap",
    }
    nf4 = comparison.rows[1]
    assert nf4.scores["qeval_temperature_summary"].delta == pytest.approx(0.0445)
    # still scored against the baseline for the CSV: rougeL 0.362 − 0.398
    assert nf4.scores["qeval_temperature_0.5"].delta == pytest.approx(-0.036)
    header = rendered(sens_report).split("──")[0]  # the summary table's title and header
    assert "qeval_temperature_summary" in header and "qeval_temperature_0" not in header
    markdown = export(sens_report, "markdown", tmp_path / "r.md").read_text()
    summary_header = next(line for line in markdown.splitlines() if line.startswith("| run"))
    assert "qeval\\_temperature\\_summary" in summary_header
    assert "qeval\\_temperature\\_0" not in summary_header
    assert "| run | temperature → | 0.0 | 0.5\\* | 0.8\\* | 1.2 |" in markdown
    assert "\\* = 0.5–0.8 band (Roy 2023)" in markdown
    page = export(sens_report, "html", tmp_path / "r.html").read_text()
    checker = _TagBalance()
    checker.feed(page)
    assert checker.open == [] and checker.tables == 3  # summary, temperature, top_k
    assert '<th class="right">0.5*</th>' in page
    rows = list(
        csv.DictReader(io.StringIO(export(sens_report, "csv", tmp_path / "r.csv").read_text()))
    )
    assert {row["task"] for row in rows} >= {"qeval_temperature_0.5", "qeval_top_k_all"}


def test_sensitivity_charts_are_png_files(sens_report, tmp_path):
    written = plot(sens_report, tmp_path)
    names = {path.name for path in written}
    assert {"sensitivity_sens-model_temperature.png", "sensitivity_sens-model_top_k.png"} <= names
    for path in written:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1024, path


def test_settings_come_from_metadata_before_the_name(tmp_path):
    assert sweep_setting("temperature", "0.5", {"temperature": 0.7}) == 0.7
    assert sweep_setting("temperature", "0.5", {}) == 0.5
    assert sweep_setting("top_k", "all", {}) == math.inf
    assert sweep_setting("top_k", "all", {"top_k": 0}) == math.inf  # 0 = unrestricted
    assert sweep_setting("top_k", "7", {"top_k": "x"}) == 7
    assert sweep_setting("temperature", "all", {}) is None
    assert sweep_setting("max_new_tokens", "long", {"max_new_tokens": "inf"}) is None
    labels = [setting_label(s, v) for s, v in [("temperature", 1.0), ("top_k", 40.0)]]
    assert [*labels, setting_label("top_k", math.inf)] == ["1.0", "40", "all"]
    point = {"rougeL,none": 0.5, "rougeL_stderr,none": "N/A"}
    data = {
        "results": {
            "qeval_temperature_0.5": point,  # metadata says 0.7
            "qeval_temperature_hot": point,  # no metadata, no number: one warning
            "qeval_max_new_tokens_64": point,
        },
        "configs": {"qeval_temperature_0.5": {"metadata": {"temperature": 0.7, "top_k": 0}}},
        "config": {"model": "qeval", "model_args": {"pretrained": "m"}, "qeval": {"spec": "none"}},
    }
    runs, warnings = load_runs([write(tmp_path, "r.json", data)])
    report = compare(runs, warnings=warnings)
    (warning,) = report.warnings
    assert "none qeval_temperature_hot" in warning and "left out" in warning
    temperature, tokens = sweeps_of(report.comparisons[0])
    assert (temperature.name, temperature.settings, temperature.band) == (
        "temperature",
        [0.7],
        (0.5, 0.8),
    )
    assert (tokens.name, tokens.settings, tokens.band) == ("max_new_tokens", [64.0], None)
    assert report.comparisons[0].tasks == {}


# A 1e308 summary value overflows matplotlib's autoscale margins in the bar chart: a warning only.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_mutated_sensitivity_files_never_crash(tmp_path):
    """100 sens-model files with 1–4 values each replaced: reads, renders, exports and plots."""
    rng = random.Random(1)
    sources = sorted(SENS.glob("*.json"))
    for index in range(100):
        data = json.loads(rng.choice(sources).read_text())
        for _ in range(rng.randint(1, 4)):
            mutate(data, rng)
        write(tmp_path, f"results_{index:03d}.json", data)
    runs, warnings = load_runs([tmp_path])
    report = compare(runs, warnings=warnings)
    assert any(sweeps_of(comparison) for comparison in report.comparisons)
    render(report, Console(width=100, file=io.StringIO()))
    for fmt in FORMATS:
        export(report, fmt, tmp_path / "out" / f"report.{fmt}")
    plot(report, tmp_path / "plots")


def test_fixture_effective_bits_agree_with_the_quantizers():
    """Hand-written fixtures must say what the code would record for their options."""
    from qeval_plugins.core.registry import get_registry

    checked = 0
    for path in sorted(DATA.rglob("*.json")):
        try:
            block = json.loads(path.read_text())["config"]["qeval"]
        except (ValueError, KeyError, TypeError):
            continue
        if not isinstance(block, dict) or "effective_bits" not in block:
            continue
        quantizer = get_registry().get(block["quantizer"]).quantizer
        assert block["effective_bits"] == quantizer.effective_bits(block["options"]), path
        checked += 1
    assert checked >= 2
