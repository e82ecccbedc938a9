"""``qeval run --launcher ray``: each unit a Ray task whose results come back through Ray and are
installed by the driver; the same numbers as one at a time; a killed worker's unit is retried
with no partial result left; error lines."""

from __future__ import annotations

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

from qeval_plugins import QevalError
from qeval_plugins.cli.main import main
from qeval_plugins.storage.locks import try_locked
from qeval_plugins.sweep.launch_settings import RaySettings
from qeval_plugins.sweep.local import SweepInterrupted
from qeval_plugins.sweep.progress import SweepProgress
from qeval_plugins.sweep.ray_cluster import (
    RAY_MISSING,
    RayLauncher,
    check_address,
    install_result,
    ray_failure,
)
from qeval_plugins.sweep.ray_task import TaskResult, collect_files, remove_abandoned
from qeval_plugins.sweep.unit import LOCK_FILE, Unit
from sweep.conftest import TASK, reference_sweep, scores, sweep_args


@pytest.fixture(autouse=True)
def no_ray_left():
    """A Ray instance an in-process test started is shut down, whatever happened."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def fake_unit(directory: Path, model: str = "qeval-tiny") -> Unit:
    return Unit(
        label=f"{model} × none",
        model=model,
        model_args="quantizer=none",
        directory=directory,
        tasks=(TASK,),
        expected=(TASK,),
        settings={"limit": 2},
        device="cpu",
        extra=("--limit", "2"),
    )


# --- what a task sends back and how the driver installs it (no Ray needed) -----------------


def test_a_task_sends_back_results_and_samples_within_the_cap(tmp_path):
    output = tmp_path / "output"
    (output / "model").mkdir(parents=True)
    (output / "model" / "results_1.json").write_bytes(b"{}")
    (output / "model" / "samples_t_1.jsonl").write_bytes(b"x" * 100)
    (output / "model" / "other.txt").write_bytes(b"not sent")
    files, refused = collect_files(output, cap=102)
    assert refused is None
    assert files == {"model/results_1.json": b"{}", "model/samples_t_1.jsonl": b"x" * 100}
    files, refused = collect_files(output, cap=101)
    assert files == {}
    assert refused.startswith("lm_eval wrote 102 bytes of results and samples, more than the ")
    assert "101 bytes a Ray task sends back" in refused
    assert collect_files(tmp_path / "missing", cap=1) == ({}, None)


def test_a_refused_result_fails_its_unit_and_installs_nothing(tmp_path):
    unit = fake_unit(tmp_path / "run")
    unit.directory.mkdir()
    result = TaskResult(0, {}, b"lm_eval's log\n", "node-1", refused="lm_eval wrote 300 MiB")
    outcome = install_result(unit, result, 1.0)
    assert outcome.kind == "failed"
    assert outcome.detail.startswith("run qeval-tiny × none failed: lm_eval wrote 300 MiB;")
    assert "nothing was replaced (log: " in outcome.detail
    assert (unit.directory / "lm_eval.log").read_bytes() == b"lm_eval's log\n"
    assert not (unit.directory / "results.json").exists()
    assert not list(unit.directory.glob(".partial-*"))


def test_sent_back_results_are_installed_and_paths_stay_in_their_folder(tmp_path):
    unit = fake_unit(tmp_path / "run")
    unit.directory.mkdir()
    results = json.dumps({"results": {TASK: {"acc,none": 0.5}}}).encode()
    files = {"m/results_1.json": results, "m/samples_qeval_demo_facts_1.jsonl": b"{}\n"}
    outcome = install_result(unit, TaskResult(0, files, b"log\n", "node-1"), 12.34)
    assert outcome.kind == "done" and outcome.detail == "in 12.3 s on node-1"
    assert json.loads((unit.directory / "results.json").read_bytes()) == json.loads(results)
    assert (unit.directory / "samples_qeval_demo_facts_1.jsonl").read_bytes() == b"{}\n"
    escaping = {"../../escaped_results_1.json": results}
    outcome = install_result(unit, TaskResult(0, escaping, b"", "node-1"), 1.0)
    assert outcome.kind == "failed" and "sent back '../../escaped_results_1.json'" in outcome.detail
    assert not (tmp_path / "escaped_results_1.json").exists()
    assert not list(unit.directory.glob(".partial-*"))


def test_a_dead_workers_scratch_folder_is_removed_a_live_one_kept(tmp_path):
    dead, live = tmp_path / "tmpdead", tmp_path / "tmplive"
    for folder in (dead, live):
        (folder / "output").mkdir(parents=True)
        (folder.with_suffix(".lock")).touch()
    with try_locked(live.with_suffix(".lock")):
        remove_abandoned(tmp_path, older_than=0)
        assert live.is_dir() and live.with_suffix(".lock").exists()
    assert not dead.exists() and not dead.with_suffix(".lock").exists()
    young = tmp_path / "tmpyoung"
    young.mkdir()
    young.with_suffix(".lock").touch()
    remove_abandoned(tmp_path)  # just made: perhaps a task about to lock it
    assert young.is_dir()


def test_a_unit_whose_worker_died_too_often_says_so(tmp_path):
    import ray.exceptions

    unit = fake_unit(tmp_path)
    line = ray_failure(
        unit, ray.exceptions.WorkerCrashedError(), 2, ray.exceptions.WorkerCrashedError
    )
    assert line == (
        "run qeval-tiny × none failed: the Ray worker running it died 3 times "
        "(--ray-retries 2); nothing was installed"
    )


# --- error lines ---------------------------------------------------------------------------


def ray_run(tmp_path, *options: str) -> list[str]:
    return [*sweep_args(tmp_path / "runs", "--launcher", "ray", *options)[1:]]


def test_without_ray_the_launcher_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("QEVAL_DEBUG", raising=False)
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(ray_run(tmp_path)) == 2
    assert capsys.readouterr().err == f"qeval: error: {RAY_MISSING}\n"
    assert RAY_MISSING == "--launcher ray needs Ray: pip install 'qeval[ray]'"
    assert not (tmp_path / "runs").exists()


def test_a_bad_ray_address_is_one_line_before_any_run(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("QEVAL_DEBUG", raising=False)
    assert main(ray_run(tmp_path, "--ray-address", "nonsense")) == 2
    assert capsys.readouterr().err == (
        "qeval: error: --ray-address must be auto, HOST:PORT or ray://HOST:PORT "
        "(e.g. 10.0.0.5:6379), got 'nonsense'.\n"
    )
    started = time.monotonic()
    assert main(ray_run(tmp_path, "--ray-address", "127.0.0.1:1")) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("qeval: error: --ray-address 127.0.0.1:1: nothing answers there (")
    assert line.endswith(
        "start the cluster's head with 'ray start --head' and give the address it prints."
    )
    assert time.monotonic() - started < 30
    assert not (tmp_path / "runs").exists()
    with pytest.raises(QevalError, match="got 'host:99999'"):
        check_address("host:99999")


# --- real Ray ------------------------------------------------------------------------------


def test_failed_and_held_units_through_a_local_ray_instance(tmp_path):
    """A unit whose lm_eval fails comes back failed with lm_eval's cause and its log; a unit
    whose lock another process holds is skipped without a task; the instance is shut down."""
    import ray

    failing = fake_unit(tmp_path / "failing", model=str(tmp_path / "no-such-model"))
    held = fake_unit(tmp_path / "held")
    held.directory.mkdir()
    console = Console(file=io.StringIO(), width=200)
    launcher = RayLauncher(RaySettings(retries=0))
    with (
        try_locked(held.directory / LOCK_FILE),
        SweepProgress(console, [failing, held]) as progress,
    ):
        outcomes = launcher.launch([failing, held], progress)
    assert not ray.is_initialized()
    assert outcomes[1].kind == "skip" and outcomes[1].detail.startswith(
        "being computed by another qeval run (pid "
    )
    assert outcomes[0].kind == "failed"
    assert outcomes[0].detail.startswith(f"run {failing.label} failed: ")
    assert f"(log: {failing.directory}" in outcomes[0].detail
    assert (failing.directory / "lm_eval.log").read_text().strip()  # the worker's log came back
    assert not (failing.directory / "results.json").exists()
    assert not list(failing.directory.glob(".partial-*"))
    assert not (held.directory / "results.json").exists()


def test_a_run_asking_more_than_the_local_instance_has_is_one_line(tmp_path):
    import ray

    units = [fake_unit(tmp_path / "a")]
    console = Console(file=io.StringIO(), width=200)
    launcher = RayLauncher(RaySettings(cpus_per_run=64))
    with SweepProgress(console, units) as progress, pytest.raises(QevalError) as refused:
        launcher.launch(units, progress)
    assert str(refused.value).startswith("--ray-cpus-per-run 64: the local Ray instance has ")
    assert not ray.is_initialized()
    assert not (tmp_path / "a").exists()


class CtrlCOnStart(SweepProgress):
    """Ctrl-C in the driver as soon as a unit's task has started."""

    def start(self, unit: Unit) -> None:
        super().start(unit)
        raise KeyboardInterrupt


