"""``qeval run``'s lm_eval child: it dies with its parent, and a full disk is named as the cause
of its failure."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from qeval_plugins.sweep import child as child_module
from qeval_plugins.sweep import failures as failures_module
from qeval_plugins.sweep import unit as sweep_module
from qeval_plugins.sweep.driver import sweep

TASK = "qeval_demo_facts"

# ---------------------------------------------------------------- kill -9 of qeval run

BLOCKING_CHILD = """
import os, sys, time
from pathlib import Path
pid_file = Path(sys.argv[1])
pid_file.with_suffix(".tmp").write_text(str(os.getpid()))
os.replace(pid_file.with_suffix(".tmp"), pid_file)
time.sleep(120)  # an lm_eval run that takes a while
"""

PARENT = """
import sys
from qeval_plugins.sweep import unit as sweep_module
from qeval_plugins.cli.main import main

child, pid_file, output = sys.argv[1:4]
sweep_module.lm_eval_command = lambda *args: [sys.executable, child, pid_file]
sys.exit(main(["run", "--model", "qeval-tiny", "--quantizers", "none", "--tasks", sys.argv[4],
               "--device", "cpu", "--output", output]))
"""


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_lm_eval_child_dies_with_a_killed_qeval_run(tmp_path):
    (tmp_path / "child.py").write_text(BLOCKING_CHILD)
    (tmp_path / "parent.py").write_text(PARENT)
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [sys.executable, str(tmp_path / "parent.py"), str(tmp_path / "child.py"), str(pid_file),
         str(tmp_path / "runs"), TASK],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    child = None
    try:
        deadline = time.time() + 180
        while not pid_file.exists() and time.time() < deadline and parent.poll() is None:
            time.sleep(0.1)
        assert pid_file.exists(), parent.stderr.read().decode() if parent.poll() else "no child"
        child = int(pid_file.read_text())
        assert _alive(child)
        parent.kill()  # kill -9: no handler, no cleanup in qeval
        parent.wait(timeout=30)
        deadline = time.time() + 10
        while _alive(child) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the lm_eval child outlived its killed qeval run"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)
        parent.stderr.close()


def test_children_are_set_to_die_with_their_parent_on_linux_only(monkeypatch):
    assert (child_module.die_with_parent() is not None) == sys.platform.startswith("linux")
    monkeypatch.setattr(child_module.sys, "platform", "darwin")
    assert child_module.die_with_parent() is None  # macOS: README "Known limitations"


# ---------------------------------------------------------------- a full disk


def _fake_child(tmp_path: Path, monkeypatch, body: str) -> None:
    """Each run's lm_eval is ``body`` (Python, argv[1]: the partial output folder)."""
    script = tmp_path / "fake_lm_eval.py"
    script.write_text("import sys\nfrom pathlib import Path\npartial = Path(sys.argv[1])\n" + body)
    monkeypatch.setattr(
        sweep_module,
        "lm_eval_command",
        lambda unit, partial: [sys.executable, str(script), str(partial)],
    )


def _run_sweep(output: Path) -> list[str]:
    console = Console(file=io.StringIO(), width=300)
    return sweep(["qeval-tiny"], ["none"], [TASK], output, "cpu", [], False, console)


ENOSPC_TRACEBACK = """
print("Traceback (most recent call last):")
print('  File "lm_eval/evaluator.py", line 9, in save')
print("OSError: [Errno 28] No space left on device: {path!r}")
sys.exit(1)
"""


