"""``qeval run``: one folder per run, atomic results, resume after an interruption, --force."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import run_cli
from rich.console import Console

from qeval_plugins import QevalError
from qeval_plugins.storage.locks import try_locked
from qeval_plugins.sweep import settings as run_settings
from qeval_plugins.sweep import unit as sweep_module
from qeval_plugins.sweep.driver import sweep
from qeval_plugins.sweep.planning import plan_runs, slug
from qeval_plugins.sweep.results import is_complete

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
    groups = {"g": ["a", "h"], "h": ["b"], "empty_handed": ["c"]}
    (tmp_path / "results.json").write_text(
        json.dumps({"results": {"a": {}, "b": {}}, "group_subtasks": groups})
    )
    assert is_complete(tmp_path, ["g", "h", "a"])  # a group is held when all its subtasks are
    assert not is_complete(tmp_path, ["empty_handed"])


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


# ---------------------------------------------------------------- with a fake lm_eval command

FAKE_LM_EVAL = """
import json, sys, time
from pathlib import Path

partial, tasks, mode, calls = Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3], sys.argv[4]
with open(calls, "a") as log:
    log.write(partial.parent.name + "\\n")
print("fake lm_eval", mode, flush=True)
if mode == "fail":
    print("qeval: error: boom")
    sys.exit(1)
if mode == "crash":
    print("Traceback (most recent call last):")
    print("  File 'x.py'")
    print("ValueError: Duplicate task 'x'")
    print("some logging after it")
    sys.exit(1)
if mode == "slow":
    time.sleep(1.5)
results = {"results": {task: {"acc,none": 0.5} for task in tasks}, "config": {"model": "qeval"}}
if mode == "lacks":
    results["results"] = {}
