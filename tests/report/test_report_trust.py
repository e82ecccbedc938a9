"""``qeval report`` on hostile or odd input: files that cannot be read as figures, settings that
make runs incomparable, -inf SQNR and a --baseline that names nothing.

Terminal safety, exports, plots, the 80-column layout and the CLI are in
tests/report/test_report_output.py.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import pytest
from rich.console import Console

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.text import printable
from qeval_plugins.report.compare import compare
from qeval_plugins.report.data import report_data
from qeval_plugins.report.export import FORMATS, export
from qeval_plugins.report.grid import number
from qeval_plugins.report.load import load_runs
from qeval_plugins.report.render import render
from qeval_plugins.report.settings import setting_text
from qeval_plugins.report.sqnr import sqnr_runs

DATA = Path(__file__).resolve().parents[1] / "data" / "report"
NONE_RUN = DATA / "qeval-tiny" / "none" / "results_2026-11-23T10-00-00.000000.json"
NF4_RUN = DATA / "qeval-tiny" / "bnb-nf4" / "results.json"


def fixture(path: Path = NONE_RUN) -> dict:
    return json.loads(path.read_text())


def put(folder: Path, name: str, content) -> Path:
    """Write ``content`` (text as is, anything else as JSON) to ``folder/name``."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def everything(runs, warnings, baseline=None, tmp_path: Path | None = None) -> str:
    """Compare, render at 80 columns and export in every format; the terminal text."""
    report = compare(runs, baseline, warnings=warnings)
    console = Console(width=80, record=True, color_system=None, file=io.StringIO())
    render(report, console)
    if tmp_path is not None:
        for fmt in FORMATS:
            export(report, fmt, tmp_path / f"report.{fmt}")
    return console.export_text()


def text_at(report, width: int) -> str:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    render(report, console)
    return console.export_text()


# ---------------------------------------------------------------- files that are not figures


def test_huge_integers_and_deep_nesting_are_one_warning_each(tmp_path):
    """400 digits overflow float(), 5,000 digits exceed int()'s limit (ValueError inside json),
    100,000 brackets exceed the recursion limit: one warning each, the good run still renders."""
    text = NONE_RUN.read_text()
    digits400, digits5000 = "7" * 400, "-" + "9" * 5000
    put(tmp_path, "a/results_400.json", text.replace('"acc,none": 0.8', f'"acc,none": {digits400}'))
    put(
        tmp_path,
        "b/results_5000.json",
        text.replace('"sample_len": 92', f'"sample_len": {digits5000}'),
    )
    put(tmp_path, "c/results_deep.json", '{"results": ' + "[" * 100_000 + "]" * 100_000 + "}")
    put(tmp_path, "e/results.json", fixture(NF4_RUN))
    runs, warnings = load_runs([tmp_path])
    assert sorted(run.path.name for run in runs) == [
        "results.json",
        "results_400.json",
        "results_5000.json",
    ]
    assert len(warnings) == 3, warnings
    for name, meaning in [
        ("results_400.json", "an integer of up to 400 digits, too long for a number; left out"),
        ("results_5000.json", "an integer of up to 5000 digits, too long for a number; left out"),
        ("results_deep.json", "JSON nested too deeply to read; skipped"),
    ]:
        (line,) = [w for w in warnings if name in w]
        assert meaning in line, line
    run400 = next(run for run in runs if run.path.name == "results_400.json")
    assert "acc" not in run400.metrics["qeval_demo_facts"]  # left out, not a figure
    assert run400.metrics["qeval_demo_facts"]["acc_norm"].value == 0.82
    report = compare(runs, warnings=warnings)
    assert report.warnings[:3] == warnings  # then: two "none" runs (400 and 5000 are copies)
    assert "bnb-nf4" in everything(runs, warnings, tmp_path=tmp_path / "out")


