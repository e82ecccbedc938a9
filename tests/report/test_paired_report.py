"""``qeval report``'s paired significance: samples files found, read defensively and paired.

``tests/data/report-paired/synthetic`` is written by :func:`write_synthetic` (a test checks the
committed files are its output): two runs of one model on 400 documents of
``qeval_demo_facts`` — the baseline right on the first 200, the run wrong on 10 of those too —
so Δ = −0.025 is within the unpaired screen's √(se_b² + se_q²) = 0.035 ("ns") while the paired
test finds it (McNemar p = 2/2¹⁰, the interval below 0); their ``qeval_demo_cloze`` has samples
in the baseline only (the screen, said so). ``tests/data/report-paired/lm-eval`` is real
``lm_eval --log_samples`` output on qeval-tiny (quantizer none and rtn bits=3; the samples of
``qeval_demo_cloze`` kept, those of ``qeval_demo_facts`` left out).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from qeval_plugins.report import samples as samples_module
from qeval_plugins.report.compare import compare
from qeval_plugins.report.export import to_csv, to_html, to_json, to_markdown
from qeval_plugins.report.load import load_runs
from qeval_plugins.report.render import render
from qeval_plugins.report.summary import LEGEND

DATA = Path(__file__).resolve().parents[1] / "data" / "report-paired"
SYNTHETIC = DATA / "synthetic"
DOCS = 400
DATES = {"none": "2026-11-24T09-00-00.000000", "rtn-bits4": "2026-11-24T09-10-00.000000"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def facts_scores(run: str) -> list[float]:
    """Per-document acc: the baseline right on documents 0–199, the run also wrong on 0–9."""
    return [float(i < 200 and not (run != "none" and i < 10)) for i in range(DOCS)]


def sample_line(doc_id: int, value: float, metric: str = "acc") -> str:
    """One document's line, with the fields the report reads (lm-eval's also hold the document,
    its prompts and responses: see the lm-eval folder)."""
    doc = {"id": doc_id, "context": f"Fact {doc_id} is"}
    line = {
        "doc_id": doc_id,
        "target": "0",
        "filter": "none",
        "doc_hash": sha(json.dumps(doc, indent=2)),
        metric: value,
    }
    return json.dumps(line) + "\n"


def results_data(run: str) -> dict:
    """An lm-eval results file of ``run`` (acc and its sample stderr √(p(1−p)/(n−1)))."""
    acc = sum(facts_scores(run)) / DOCS
    cloze = 0.85 if run == "none" else 0.8
    quantizer, options = ("none", {}) if run == "none" else ("rtn", {"bits": 4})
    return {
        "results": {
            "qeval_demo_facts": {
                "alias": "qeval_demo_facts",
                "acc,none": acc,
                "acc_stderr,none": math.sqrt(acc * (1 - acc) / (DOCS - 1)),
            },
            "qeval_demo_cloze": {
                "alias": "qeval_demo_cloze",
                "exact_match,none": cloze,
                "exact_match_stderr,none": math.sqrt(cloze * (1 - cloze) / 39),
            },
        },
        "higher_is_better": {
            "qeval_demo_facts": {"acc": True},
            "qeval_demo_cloze": {"exact_match": True},
        },
        "n-shot": {"qeval_demo_facts": 0, "qeval_demo_cloze": 0},
        "config": {
            "model": "qeval",
            "model_args": {"pretrained": "qeval-tiny", "quantizer": quantizer, **options},
            "limit": None,
            "qeval": {"spec": "none" if run == "none" else "rtn:bits=4", "quantizer": quantizer},
        },
        "date": 1795510800.0 + (0 if run == "none" else 600),
    }


def write_synthetic(folder: Path) -> None:
    """The two runs' results and samples files (module docstring)."""
    for run, date in DATES.items():
        (folder / run).mkdir(parents=True, exist_ok=True)
        text = json.dumps(results_data(run), indent=2) + "\n"
        (folder / run / f"results_{date}.json").write_text(text)
        lines = [sample_line(i, v) for i, v in enumerate(facts_scores(run))]
        (folder / run / f"samples_qeval_demo_facts_{date}.jsonl").write_text("".join(lines))
    cloze = [sample_line(i, float(i < 34), "exact_match") for i in range(40)]  # 34/40 = 0.85
    (folder / "none" / f"samples_qeval_demo_cloze_{DATES['none']}.jsonl").write_text("".join(cloze))