text = json.dumps(results)
if mode == "truncated":  # what lm-eval leaves on a full disk, exiting 0
    text = text[: len(text) // 2]
(partial / "model").mkdir(parents=True)
(partial / "model" / "results_2026-01-01T00-00-00.json").write_text(text)
"""
TASK = "qeval_demo_facts"


class FakeLmEval:
    """Replaces the lm_eval command of each run; ``mode`` (per run folder name) says what to do."""

    def __init__(self, tmp_path: Path):
        self.script = tmp_path / "fake_lm_eval.py"
        self.script.write_text(FAKE_LM_EVAL)
        self.calls_file = tmp_path / "calls.txt"
        self.mode = "ok"
        self.modes: dict[str, str] = {}

    def command(self, unit, partial):
        mode = self.modes.get(unit.directory.name, self.mode)
        return [sys.executable, str(self.script), str(partial), ",".join(unit.tasks), mode]

    def __call__(self, unit, partial):
        return [*self.command(unit, partial), str(self.calls_file)]

    @property
    def calls(self) -> list[str]:
        return self.calls_file.read_text().split() if self.calls_file.exists() else []


@pytest.fixture
def fake(tmp_path, monkeypatch) -> FakeLmEval:
    fake = FakeLmEval(tmp_path)
    monkeypatch.setattr(sweep_module, "lm_eval_command", fake)
    return fake


def run_sweep(output, extra=(), force=False, specs=("none",), tasks=(TASK,)):
    """``qeval run`` in this process: (failure lines, what it printed)."""
    console = Console(file=io.StringIO(), width=300)
    failures = sweep(
        ["qeval-tiny"], list(specs), list(tasks), output, "cpu", list(extra), force, console
    )
    return failures, console.file.getvalue()


KEYED = {
    "no --limit": ([], "limit: 20 → none"),
    "few-shot": (["--limit", "20", "--num_fewshot", "3"], "num_fewshot: none → 3"),
    "seed": (["--limit", "20", "--seed", "7"], r"seed: none → \[7, 7, 7, 7\]"),
    "gen_kwargs": (["--limit", "20", "--gen_kwargs", "temperature=0.5"], "gen_kwargs"),
    "chat template": (["--limit", "20", "--apply_chat_template"], "apply_chat_template"),
    "multiturn": (["--limit", "20", "--fewshot_as_multiturn"], "fewshot_as_multiturn"),
    "system": (["--limit", "20", "--system_instruction", "Be brief."], "system_instruction"),
    "metadata": (["--limit", "20", "--metadata", '{"max_tokens": 8}'], "metadata"),
    "revision": (["--limit", "20", "--model_args", "revision=abc"], 'revision: none → "abc"'),
    "dtype": (["--limit", "20", "--model_args", "dtype=float32"], "dtype"),
}


def test_resume_is_keyed_on_every_setting_that_changes_results(tmp_path, fake, monkeypatch):
    output = tmp_path / "runs"
    assert run_sweep(output, ["--limit", "20"])[0] == []
    results = output / "qeval-tiny__none" / "results.json"
    before = results.read_bytes()
    for what, (extra, difference) in KEYED.items():
        with pytest.raises(QevalError, match=difference) as refused:
            run_sweep(output, extra)
        assert "--force" in str(refused.value) and "\n" not in str(refused.value), what
    real_version = run_settings._version
    monkeypatch.setattr(run_settings, "_version", lambda name: "9.9" if name == "lm_eval" else "1")
    with pytest.raises(QevalError, match="lm_eval_version"):
        run_sweep(output, ["--limit", "20"])
    monkeypatch.setattr(run_settings, "_version", real_version)
    from qeval_plugins.quantizers.baseline import NoQuantizer

    monkeypatch.setattr(NoQuantizer, "version", "2")  # the method changed: old runs are stale
    with pytest.raises(QevalError, match='quantizer_version: "1" → "2"'):
        run_sweep(output, ["--limit", "20"])
    monkeypatch.setattr(NoQuantizer, "version", "1")
    assert results.read_bytes() == before and fake.calls == ["qeval-tiny__none"]

    # options that change only speed, logging or spelling are not keyed
    same = ["--limit=20", "--batch_size", "8", "--verbosity", "DEBUG", "--log_samples"]
    failures, printed = run_sweep(output, same)
    assert failures == [] and "skip qeval-tiny × none: results exist" in printed
    assert len(fake.calls) == 1

    failures, printed = run_sweep(output, ["--num_fewshot", "3"], force=True)
    assert failures == [] and len(fake.calls) == 2
    recorded = json.loads((results.parent / "qeval_run.json").read_text())["settings"]
    assert recorded["lm_eval"]["num_fewshot"] == 3 and recorded["lm_eval"]["limit"] is None
    assert "results exist" in run_sweep(output, ["--num_fewshot", "3"])[1]


def test_a_changed_calibration_file_is_a_changed_setting(tmp_path, fake):
    """The file's name stayed the same, its passages did not: the run is stale."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A passage to calibrate on.\n")
    spec = f"gptq-sim:calibration_file={corpus}"
    output = tmp_path / "runs"
    assert run_sweep(output, specs=(spec,))[0] == []
    assert "results exist" in run_sweep(output, specs=(spec,))[1]
    corpus.write_text("A passage to calibrate on.\n\nAnd one more.\n")
    with pytest.raises(QevalError, match="calibration_file_sha256: "):
        run_sweep(output, specs=(spec,))


def test_a_calibration_file_that_cannot_be_read_fails_before_any_run(tmp_path, fake):
    with pytest.raises(QevalError, match=r"calibration_file /nope\.jsonl: cannot be read"):
        run_sweep(tmp_path / "runs", specs=("rtn", "gptq-sim:calibration_file=/nope.jsonl"))
    assert fake.calls == []


def test_a_bad_cache_size_fails_before_any_run(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("QEVAL_CACHE_MAX_SIZE", "lots")
    with pytest.raises(QevalError, match="QEVAL_CACHE_MAX_SIZE 'lots' is not a size"):
        run_sweep(tmp_path / "runs")
    assert fake.calls == []


def test_results_without_a_settings_record_are_not_reused(tmp_path, fake):
    """A run made by qeval before settings were recorded: its limit etc. are unknown."""
    folder = tmp_path / "runs" / "qeval-tiny__none"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"results": {TASK: {"acc,none": 1.0}}}))
    with pytest.raises(QevalError, match=r"no qeval_run\.json .* older qeval.*--force"):
        run_sweep(tmp_path / "runs")
    assert fake.calls == []
    assert run_sweep(tmp_path / "runs", force=True)[0] == []
    assert (folder / "qeval_run.json").exists() and fake.calls == ["qeval-tiny__none"]
    (folder / "results.json").write_text("{")  # damaged after the run: the record no longer fits
    with pytest.raises(QevalError, match=r"its qeval_run\.json is unreadable or records other"):
        run_sweep(tmp_path / "runs")