ODD_TYPES = [
    # (where, value): values of unexpected types where names and settings are read
    (("model_name",), {"deep": [1, {"x": None}]}),
    (("config", "model"), ["qeval"]),
    (("config", "model_args"), ["pretrained"]),
    (("config", "qeval"), "a string"),
    (("config", "qeval", "spec"), {"name": "rtn"}),
    (("config", "qeval", "quantizer"), [1, 2]),
    (("config", "qeval", "options"), {"bits": {"nested": [[[]]]}}),
    # parses (under the recursion limit), but copying it for the export recursed too deep
    (("config", "qeval", "options"), {"deep": json.loads("[" * 600 + "]" * 600)}),
    # the sparkline's (value − low)/(high − low) overflowed to inf/inf = NaN
    (("config", "qeval", "sqnr", "weights", "layers"), {"a": 1e308, "b": -1e308, "c": 9e307}),
    (("config", "qeval", "aliases"), "nf4"),
    (("config", "qeval", "requested_as"), ["nf4"]),  # was matched as a set member: unhashable
    (("config", "model_dtype"), json.loads("[" * 600 + "]" * 600)),  # was str(): too deep
    (("config", "qeval", "sqnr"), [1]),
    (("config", "qeval", "sqnr", "weights", "layers"), {"a": [1], "b": {"c": 2}, "d": "x"}),
    (("config", "qeval", "peak_memory", "kind"), {"k": 1}),
    (("config", "limit"), {"odd": [1, 2]}),
    (("config", "gen_kwargs"), [[[[["deep"]]]]]),
    (("n-shot",), ["qeval_demo_facts"]),
    (("n-shot", "qeval_demo_facts"), "five"),
    (("configs", "qeval_demo_facts"), "not a config"),
    (("higher_is_better",), ["acc"]),
    (("group_subtasks", "qeval_demo_facts"), [{"x": 1}, ["y"]]),
    (("date",), {"when": "now"}),
    (("lm_eval_version",), {"v": 1}),
]


def assign(data: dict, where: tuple[str, ...], value) -> None:
    """Set ``data[where[0]][where[1]]...`` to ``value``, replacing non-dicts on the way."""
    node = data
    for key in where[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[where[-1]] = value


@pytest.mark.parametrize(("where", "value"), ODD_TYPES, ids=lambda x: str(x)[:40])
def test_values_of_unexpected_types_never_crash(tmp_path, where, value):
    data = fixture(NF4_RUN)
    assign(data, where, value)
    put(tmp_path, "odd/results.json", data)
    put(tmp_path, "none/results.json", fixture())
    runs, warnings = load_runs([tmp_path])
    assert len(runs) == 2
    assert not any("unexpected content" in w for w in warnings), warnings
    for baseline in (None, "none"):
        everything(runs, warnings, baseline, tmp_path / "out")
    exported = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(exported["models"][0]["runs"]) == 2


def test_bare_infinity_and_nan_tokens_are_read(tmp_path):
    """Python's json accepts -Infinity, Infinity and NaN (not strict JSON): read and shown."""
    text = NF4_RUN.read_text()
    layer = '"model.layers.1.self_attn.q_proj": 20.6377'
    assert layer in text
    text = text.replace(layer, '"model.layers.1.self_attn.q_proj": -Infinity')
    text = text.replace('"logit_sqnr_db,none": 11.0577', '"logit_sqnr_db,none": -Infinity')
    text = text.replace('"kl_mean,none": 0.011206', '"kl_mean,none": NaN')
    assert "-Infinity" in text and "NaN" in text
    path = put(tmp_path, "results.json", text)
    runs, warnings = load_runs([path])
    (run,) = runs
    assert run.metrics["qeval_sqnr"]["logit_sqnr_db"].value == -math.inf
    (warning,) = warnings
    assert "NaN in qeval_sqnr/kl_mean" in warning
    text = everything(runs, warnings, tmp_path=tmp_path / "out")
    (worst,) = [line for line in text.splitlines() if "layers.1.self_attn.q_proj" in line]
    assert "−∞" in worst


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (b" \n\t\n", "empty file"),
        (b"\x00\xc3\xbf garbage", "not text (binary: NUL bytes or not UTF-8)"),
        (b"\x89PNG\r\n\x1a\n\xff\xd8", "not text (binary: NUL bytes or not UTF-8)"),
        (b"hello world", "not JSON (line 1, column 1: Expecting value)"),
        (b"<html><body>404</body></html>", "not JSON (line 1, column 1: Expecting value)"),
        (b'{"results": {"t": {"acc,none": 0.5', "truncated JSON (cut off at line 1)"),
        (b'{"results": {"t" 0.5}}', "not valid JSON (line 1, column 18: Expecting ':' "),
    ],
)
def test_a_file_that_is_not_results_says_what_it_is(tmp_path, content, problem):
    """Binary, empty and non-JSON files were all "truncated JSON" (or a codec's message)."""
    path = tmp_path / "results.json"
    path.write_bytes(content)
    runs, warnings = load_runs([tmp_path])
    assert runs == []
    (warning,) = warnings
    assert warning.startswith(f"{path}: {problem}") and warning.endswith("; skipped"), warning


def test_a_byte_order_mark_is_read(tmp_path):
    path = put(tmp_path, "results.json", "")
    path.write_bytes(b"\xef\xbb\xbf" + NONE_RUN.read_bytes())
    (run,), warnings = load_runs([path])
    assert warnings == [] and run.label == "none"


def test_huge_figures_are_compact_and_odd_values_get_a_warning(tmp_path):
    """1e308 seconds and 1e300 accuracy were written out in full (300 digits, splitting the
    table); ∞ accuracy had no warning; a negative stderr was shown (±-1.00e+300) and used for
    the significance screen."""
    huge = fixture(NF4_RUN)
    block = huge["config"]["qeval"]
    block.update(quantize_seconds=1e308, param_bytes_after=1e300, bits_per_param=1e50)
    block["throughput"] = {"loglikelihood": {"tokens_per_s": 1e200}}
    block["peak_memory"] = {"bytes": 1e250, "kind": "cpu_peak_rss"}
    huge["results"]["qeval_demo_facts"].update({"acc,none": 1e300, "acc_stderr,none": -1e300})
    text = NONE_RUN.read_text().replace('"acc,none": 0.8', '"acc,none": Infinity')
    assert "Infinity" in text
    text = text.replace('"pretrained": "qeval-tiny"', '"pretrained": "other"')
    runs, warnings = load_runs(
        [put(tmp_path, "a/results.json", huge), put(tmp_path, "b.json", text)]
    )
    runs += load_runs([NONE_RUN])[0]
    assert warnings == [
        f"{tmp_path}/a/results.json: stderr negative or not finite for qeval_demo_facts/acc; "
        "treated as missing, significance not assessed",
        f"{tmp_path}/b.json: infinite value of qeval_demo_facts/acc; shown as ∞, not compared",
    ]
    report = compare(runs, warnings=warnings)
    (nf4,) = [row for c in report.comparisons for row in c.rows if row.run.label == "bnb-nf4"]
    facts = nf4.scores["qeval_demo_facts"]
    assert (facts.stderr, facts.significant, facts.delta) == (None, None, 1e300 - 0.8)
    for width in (80, 200):
        lines = text_at(report, width).splitlines()
        assert max(map(len, lines)) <= width
        assert not [line for line in lines if re.search(r"\d[\d,]{12}", line)]
        row = next(line for line in lines if line.startswith("bnb-nf4"))
        assert "1.00e+50" in row and "9.54e+293" in row and "1.00e+308" in row
        assert "±" not in next(line for line in lines if "1.00e+300" in line)
        assert any("+1.00e+300 -1.25e+302%" in line for line in lines)
        assert any(line.startswith("none ") and "∞" in line for line in lines)
    assert number(999_999.4) == "999,999" and number(1e6) == "1.00e+06"
    assert number(-1e308, signed=True) == "-1.00e+308" and number(2.5e-7) == "0.000"