def test_committed_synthetic_runs_are_the_generators_output(tmp_path):
    write_synthetic(tmp_path)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(SYNTHETIC) for p in SYNTHETIC.rglob("*") if p.is_file())
    assert written == committed
    for name in written:
        assert (tmp_path / name).read_bytes() == (SYNTHETIC / name).read_bytes(), name


def report_of(*paths: Path):
    runs, warnings = load_runs(list(paths))
    return compare(runs, warnings=warnings)


def scores_of(report, run_label: str):
    [comparison] = report.comparisons
    [row] = [row for row in comparison.rows if row.run.label == run_label]
    return row.scores


def test_paired_test_finds_what_the_screen_calls_not_significant(tmp_path):
    report = report_of(SYNTHETIC)
    assert report.warnings == []
    facts = scores_of(report, "rtn:bits=4")["qeval_demo_facts"]
    screen = math.hypot(*(math.sqrt(p * (1 - p) / (DOCS - 1)) for p in (0.5, 0.475)))
    assert abs(facts.delta) == pytest.approx(0.025) and abs(facts.delta) < screen  # screen: ns
    assert facts.significance_method == "paired" and facts.significant is True
    assert facts.paired_docs == DOCS and facts.ci_level == 0.95
    assert facts.mcnemar_p == pytest.approx(2 / 2**10)
    assert facts.delta_ci_low < facts.delta < facts.delta_ci_high < 0
    # the same files without samples: today's screen, which calls it not significant
    for run in DATES:
        shutil.copytree(SYNTHETIC / run, tmp_path / run, ignore=shutil.ignore_patterns("samp*"))
    unpaired = scores_of(report_of(tmp_path), "rtn:bits=4")["qeval_demo_facts"]
    assert (unpaired.significance_method, unpaired.significant) == ("screen", False)
    assert unpaired.delta_ci_low is None and unpaired.mcnemar_p is None


def test_a_task_without_samples_in_one_run_falls_back_to_the_screen_and_says_so():
    report = report_of(SYNTHETIC)
    cloze = scores_of(report, "rtn:bits=4")["qeval_demo_cloze"]
    assert cloze.significance_method == "screen" and cloze.significant is False
    assert cloze.delta_ci_low is None and cloze.paired_docs is None
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render(report, console)
    text = console.file.getvalue()
    assert "[-0.043, -0.010] p=0.002" in text  # the facts cell's interval line
    assert text.count("p=") == 1  # the cloze cell has none
    assert "Without an interval" in LEGEND and "an unpaired screen" in text
    assert "95% interval" in LEGEND and "10,000 resamples, seed 0" in LEGEND


def test_exports_carry_the_interval_and_the_method():
    report = report_of(SYNTHETIC)
    rows = {(row["run"], row["task"]): row for row in csv.DictReader(io.StringIO(to_csv(report)))}
    facts = rows[("rtn:bits=4", "qeval_demo_facts")]
    assert facts["significance_method"] == "paired" and facts["significant"] == "True"
    assert float(facts["delta_ci_low"]) < float(facts["delta_ci_high"]) < 0
    assert float(facts["mcnemar_p"]) == pytest.approx(2 / 2**10)
    assert facts["paired_docs"] == "400" and facts["ci_level"] == "0.95"
    cloze = rows[("rtn:bits=4", "qeval_demo_cloze")]
    assert (cloze["significance_method"], cloze["delta_ci_low"]) == ("screen", "")
    data = json.loads(to_json(report))
    score = data["models"][0]["runs"][1]["scores"]["qeval_demo_facts"]
    assert score["significance_method"] == "paired" and score["paired_docs"] == DOCS
    assert data["significance"] == {
        "rule": "paired: the bootstrap percentile interval of delta excludes 0; screen (no "
        "samples): |delta| > sqrt(se_base^2 + se_run^2)",
        "confidence": 0.95,
        "resamples": 10_000,
        "seed": 0,
    }
    assert "\\[-0.043, -0.010\\] p=0.002" in to_markdown(report)  # Markdown-escaped
    assert "[-0.043, -0.010] p=0.002" in to_html(report)


