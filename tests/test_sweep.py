"""``qeval run``: one folder per run, atomic results, resume after an interruption, --force."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli

from qeval_plugins import QevalError
from qeval_plugins.sweep import is_complete, plan_runs, slug

ARGS = [
    "--quantizers",
    "none,rtn:bits=2",
    "--tasks",
    "qeval_demo_facts",
    "--limit",
    "3",
    "--device",
    "cpu",
]


def test_run_folders_are_named_by_model_and_spec(tmp_path):
    runs = plan_runs(
        ["qeval-tiny", "org/model"], ["none", "rtn:bits=4:group_size=0"], tmp_path, "cpu"
    )
    assert [r.directory.name for r in runs] == [
        "qeval-tiny__none",
        "qeval-tiny__rtn_bits-4_group_size-0",
        "org--model__none",
        "org--model__rtn_bits-4_group_size-0",
    ]
    assert slug("a b/c") == "a-b--c"


def test_bad_specs_and_models_fail_before_any_run(tmp_path):
    with pytest.raises(QevalError, match="unknown quantizer 'rtm'"):
        plan_runs(["qeval-tiny"], ["none", "rtm"], tmp_path, "cpu")
    with pytest.raises(QevalError, match="does not exist"):
        plan_runs(["./missing/model"], ["none"], tmp_path, "cpu")
    assert not any(tmp_path.iterdir())


def test_completeness_needs_every_task(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"results": {"a": {}}}))
    assert is_complete(tmp_path, ["a"]) and not is_complete(tmp_path, ["a", "b"])
    (tmp_path / "results.json").write_text('{"results": {"a"')  # truncated
    assert not is_complete(tmp_path, ["a"])


@pytest.mark.slow
def test_interrupted_sweep_resumes_and_force_recomputes(tmp_path):
    output = tmp_path / "runs"
    first = output / "qeval-tiny__none" / "results.json"
    second = output / "qeval-tiny__rtn_bits-2" / "results.json"
    command = [
        str(Path(sys.executable).parent / "qeval"),
        "run",
        "--model",
        "qeval-tiny",
        *ARGS,
        "--output",
        str(output),
    ]
    sweep = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # a shell starts background jobs with SIGINT ignored, and that would be inherited here
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        cwd=tmp_path,
    )
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and sweep.poll() is None:
        time.sleep(0.2)
    assert first.exists(), "the first run never finished"
    os.killpg(sweep.pid, signal.SIGINT)  # Ctrl-C while the second run is going
    sweep.wait(timeout=120)
    assert not second.exists()  # nothing half-written
    finished_at = first.stat().st_mtime_ns
    json.loads(first.read_text())

    resumed = run_cli(
        ["qeval", "run", "--model", "qeval-tiny", *ARGS, "--output", str(output)], cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "skip qeval-tiny × none" in resumed.stdout
    assert first.stat().st_mtime_ns == finished_at  # not recomputed
    assert json.loads(second.read_text())["config"]["qeval"]["spec"] == "rtn:bits=2"
    assert not list(output.rglob(".partial-*"))

    forced = run_cli(
        ["qeval", "run", "--model", "qeval-tiny", *ARGS, "--output", str(output), "--force"],
        cwd=tmp_path,
    )
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert first.stat().st_mtime_ns != finished_at
    assert "rtn:bits=2" in forced.stdout  # the report printed at the end


@pytest.mark.slow
def test_a_failing_run_is_reported_and_the_others_finish(tmp_path):
    result = run_cli(
        [
            "qeval",
            "run",
            "--model",
            "qeval-tiny",
            "--quantizers",
            "none",
            "--tasks",
            "no_such_task_xyz,qeval_demo_facts",
            "--limit",
            "2",
            "--output",
            str(tmp_path / "runs"),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "qeval: error: run qeval-tiny × none failed" in result.stderr
    assert not list((tmp_path / "runs").rglob("results.json"))