def test_a_score_that_is_not_a_number_is_one_warning_and_never_compared(tmp_path):
    """ "0.5" (text) was compared as 0.5; true showed "—" with a "lacks qeval_demo_facts"
    warning. Now each is one "not a number" warning, left out, with no "lacks" line; "inf" as
    text (qeval's infinite dB figures) is still a value."""
    paths = [put(tmp_path, "none/results.json", fixture())]
    for name, value in [("text", "0.5"), ("flag", True)]:
        data = fixture(NF4_RUN)
        data["results"]["qeval_demo_facts"]["acc,none"] = value
        data["config"]["qeval"]["spec"] = f"bnb-nf4:tag={name}"
        paths.append(put(tmp_path, f"{name}/results.json", data))
    runs, warnings = load_runs(paths)
    assert warnings == [
        f"{tmp_path}/text/results.json: not a number: qeval_demo_facts/acc (text); left out, "
        "not compared",
        f"{tmp_path}/flag/results.json: not a number: qeval_demo_facts/acc (true/false); left "
        "out, not compared",
    ]
    report = compare(runs, warnings=warnings)
    assert report.warnings == warnings  # no "runs cover different tasks ... lacks" line
    for row in report.comparisons[0].rows[1:]:
        assert "qeval_demo_facts" not in row.scores
    lines = text_at(report, 120).splitlines()
    for tag in ("text", "flag"):
        row = next(line for line in lines if line.startswith(f"bnb-nf4:tag={tag} "))
        assert row.split()[7:9] == ["—", "12.00"], row  # facts acc, then word perplexity
    assert "qeval_demo_facts" in runs[0].metrics
    assert runs[1].metrics["qeval_sqnr"]["logit_sqnr_db"].value == 11.0577


def test_impossible_cost_figures_and_limits_are_missing_with_one_warning(tmp_path):
    """quantize_seconds -1, peak_memory.bytes -5 ("-0" MiB), effective_bits -3 (bits/param
    -3.00), limit -3 and infinite tokens/s were shown as read; config.qeval as a string was read
    as a qeval block without a word."""
    data = fixture(NF4_RUN)
    block = data["config"]["qeval"]
    block.update(quantize_seconds=-1, simulated=True, effective_bits=-3, param_count="-7")
    block["peak_memory"]["bytes"] = -5
    block["throughput"]["generate"]["tokens_per_s"] = "inf"
    data["config"]["limit"] = -3
    odd = put(tmp_path, "odd/results.json", data)
    text = fixture(NF4_RUN)
    text["config"]["qeval"] = "bnb-nf4"
    text["config"]["model"] = "vllm"
    plain = put(tmp_path, "text/results.json", text)
    runs, warnings = load_runs([odd, plain, NONE_RUN])
    assert warnings == [
        f"{odd}: negative or infinite qeval.quantize_seconds, qeval.param_count, "
        "qeval.effective_bits, qeval.peak_memory.bytes, qeval.throughput.generate.tokens_per_s; "
        "treated as missing; negative limit -3; treated as unknown",
        f"{plain}: config.qeval is a text, not an object; read as a run without a qeval block",
    ]
    report = compare(runs, warnings=warnings)
    rows = {row.run.label: row for row in report.comparisons[0].rows}
    row = rows["bnb-nf4"]
    assert (row.quantize_seconds, row.peak_memory_mib, row.bits_per_param) == (None, None, None)
    assert row.tokens_per_s == {"loglikelihood": 500.0} and row.size_mib == 2548124 / 2**20
    assert "limit" not in row.run.settings
    assert not rows["vllm"].run.is_qeval and rows["vllm"].run.quantizer is None
    line = next(line for line in text_at(report, 120).splitlines() if line.startswith("bnb-nf4"))
    # no quant. s column: the one time left is the none run's, its load time
    assert line.split()[1:7] == ["—", "0", "—", "2.430", "500", "ll"], line
    assert line.split()[7] == "—"  # peak MiB, not "-0"
    assert not any("differ in limit" in w for w in report.warnings)


# ---------------------------------------------------------------- -inf SQNR


def sqnr_run(tmp_path: Path, layers: dict[str, object], name: str = "results.json") -> Path:
    """The bnb-nf4 fixture with its per-layer weight SQNR replaced by ``layers``."""
    data = fixture(NF4_RUN)
    data["config"]["qeval"]["sqnr"]["weights"]["layers"] = layers
    data["results"]["qeval_sqnr"]["weight_sqnr_min_db,none"] = "-inf"
    return put(tmp_path, name, data)