def test_ctrl_c_cancels_the_tasks_releases_the_locks_and_installs_nothing(tmp_path):
    import ray

    units = [fake_unit(tmp_path / name) for name in ("a", "b")]
    console = Console(file=io.StringIO(), width=200)
    with CtrlCOnStart(console, units) as progress, pytest.raises(SweepInterrupted) as stopped:
        RayLauncher(RaySettings()).launch(units, progress)
    assert not ray.is_initialized()
    kinds = [outcome.kind for outcome in stopped.value.outcomes]
    assert set(kinds) == {"interrupted"}, stopped.value.outcomes
    assert "stopped by Ctrl-C; nothing was installed" in console.file.getvalue()
    for unit in units:
        with try_locked(unit.directory / LOCK_FILE) as mine:
            assert mine  # released
        assert sorted(path.name for path in unit.directory.iterdir()) == [LOCK_FILE]


# One CPU (one torch thread) per task, as the one-at-a-time reference has: with another number
# of threads the log-likelihoods differ in their last bits. Two tasks run at once on two cores.
RAY_LOCAL = ("--launcher", "ray", "--ray-cpus-per-run", "1")


@pytest.mark.slow
def test_the_ray_sweep_matches_one_at_a_time(tmp_path, sequential_scores):
    output = tmp_path / "runs"
    done = reference_sweep(output, *RAY_LOCAL)
    assert scores(output) == sequential_scores
    assert "Token authentication" not in done.stdout + done.stderr
    for folder in output.iterdir():
        assert not list(folder.glob(".partial-*"))
        assert len(list(folder.glob("lm_eval.*-*.log"))) == 1


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process now."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        found[int(entry.name)] = (parent, command.strip())
    return found