def _mount_of(path: Path) -> Path:
    """The mount point above ``path``: the highest folder on the same device (st_dev)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    device = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == device:
        path = path.parent
    return path


def test_a_full_disk_is_named_with_its_mount_point(tmp_path, monkeypatch):
    """Today: ``lm_eval exited with status 1: OSError: [Errno 28] ...`` only."""
    written = tmp_path / "runs" / "qeval-tiny__none" / ".partial" / "results.json"
    _fake_child(tmp_path, monkeypatch, ENOSPC_TRACEBACK.format(path=str(written)))
    [failure] = _run_sweep(tmp_path / "runs")
    mount = _mount_of(tmp_path)
    assert failure.startswith(
        f"run qeval-tiny × none failed: no space left on device (the filesystem mounted at "
        f"{mount}, "
    )
    assert " free now): lm_eval exited with status 1: OSError: [Errno 28] No space" in failure


@pytest.mark.skipif(not os.path.ismount("/dev/shm"), reason="no second filesystem at /dev/shm")
def test_a_full_disk_elsewhere_names_that_disk(tmp_path, monkeypatch):
    """lm_eval ran out of space on another disk than --output's (a cache, /tmp): that one."""
    _fake_child(tmp_path, monkeypatch, ENOSPC_TRACEBACK.format(path="/dev/shm/hf/tokenizer.json"))
    [failure] = _run_sweep(tmp_path / "runs")
    assert "no space left on device (the filesystem mounted at /dev/shm, " in failure


def test_a_silent_failure_on_a_nearly_full_disk_says_so(tmp_path, monkeypatch):
    """A full disk can keep even the traceback out of the log: the free space is checked."""
    _fake_child(tmp_path, monkeypatch, "sys.exit(1)\n")
    monkeypatch.setattr(failures_module, "disk_space", lambda path: (Path("/data"), 1536))
    [failure] = _run_sweep(tmp_path / "runs")
    assert failure.startswith(
        "run qeval-tiny × none failed: only 1.5 KiB free on the filesystem mounted at /data "
        "(a full disk?): lm_eval exited with status 1 (log: "
    )
    monkeypatch.setattr(failures_module, "disk_space", lambda path: (Path("/data"), 100 << 30))
    [failure] = _run_sweep(tmp_path / "runs")
    assert "lm_eval exited with status 1 (log: " in failure and "disk" not in failure


def test_results_cut_short_by_a_full_disk_name_it(tmp_path, monkeypatch):
    """lm-eval exits 0 when it could not write its results: the log says why."""
    body = (
        '(partial / "m").mkdir(parents=True)\n'
        '(partial / "m" / "results_2026-01-01T00-00-00.json").write_text(\'{"results": {\')\n'
        'print("OSError: [Errno 28] No space left on device")\n'
    )
    _fake_child(tmp_path, monkeypatch, body)
    [failure] = _run_sweep(tmp_path / "runs")
    assert "lm_eval exited 0 but its results file is not valid JSON" in failure
    assert "(no space left on device (the filesystem mounted at " in failure
    assert "nothing was replaced" in failure


def test_a_full_disk_while_installing_the_results_is_one_line(tmp_path, monkeypatch):
    """qeval's own write fails (ENOSPC): a failed run naming the disk, not a traceback."""
    results = json.dumps({"results": {TASK: {"acc,none": 0.5}}})
    body = (
        '(partial / "m").mkdir(parents=True)\n'
        f'(partial / "m" / "results_2026-01-01T00-00-00.json").write_text({results!r})\n'
    )
    _fake_child(tmp_path, monkeypatch, body)

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(sweep_module, "write_atomic", full)
    [failure] = _run_sweep(tmp_path / "runs")
    assert failure.startswith(
        "run qeval-tiny × none failed: cannot read or install its results (no space left on "
        "device (the filesystem mounted at "
    )


def test_a_sweep_whose_every_run_failed_ends_with_its_failure_lines_only(
    tmp_path, monkeypatch, capsys
):
    """``qeval run`` printed "No runs to report." and a warning before the failure line."""
    from qeval_plugins.cli.main import main

    _fake_child(tmp_path, monkeypatch, ENOSPC_TRACEBACK.format(path=str(tmp_path / "x")))
    output = tmp_path / "runs"
    arguments = ["--model", "qeval-tiny", "--quantizers", "none", "--tasks", TASK]
    status = main(["run", *arguments, "--output", str(output), "--device", "cpu"])
    captured = capsys.readouterr()
    assert status == 1
    assert "No runs to report" not in captured.out + captured.err
    assert "no results" not in captured.out + captured.err
    [error] = [line for line in captured.err.splitlines() if line.startswith("qeval: error:")]
    assert "no space left on device" in error