def test_minus_infinite_sqnr_is_the_worst_layer_and_is_shown(tmp_path):
    """ "-inf" (reference all zeros, nonzero noise) sorts first among the worst layers, is shown
    as −∞ in the worst-layer table and the W min column, and never counts as best."""
    layers = {"a.q_proj": 20.5, "a.k_proj": "-inf", "a.v_proj": "inf", "a.o_proj": 18.25}
    runs, warnings = load_runs([sqnr_run(tmp_path, layers), NONE_RUN])
    report = compare(runs, warnings=warnings)
    (nf4,) = [s for s in sqnr_runs(report.comparisons[0]) if s.label == "bnb-nf4"]
    assert nf4.layers["a.k_proj"] == -math.inf
    assert [layer for layer, _ in nf4.worst[:3]] == ["a.k_proj", "a.o_proj", "a.q_proj"]
    console = Console(width=120, record=True, color_system=None, file=io.StringIO())
    render(report, console)
    lines = console.export_text().splitlines()
    worst = [line for line in lines if "a.k_proj" in line]
    assert len(worst) == 1 and "−∞" in worst[0]
    title = next(i for i, line in enumerate(lines) if "SQNR vs the unquantized" in line)
    summary = next(line for line in lines[title:] if line.startswith("bnb-nf4"))
    assert summary.split()[2] == "−∞"  # W mean, W min
    (bars,) = [line for line in lines if line.startswith("bnb-nf4") and "▁" in line]
    assert bars.split()[1] == "−∞" and bars.split()[-1] == "∞"  # its worst and best layer
    spark = bars.split()[2]
    assert spark[1] == "▁" and spark[2] == "█"  # -inf drawn as the worst, +inf as the best
    exported = report_data(report)["models"][0]["sqnr"]
    assert {"layer": "a.k_proj", "sqnr_db": "-inf"} in next(
        s["worst"] for s in exported if s["label"] == "bnb-nf4"
    )


# ---------------------------------------------------------------- comparability


def settings_run(tmp_path: Path, name: str, spec: str, **changes) -> Path:
    """A run of the none fixture as ``spec`` with ``changes`` applied (dotted paths as keys)."""
    data = fixture()
    data["config"]["qeval"] = {"spec": spec, "quantizer": spec.split(":")[0]}
    for where, value in changes.items():
        assign(data, tuple(where.split("__")), value)
    return put(tmp_path, f"{name}/results.json", data)


def test_runs_with_different_settings_get_one_warning(tmp_path):
    same = {
        "config__limit": 20.0,
        "config__random_seed": 0,
        "config__gen_kwargs": {"temperature": 0.0},
        "lm_eval_version": "0.4.13",
        "config__qeval__qeval_version": "0.3.0",
        "fewshot_as_multiturn": False,
        "chat_template": None,
    }
    paths = [
        settings_run(tmp_path, "a", "none", **same),
        settings_run(tmp_path, "b", "rtn:bits=4", **same),
        settings_run(tmp_path, "c", "rtn:bits=3", **same, config__model_args__dtype="float32"),
    ]
    runs, warnings = load_runs(paths)
    report = compare(runs, warnings=warnings)
    assert report.warnings == []
    assert "every run: limit 20 per task, 0-shot" in text_at(report, 160)  # shared: a caption
    paths.append(
        settings_run(
            tmp_path,
            "d",
            "rtn:bits=2",
            **{
                **same,
                "config__limit": None,
                "config__random_seed": 7,
                "config__gen_kwargs": "temperature=0.7",
                "n-shot__qeval_demo_facts": 5,
                "chat_template": "{{ messages }}",
                "fewshot_as_multiturn": True,
                "config__model_args__dtype": "bfloat16",
                "config__model_args__revision": "v2",
                "lm_eval_version": "0.4.14",
                "config__qeval__qeval_version": "0.4.0",
            },
        )
    )
    runs, warnings = load_runs(paths)
    (warning,) = compare(runs, warnings=warnings).warnings
    assert warning.startswith("qeval-tiny: compared runs differ in limit 20 (none, rtn:bits=3, ")
    for phrase in [
        "limit 20 (none, rtn:bits=3, rtn:bits=4) vs none (rtn:bits=2)",
        "random_seed 0 (",
        'gen_kwargs {"temperature":0.0} (',
        "vs temperature=0.7 (rtn:bits=2)",
        "revision main (none, rtn:bits=3, rtn:bits=4) vs v2 (rtn:bits=2)",
        "num_fewshot of qeval_demo_facts 0 (none, rtn:bits=3, rtn:bits=4) vs 5 (rtn:bits=2)",
        "lm_eval_version 0.4.13 (",
        "qeval_version 0.3.0 (",
        "fewshot_as_multiturn false (",
        "chat_template none (",
        "their deltas may measure these settings, not the quantization",
    ]:
        assert phrase in warning, (phrase, warning)
    # runs that record no dtype are not compared on it
    assert "dtype bfloat16 (rtn:bits=2) vs float32 (rtn:bits=3)" in warning
    lines = text_at(compare(runs), 160).splitlines()  # differing: a limit and a shots column
    assert next(line for line in lines if line.startswith("run ")).split()[1:3] == [
        "limit",
        "shots",
    ]
    assert next(line for line in lines if line.startswith("rtn:bits=2")).split()[1:3] == [
        "all",
        "0–5",
    ]
    assert next(line for line in lines if line.startswith("rtn:bits=3")).split()[1:3] == ["20", "0"]