def test_real_lm_eval_samples_are_paired():
    """lm_eval --log_samples output of qeval-tiny: cloze (samples in both) is paired over its 40
    documents; facts (samples left out of the test data) falls back to the screen."""
    report = report_of(DATA / "lm-eval")
    assert report.warnings == []
    scores = scores_of(report, "rtn:bits=3")
    cloze, facts = scores["qeval_demo_cloze"], scores["qeval_demo_facts"]
    assert cloze.significance_method == "paired" and cloze.paired_docs == 40
    assert cloze.delta_ci_low <= cloze.delta <= cloze.delta_ci_high
    assert cloze.mcnemar_p is not None and facts.significance_method == "screen"


# ---------------------------------------------------------------- hostile samples files


def run_samples(folder: Path) -> Path:
    return folder / "rtn-bits4" / f"samples_qeval_demo_facts_{DATES['rtn-bits4']}.jsonl"


def lines_of(folder: Path) -> list[str]:
    return run_samples(folder).read_text().splitlines(keepends=True)


def changed(lines: list[str], index: int, **fields) -> list[str]:
    data = json.loads(lines[index])
    data.update(fields)
    return [*lines[:index], json.dumps(data) + "\n", *lines[index + 1 :]]


HOSTILE = {
    "bad JSON": (lambda lines: [*lines[:5], "{not json\n", *lines[5:]], "line 6 is not valid"),
    "truncated": (lambda lines: [*lines[:-1], lines[-1][:40]], "cut off (truncated file)"),
    "binary": (lambda lines: [*lines[:3], "\udcff\n", *lines[3:]], "line 4 is not UTF-8"),
    "not an object": (lambda lines: ["[1, 2]\n", *lines], "line 1 is not a JSON object"),
    "nested": (lambda lines: ["[" * 100_000 + "\n", *lines], "line 1 is nested too deeply"),
    "huge integer": (lambda lines: ['{"doc_id": ' + "9" * 5000 + "}\n", *lines], "line 1 is not"),
    "doc_id text": (lambda lines: changed(lines, 2, doc_id="2"), "line 3: doc_id is not a"),
    "doc_id twice": (lambda lines: changed(lines, 2, doc_id=1), "doc_id 1 appears twice"),
    "NaN": (lambda lines: changed(lines, 0, acc=math.nan), "line 1: acc is not finite"),
    "beyond float": (lambda lines: changed(lines, 0, acc=10**400), "line 1: acc is not finite"),
    "text value": (lambda lines: changed(lines, 0, acc="0"), "line 1: acc is not a number"),
    "hash": (lambda lines: changed(lines, 0, doc_hash=["x"]), "line 1: doc_hash is not a hash"),
    "other document": (
        lambda lines: changed(lines, 7, doc_hash=sha("another")),
        "1 of 400 documents differ from the baseline's (doc_hash)",
    ),
    "other doc_ids": (
        lambda lines: changed(lines, 399, doc_id=1000),
        "documents differ from the baseline's (1 only in this run, 1 only in the baseline",
    ),
    "other results": (
        lambda lines: changed(lines, 300, acc=1.0),
        "per-document values average 0.4775, the results file says 0.475",
    ),
    "too large to average": (
        lambda lines: changed(changed(lines, 0, acc=1e308), 1, acc=1e308),
        "per-document values too large to average",
    ),
    "empty": (lambda lines: [], "no documents under filter 'none'"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_samples_file_is_one_warning_and_the_screen(tmp_path, case):
    shutil.copytree(SYNTHETIC, tmp_path, dirs_exist_ok=True)
    make, reason = HOSTILE[case]
    lines = make(lines_of(tmp_path))
    run_samples(tmp_path).write_bytes("".join(lines).encode("utf-8", "surrogateescape"))
    report = report_of(tmp_path)
    facts = scores_of(report, "rtn:bits=4")["qeval_demo_facts"]
    assert (facts.significance_method, facts.significant) == ("screen", False)
    [warning] = report.warnings
    assert warning.startswith(f"{run_samples(tmp_path)}: qeval_demo_facts/acc: ")
    assert reason in warning and warning.endswith("; unpaired screen used")


def test_size_limits_are_warnings(tmp_path, monkeypatch):
    shutil.copytree(SYNTHETIC, tmp_path, dirs_exist_ok=True)
    monkeypatch.setattr(samples_module, "MAX_LINE_BYTES", 300)
    lines = lines_of(tmp_path)
    lines[3] = lines[3].replace('"target": "0"', '"target": "' + "x" * 400 + '"')
    run_samples(tmp_path).write_text("".join(lines))
    [warning] = report_of(tmp_path).warnings
    assert "line 4 is over 300 bytes" in warning
    monkeypatch.setattr(samples_module, "MAX_FILE_BYTES", 4096)
    [warning] = report_of(tmp_path).warnings
    assert "over 4,096 bytes (56,290 bytes); not read" in warning
    monkeypatch.setattr(samples_module, "MAX_FILE_BYTES", 1 << 30)
    monkeypatch.setattr(samples_module, "MAX_LINE_BYTES", 1 << 20)
    monkeypatch.setattr(samples_module, "MAX_LINES", 100)
    [warning] = report_of(tmp_path).warnings
    assert "more than 100 lines" in warning


@pytest.mark.parametrize("kind", ["folder", "pipe", "device"])
def test_a_baseline_samples_name_on_no_regular_file_warns_once(tmp_path, kind):
    """A folder, a named pipe (reading it would block) or a link to /dev/zero (it never ends)
    with a samples file's name: one warning, not repeated per run, and the report finishes."""
    shutil.copytree(SYNTHETIC, tmp_path, dirs_exist_ok=True)
    base = tmp_path / "none" / f"samples_qeval_demo_facts_{DATES['none']}.jsonl"
    base.unlink()
    {
        "folder": base.mkdir,
        "pipe": lambda: os.mkfifo(base),
        "device": lambda: base.symlink_to("/dev/zero"),
    }[kind]()
    report = report_of(tmp_path)
    [warning] = report.warnings
    assert (
        warning
        == f"{base}: qeval_demo_facts/acc: not a regular file; not read; unpaired screen used"
    )


def test_differences_beyond_a_float_are_refused():
    base = samples_module.DocScores(Path("b"), {0: -1e308, 1: 0.0}, {})
    run = samples_module.DocScores(Path("q"), {0: 1e308, 1: 0.0}, {})
    with pytest.raises(
        samples_module.SamplesProblem,
        match=r"^q: differences from the baseline too large for a float$",
    ):
        samples_module._matched(base, run, "q")


def test_an_unforeseen_error_while_pairing_is_one_warning(monkeypatch):
    def broken(base, run):
        raise ValueError("no such shape")

    monkeypatch.setattr(samples_module, "paired", broken)
    report = report_of(SYNTHETIC)
    [warning] = report.warnings
    assert warning.endswith(
        "qeval_demo_facts/acc: unexpected content (ValueError: no such shape); unpaired screen used"
    )
    facts = scores_of(report, "rtn:bits=4")["qeval_demo_facts"]
    assert facts.significance_method == "screen"


def test_values_that_are_not_numbers_are_left_to_the_screen_silently(tmp_path):
    """Per-document values that are lists (perplexity-style pairs) are not a mean over
    documents: the screen, without a warning."""
    shutil.copytree(SYNTHETIC, tmp_path, dirs_exist_ok=True)
    lines = [json.loads(line) for line in lines_of(tmp_path)]
    text = "".join(json.dumps({**line, "acc": [line["acc"], 1]}) + "\n" for line in lines)
    run_samples(tmp_path).write_text(text)
    report = report_of(tmp_path)
    assert report.warnings == []
    assert scores_of(report, "rtn:bits=4")["qeval_demo_facts"].significance_method == "screen"


def test_samples_of_another_date_are_not_used(tmp_path):
    """lm-eval's results_<date>.json pairs with the samples of its own date only."""
    shutil.copytree(SYNTHETIC, tmp_path, dirs_exist_ok=True)
    samples = run_samples(tmp_path)
    samples.rename(samples.with_name("samples_qeval_demo_facts_2026-11-24T08-00-00.000000.jsonl"))
    facts = scores_of(report_of(tmp_path), "rtn:bits=4")["qeval_demo_facts"]
    assert facts.significance_method == "screen"


# ---------------------------------------------------------------- how documents are matched


def without_hashes(path: Path, keep: int = 0) -> None:
    """Drop ``doc_hash`` from the samples file ``path`` (except on its first ``keep`` lines)."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines[keep:]:
        del line["doc_hash"]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def base_samples(folder: Path) -> Path:
    return folder / "none" / f"samples_qeval_demo_facts_{DATES['none']}.jsonl"


def caption_of(report) -> str:
    """The rendered tables with their captions, the legend left out."""
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render(report, console)
    return console.file.getvalue().split("Δ = run")[0]


def test_hashes_that_agree_pair_by_document_hash_and_the_note_says_so():
    report = report_of(SYNTHETIC)
    facts = scores_of(report, "rtn:bits=4")["qeval_demo_facts"]
    assert (facts.significance_method, facts.paired_by) == ("paired", "doc_hash")
    text = caption_of(report)
    assert "[lo, hi] paired by document hash" in text and "by position" not in text
    rows = {(row["run"], row["task"]): row for row in csv.DictReader(io.StringIO(to_csv(report)))}
    assert rows[("rtn:bits=4", "qeval_demo_facts")]["paired_by"] == "doc_hash"
    assert rows[("rtn:bits=4", "qeval_demo_cloze")]["paired_by"] == ""
    score = json.loads(to_json(report))["models"][0]["runs"][1]["scores"]["qeval_demo_facts"]
    assert score["paired_by"] == "doc_hash"


@pytest.mark.parametrize("side", ["run", "baseline"])
def test_hashes_in_one_run_only_fall_back_to_the_screen_with_one_warning(tmp_path, side):
    """lm-eval versions before doc_hash in one run, after in the other: doc_ids alone cannot show
    the documents are the same, so no paired test (before: paired by doc_id alone)."""
    shutil.copytree(SYNTHETIC, tmp_path, dirs_exist_ok=True)
    without_hashes(run_samples(tmp_path) if side == "run" else base_samples(tmp_path))
    report = report_of(tmp_path)
    facts = scores_of(report, "rtn:bits=4")["qeval_demo_facts"]
    assert (facts.significance_method, facts.significant) == ("screen", False)
    assert facts.delta_ci_low is None and facts.paired_by is None
    [warning] = report.warnings
    hashed, bare = ("none", "rtn:bits=4") if side == "run" else ("rtn:bits=4", "none")
    assert warning == (
        "qeval_demo_facts: cannot pair rtn:bits=4 with the baseline none: the samples of "
        f"{hashed} carry document hashes (doc_hash) and those of {bare} do not (another lm-eval "
        "version?), so the documents cannot be shown to be the same; unpaired screen used"
    )
    assert "[lo, hi]" not in caption_of(report)


def test_hashes_on_some_documents_only_are_a_warning(tmp_path):
    shutil.copytree(SYNTHETIC, tmp_path, dirs_exist_ok=True)
    without_hashes(run_samples(tmp_path), keep=3)
    report = report_of(tmp_path)
    assert scores_of(report, "rtn:bits=4")["qeval_demo_facts"].significance_method == "screen"
    [warning] = report.warnings
    assert warning == (
        f"{run_samples(tmp_path)}: qeval_demo_facts/acc: doc_hash on only 3 of 400 documents of "
        "this run's samples; unpaired screen used"
    )


def test_no_hashes_in_either_run_pair_by_position_and_the_note_says_so(tmp_path):
    shutil.copytree(SYNTHETIC, tmp_path, dirs_exist_ok=True)
    without_hashes(run_samples(tmp_path))
    without_hashes(base_samples(tmp_path))
    report = report_of(tmp_path)
    assert report.warnings == []
    facts = scores_of(report, "rtn:bits=4")["qeval_demo_facts"]
    assert (facts.significance_method, facts.paired_by) == ("paired", "position")
    assert facts.paired_docs == DOCS and facts.mcnemar_p == pytest.approx(2 / 2**10)
    text = caption_of(report)
    assert "[lo, hi] paired by position: no document hashes" in text
    assert "by document hash" not in text
    assert "paired by position: no document hashes" in to_markdown(report)
    assert "paired by position: no document hashes" in to_html(report)
    # the same run over other documents (another --limit): never paired by position
    lines = lines_of(tmp_path)
    run_samples(tmp_path).write_text("".join(changed(lines, 399, doc_id=1000)))
    [warning] = report_of(tmp_path).warnings
    assert "documents differ from the baseline's (1 only in this run" in warning


def test_documents_at_other_positions_are_not_paired_by_position(tmp_path):
    """Without doc_hash, the baseline's lines rotated by one (each doc_id now another document,
    as the lines' own doc and prompt_hash show) were paired by position without a word."""
    shutil.copytree(SYNTHETIC, tmp_path, dirs_exist_ok=True)
    for path in (run_samples(tmp_path), base_samples(tmp_path)):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        for line in lines:
            line["doc"] = {"id": line["doc_id"], "context": f"Fact {line['doc_id']} is"}
            line["prompt_hash"] = sha(line["doc"]["context"])
            del line["doc_hash"]
        if path == base_samples(tmp_path):  # rotated: the same values under other doc_ids
            lines = lines[1:] + lines[:1]
            for doc_id, line in enumerate(lines):
                line["doc_id"] = doc_id
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = report_of(tmp_path)
    facts = scores_of(report, "rtn:bits=4")["qeval_demo_facts"]
    assert facts.paired_by != "position" and facts.significance_method != "paired"
    [warning] = report.warnings
    assert "documents differ from the baseline's at the same position" in warning


def test_a_table_with_both_pairings_names_the_tasks(tmp_path):
    """facts paired by hash, cloze (samples in both, no hashes) by position: the note names each
    task with its pairing."""
    shutil.copytree(SYNTHETIC, tmp_path, dirs_exist_ok=True)
    cloze = [sample_line(i, float(i < 32), "exact_match") for i in range(40)]  # 32/40 = 0.8
    cloze_path = tmp_path / "rtn-bits4" / f"samples_qeval_demo_cloze_{DATES['rtn-bits4']}.jsonl"
    cloze_path.write_text("".join(cloze))
    without_hashes(cloze_path)
    without_hashes(tmp_path / "none" / f"samples_qeval_demo_cloze_{DATES['none']}.jsonl")
    report = report_of(tmp_path)
    scores = scores_of(report, "rtn:bits=4")
    assert scores["qeval_demo_cloze"].paired_by == "position"
    assert (
        "[lo, hi] paired by document hash (qeval_demo_facts); paired by position: no document "
        "hashes (qeval_demo_cloze)"
    ) in caption_of(report)
