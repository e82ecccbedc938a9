"""``qeval run`` to a pipe or a file: a heartbeat line per interval while a run computes (label,
what lm_eval is doing, elapsed time); on a terminal the live progress bar instead."""

from __future__ import annotations

import io
import re
import sys

import pytest
from rich.console import Console

from qeval_plugins import QevalError
from qeval_plugins.sweep import unit as sweep_module
from qeval_plugins.sweep.driver import sweep
from qeval_plugins.sweep.heartbeat import PHASE_WIDTH, elapsed_text, heartbeat_interval, log_phase

TASK = "qeval_demo_facts"
SLOW_LM_EVAL = """
import json, sys, time
from pathlib import Path
partial = Path(sys.argv[1])
print("Running loglikelihood requests: 40%| 80/200", flush=True)
time.sleep(1.5)  # an eight-minute run, shortened
partial.mkdir(parents=True)
(partial / "results_1.json").write_text(json.dumps({"results": {"TASK": {"acc,none": 0.5}}}))
""".replace("TASK", TASK)


def slow_sweep(tmp_path, monkeypatch, console: Console) -> str:
    script = tmp_path / "slow_lm_eval.py"
    script.write_text(SLOW_LM_EVAL)
    monkeypatch.setattr(
        sweep_module,
        "lm_eval_command",
        lambda unit, partial: [sys.executable, str(script), str(partial)],
    )
    monkeypatch.setenv("QEVAL_HEARTBEAT_SECONDS", "0.3")
    failures = sweep(["qeval-tiny"], ["none"], [TASK], tmp_path / "runs", "cpu", [], False, console)
    assert failures == []
    return console.file.getvalue()


def test_a_run_to_a_pipe_prints_heartbeat_lines(tmp_path, monkeypatch):
    printed = slow_sweep(tmp_path, monkeypatch, Console(file=io.StringIO(), width=80))
    beats = re.findall(r"^\[1/1\] qeval-tiny × none: (.*), (\d+) s elapsed$", printed, re.M)
    assert len(beats) >= 3, printed
    phases = {phase for phase, _ in beats}
    assert "lm_eval: Running loglikelihood requests 40% (80/200)" in phases, phases
    seconds = [int(elapsed) for _, elapsed in beats]
    assert seconds == sorted(seconds) and seconds[-1] >= 1
    *_, last_run, summary = printed.rstrip().splitlines()
    assert last_run.startswith("done qeval-tiny × none in ") and summary == "sweep: 1 done"


def test_a_run_on_a_terminal_shows_the_live_bar_and_no_heartbeat(tmp_path, monkeypatch):
    console = Console(file=io.StringIO(), width=120, force_terminal=True)
    printed = slow_sweep(tmp_path, monkeypatch, console)
    assert "elapsed" not in printed and "1/1 runs" in printed


def test_the_interval_and_the_elapsed_time(monkeypatch):
    monkeypatch.delenv("QEVAL_HEARTBEAT_SECONDS", raising=False)
    assert heartbeat_interval() == 30.0
    monkeypatch.setenv("QEVAL_HEARTBEAT_SECONDS", "2.5")
    assert heartbeat_interval() == 2.5
    for bad in ("0", "-1", "nan", "soon"):
        monkeypatch.setenv("QEVAL_HEARTBEAT_SECONDS", bad)
        with pytest.raises(QevalError, match="QEVAL_HEARTBEAT_SECONDS must be a number"):
            heartbeat_interval()
    assert [elapsed_text(s) for s in (0.4, 59.9, 485, 3725)] == [
        "0 s",
        "59 s",
        "8 min 05 s",
        "1 h 02 min",
    ]


LIMIT_WARNING = (
    "2026-12-07:18:01:16 WARNING  [config.evaluate_config:337] --limit SHOULD ONLY BE USED FOR "
    "TESTING. REAL METRICS SHOULD NOT BE COMPUTED USING LIMIT."
)
SEED_INFO = (
    "2026-12-07:18:20:05 INFO     [evaluator:214] Setting random seed to 0 | Setting numpy seed "
    "to 1234 | Setting torch manual seed to 1234 | Setting fewshot manual seed to 1234"
)


@pytest.mark.parametrize(
    ("tail", "phase"),
    [
        (
            "Running loglikelihood requests:  10%|█ | 20/200 [00:01<00:09]\r"
            "Running loglikelihood requests:  40%|████      | 80/200 [00:03<00:04, 25.1it/s]",
            "Running loglikelihood requests 40% (80/200)",
        ),
        (f"{SEED_INFO}\n{LIMIT_WARNING}\n", SEED_INFO.split("] ", 1)[1][: PHASE_WIDTH - 1] + "…"),
        (f"{LIMIT_WARNING}\n", "started"),  # a warning is no phase
        (
            "Building contexts 100%|██| 4/4\n|qeval_sqnr| 1|none| 0|kl_mean|↓|0.18|",
            "Building contexts 100% (4/4)",
        ),
        ("", "started"),
    ],
)
def test_the_heartbeat_names_lm_evals_last_progress_or_info_line(tail, phase):
    assert log_phase(tail) == phase
    assert len(log_phase(tail)) <= PHASE_WIDTH