def test_a_missing_setting_is_unknown_not_different(tmp_path):
    """Old files without qeval_version (or any other setting) are not compared on it."""
    a = settings_run(tmp_path, "a", "none", config__qeval__qeval_version="0.4.0")
    b = settings_run(tmp_path, "b", "rtn:bits=4")
    runs, warnings = load_runs([a, b])
    assert compare(runs, warnings=warnings).warnings == []
    assert runs[0].settings["qeval_version"] == "0.4.0"
    assert "qeval_version" not in runs[1].settings
    assert runs[0].settings["limit"] == "none" and runs[0].fewshot["qeval_demo_facts"] == 0


def test_setting_text_is_canonical():
    assert setting_text(4.0) == setting_text(4) == "4"
    assert setting_text(0.25) == "0.25"
    assert setting_text(None) == setting_text({}) == setting_text("") == "none"
    assert setting_text({"b": 1, "a": [True]}) == '{"a":[true],"b":1}'
    assert setting_text(False) == "false"


# ---------------------------------------------------------------- --baseline


def test_a_baseline_that_names_no_run_is_an_error_with_a_suggestion():
    runs, warnings = load_runs([DATA])
    with pytest.raises(QevalError) as error:
        compare(runs, "nf5", warnings=warnings)
    message = str(error.value)
    assert "--baseline nf5 names no run in the report. Did you mean 'nf4'?" in message
    assert "Runs: " in message and "bnb-nf4" in message and "\n" not in message
    # naming a run of one model only is still a warning for the others, not an error
    assert len(compare(runs, "rtn:bits=4").comparisons) == 3
    assert compare([], "nf5").comparisons == []


def test_baseline_options_are_compared_by_value_and_a_miss_is_an_error():
    """--baseline rtn:bits=03 said "several match: rtn:bits=3" (one listed) and rendered without
    deltas; rtn:bits=5 (an option no run has) was a warning, not an error like nf5."""
    runs, warnings = load_runs([DATA])
    for spec in ("rtn:bits=04", "rtn: bits = 4.0", "rtn:BITS=4"):
        tiny = next(c for c in compare(runs, spec).comparisons if c.name == "qeval-tiny")
        assert tiny.baseline.label == "rtn:bits=4", spec
        assert tiny.rows[1].scores["qeval_demo_facts"].delta is not None
    smol = next(c for c in compare(runs, "rtn:bits=04").comparisons if "SmolLM2" in c.model)
    assert smol.baseline_reason == (
        "no baseline: no run is --baseline rtn:bits=04 (other options: rtn:bits=8); deltas not "
        "computed"
    )
    with pytest.raises(QevalError) as error:
        compare(runs, "rtn:bits=5", warnings=warnings)
    assert str(error.value).startswith("--baseline rtn:bits=5 names no run in the report.")
    assert "several" not in str(error.value)
    tiny_runs = [run for run in runs if run.model == "qeval-tiny"]
    with pytest.raises(QevalError) as error:
        compare(tiny_runs, "rtn")
    assert str(error.value) == (
        "--baseline rtn matches several runs of a model (rtn:bits=2, rtn:bits=4); name one with "
        "its options, e.g. --baseline rtn:bits=2."
    )