def _alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (ended, not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _descends_from(pid: int, ancestor: int, table: dict[int, tuple[int, str]]) -> bool:
    while pid in table and pid > 1:
        if pid == ancestor:
            return True
        pid = table[pid][0]
    return pid == ancestor


def _running_unit(driver: int) -> tuple[int, int, str] | None:
    """(Ray worker pid, its lm_eval pid, the unit's spec) of a unit running under ``driver``."""
    table = _processes()
    for pid, (parent, command) in table.items():
        worker = table.get(parent, (0, ""))[1]
        if (
            " -m lm_eval " in command
            and worker.startswith("ray::")
            and _descends_from(pid, driver, table)
        ):
            spec = command.split("--model_args ")[1].split()[0]
            return parent, pid, spec
    return None


@pytest.mark.slow
def test_a_killed_workers_unit_is_retried_with_the_same_numbers(tmp_path, sequential_scores):
    output = tmp_path / "runs"
    args = sweep_args(output, *RAY_LOCAL, "--ray-retries", "1")
    env = {key: value for key, value in os.environ.items() if key != "QEVAL_DEBUG"}
    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:
        sweep = subprocess.Popen(
            [str(Path(sys.executable).parent / "qeval"), *args[1:]],
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while (found := _running_unit(sweep.pid)) is None:
            assert sweep.poll() is None, (tmp_path / "stderr").read_text()
            assert time.monotonic() < deadline, "no unit started within 5 minutes"
            time.sleep(0.2)
        worker, lm_eval, spec = found
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _alive(lm_eval):
            assert time.monotonic() < deadline, "lm_eval outlived its killed Ray worker"
            time.sleep(0.2)
        assert sweep.wait(timeout=600) == 0, (tmp_path / "stdout").read_text()
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait()
    stdout = (tmp_path / "stdout").read_text()
    assert "sweep: 4 done" in stdout, stdout
    assert scores(output) == sequential_scores
    assert spec.startswith("pretrained=qeval-tiny,quantizer=")  # a unit of this sweep was hit
    for folder in output.iterdir():  # the killed unit's included: no partial state left
        assert not list(folder.glob(".partial-*")) and not list(folder.glob(".*.tmp"))
        assert len(list(folder.glob("lm_eval.*-*.log"))) == 1  # only finished tasks came back
