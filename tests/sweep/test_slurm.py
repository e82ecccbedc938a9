"""``qeval run --launcher slurm``: the job array through submitit. Without a SLURM cluster here,
``--slurm-local`` runs the array as local processes (the same numbers as one unit at a time, the
--detach / collect cycle with a killed job), and fake ``sbatch``/``sacct`` commands check what
is submitted (the sbatch file, against tests/sweep/data) and how sacct's states are read."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import run_cli
from rich.console import Console

from qeval_plugins import QevalError
from qeval_plugins.storage.locks import try_locked
from qeval_plugins.sweep import slurm
from qeval_plugins.sweep.launch_settings import SlurmSettings
from qeval_plugins.sweep.local import SweepInterrupted
from qeval_plugins.sweep.progress import SweepProgress
from qeval_plugins.sweep.results import existing_state
from qeval_plugins.sweep.slurm import SlurmLauncher, run_on_node
from qeval_plugins.sweep.slurm_jobs import (
    RECORD_FILE,
    JobRecord,
    job_paths,
    job_phase,
    parse_sacct,
    process_alive,
    read_record,
    write_record,
)
from qeval_plugins.sweep.unit import LOCK_FILE, Outcome, Unit, install_validated, new_attempt
from sweep.conftest import reference_sweep, scores, sweep_args

DATA = Path(__file__).parent / "data"
TASK = "qeval_demo_facts"
GPU_REQUEST = {"partition": "gpu", "time": 90, "gpus_per_run": 2, "cpus_per_run": 8}
GPU_REQUEST |= {"mem": "64G", "extra": {"account": "proj"}}

FAKE_SBATCH = """#!/bin/sh
# keeps the sbatch file it is given; job ids 4242, 4243, ...
n=$(cat "$FAKE_SLURM/next_id")
cp "$1" "$FAKE_SLURM/sbatch_$n.sh"
echo $((n + 1)) > "$FAKE_SLURM/next_id"
echo "Submitted batch job $n"
"""
FAKE_SACCT = '#!/bin/sh\ncat "$FAKE_SLURM/sacct.txt"\n'


def fake_units(output: Path, count: int) -> list[Unit]:
    return [
        Unit(
            label=f"tiny × spec{index}",
            model="qeval-tiny",
            model_args="quantizer=none",
            directory=output / f"run{index}",
            tasks=(TASK,),
            expected=(TASK,),
            settings={"limit": 8},
            device="cuda",
            extra=(),
        )
        for index in range(count)
    ]


@pytest.fixture
def cluster(tmp_path, monkeypatch) -> Path:
    """``sbatch``, ``srun`` and ``sacct`` stand-ins first on PATH; returns their folder
    (``sbatch_<id>.sh``: each file submitted; ``sacct.txt``: what sacct prints)."""
    folder = tmp_path / "fake-slurm"
    folder.mkdir()
    for name, text in {"sbatch": FAKE_SBATCH, "sacct": FAKE_SACCT, "srun": "#!/bin/sh\n"}.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    (folder / "next_id").write_text("4242\n")
    (folder / "sacct.txt").write_text("JobID|State|NodeList\n")
    monkeypatch.setenv("FAKE_SLURM", str(folder))
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def launch(launcher: SlurmLauncher, units: list[Unit]) -> tuple[list[Outcome], str]:
    console = Console(file=io.StringIO(), width=400)
    with SweepProgress(console, units) as progress:
        outcomes = launcher.launch(units, progress)
    return outcomes, console.file.getvalue()


def records(units: list[Unit]) -> list[JobRecord | None]:
    return [read_record(unit.directory) for unit in units]


def install_results(unit: Unit) -> None:
    """Results of ``unit`` as its job would leave them."""
    partial = unit.directory / ".partial-test"
    partial.mkdir(parents=True)
    (partial / "results_1.json").write_text(json.dumps({"results": {TASK: {"acc,none": 1.0}}}))
    install_validated(unit, 0, partial, unit.directory / "lm_eval.log")
    assert existing_state(unit.directory, unit.settings, [TASK])[0] == "complete"


def test_the_sbatch_file_of_a_gpu_array(tmp_path, cluster, monkeypatch):
    """What is submitted for four units with every request option: one array, checked as text
    (tests/sweep/data/sbatch_gpu_array.sh: submitit's ``_make_sbatch_string`` for these
    parameters, with the submission folder and python normalised); each task gets its unit
    with an absolute folder and the CPUs it asked for as torch threads."""
    from submitit.core.utils import DelayedSubmission

    monkeypatch.chdir(tmp_path)
    output = Path("runs")  # relative, as a user may give it
    settings = SlurmSettings(folder=output / ".slurm", detach=True, **GPU_REQUEST)
    outcomes, _ = launch(SlurmLauncher(settings), fake_units(output, 4))
    assert [outcome.kind for outcome in outcomes] == ["pending"] * 4
    [submitted] = cluster.glob("sbatch_*.sh")
    [folder] = (tmp_path / "runs" / ".slurm").iterdir()
    text = submitted.read_text().replace(str(folder), "/FOLDER")
    text = text.replace(shlex.quote(sys.executable), "PYTHON")
    assert text == (DATA / "sbatch_gpu_array.sh").read_text()
    record = read_record(tmp_path / "runs" / "run3")
    unit, env, *_ = DelayedSubmission.load(job_paths(record).submitted_pickle).args
    assert unit.directory == tmp_path / "runs" / "run3"
    assert env == {"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8"}


def test_sacct_states_and_what_they_mean():
    states = parse_sacct((DATA / "sacct_states.txt").read_text())
    assert {job: state for job, (state, _) in states.items()} == {
        "5000_0": "COMPLETED",
        "5000_1": "CANCELLED",  # "CANCELLED by 1000"
        "5000_2": "TIMEOUT",
        "5000_3": "PREEMPTED",
        "5000_4": "NODE_FAIL",
        "5000_5": "OUT_OF_MEMORY",
        "5000_6": "REQUEUED",
        "5000_7": "CONFIGURING",
        "5000_8": "COMPLETING",
        "5000_9": "PENDING",  # 5000_[9-11%2]: a pending range of the array
        "5000_10": "PENDING",
        "5000_11": "PENDING",
        "5001": "RUNNING",
    }
    assert states["5000_5"][1] == "n06"
    phases = {job: job_phase(state) for job, (state, _) in states.items()}
    assert [job for job, phase in phases.items() if phase == "pending"] == [
        "5000_6", "5000_7", "5000_9", "5000_10", "5000_11"
    ]  # fmt: skip
    assert [job for job, phase in phases.items() if phase == "running"] == ["5000_8", "5001"]
    assert job_phase("UNKNOWN") == "pending"  # not listed by sacct yet


def test_collect_follows_running_jobs_and_resubmits_only_the_failed_one(tmp_path, cluster):
    """Four units submitted (--detach); sacct then says COMPLETED (with results), RUNNING,
    FAILED, PENDING: the same command reports done, running, resubmits the failed unit alone
    (its line names the state and the logs) and leaves the pending one; a second collect
    submits nothing."""
    output = tmp_path / "runs"
    units = fake_units(output, 4)
    launcher = SlurmLauncher(SlurmSettings(folder=output / ".slurm", detach=True))
    launch(launcher, units)
    first = records(units)
    assert [record.job_id for record in first] == ["4242_0", "4242_1", "4242_2", "4242_3"]
    assert {record.submissions for record in first} == {1}

    from submitit.core.utils import cloudpickle_dump

    install_results(units[0])
    cloudpickle_dump(("success", Outcome("done", "in 3.0 s")), job_paths(first[0]).result_pickle)
    older_log = units[2].directory / "lm_eval.20000101-000000-000000.log"  # an earlier attempt's
    older_log.write_text("an older attempt\n")
    _, attempt_log = new_attempt(units[2].directory)  # the job's attempt; lm_eval.log links to it
    attempt_log.write_text("the job's lm_eval output\n")
    job_paths(first[2]).stdout.write_text("the job's output\n")
    (cluster / "sacct.txt").write_text((DATA / "sacct_array.txt").read_text())
    outcomes, printed = launch(launcher, units)
    assert [outcome.kind for outcome in outcomes] == ["done", "running", "pending", "pending"]
    assert outcomes[0].detail == "in 3.0 s"
    resubmitted = outcomes[2].detail
    assert resubmitted.startswith("submitted as job 4243 (submission 2; the last one: run tiny")
    assert "job 4242_2 ended (FAILED) without results" in resubmitted
    assert f"(lm_eval log {attempt_log}, job log {job_paths(first[2]).stdout}" in resubmitted
    assert str(job_paths(first[2]).stdout) in resubmitted
    assert "scancel 4242 4243" in printed
    second = records(units)
    assert second[0].collected and not any(record.collected for record in second[1:])
    assert [record.job_id for record in second[1:]] == ["4242_1", "4243", "4242_3"]
    assert [record.submissions for record in second] == [1, 1, 2, 1]
    assert sorted(path.name for path in cluster.glob("sbatch_*")) == [
        "sbatch_4242.sh", "sbatch_4243.sh"
    ]  # fmt: skip

    outcomes, _ = launch(launcher, units)  # sacct lists 4243 not yet: pending
    assert [outcome.kind for outcome in outcomes] == ["skip", "running", "pending", "pending"]
    assert records(units) == second
    assert len(list(cluster.glob("sbatch_*"))) == 2


def test_a_job_that_ended_without_a_log_points_at_output(tmp_path, cluster):
    output = tmp_path / "runs"
    [unit] = fake_units(output, 1)
    launcher = SlurmLauncher(SlurmSettings(folder=output / ".slurm", detach=True))
    launch(launcher, [unit])
    (cluster / "sacct.txt").write_text("JobID|State|NodeList\n4242|FAILED|node7\n")
    [outcome], _ = launch(launcher, [unit])
    assert "ended (FAILED) without results and wrote no job log on node node7" in outcome.detail
    assert "filesystem the nodes share" in outcome.detail
    assert "lm_eval log" not in outcome.detail  # the job started no lm_eval: its own logs only


def test_a_job_whose_task_raised_fails_with_the_last_line(tmp_path, cluster):
    """A timed-out job: submitit's signal handler raised in the task (its traceback in the
    result file)."""
    from submitit.core.utils import cloudpickle_dump

    output = tmp_path / "runs"
    [unit] = fake_units(output, 1)
    launcher = SlurmLauncher(SlurmSettings(folder=output / ".slurm", detach=True))
    launch(launcher, [unit])
    trace = (
        "Traceback (most recent call last):\n  File ...\nsubmitit.core.utils.UncompletedJobError: "
        "Job not requeued because: timed-out and not checkpointable.\n"
    )
    cloudpickle_dump(("error", trace), job_paths(read_record(unit.directory)).result_pickle)
    [outcome], _ = launch(launcher, [unit])
    assert outcome.kind == "pending"  # submitted again
    assert (
        "(submission 2; the last one: run tiny × spec0: job 4242 failed: "
        "submitit.core.utils.UncompletedJobError: Job not requeued because: timed-out and not "
        "checkpointable. (job log "
    ) in outcome.detail


def test_a_unit_another_qeval_run_computes_is_not_submitted(tmp_path, cluster):
    """A local ``qeval run`` holds the first unit's run folder lock: it is skipped, naming that
    process, and only the second unit is submitted; the check lets the lock go at once."""
    output = tmp_path / "runs"
    units = fake_units(output, 2)
    launcher = SlurmLauncher(SlurmSettings(folder=output / ".slurm", detach=True))
    units[0].directory.mkdir(parents=True)
    with try_locked(units[0].directory / LOCK_FILE) as mine:
        assert mine
        outcomes, _ = launch(launcher, units)
    assert outcomes[0] == Outcome(
        "skip", f"being computed by another qeval run (pid {os.getpid()})"
    )
    assert outcomes[1] == Outcome("pending", "submitted as job 4242")
    assert records(units)[0] is None
    assert [path.name for path in cluster.glob("sbatch_*")] == ["sbatch_4242.sh"]
    with try_locked(units[1].directory / LOCK_FILE) as mine:
        assert mine  # not kept by the launcher (the job takes it when it runs)


def test_a_job_that_found_its_unit_being_computed_is_judged_by_the_folder_now(tmp_path, cluster):
    """Both jobs returned "being computed by another qeval run" (a local run held the locks
    when they ran). That run has since left results for the first unit: it is "results exist";
    the second has none (that run failed or was stopped): it is submitted again."""
    from submitit.core.utils import cloudpickle_dump

    output = tmp_path / "runs"
    units = fake_units(output, 2)
    launcher = SlurmLauncher(SlurmSettings(folder=output / ".slurm", detach=True))
    launch(launcher, units)
    held = Outcome("skip", "being computed by another qeval run (pid 2487)")
    for record in records(units):
        cloudpickle_dump(("success", held), job_paths(record).result_pickle)
    install_results(units[0])
    outcomes, _ = launch(launcher, units)
    assert outcomes[0] == Outcome("skip", "results exist")
    assert outcomes[1] == Outcome(
        "pending",
        "submitted as job 4243 (submission 2; the last one: job 4242_1 skipped it: being "
        "computed by another qeval run (pid 2487))",
    )
    assert [record.collected for record in records(units)] == [True, False]
    outcomes, _ = launch(launcher, units)
    assert outcomes[0] == Outcome("skip", "results exist")


def test_gpus_per_run_on_cpu_are_refused_before_submitting(tmp_path):
    output = tmp_path / "runs"
    units = [replace(unit, device="cpu") for unit in fake_units(output, 2)]
    launcher = SlurmLauncher(SlurmSettings(folder=output / ".slurm", local=True, gpus_per_run=1))
    with pytest.raises(QevalError) as refused:
        launch(launcher, units)
    assert str(refused.value) == (
        "--slurm-gpus-per-run 1 gives runs GPUs, but --device is cpu; use --device cuda (or "
        "drop --slurm-gpus-per-run)."
    )
    assert not (output / ".slurm").exists() and records(units) == [None, None]


def test_a_refused_submission_is_one_line(tmp_path, cluster, capsys):
    """sbatch's error is in the one qeval line, not also printed raw before it."""
    (cluster / "sbatch").write_text(
        "#!/bin/sh\necho 'sbatch: error: Invalid --mem specification' >&2\nexit 1\n"
    )
    output = tmp_path / "runs"
    launcher = SlurmLauncher(SlurmSettings(folder=output / ".slurm", mem="lots", detach=True))
    with pytest.raises(QevalError) as refused:
        launch(launcher, fake_units(output, 2))
    assert str(refused.value) == (
        "submitting 2 runs failed: sbatch: error: Invalid --mem specification"
    )
    assert capsys.readouterr().err == ""


