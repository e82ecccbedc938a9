"""``qeval scan`` end to end on qeval-tiny, its ``scan.json``, and ``qeval report``'s "Layer
sensitivity" section and chart, with hostile scan files."""

from __future__ import annotations

import io
import json

import pytest
from conftest import run_cli

from qeval_plugins.cli.main import main

SCAN = [
    "qeval",
    "scan",
    "--model",
    "qeval-tiny",
    "--quantizer",
    "rtn:bits=3:group_size=0",
    "--unit",
    "block",
    "--limit",
    "2",
    "--max-tokens",
    "64",
]


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scan")
    result = run_cli([*SCAN, "--output", str(folder / "out")])
    return folder / "out", result


def test_scan_writes_scan_json_and_the_recommendation_verifies(scanned):
    folder, result = scanned
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[1/4] model.layers.0: KL" in result.stderr  # progress, one line per unit
    assert "[4/4] model.layers.3: KL" in result.stderr
    assert "Layer sensitivity" in result.stdout and "keep" in result.stdout
    data = json.loads((folder / "scan.json").read_text())
    assert data["qeval_scan"] == 1 and data["unit"] == "block"
    assert data["spec"] == "rtn:bits=3:group_size=0"
    assert data["reference"]["texts"] == 2 and data["reference"]["top_k"] == 32
    assert data["reference"]["kl_is_lower_bound"] is True
    kls = [unit["kl_mean"] for unit in data["units"]]
    assert kls == sorted(kls, reverse=True) and len(kls) == 4
    checks = data["verification"]
    assert checks["recommended"]["skip"] == data["recommendation"]["skip"]
    assert checks["recommended"]["kl_mean"] < checks["all_quantized"]["kl_mean"]
    assert checks["improves"] is True
    assert [p.name for p in folder.iterdir()] == ["scan.json"]  # no temporary left


