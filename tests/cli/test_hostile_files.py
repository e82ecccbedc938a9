"""Files that are not regular files, or too large, where qeval reads a user's file: a FIFO named
``results.json`` (reading it blocks until someone writes), a link to ``/dev/zero`` (it never
ends). Each is refused by its type or size before a byte is read (qeval_plugins.core.safe_read).

The commands run in a subprocess with a timeout, the in-process reads under an alarm, and both
with a memory cap, so that a regression fails the test instead of hanging the suite or reading
``/dev/zero`` until the machine runs out of memory.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qeval_plugins import QevalError
from qeval_plugins.core import safe_read
from qeval_plugins.core.calibration import read_passages
from qeval_plugins.core.safe_read import RefusedFile, read_regular, read_tail
from qeval_plugins.sweep import settings as run_settings
from qeval_plugins.sweep.failures import run_failure
from qeval_plugins.sweep.planning import PlannedRun, local_head_dim
from qeval_plugins.sweep.results import existing_state
from qeval_plugins.sweep.specs import check_spec_text

TESTS = Path(__file__).resolve().parents[1]
NONE_RUN = TESTS / "data" / "report" / "qeval-tiny" / "none"
NONE_RUN /= "results_2026-11-23T10-00-00.000000.json"
HOSTILE = {
    "fifo": lambda path: os.mkfifo(path),
    "dev-zero": lambda path: path.symlink_to("/dev/zero"),
}


MEMORY_CAP = 4 << 30  # the commands' data segment (heap and private mappings)


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_CAP, MEMORY_CAP))


def run_capped(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    """A console command of this environment, killed after ``timeout`` s (TimeoutExpired) and
    failing (MemoryError) past :data:`MEMORY_CAP`."""
    env = {k: v for k, v in os.environ.items() if k != "QEVAL_DEBUG"}
    return subprocess.run(
        [str(Path(sys.executable).parent / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        preexec_fn=_cap_memory,
    )


class Blocked(BaseException):
    """A read blocked past the alarm: not an OSError (TimeoutError is one, and code under test
    may catch it and go on to block again), not an Exception."""


@pytest.fixture
def alarm():
    """Fail instead of hanging when a read in this process blocks for 20 s (:class:`Blocked`,
    then again every second), or instead of exhausting the machine's memory when it allocates
    512 MiB more (MemoryError)."""

    def expired(signum, frame):
        raise Blocked("a read blocked for 20 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, 20, 1)
    limits = resource.getrlimit(resource.RLIMIT_DATA)
    with open("/proc/self/status") as status:  # Linux: the data segment in use, in kB
        used = next(int(line.split()[1]) << 10 for line in status if line.startswith("VmData:"))
    resource.setrlimit(resource.RLIMIT_DATA, (used + (512 << 20), limits[1]))
    yield
    resource.setrlimit(resource.RLIMIT_DATA, limits)
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------- the helper


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_only_regular_files_are_read(tmp_path, alarm, kind):
    path = tmp_path / "results.json"
    HOSTILE[kind](path)
    with pytest.raises(RefusedFile, match=r"^not a regular file$"):
        read_regular(path, 1 << 20)
    with pytest.raises(RefusedFile, match=r"^not a regular file$"):
        read_tail(path, 100)
    with pytest.raises(RefusedFile, match=r"^not a regular file$"):
        read_regular(tmp_path, 1 << 20)  # a folder


def test_the_size_cap_is_checked_before_reading_and_links_to_files_are_followed(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b"x" * 5000)
    with pytest.raises(RefusedFile, match=r"^over 4,096 bytes \(5,000 bytes\)$") as refused:
        read_regular(path, 4096)
    assert isinstance(refused.value, OSError)  # callers' "cannot be read" branch takes it
    assert read_regular(path, 5000) == b"x" * 5000
    assert read_tail(path, 3) == b"xxx"  # a tail is read whatever the file's size
    elsewhere = tmp_path / "elsewhere" / "real.json"
    elsewhere.parent.mkdir()
    elsewhere.write_text("{}")
    (tmp_path / "link.json").symlink_to(elsewhere)  # a link to a regular file reads as the file
    assert read_regular(tmp_path / "link.json", 100) == b"{}"
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "missing.json", 100)


def test_a_fifo_swapped_in_after_the_check_is_refused_on_the_open_descriptor(
    tmp_path, alarm, monkeypatch
):
    """The path passed the check as a regular file and is a FIFO when opened: the open does not
    block (O_NONBLOCK) and the descriptor's own type refuses it."""
    regular = tmp_path / "regular"
    regular.write_text("{}")
    fifo = tmp_path / "results.json"
    os.mkfifo(fifo)
    real_stat = os.stat
    monkeypatch.setattr(
        safe_read.os, "stat", lambda path, *a, **k: real_stat(regular if path == fifo else path)
    )
    with pytest.raises(RefusedFile, match="not a regular file"):
        read_regular(fifo, 100)