class CtrlCWhileWaiting:
    """Stands for the time module in :mod:`~qeval_plugins.sweep.slurm`: the first wait
    between two polls is interrupted (Ctrl-C)."""

    monotonic = staticmethod(time.monotonic)

    @staticmethod
    def sleep(_seconds: float) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_while_waiting_leaves_the_jobs_running(tmp_path, cluster, monkeypatch):
    output = tmp_path / "runs"
    units = fake_units(output, 2)
    launcher = SlurmLauncher(SlurmSettings(folder=output / ".slurm"))
    (cluster / "sacct.txt").write_text("JobID|State|NodeList\n4242_0|RUNNING|n1\n")
    monkeypatch.setattr(slurm, "time", CtrlCWhileWaiting)
    console = Console(file=io.StringIO(), width=400)
    with SweepProgress(console, units) as progress, pytest.raises(SweepInterrupted) as stopped:
        launcher.launch(units, progress)
    assert stopped.value.outcomes == [
        Outcome("running", "job 4242_0 left running"),
        Outcome("pending", "job 4242_1 left running"),
    ]
    printed = console.file.getvalue()
    assert "run the same qeval run command again to see them and collect" in printed
    assert printed.rstrip().endswith("cancel them with: scancel 4242")
    assert [record.job_id for record in records(units)] == ["4242_0", "4242_1"]


