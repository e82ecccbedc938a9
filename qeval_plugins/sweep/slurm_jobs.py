"""The jobs of ``--launcher slurm``: how they are asked for (sbatch parameters, the local
executor), each unit's job record, the jobs' states, and the outcome of a job that ended.

Each submitted unit has a record in its run folder (:data:`RECORD_FILE`, JSON, written
atomically): the job id, submitit's folder of the submission, when it was submitted, how many
times the unit has been, and whether the job ran through submitit's local executor (then its id
is a process id on ``host``). A record that cannot be read or makes no sense counts as no record.

A job is *pending*, *running* or *ended* (:func:`job_phase`): on SLURM from ``sacct``'s state
(:func:`parse_sacct`), for a local job from its process (alive: running). A job whose result
file exists has ended, whatever the state says. An ended job's outcome is the
:class:`~.unit.Outcome` its task returned (``job.result()``), once its results are there
(``done``); a job that ended otherwise (FAILED, CANCELLED, TIMEOUT, PREEMPTED, NODE_FAIL,
OUT_OF_MEMORY, or COMPLETED without results) is ``failed``, its line naming the state, the
lm_eval log of the attempt the job made (:func:`attempt_log`; not ``lm_eval.log``, which a
resubmitted job's attempt takes over at once) and the job's own stdout and stderr.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.safe_read import read_regular
from qeval_plugins.core.text import one_line
from qeval_plugins.storage.atomic import write_atomic
from qeval_plugins.sweep.launch_settings import SlurmSettings
from qeval_plugins.sweep.results import existing_state
from qeval_plugins.sweep.unit import STAMP, Outcome, Unit

RECORD_FILE = ".slurm-job.json"
MAX_RECORD_BYTES = 64 << 10
PENDING_STATES = frozenset(
    {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD"}
    | {"SUSPENDED", "UNKNOWN"}  # UNKNOWN: sacct does not list the job yet
)
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"})
SACCT_SECONDS = 60  # sacct's longest wait
SIGNAL_DELAY_S = 90  # seconds between the time-out warning (USR2) and the end of a job
OWN_OPTIONS = {
    "partition": "--slurm-partition",
    "time": "--slurm-time",
    "mem": "--slurm-mem",
    "cpus_per_task": "--slurm-cpus-per-run",
    "gpus_per_node": "--slurm-gpus-per-run",
}
SUBMITIT_OWNS = frozenset({"array", "output", "error", "open_mode", "signal"})


def check_extra(extra: dict[str, str]) -> None:
    """``--slurm-arg`` may not set what an option or submitit sets."""
    for key in extra:
        if key in OWN_OPTIONS:
            raise QevalError(f"--slurm-arg {key}=...: give {OWN_OPTIONS[key]} instead.")
        if key in SUBMITIT_OWNS:
            raise QevalError(
                f"--slurm-arg {key}=...: submitit sets sbatch's --{key.replace('_', '-')} "
                f"(the array and each task's log files); leave it out."
            )


def slurm_parameters(settings: SlurmSettings) -> dict:
    """submitit ``SlurmExecutor`` parameters of each array task, from ``settings``: one task
    on one node with ``cpus_per_run`` CPUs, ``gpus_per_run`` GPUs (none: no GPU line),
    ``time`` minutes, the partition and memory when given, and ``--slurm-arg``'s parameters as
    they are."""
    parameters = {
        "job_name": "qeval",
        "time": settings.time,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": settings.cpus_per_run,
        "signal_delay_s": SIGNAL_DELAY_S,
    }
    optional = {
        "partition": settings.partition,
        "mem": settings.mem,
        "gpus_per_node": settings.gpus_per_run or None,
        "additional_parameters": dict(settings.extra) or None,
    }
    return parameters | {key: value for key, value in optional.items() if value is not None}


def local_executor(folder: Path, minutes: int):
    """submitit's local executor whose job processes start in their own session with no
    terminal (stdin, stdout, stderr: ``/dev/null``; each task writes its own log files), so
    Ctrl-C of the sweep and its end leave them running; a job ends after ``minutes``."""
    from submitit import LocalExecutor, LocalJob

    class SessionLocalExecutor(LocalExecutor):
        def _submit_command(self, command: str) -> LocalJob:
            env = os.environ | {  # what submitit.local.local.start_controller sets
                "SUBMITIT_LOCAL_NTASKS": "1",
                "SUBMITIT_LOCAL_COMMAND": command,
                "SUBMITIT_LOCAL_TIMEOUT_S": str(60 * minutes),
                "SUBMITIT_LOCAL_SIGNAL_DELAY_S": str(SIGNAL_DELAY_S),
                "SUBMITIT_LOCAL_NODEID": "0",
                "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
                "SUBMITIT_STDERR_TO_STDOUT": "",
                "SUBMITIT_EXECUTOR": "local",
                "SUBMITIT_LOCAL_WITH_SHELL": "",
            }
            process = subprocess.Popen(
                [sys.executable, "-m", "submitit.local._local", str(self.folder)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            return LocalJob(folder=self.folder, job_id=str(process.pid), process=process)

    executor = SessionLocalExecutor(folder)
    executor.update_parameters(timeout_min=minutes)
    return executor


@dataclass(frozen=True)
class JobRecord:
    """The job a unit was last submitted as. ``folder``: submitit's folder of the submission;
    ``submitted``: local time, ISO format; ``submissions``: times the unit was submitted;
    ``local``: a process of submitit's local executor on ``host`` (``job_id`` is its pid);
    ``collected``: its outcome was reported (the record then names no live job)."""

    job_id: str
    folder: str
    submitted: str
    submissions: int
    local: bool
    host: str
    collected: bool = False


def read_record(directory: Path) -> JobRecord | None:
    """The unit's job record, or None when there is none or it is damaged."""
    try:
        data = json.loads(read_regular(directory / RECORD_FILE, MAX_RECORD_BYTES))
        record = JobRecord(**data)
    except (OSError, ValueError, TypeError, RecursionError):
        return None
    text_fields = (record.job_id, record.folder, record.submitted, record.host)
    flags = (record.local, record.collected)
    if not (
        all(isinstance(value, str) and value for value in text_fields)
        and all(isinstance(flag, bool) for flag in flags)
        and isinstance(record.submissions, int)
        and record.submissions >= 1
    ):
        return None
    return record


def write_record(directory: Path, record: JobRecord) -> None:
    write_atomic(directory / RECORD_FILE, json.dumps(asdict(record), indent=1).encode())


def mark_collected(directory: Path, record: JobRecord) -> None:
    """Note that ``record``'s outcome was reported, unless the unit was submitted again since
    (call while holding the launcher's lock)."""
    current = read_record(directory)
    if current is not None and (current.job_id, current.folder) == (record.job_id, record.folder):
        write_record(directory, replace(current, collected=True))


def parse_sacct(text: str) -> dict[str, tuple[str, str]]:
    """``sacct -o JobID,State,NodeList --parsable2`` output -> job id -> (state, node list);
    the state's first word (``CANCELLED by 1000`` -> ``CANCELLED``). A pending array's line
    (``123_[0-3%4]``) gives each of its tasks (``123_0`` ... ``123_3``); job steps
    (``123_0.batch``) are left out (submitit's own reader)."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    found = {}
    for job_id, info in SlurmInfoWatcher().read_info(text).items():
        words = info.get("State", "").split()
        found[job_id] = (words[0] if words else "UNKNOWN", info.get("NodeList", ""))
    return found


def sacct_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """The SLURM jobs' (state, node list), one ``sacct`` call; a job sacct does not list (just
    submitted) or a failed call leaves the job out (its state is then UNKNOWN: pending)."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    command = ["sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", ",".join(arrays)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=SACCT_SECONDS, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_sacct(done.stdout)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine is a live submitit job (Linux: its command line
    names submitit, so a reused pid is not taken for the job; elsewhere: it exists)."""
    if Path("/proc/self").exists():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        zombie = status.rpartition(")")[2].split()[:1] == ["Z"]
        return b"submitit" in command and not zombie
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def local_state(record: JobRecord, handle=None) -> str:
    """A local job's state: ``RUNNING`` or ``EXITED`` (from this process's submitit job
    ``handle`` when it submitted the job, else from the process id), ``UNKNOWN`` (pending) for
    a job of another machine."""
    if handle is not None:
        return "RUNNING" if handle.state == "RUNNING" else "EXITED"
    if record.host != socket.gethostname():
        return "UNKNOWN"
    return "RUNNING" if process_alive(int(record.job_id)) else "EXITED"


def job_phase(state: str) -> str:
    """``pending``, ``running`` or ``ended``, for a job state (sacct's or :func:`local_state`'s)."""
    if state in PENDING_STATES:
        return "pending"
    if state in RUNNING_STATES:
        return "running"
    return "ended"


def job_paths(record: JobRecord):
    """submitit's paths of the job's first task: ``result_pickle``, ``stdout``, ``stderr``."""
    from submitit.core.utils import JobPaths

    return JobPaths(record.folder, job_id=record.job_id, task_id=0)


def _task_error(error: Exception) -> str:
    """The last line of the traceback submitit keeps of an exception the task raised."""
    text = str(error)
    parts = text.split("-" * 22)
    trace = parts[1] if len(parts) > 2 else text
    lines = [line for line in trace.splitlines() if line.strip()]
    return one_line(lines[-1] if lines else text)


def attempt_log(directory: Path, record: JobRecord) -> Path | None:
    """The lm_eval log (``lm_eval.<stamp>.log``) of the attempt ``record``'s job made: the
    newest dated log of ``directory`` not older than the job's submission folder (named with
    the same stamp, taken before submitting); None when the job started no lm_eval."""
    submitted = Path(record.folder).name
    found = []
    for log in directory.glob("lm_eval.*.log"):
        stamp = log.name.removeprefix("lm_eval.").removesuffix(".log")
        try:
            datetime.strptime(stamp, STAMP)
        except ValueError:
            continue
        if stamp >= submitted:
            found.append((stamp, log))
    return max(found)[1] if found else None


def ended_outcome(unit: Unit, record: JobRecord, state: str, node: str = "") -> Outcome:
    """How the unit's job, which ended in ``state`` (on ``node``), ended: the outcome its task
    returned (``done`` once its results are there; ``skip``: they exist or another qeval run
    computes them), else ``failed``."""
    from submitit import LocalJob, SlurmJob

    paths = job_paths(record)
    logs = f"job log {paths.stdout} and {paths.stderr}"
    if (log := attempt_log(unit.directory, record)) is not None:
        logs = f"lm_eval log {log}, {logs}"
    job_name = f"{'local job (pid)' if record.local else 'job'} {record.job_id}"
    if paths.result_pickle.exists():
        job_class = LocalJob if record.local else SlurmJob
        try:
            outcome = job_class(folder=record.folder, job_id=record.job_id).result()
        except Exception as error:  # the task raised (a timeout signal, an unpicklable unit)
            line = f"run {unit.label}: {job_name} failed: {_task_error(error)} ({logs})"
            return Outcome("failed", line)
        if outcome.kind == "failed":
            return Outcome("failed", f"{outcome.detail} ({job_name}; {logs})")
        results = existing_state(unit.directory, unit.settings, list(unit.expected))[0]
        if outcome.kind != "done" or results == "complete":  # skip: results exist or are computed
            return outcome
        why = "ended (done) but its results are not there"
    else:
        why = "ended without results" if record.local else f"ended ({state}) without results"
    if not record.local and not paths.stdout.exists():
        where = f" on node {node}" if node else ""
        why += (
            f" and wrote no job log{where}: does it see --output? Give an --output on a "
            "filesystem the nodes share"
        )
    return Outcome("failed", f"run {unit.label}: {job_name} {why} ({logs})")