def test_a_file_that_grows_past_the_cap_while_read_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    path.write_bytes(b"x" * 100)
    real_stat, real_fstat = os.stat, os.fstat

    def small(status):  # the file was 10 bytes when checked, 100 when read
        return os.stat_result((*status[:6], 10, *status[7:]))

    monkeypatch.setattr(safe_read.os, "stat", lambda path: small(real_stat(path)))
    monkeypatch.setattr(safe_read.os, "fstat", lambda descriptor: small(real_fstat(descriptor)))
    with pytest.raises(RefusedFile, match=r"over 50 bytes \(it grew while read\)"):
        read_regular(path, 50)


# ---------------------------------------------------------------- qeval report


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_qeval_report_skips_a_results_file_that_is_no_regular_file(tmp_path, kind, monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")  # warning lines unwrapped
    runs = tmp_path / "runs"
    (runs / "good").mkdir(parents=True)
    shutil.copy(NONE_RUN, runs / "good" / "results.json")
    (runs / "hostile").mkdir()
    HOSTILE[kind](runs / "hostile" / "results.json")
    (runs / "scan").mkdir()
    HOSTILE[kind](runs / "scan" / "scan.json")
    shown = run_capped(["qeval", "report", str(runs)], timeout=60)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    hostile = runs / "hostile" / "results.json"
    assert f"{hostile}: cannot read (not a regular file); skipped" in shown.stdout
    assert f"{runs / 'scan' / 'scan.json'}: cannot read (not a regular file); skipped" in (
        shown.stdout
    )
    assert "qeval-tiny" in shown.stdout  # the good run is reported
    lone = run_capped(["qeval", "report", str(hostile)], timeout=60)
    assert lone.returncode == 1 and "could not be read" in lone.stderr


# ---------------------------------------------------------------- qeval run's resume check


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_qeval_runs_resume_check_refuses_a_results_file_that_is_no_regular_file(tmp_path, kind):
    folder = tmp_path / "runs" / "qeval-tiny__none"
    folder.mkdir(parents=True)
    HOSTILE[kind](folder / "results.json")
    command = ["qeval", "run", "--model", "qeval-tiny", "--quantizers", "none", "--device", "cpu"]
    command += ["--tasks", "qeval_demo_facts", "--output", str(tmp_path / "runs")]
    refused = run_capped(command, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    [line] = refused.stderr.splitlines()
    assert line.startswith("qeval: error: ") and (
        "qeval-tiny × none (its results.json cannot be read (not a regular file))" in line
    )
    assert "--force" in line and not list(folder.glob("lm_eval*.log"))  # before any run


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_the_other_files_qeval_run_reads_are_never_followed_into_a_fifo_or_device(
    tmp_path, alarm, kind
):
    """The settings record, a model's config.json, --config and a calibration file."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"results": {"t": {}}}))
    HOSTILE[kind](folder / run_settings.SETTINGS_FILE)
    state, why = existing_state(folder, {}, ["t"])
    assert state == "conflict" and "qeval_run.json is unreadable" in why
    HOSTILE[kind](folder / "config.json")
    assert local_head_dim(str(folder)) is None
    with pytest.raises(QevalError, match=r"--config '.*' cannot be read \(not a regular file\)"):
        run_settings.parse_lm_eval_args(["--config", str(folder / "config.json")])
    with pytest.raises(QevalError, match=r"cannot be read \(not a regular file\)"):
        read_passages(str(folder / "config.json"))


def test_a_hostile_log_does_not_hang_the_failure_line(tmp_path, alarm):
    """The failed run's log is read from its end, a FIFO not at all."""
    run = PlannedRun("qeval-tiny", check_spec_text("none", "cpu"), tmp_path)
    os.mkfifo(tmp_path / "lm_eval.log")
    failure = run_failure(run, tmp_path / "lm_eval.log", 1)
    assert "lm_eval exited with status 1" in str(failure)
    big = tmp_path / "big.log"
    with open(big, "w") as log:
        log.write("ValueError: early\n" + "noise\n" * 200_000 + "KeyError: 'late'\n")
    assert "KeyError: 'late'" in str(run_failure(run, big, 1))


def test_the_guards_catch_the_old_reads(tmp_path, alarm):
    """The guards themselves: the reads the old code did block or exhaust memory, and fail the
    test instead."""
    fifo = tmp_path / "results.json"
    os.mkfifo(fifo)
    signal.setitimer(signal.ITIMER_REAL, 1, 1)
    for _ in range(2):  # the alarm fires again for a read that blocks after the first
        with pytest.raises(Blocked):
            fifo.read_bytes()
    signal.setitimer(signal.ITIMER_REAL, 0)
    assert threading.current_thread() is threading.main_thread()
    with pytest.raises(MemoryError):
        Path("/dev/zero").read_bytes()
    endless = run_capped(["python", "-c", "open('/dev/zero', 'rb').read()"], timeout=60)
    assert "MemoryError" in endless.stderr
