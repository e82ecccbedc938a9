"""``qeval run --jobs N``: units at once on this machine, each with its share of the cores or
its own GPUs; the same numbers as one at a time; a killed unit fails alone; Ctrl-C keeps only
finished results."""

from __future__ import annotations

import argparse
import io
import itertools
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
from qeval_plugins.sweep import local
from qeval_plugins.sweep import unit as unit_module
from qeval_plugins.sweep.driver import sweep
from qeval_plugins.sweep.launch_options import make_launcher
from qeval_plugins.sweep.local import LocalLauncher, cpu_slots, gpu_slots, parse_gpus
from qeval_plugins.sweep.planning import prepare
from sweep.conftest import reference_sweep, scores

TASK = "qeval_demo_facts"
SPECS = ["none", "rtn:bits=4", "rtn:bits=3", "rtn:bits=2"]

# A stand-in for lm_eval: records when it ran and the thread/GPU environment it got; what it
# does depends on the run folder's name (argv: partial folder, record file).
FAKE_LM_EVAL = """
import json, os, signal, sys, time
from pathlib import Path
partial, record = Path(sys.argv[1]), Path(sys.argv[2])
name = partial.parent.name
started = time.time()
if "bits-2" in name and os.environ.get("FAKE_KILL"):
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-run, from outside its own code
time.sleep(float(os.environ.get("FAKE_SECONDS", "1.0")))
partial.mkdir(parents=True)
(partial / "results_1.json").write_text(json.dumps({"results": {"TASK": {"acc,none": 0.5}}}))
line = {"run": name, "start": started, "end": time.time(),
        **{key: os.environ.get(key) for key in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")}}
with open(record, "a") as out:
    out.write(json.dumps(line) + "\\n")
""".replace("TASK", TASK)


@pytest.fixture
def fake(tmp_path, monkeypatch) -> Path:
    """Every unit's lm_eval is :data:`FAKE_LM_EVAL`; returns the file it records into."""
    script, record = tmp_path / "fake_lm_eval.py", tmp_path / "record.jsonl"
    script.write_text(FAKE_LM_EVAL)
    monkeypatch.setattr(
        unit_module,
        "lm_eval_command",
        lambda unit, partial: [sys.executable, str(script), str(partial), str(record)],
    )
    return record


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_sweep(output: Path, launcher, specs=SPECS) -> tuple[list[str], str]:
    console = Console(file=io.StringIO(), width=300)
    failures = sweep(["qeval-tiny"], specs, [TASK], output, "cpu", [], False, console,
                     launcher=launcher)  # fmt: skip
    return failures, console.file.getvalue()


def test_jobs_2_gives_the_sequential_numbers(tmp_path, sequential_scores):
    """The reference sweep with two units at once on two CPUs (one thread each, as the
    reference has): every document's log-likelihoods equal, bit for bit."""
    output = tmp_path / "runs"
    reference_sweep(output, "--jobs", "2", cpus=2)
    assert scores(output) == sequential_scores


def test_two_units_run_at_once_each_on_its_share_of_the_cores(tmp_path, fake, monkeypatch):
    monkeypatch.setattr(local, "cpu_count", lambda: 4)
    launcher = LocalLauncher(tuple(cpu_slots(2, local.cpu_count())))
    failures, printed = run_sweep(tmp_path / "runs", launcher)
    assert failures == [] and printed.rstrip().endswith("sweep: 4 done")
    ran = records(fake)
    assert {line["OMP_NUM_THREADS"] for line in ran} == {"2"}  # 4 cores / 2 jobs
    ran.sort(key=lambda line: line["start"])
    overlapping = sum(a["end"] > b["start"] for a, b in itertools.pairwise(ran))
    assert overlapping >= 2, ran  # two at a time, not one after another
    at_most_two = all(
        sum(other["start"] <= line["start"] < other["end"] for other in ran) <= 2 for line in ran
    )
    assert at_most_two, ran


