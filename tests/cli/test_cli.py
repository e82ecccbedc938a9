"""The ``qeval`` command and the stock ``lm_eval`` command, end to end in subprocesses."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import lm_eval_args, run_cli


def test_qeval_plugins_lists_builtins_with_their_quantizers():
    result = run_cli(["qeval", "plugins"])
    assert result.returncode == 0, result.stderr
    for expected in ("baseline", "bnb-nf4-dq", "rtn", "built-in", "loaded"):
        assert expected in result.stdout


def test_qeval_quantizers_shows_options_and_availability():
    result = run_cli(["qeval", "quantizers", "--options"])
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for expected in ("bnb-int8", "threshold", "group_size", "ok"):
        assert expected in text


def test_tasks_path_points_at_the_task_yamls(tasks_dir):
    result = run_cli(["qeval", "tasks-path"])
    assert result.returncode == 0
    assert result.stdout.strip() == str(tasks_dir)
    assert any(tasks_dir.rglob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "command", [["lm_eval"], ["lm-eval"], [Path(sys.executable).name, "-m", "lm_eval"]]
)
def test_stock_lm_eval_finds_the_backend(command, tiny_model_dir, tasks_dir, tmp_path):
    result = run_cli(
        [
            *command,
            *lm_eval_args(
                f"pretrained={tiny_model_dir},quantizer=rtn,bits=4",
                "qeval_demo_facts",
                tasks_dir,
                *("--limit", "4", "--output_path", str(tmp_path / "out")),
            ),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [results_file] = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(results_file.read_text())
    assert results["config"]["model"] == "qeval"
    assert results["config"]["qeval"]["options"]["bits"] == 4
    assert 0.0 <= results["results"]["qeval_demo_facts"]["acc,none"] <= 1.0


@pytest.mark.slow
def test_lm_eval_own_models_still_work(tiny_model_dir, tasks_dir, tmp_path):
    result = run_cli(
        [
            "lm_eval",
            *lm_eval_args(
                f"pretrained={tiny_model_dir}",
                "qeval_demo_facts",
                tasks_dir,
                "--limit",
                "2",
                model="hf",
            ),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "qeval_demo_facts" in result.stdout


@pytest.mark.slow
def test_demo_runs_offline_and_prints_the_table(tmp_path):
    result = run_cli(
        [
            "qeval",
            "demo",
            "--quantizers",
            "none,nf4,rtn:bits=2",
            "--limit",
            "8",
            "--output",
            str(tmp_path / "runs"),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "qeval demo" in result.stdout and "rtn:bits=2" in result.stdout
    assert "ROUGE-L" in result.stdout and "KL" in result.stdout
    none, bits2 = (
        json.loads((tmp_path / "runs" / name / "results.json").read_text())["results"]
        for name in ("none", "rtn_bits-2")
    )
    for task in ("qeval_demo_temperature_0.0", "qeval_demo_temperature_1.0"):  # the world's prompts
        assert none[task]["rougeL,none"] > 0.4 > bits2[task]["rougeL,none"]
    # exact KL (the default): the baseline against itself is zero within the stated error bound
    # of every per-token KL (the cached log-prob codes' rounding), rtn:bits=2 far above it
    divergence = json.loads((tmp_path / "runs" / "none" / "results.json").read_text())["config"][
        "qeval"
    ]["sqnr"]["divergence"]
    bound = divergence["kl_error_bound_max"]
    assert divergence["kl_mode"] == "exact" and 0 < bound < 1e-6
    assert none["qeval_sqnr"]["kl_p99,none"] <= bound < 1e-3 * bits2["qeval_sqnr"]["kl_p99,none"]
    written = sorted(p.parent.name for p in (tmp_path / "runs").rglob("results.json"))
    assert written == ["nf4", "none", "rtn_bits-2"]
    # the layer scan of rtn:bits=2: its top layers printed, the recommendation verified
    assert "Layer sensitivity — qeval-tiny · rtn:bits=2" in result.stdout
    scan = json.loads((tmp_path / "runs" / "scan" / "scan.json").read_text())
    kept = scan["recommendation"]["units"]
    assert kept and all(name in result.stdout for name in kept)
    checks = scan["verification"]
    assert checks["recommended"]["kl_mean"] < checks["all_quantized"]["kl_mean"] / 2
    umask = os.umask(0)
    os.umask(umask)
    for path in (tmp_path / "runs").rglob("results.json"):  # a new file's mode, not mkstemp's 0600
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask
