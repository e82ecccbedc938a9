"""The reference every launcher's sweep is compared with: one sequential ``qeval run`` of
qeval-tiny × four specs (the local launcher, one unit at a time, on one CPU: one torch thread,
what each unit of a parallel sweep gets on two cores), computed once per session.

The thread count is part of the reference: float32 sums in another order with another number
of threads change log-likelihoods in their last bits, so a launcher's units must get one thread
(one CPU) to be compared bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SPECS = ("none", "rtn:bits=4", "rtn:bits=3", "rtn:bits=2")
TASK = "qeval_demo_facts"
LIMIT = "8"


def sweep_args(output: Path, *launcher: str) -> list[str]:
    """``qeval run`` of the reference sweep into ``output`` with ``launcher``'s options."""
    return [
        *("qeval", "run", "--model", "qeval-tiny", "--quantizers", ",".join(SPECS)),
        *("--tasks", TASK, "--device", "cpu", "--limit", LIMIT, "--output", str(output)),
        *launcher,
    ]


def run_qeval(
    args: list[str], timeout: int = 600, cpus: int | None = None
) -> subprocess.CompletedProcess:
    """``args`` (``qeval run ...``) run with this environment's ``qeval`` script; ``cpus``: on
    this process's first ``cpus`` CPUs only (its affinity, which qeval counts as its cores)."""
    env = {key: value for key, value in os.environ.items() if key != "QEVAL_DEBUG"}
    script = Path(sys.executable).parent / args[0]
    chosen = set(sorted(os.sched_getaffinity(0))[:cpus]) if cpus else None
    pin = (lambda: os.sched_setaffinity(0, chosen)) if chosen else None
    return subprocess.run(
        [str(script), *args[1:]],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        preexec_fn=pin,
    )


def scores(output: Path) -> dict[str, dict]:
    """Run folder name -> its results' metrics for :data:`TASK` (``acc,none`` ...) and, under
    ``"loglikelihoods"``, every document's choice log-likelihoods from its samples file (the
    numbers the metrics are made of, compared exactly)."""
    found = {}
    for folder in sorted(output.iterdir()):
        if not (folder / "results.json").exists():
            continue
        metrics = dict(json.loads((folder / "results.json").read_text())["results"][TASK])
        [samples] = folder.glob(f"samples_{TASK}_*.jsonl")
        documents = [json.loads(line) for line in samples.read_text().splitlines()]
        metrics["loglikelihoods"] = {
            document["doc_id"]: document["filtered_resps"] for document in documents
        }
        found[folder.name] = metrics
    return found


@pytest.fixture(scope="session")
def sequential_scores(tmp_path_factory) -> dict[str, dict]:
    """The reference sweep run one unit at a time on one CPU; its scores per run folder."""
    output = tmp_path_factory.mktemp("sequential") / "runs"
    done = run_qeval(sweep_args(output, "--jobs", "1"), cpus=1)
    assert done.returncode == 0, done.stdout + done.stderr
    found = scores(output)
    assert len(found) == len(SPECS)
    return found