def test_each_unit_gets_its_own_gpus(tmp_path, fake):
    slots = gpu_slots([0, 1, 2, 3], 2, None, ["4", "5", "6", "7"])
    failures, _ = run_sweep(tmp_path / "runs", LocalLauncher(tuple(slots)))
    assert failures == []
    assert sorted({line["CUDA_VISIBLE_DEVICES"] for line in records(fake)}) == ["4,5", "6,7"]


def test_a_killed_unit_fails_alone(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_KILL", "1")
    failures, printed = run_sweep(tmp_path / "runs", LocalLauncher(tuple(cpu_slots(2, 2))))
    [failure] = failures
    assert failure.startswith("run qeval-tiny × rtn:bits=2 failed: lm_eval exited with status -9")
    assert "sweep: 3 done, 1 failed" in printed
    finished = sorted(path.parent.name for path in (tmp_path / "runs").glob("*/results.json"))
    assert finished == ["qeval-tiny__none", "qeval-tiny__rtn_bits-3", "qeval-tiny__rtn_bits-4"]


PARENT = """
import sys
from qeval_plugins.sweep import unit as unit_module
from qeval_plugins.cli.main import main

script, record, output = sys.argv[1:4]
unit_module.lm_eval_command = lambda unit, partial: [sys.executable, script, str(partial), record]
sys.exit(main(["run", "--model", "qeval-tiny", "--quantizers", "none,rtn:bits=4,rtn:bits=3",
               "--tasks", "TASK", "--device", "cpu", "--output", output, "--jobs", "2"]))
""".replace("TASK", TASK)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_ctrl_c_stops_every_unit_and_keeps_only_finished_results(tmp_path):
    """The first unit is quick, the others slow: Ctrl-C while two run."""
    script, record, output = tmp_path / "fake.py", tmp_path / "record.jsonl", tmp_path / "runs"
    script.write_text(FAKE_LM_EVAL.replace(
        'float(os.environ.get("FAKE_SECONDS", "1.0"))', '0.2 if name.endswith("none") else 120'
    ))  # fmt: skip
    (tmp_path / "parent.py").write_text(PARENT)
    parent = subprocess.Popen(
        [sys.executable, str(tmp_path / "parent.py"), str(script), str(record), str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as at a terminal
        # Ctrl-C reaches it, as at a terminal: a test run started in the background (CI) has
        # SIGINT ignored, which a child inherits and Python then never turns into Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and parent.poll() is None:
            if record.exists() and len(list(output.glob("*/lm_eval.*.log"))) >= 3:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # the two slow units are running
        children = _children(parent.pid)
        assert len(children) == 2, children
        os.killpg(parent.pid, signal.SIGINT)  # Ctrl-C at the terminal: the whole group
        out, err = parent.communicate(timeout=60)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert parent.returncode == 130, out + err
    assert "sweep: 1 done, 2 interrupted (stopped by Ctrl-C; finished results kept)" in out
    assert [path.parent.name for path in output.glob("*/results.json")] == ["qeval-tiny__none"]
    assert not list(output.glob("*/.partial-*")) and not list(output.glob("*/qeval_run.json.*"))
    assert not any(_alive(pid) for pid in children)


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# ---------------------------------------------------------------- the slots and the options


def test_cpu_slots_split_the_cores_and_never_oversubscribe():
    assert cpu_slots(2, 2) == [{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}] * 2
    assert cpu_slots(3, 8)[0]["OMP_NUM_THREADS"] == "2"
    with pytest.raises(QevalError, match="--jobs 3 on 2 CPU cores would oversubscribe"):
        cpu_slots(3, 2)


def test_gpu_slots():
    visible = ["0", "1", "2", "3"]
    assert gpu_slots("all", 1, None, visible) == [{"CUDA_VISIBLE_DEVICES": n} for n in visible]
    assert gpu_slots([2, 3], 2, None, visible) == [{"CUDA_VISIBLE_DEVICES": "2,3"}]
    assert len(gpu_slots("all", 1, 2, visible)) == 2
    refusals = {
        "--gpus names GPU 4, but this machine shows 4": ([4], 1, None, visible),
        "cannot split evenly": ([0, 1, 2], 2, None, visible),
        "--jobs 3 needs 3 GPU groups": ("all", 2, 3, visible),
        "no GPU is visible": ("all", 1, None, []),
    }
    for message, arguments in refusals.items():
        with pytest.raises(QevalError, match=message):
            gpu_slots(*arguments)
    with pytest.raises(QevalError, match="names a GPU twice"):
        parse_gpus("0,0")
    with pytest.raises(QevalError, match="takes 'all' or GPU numbers"):
        parse_gpus("first")


def test_visible_gpus_follow_cuda_visible_devices_or_torch(monkeypatch):
    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert local.visible_gpus() == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert local.visible_gpus() == ["0", "1"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert local.visible_gpus() == []


def options(**given) -> argparse.Namespace:
    from qeval_plugins.sweep.launch_options import OWN_OPTIONS

    defaults = {name: value for own in OWN_OPTIONS.values() for name, value in own.items()}
    return argparse.Namespace(
        **{"launcher": "local", "output": "runs", "lm_eval_args": [], **defaults, **given}
    )


def test_launcher_options_that_do_not_fit_are_one_line(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    refusals = {
        "--gpus is an option of --launcher local, not ray": options(launcher="ray", gpus="all"),
        "--slurm-mem is an option of --launcher slurm": options(slurm_mem="8G"),
        "--gpus-per-run needs --gpus": options(gpus_per_run=2),
        "add --model_args parallelize=True": options(gpus="all", gpus_per_run=2),
    }
    for message, args in refusals.items():
        with pytest.raises(QevalError, match=message):
            make_launcher(args, "cuda")
    with pytest.raises(QevalError, match="but --device is cpu"):
        make_launcher(options(gpus="all"), "cpu")
    split = options(gpus="all", gpus_per_run=2, lm_eval_args=["--model_args", "parallelize=True"])
    assert make_launcher(split, "cuda").slots == ({"CUDA_VISIBLE_DEVICES": "0,1"},)
    monkeypatch.setattr(local, "cpu_count", lambda: 2)
    assert make_launcher(options(jobs=2), "cpu").slots == tuple(cpu_slots(2, 2))


def test_a_cluster_driver_without_a_gpu_leaves_device_checks_to_the_runs(tmp_path):
    """--device cuda on a login node: refused for local runs, checked on the nodes otherwise."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal cannot be shown")
    arguments = (["qeval-tiny"], ["none"], [TASK], tmp_path / "runs", "cuda", [], False)
    with pytest.raises(QevalError, match="--device cuda: this machine has no usable CUDA GPU"):
        prepare(*arguments)

    class Elsewhere:
        runs_elsewhere = True

        def launch(self, units, progress):
            self.units = units
            return [unit_module.Outcome("done", "on a node") for _ in units]

    console, cluster = Console(file=io.StringIO(), width=300), Elsewhere()
    assert sweep(*arguments, console, launcher=cluster) == []
    assert [unit.device for unit in cluster.units] == ["cuda"]
    assert "each run checks its device" in console.file.getvalue()


def test_the_live_view_counts_runs_running_and_queued(tmp_path, fake, monkeypatch):
    """On a terminal: the sweep's bar says how many runs ended, run and wait; a row per unit."""
    monkeypatch.setenv("FAKE_SECONDS", "2.5")
    console = Console(file=io.StringIO(), width=200, force_terminal=True, color_system=None)
    launcher = LocalLauncher(tuple(cpu_slots(2, 2)))
    failures = sweep(["qeval-tiny"], SPECS, [TASK], tmp_path / "runs", "cpu", [], False, console,
                     launcher=launcher)  # fmt: skip
    printed = console.file.getvalue()
    assert failures == [] and "0/4 runs, 2 running, 2 queued" in printed, printed
    assert "[1/4] qeval-tiny × none" in printed and "sweep: 4 done" in printed