def test_report_shows_the_section_and_writes_the_chart(scanned, tmp_path):
    folder, _ = scanned
    result = run_cli(["qeval", "report", str(folder), "--plot", str(tmp_path / "plots")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Layer sensitivity — qeval-tiny · rtn:bits=3:group_size=0" in result.stdout
    assert "recommendation is better than all-quantized" in result.stdout
    [chart] = (tmp_path / "plots").glob("scan_qeval-tiny_block-*.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _good(name: str = "model.layers.0") -> dict:
    unit = {"rank": 1, "name": name, "params": 10, "kl_mean": 0.5, "delta_nll": 0.1}
    return {
        "qeval_scan": 1,
        "model": "m",
        "spec": "rtn",
        "unit": "block",
        "units": [unit],
        "recommendation": {"units": [name], "bits_per_param": 5.0},
        "verification": {
            "all_quantized": {"kl_mean": 0.9},
            "recommended": {"kl_mean": 0.2},
            "least_sensitive": {"kl_mean": 0.8},
            "improves": True,
            "beats_least_sensitive": True,
        },
    }


HOSTILE = {
    "binary": b"\x00\xff\xfe",
    "not-json": b"{units: [",
    "list": b"[1, 2]",
    "version": json.dumps({**_good(), "qeval_scan": 99}).encode(),
    "units-text": json.dumps({**_good(), "units": "many"}).encode(),
    "kl-text": json.dumps({**_good(), "units": [{**_good()["units"][0], "kl_mean": "x"}]}).encode(),
    "huge-int": json.dumps(_good()).replace('"params": 10', '"params": ' + "9" * 400).encode(),
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "missing": json.dumps({k: v for k, v in _good().items() if k != "spec"}).encode(),
}


def test_hostile_scan_files_are_one_warning_each_and_never_crash(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one warning per line, however long the paths
    for name, data in HOSTILE.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "scan.json").write_bytes(data)
    (tmp_path / "good").mkdir()
    evil = "model.layers.0\x1b]0;pwned\x07\x1b[2J"
    good = _good(evil)
    good["units"][0]["kl_mean"] = "NaN"  # as json_ready writes a non-finite number
    (tmp_path / "good" / "scan.json").write_text(json.dumps(good))
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Layer sensitivity" in out and "\x1b" not in out
    assert "model.layers.0\\x1b]0;pwned\\x07" in out.replace("\n", "")
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == len(HOSTILE)
    assert all(line.endswith("; skipped") for line in warnings)
    for name in HOSTILE:
        assert any(f"/{name}/scan.json: " in line for line in warnings)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--quantizer", "none"], "quantizer 'none' changes no weight"),
        (["--quantizer", "rtn:kv_bits=2"], "drop the kv_* options from --quantizer"),
        (["--quantizer", "torchao-w8a8"], "also quantizes activations"),
        # the list offered holds only what a scan takes: no activation or CUDA-only quantizer
        (
            ["--quantizer", "autoround"],
            "scan one of: bnb-fp4, bnb-fp4-dq, bnb-nf4, bnb-nf4-dq, "
            "gptq, gptq-sim, hqq, quanto-fp8, quanto-int2, quanto-int4, quanto-int8, rtn, "
            "torchao-int4, torchao-int8.",
        ),
        (["--quantizer", "rtn:skip=layers.0"], "qeval scan chooses skip= itself"),
        (["--target-bits", "-1"], "argument --target-bits: must be a positive number"),
        (["--unit", "row"], "argument --unit: invalid choice"),
        (["--dtype", "float17"], "argument --dtype: invalid choice"),
        (["--model", "someorg/no-such-model"], "could not load model 'someorg/no-such-model'"),
    ],
)
def test_scan_mistakes_are_one_line(extra, message, capsys):
    argv = ["scan", "--model", "qeval-tiny", "--quantizer", "rtn", *extra]  # a later --model wins
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's one-line usage errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert err.startswith("qeval: error:") and err.count("\n") == 1


def test_an_unreachable_target_is_refused_before_the_model_loads(capsys, monkeypatch):
    import transformers

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before --target-bits was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", loaded)
    argv = ["scan", "--model", "qeval-tiny", "--quantizer", "rtn:bits=2", "--target-bits", "1"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "qeval: error: --target-bits 1 is below the quantizer's own 2.125 bits per weight; give "
        "at least 2.125.\n"
    )


def test_report_shows_scans_after_runs_and_takes_a_scan_file_itself(scanned, tmp_path, capsys):
    import shutil
    from pathlib import Path

    folder, _ = scanned
    data = Path(__file__).resolve().parent.parent / "data" / "report" / "qeval-tiny"
    shutil.copytree(data, tmp_path / "runs")
    shutil.copy(folder / "scan.json", tmp_path / "runs" / "scan.json")
    assert main(["report", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert out.index("rtn:bits=4") < out.index("Layer sensitivity")
    assert main(["report", str(folder / "scan.json")]) == 0
    out = capsys.readouterr().out
    assert "Layer sensitivity" in out and "warning" not in out


def test_the_demos_keep_unquantized_list_wraps_without_trailing_spaces():
    """The demo's verdict, ``keep unquantized: a, b, c → N bits/param``, wrapped at 60 columns
    ended its lines with the space after each comma."""
    from rich.console import Console

    from qeval_plugins.cli.demo import DEMO_SCAN_TOP
    from qeval_plugins.report.scan import render_scans, summarize

    names = [f"model.layers.{index}.mlp.down_proj" for index in range(4)]
    data = _good()
    data["units"] = [
        {**data["units"][0], "rank": rank, "name": name} for rank, name in enumerate(names, 1)
    ]
    data["recommendation"]["units"] = names
    console = Console(file=io.StringIO(), width=60)
    render_scans([summarize(data, "scan.json")], [], console, top=DEMO_SCAN_TOP)
    lines = console.file.getvalue().splitlines()
    assert all(len(line) <= 60 and line == line.rstrip() for line in lines), lines
    shown = " ".join(" ".join(lines).split())
    assert "keep unquantized: " + ", ".join(names) + " → 5 bits/param" in shown