def test_printable_escapes_control_characters():
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("\x1b]0;title\x07") == "\\x1b]0;title\\x07"
    assert printable("x\ny\r\tz\x9b\x7f") == "x\\ny\\r\\tz\\x9b\\x7f"
    assert printable("evil\u202etxt.exe\ud800") == "evil\\u202etxt.exe\\ud800"
    assert printable("qeval_demo_cloze →▁█ ±−∞ 中文") == "qeval_demo_cloze →▁█ ±−∞ 中文"
    hostile = "[red]x[/red] \x1b]8;;http://e.x\x07link"
    assert printable(printable(hostile)) == printable(hostile)  # idempotent


def prequantized_run(tmp_path: Path, model: str, name: str) -> Path:
    """The none fixture as a quantizer=none run of a checkpoint saved with bitsandbytes NF4."""
    data = fixture()
    data["config"]["model_args"]["pretrained"] = model
    data["config"]["qeval"]["prequantized"] = {
        "quant_method": "bitsandbytes",
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
    }
    data["date"] += 1  # newer than the fixture
    return put(tmp_path, f"{name}/results.json", data)


def test_a_prequantized_checkpoint_is_labelled_and_never_the_baseline(tmp_path):
    """Its run was labelled plain ``none``, and the reason said there was no none run; beside
    an unquantized none run of the same model it was merged away as a duplicate."""
    alone = prequantized_run(tmp_path, "/ckpt/tiny-nf4", "a")
    runs, warnings = load_runs([alone])
    assert [run.label for run in runs] == ["none (prequantized bitsandbytes nf4)"]
    (comparison,) = compare(runs, warnings=warnings).comparisons
    assert comparison.baseline is None
    assert comparison.baseline_reason == (
        "no baseline: the only quantizer=none run is of an already-quantized checkpoint "
        "(evaluate the unquantized model with quantizer=none, or pass --baseline SPEC); deltas "
        "not computed"
    )
    text = text_at(compare(runs), 120)
    assert "none (prequantized bitsandbytes nf4)" in text and "no quantizer=none" not in text
    (chosen,) = compare(runs, "none").comparisons  # named on purpose: it is the baseline
    assert chosen.baseline is runs[0]
    # beside the unquantized none run of the same model: two rows, the unquantized the baseline
    runs, warnings = load_runs([NONE_RUN, prequantized_run(tmp_path, "qeval-tiny", "b")])
    report = compare(runs, warnings=warnings)
    assert report.warnings == []
    (comparison,) = report.comparisons
    assert [(row.run.label, row.is_baseline) for row in comparison.rows] == [
        ("none", True),
        ("none (prequantized bitsandbytes nf4)", False),
    ]
    exported = report_data(report)["models"][0]["runs"]
    assert [run["label"] for run in exported] == ["none", "none (prequantized bitsandbytes nf4)"]


def test_a_prequantized_run_is_labelled_by_its_method_and_format(tmp_path):
    """quantizer=prequantized: the label says what the checkpoint holds; never the baseline."""
    data = json.loads(Path(prequantized_run(tmp_path, "/ckpt/tiny-gptq", "a")).read_text())
    data["config"]["qeval"].update(quantizer="prequantized", spec="prequantized")
    data["config"]["qeval"]["prequantized"] = {
        "quant_method": "gptq",
        "bits": 4,
        "group_size": 128,
        "desc_act": False,
        "sym": True,
    }
    runs, warnings = load_runs([NONE_RUN, put(tmp_path, "gptq/results.json", data)])
    assert [run.label for run in runs] == ["none", "prequantized (gptq int4 g128)"]
    assert [run.model for run in runs] == ["qeval-tiny", "/ckpt/tiny-gptq"]  # apart: no reference
    # with reference= it is compared with its base model's runs, in one table
    data["config"]["model_args"]["reference"] = "qeval-tiny"
    runs, warnings = load_runs([NONE_RUN, put(tmp_path, "gptq/results.json", data)])
    (comparison,) = compare(runs, warnings=warnings).comparisons
    assert [(row.run.label, row.is_baseline) for row in comparison.rows] == [
        ("none", True),
        ("prequantized (gptq int4 g128 tiny-gptq)", False),
    ]