def test_results_lacking_a_requested_task_are_not_silently_replaced(tmp_path, fake):
    run_sweep(tmp_path / "runs")
    with pytest.raises(QevalError, match="results lacks qeval_demo_cloze"):
        run_sweep(tmp_path / "runs", tasks=(TASK, "qeval_demo_cloze"))


def test_force_keeps_good_results_when_the_new_ones_are_broken(tmp_path, fake):
    output = tmp_path / "runs"
    run_sweep(output)
    folder = output / "qeval-tiny__none"
    good = {name: (folder / name).read_bytes() for name in ("results.json", "qeval_run.json")}
    for mode, why in (("truncated", "is not valid JSON"), ("lacks", f"lacks {TASK}")):
        fake.mode = mode
        failures, printed = run_sweep(output, force=True)
        [failure] = failures
        assert f"lm_eval exited 0 but its results file {why}" in failure
        assert "nothing was replaced" in failure and "failed" in printed
        assert {name: (folder / name).read_bytes() for name in good} == good
    fake.mode = "ok"
    assert run_sweep(output)[1].count("results exist") == 1  # the old results still count


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path, fake):
    fake.modes["qeval-tiny__none"] = "fail"
    failures, printed = run_sweep(tmp_path / "runs", specs=("none", "rtn:bits=2"))
    [failure] = failures
    assert failure.startswith("run qeval-tiny × none failed: boom (log: ")
    assert not (tmp_path / "runs" / "qeval-tiny__none" / "results.json").exists()
    assert (tmp_path / "runs" / "qeval-tiny__rtn_bits-2" / "results.json").exists()
    assert "done qeval-tiny × rtn:bits=2" in printed


def test_a_crashed_run_quotes_the_logs_last_exception(tmp_path, fake):
    fake.mode = "crash"
    [failure] = run_sweep(tmp_path / "runs")[0]
    assert failure.startswith(
        "run qeval-tiny × none failed: lm_eval exited with status 1: "
        "ValueError: Duplicate task 'x' (log: "
    )


def test_a_run_another_sweep_holds_is_skipped_and_its_work_kept(tmp_path, fake):
    folder = tmp_path / "runs" / "qeval-tiny__none"
    (folder / ".partial-4242-20260101").mkdir(parents=True)
    with try_locked(folder / ".lock") as held:  # another qeval run, computing this run
        assert held
        failures, printed = run_sweep(tmp_path / "runs")
    assert failures == [] and fake.calls == []
    assert f"being computed by another qeval run (pid {os.getpid()})" in printed
    assert (folder / ".partial-4242-20260101").exists()  # its work is not ours to delete

    failures, printed = run_sweep(tmp_path / "runs")  # the holder died: its leftovers are stale
    assert failures == [] and fake.calls == ["qeval-tiny__none"]
    assert not list(folder.glob(".partial-*"))


def test_two_sweeps_at_once_compute_each_run_once(tmp_path, fake):
    fake.mode = "slow"
    outcomes = []

    def one_sweep():
        outcomes.append(run_sweep(tmp_path / "runs", specs=("none", "rtn:bits=2")))

    sweeps = [threading.Thread(target=one_sweep) for _ in range(2)]
    for thread in sweeps:
        thread.start()
    for thread in sweeps:
        thread.join(timeout=120)
    assert [failures for failures, _ in outcomes] == [[], []]
    assert sorted(fake.calls) == ["qeval-tiny__none", "qeval-tiny__rtn_bits-2"]
    for name in fake.calls:
        assert is_complete(tmp_path / "runs" / name, [TASK])


def test_every_attempt_keeps_its_log(tmp_path, fake):
    folder = tmp_path / "runs" / "qeval-tiny__none"
    folder.mkdir(parents=True)
    (folder / "lm_eval.log").write_text("the log of an older qeval\n")
    run_sweep(tmp_path / "runs")
    fake.mode = "truncated"
    run_sweep(tmp_path / "runs", force=True)
    logs = sorted(folder.glob("lm_eval.*.log"))
    contents = [log.read_text() for log in logs]
    assert contents[0] == "the log of an older qeval\n"
    assert [text.split("\n")[0] for text in contents[1:]] == [
        "fake lm_eval ok",
        "fake lm_eval truncated",
    ]
    link = folder / "lm_eval.log"
    assert link.is_symlink() and link.resolve() == logs[-1].resolve()


