"""``qeval demo``: the main job end to end on the embedded model, offline, in a few minutes.

Evaluates the unquantized baseline and several quantizers with lm-eval's ``simple_evaluate``
through the ``qeval`` backend on :data:`DEMO_TASKS` — the ``qeval_demo`` group (facts, cloze,
perplexity on the model's world), the ``qeval_demo_temperature`` sweep (greedy and sampled
continuations of held-out stories of that world) and ``qeval_sqnr`` (divergence from the
unquantized model) — then prints one table (:mod:`qeval_plugins.report.demo_table`): per
quantizer the tasks' chosen metrics, their change versus the baseline, model size and load time.
The reference outputs of the sweep and of ``qeval_sqnr`` are computed with the first spec and
read from the cache by the others.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from qeval_plugins.backend.checkpoints import EMBEDDED_MODELS, resolve_pretrained
from qeval_plugins.core.plan import check_spec
from qeval_plugins.core.specs import spec_model_args
from qeval_plugins.report.demo_table import demo_grid, demo_run, print_demo
from qeval_plugins.report.runs import Run
from qeval_plugins.storage.atomic import write_atomic
from qeval_plugins.storage.writable import check_writable_dir

DEFAULT_DEMO_QUANTIZERS = (
    "none",
    "bnb-int8",
    "bnb-nf4",
    "bnb-fp4-dq",
    "rtn:bits=4",
    "rtn:format=mxfp4",
    "rtn:bits=3",
    "rtn:bits=2",
)
# task groups and tasks of every demo run; the table's columns: demo_table.COLUMNS
DEMO_TASKS = ("qeval_demo", "qeval_demo_temperature", "qeval_demo_divergence")


def evaluate_spec(
    spec: str, model: str, device: str, limit: int | None, task_manager: Any
) -> dict[str, Any]:
    """One lm-eval run of ``spec`` on ``model`` over :data:`DEMO_TASKS`; returns lm-eval's
    results."""
    import lm_eval

    return lm_eval.simple_evaluate(
        model="qeval",
        model_args=f"pretrained={model},{spec_model_args(spec)}",
        tasks=list(DEMO_TASKS),
        device=device,
        batch_size=8,
        limit=limit,
        task_manager=task_manager,
        log_samples=False,
    )


@contextlib.contextmanager
def stderr_redirected(stream):
    """Point file descriptor 2 (progress bars, subprocess chatter) at ``stream`` meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(stream.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def evaluate_quietly(*args: Any) -> dict[str, Any]:
    """:func:`evaluate_spec` with library output hidden, shown only if the run fails."""
    with tempfile.TemporaryFile("w+") as log:
        try:
            with stderr_redirected(log):
                return evaluate_spec(*args)
        except Exception:
            log.seek(0)
            sys.stderr.write(log.read()[-4000:])
            raise


@contextlib.contextmanager
def cpu_threads(count: int | None):
    """torch's intra-op CPU threads set to ``count`` meanwhile (None: left alone)."""
    import torch

    saved = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def demo_threads(model: str, device: str) -> int | None:
    """One CPU thread for the embedded model: its layers (128 wide) are too small for a second
    thread to help (the demo took 55 s with one thread and with two on an idle 2-core machine),
    and on a busy machine threads waiting for each other at every small operation of thousands
    of generation steps made it seven times slower. None (torch's default) otherwise."""
    return 1 if model in EMBEDDED_MODELS and device == "cpu" else None


def quiet_libraries() -> None:
    """Keep the demo's output to its own lines: no per-request progress bars or INFO logs."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in ("lm_eval", "transformers", "datasets", "accelerate", "bitsandbytes"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (never half-written; normal permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2, default=str).encode())


def run_demo(
    quantizers: list[str], model: str, device: str, limit: int | None, output: str | None, console
) -> list[Run]:
    """Evaluate every quantizer spec, print progress and the table
    (:mod:`qeval_plugins.report.demo_table`); return the runs."""
    for spec in quantizers:  # every spec, the model and the output are checked before any run
        check_spec(spec, device)
    resolve_pretrained(model)
    if output:
        check_writable_dir(Path(output), "--output")
    quiet_libraries()
    from lm_eval.tasks import TaskManager

    from qeval_plugins.paths import tasks_path

    task_manager = TaskManager(
        include_path=str(tasks_path()), include_defaults=False, verbosity="ERROR"
    )
    runs = []
    for index, spec in enumerate(quantizers, 1):
        with (
            console.status(f"[{index}/{len(quantizers)}] evaluating {spec} ..."),
            cpu_threads(demo_threads(model, device)),
        ):
            results = evaluate_quietly(spec, model, device, limit, task_manager)
        if output:
            name = spec.replace(":", "_").replace("=", "-")
            write_json_atomic(Path(output) / name / "results.json", results)
        runs.append(demo_run(spec, results))
        console.print(f"[{index}/{len(quantizers)}] {spec} done")
    print_demo(demo_grid(runs), console)
    # further sections of the demo (e.g. the layer-sensitivity scan's top layers) print here
    return runs
