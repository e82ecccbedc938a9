"""The reference every launcher's sweep is compared with: one sequential ``qeval run`` of
qeval-tiny × four specs (the local launcher, one unit at a time, on one CPU: one torch thread,
what each unit of a parallel sweep gets on two cores), computed once per session.

The thread count is part of the reference: float32 sums in another order with another number
of threads change log-likelihoods in their last bits, so a launcher's units must get one thread
(one CPU) to be compared bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

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


def reference_sweep(output: Path, *launcher: str, cpus: int | None = None):
    """The reference sweep into ``output`` with ``launcher``'s options (on the first ``cpus``
    CPUs when given), checked to end with its four runs done; the finished process."""
    done = run_cli(sweep_args(output, *launcher), cpus=cpus)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sweep: 4 done" in done.stdout, done.stdout
    return done


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
    reference_sweep(output, "--jobs", "1", cpus=1)
    found = scores(output)
    assert len(found) == len(SPECS)
    return found