def test_task_names_are_checked_before_any_run(tmp_path, fake):
    output = tmp_path / "runs"
    with pytest.raises(QevalError, match=r"unknown task 'qeval_demo_fact'.*'qeval_demo_facts'"):
        run_sweep(output, tasks=("qeval_demo_fact",))
    with pytest.raises(QevalError, match=r"--include_path '.*nowhere' is not a folder"):
        run_sweep(output, ["--include_path", str(tmp_path / "nowhere")])
    with pytest.raises(QevalError, match="--tasks names no task"):
        run_sweep(output, tasks=())
    with pytest.raises(QevalError, match="the group 'qeval_demo' and its own task 'qeval_demo_"):
        run_sweep(output, tasks=("qeval_demo", "qeval_demo_facts"))
    own = tmp_path / "my_tasks"
    own.mkdir()
    (own / "mine.yaml").write_text(
        "task: my_own_task\ndataset_path: json\noutput_type: loglikelihood\n"
    )
    assert run_sweep(output, ["--include_path", str(own)], tasks=("my_own_task",))[0] == []
    assert fake.calls == ["qeval-tiny__none"]


def test_bad_output_folders_are_one_line(tmp_path, fake):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(QevalError, match=r"--output '.*a_file' is a file"):
        run_sweep(a_file)
    with pytest.raises(QevalError, match=r"--output '.*a_file/sub' cannot be written"):
        run_sweep(a_file / "sub")
    assert fake.calls == []


def test_lm_eval_options_are_checked_before_any_run(tmp_path, fake):
    output = tmp_path / "runs"
    refused = {
        "unrecognized arguments: --limt": ["--limt", "3"],
        "give the output path with qeval run's --output": ["--output_path", "elsewhere"],
        "'quantizer'; give it with qeval run's --quantizers": ["--model_args", "quantizer=rtn"],
    }
    for message, extra in refused.items():
        with pytest.raises(QevalError, match=message):
            run_sweep(output, extra)
    with pytest.raises(QevalError, match="--model_args sets 'bits'"):
        run_sweep(output, ["--model_args", "bits=3"], specs=("rtn:bits=2",))
    # KV-cache settings given as --model_args are checked too, with each spec's
    with pytest.raises(QevalError, match="kv_bits must be a whole number from 1 to 8, got 9"):
        run_sweep(output, ["--model_args", "kv_bits=9"])
    with pytest.raises(QevalError, match="kv_backend=quanto stores 2 or 4 bits"):
        run_sweep(output, ["--model_args", "kv_bits=3"], specs=("rtn:kv_backend=quanto",))
    assert fake.calls == [] and not output.exists()


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_a_limit_that_selects_nothing_is_one_line(limit):
    from qeval_plugins.sweep.settings import parse_lm_eval_args

    with pytest.raises(QevalError, match=f"--limit: must be a count .* got '{limit}'"):
        parse_lm_eval_args(["--limit", limit])
    assert parse_lm_eval_args(["--limit", "0.5"]).keyed["limit"] == 0.5


def test_a_spec_or_model_given_twice_is_named(tmp_path):
    from qeval_plugins.sweep.planning import plan_runs

    for first, second in [
        ("rtn:bits=3", "rtn:bits=3"),
        ("rtn", "RTN"),
        ("none", "baseline"),
        ("rtn", "rtn:bits=4"),  # the default written out
        ("rtn:bits=3:group_size=0", "round-to-nearest:group_size=0:bits=3"),
    ]:
        with pytest.raises(QevalError, match=f"specs '{first}' and '{second}' are the same run"):
            plan_runs(["qeval-tiny"], ["none" if first != "none" else "rtn", first, second],
                      tmp_path, "cpu")  # fmt: skip
    with pytest.raises(QevalError, match="--quantizers names no quantizer"):
        plan_runs(["qeval-tiny"], [], tmp_path, "cpu")
    with pytest.raises(QevalError, match="--model 'qeval-tiny' is given twice"):
        plan_runs(["qeval-tiny", "qeval-tiny"], ["none"], tmp_path, "cpu")