def test_a_damaged_record_is_no_record(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    assert read_record(folder) is None
    for text in ("{not json", "[1, 2]", '{"job_id": 4}', "\0" * 10):
        (folder / RECORD_FILE).write_text(text)
        assert read_record(folder) is None
    good = JobRecord("12_0", str(tmp_path), "2026-01-01 00:00:00", 1, False, "login1")
    write_record(folder, good)
    assert read_record(folder) == good
    damaged = json.loads((folder / RECORD_FILE).read_text()) | {"submissions": 0}
    (folder / RECORD_FILE).write_text(json.dumps(damaged))
    assert read_record(folder) is None


def test_a_node_that_cannot_see_output_fails_in_one_line(tmp_path):
    [unit] = fake_units(tmp_path / "runs", 1)
    marker = tmp_path / "runs" / ".slurm" / "x" / "output-visible"
    outcome = run_on_node(unit, {}, tmp_path / "runs", marker, "token")
    assert outcome == Outcome(
        "failed",
        f"run tiny × spec0: node {socket.gethostname()} cannot see --output {tmp_path / 'runs'} "
        f"(no {marker} there); give an --output on a filesystem the nodes share",
    )
    assert not unit.directory.exists()  # nothing computed


def test_refusals_before_submitting(tmp_path, monkeypatch):
    settings = SlurmSettings(folder=tmp_path / "runs" / ".slurm")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(QevalError) as refused:
        SlurmLauncher(settings)
    assert str(refused.value).startswith("--launcher slurm submits with sbatch, which is not on")
    SlurmLauncher(SlurmSettings(folder=settings.folder, local=True))  # --slurm-local: no sbatch
    for key, line in {
        "output": "--slurm-arg output=...: submitit sets sbatch's --output",
        "time": "--slurm-arg time=...: give --slurm-time instead.",
    }.items():
        with pytest.raises(QevalError, match=re.escape(line)):
            SlurmLauncher(SlurmSettings(folder=settings.folder, local=True, extra={key: "5"}))
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(QevalError) as refused:
        SlurmLauncher(SlurmSettings(folder=settings.folder, local=True))
    assert str(refused.value) == "--launcher slurm needs submitit: pip install 'qeval[slurm]'"


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm here")
def test_output_in_memory_is_refused_in_one_line(tmp_path):
    output = Path("/dev/shm") / f"qeval-test-{os.getpid()}"
    done = run_cli(sweep_args(output, "--launcher", "slurm"), timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"qeval: error: --launcher slurm: --output {output} is in")
    assert "give an --output on a filesystem the nodes share" in done.stderr
    assert not output.exists()


# One CPU (one torch thread) per run, as the one-at-a-time reference has: with another number
# of threads the log-likelihoods differ in their last bits.
SLURM_LOCAL = ("--launcher", "slurm", "--slurm-local", "--slurm-cpus-per-run", "1")


def test_slurm_local_gives_the_sequential_numbers(tmp_path, sequential_scores):
    output = tmp_path / "runs"
    reference_sweep(output, *SLURM_LOCAL)
    assert scores(output) == sequential_scores
    jobs = [read_record(folder) for folder in sorted(output.glob("qeval-tiny__*"))]
    assert all(job.local and job.collected and job.submissions == 1 for job in jobs)
    assert len({job.job_id for job in jobs}) == 4


def unit_records(output: Path) -> dict[str, JobRecord]:
    return {folder.name: read_record(folder) for folder in sorted(output.glob("qeval-tiny__*"))}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_detach_then_collect_resubmits_only_the_killed_job(
    tmp_path, sequential_scores, monkeypatch
):
    """--detach returns with the four jobs running; a second --detach submits nothing; one job
    is killed; the same command without --detach resubmits that one alone, waits and gets the
    sequential numbers; then nothing is left to submit."""
    monkeypatch.setenv("COLUMNS", "300")  # each line on one line
    output = tmp_path / "runs"
    command = sweep_args(output, *SLURM_LOCAL, "--detach")
    started = time.monotonic()
    done = run_cli(command)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sweep: 4 pending" in done.stdout and "kill -INT" in done.stdout
    first = unit_records(output)
    assert len(first) == 4 and all(job.submissions == 1 for job in first.values())

    done = run_cli(command)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sweep: 4 running" in done.stdout
    assert unit_records(output) == first  # nothing submitted again
    assert not list(output.glob("*/results.json"))
    assert time.monotonic() - started < 60  # the runs take longer: both returned at once

    killed = first["qeval-tiny__rtn_bits-3"]
    os.killpg(int(killed.job_id), signal.SIGKILL)  # the job's session: controller and task
    while process_alive(int(killed.job_id)):
        time.sleep(0.2)

    done = run_cli([word for word in command if word != "--detach"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sweep: 4 done" in done.stdout
    assert scores(output) == sequential_scores
    last = unit_records(output)
    assert {name: job.submissions for name, job in last.items()} == {
        "qeval-tiny__none": 1,
        "qeval-tiny__rtn_bits-2": 1,
        "qeval-tiny__rtn_bits-3": 2,
        "qeval-tiny__rtn_bits-4": 1,
    }
    assert {name: last[name].job_id == first[name].job_id for name in last} == {
        "qeval-tiny__none": True,
        "qeval-tiny__rtn_bits-2": True,
        "qeval-tiny__rtn_bits-3": False,
        "qeval-tiny__rtn_bits-4": True,
    }

    done = run_cli(command)  # all collected: nothing to submit
    assert "sweep: 4 skipped" in done.stdout
    assert unit_records(output) == last