def test_a_plain_hf_run_is_not_said_to_lack_the_qeval_only_tasks(tmp_path):
    """qeval_outliers, like qeval_sqnr, needs --model qeval: an hf run cannot have run it."""
    quantized = fixture()
    quantized["results"]["qeval_outliers"] = {
        "outlier_features_quantized,none": 0,
        "outlier_features_quantized_stderr,none": "N/A",  # as lm-eval writes it
    }
    plain = fixture()
    plain["config"] = {"model": "hf", "model_args": {"pretrained": "qeval-tiny"}}
    plain["results"].pop("qeval_outliers", None)
    runs, warnings = load_runs(
        [put(tmp_path, "q/results.json", quantized), put(tmp_path, "hf/results.json", plain)]
    )
    report = compare(runs, warnings=warnings)
    assert [row.run.label for row in report.comparisons[0].rows] == ["none", "hf"]
    assert not any("qeval_outliers" in warning for warning in report.warnings), report.warnings


def test_a_metrics_own_error_stands_in_for_lm_evals_missing_stderr(tmp_path):
    """qeval_sqnr's kl_mean has stderr "N/A" from lm-eval and its error as kl_mean_err."""
    data = fixture()
    data["results"]["qeval_sqnr"].update(
        {
            "kl_mean,none": 0.2,
            "kl_mean_stderr,none": "N/A",
            "kl_mean_err,none": 0.01,
            "kl_p99,none": 0.9,
            "kl_p99_stderr,none": "N/A",
            "kl_median,none": 0.1,
            "kl_median_err,none": -1,  # not a standard error: ignored
        }
    )
    runs, _ = load_runs([put(tmp_path, "results.json", data)])
    metrics = runs[0].metrics["qeval_sqnr"]
    assert metrics["kl_mean"].stderr == 0.01
    assert metrics["kl_p99"].stderr is None and metrics["kl_median"].stderr is None


def test_an_error_bound_of_infinity_is_by_design_and_not_warned_about(tmp_path):
    """qeval_sqnr's kl_error_bound is "inf" in its default top-k mode (a lower bound)."""
    data = fixture()
    data["results"]["qeval_sqnr"].update(
        {"kl_error_bound,none": "inf", "kl_error_bound_stderr,none": "N/A"}
    )
    runs, warnings = load_runs([put(tmp_path, "results.json", data)])
    assert runs[0].metrics["qeval_sqnr"]["kl_error_bound"].value == math.inf
    assert not any("kl_error_bound" in warning for warning in warnings), warnings


def test_worst_layer_bars_keep_their_layer_and_value_on_a_narrow_console():
    """Too wide for 60 columns, the worst-layers table keeps run, layer and dB together with
    each bar (folded below its row), instead of a second block of bars under the run alone."""
    from qeval_plugins.report.layout import grid_lines
    from qeval_plugins.report.sqnr import sqnr_grids

    runs, warnings = load_runs([NONE_RUN, NF4_RUN])
    [comparison] = compare(runs, warnings=warnings).comparisons
    worst = next(grid for grid in sqnr_grids(comparison) if "worst layers" in grid.title)
    lines = ["".join(text for text, _ in line) for line in grid_lines(worst, 60)]
    assert sum(line.startswith("run ") for line in lines) == 1, lines  # one block
    labelled = [line for line in lines if line.startswith("bnb-nf4")]
    assert len(labelled) == len(worst.rows)
    assert all("model.layers." in line for line in labelled)
