"""``qeval demo``: the main job end to end on the embedded model, offline, in a few minutes.

Evaluates the unquantized baseline and several quantizers with lm-eval's ``simple_evaluate``
through the ``qeval`` backend on the ``qeval_demo`` task group, then prints one table: each
task's main metric per quantizer, its change versus the baseline, model size and load time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from qeval_plugins.backend.checkpoints import resolve_pretrained
from qeval_plugins.core.plan import check_spec
from qeval_plugins.core.specs import spec_model_args
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
DEMO_TASK = "qeval_demo"
# metric shown per task, and whether higher is better
MAIN_METRICS = {
    "qeval_demo_facts": ("acc", True),
    "qeval_demo_cloze": ("exact_match", True),
    "qeval_demo_ppl": ("word_perplexity", False),
}
COLUMN_TITLES = {
    "qeval_demo_facts": "facts acc ↑",
    "qeval_demo_cloze": "cloze EM ↑",
    "qeval_demo_ppl": "word ppl ↓",
}


def evaluate_spec(
    spec: str, model: str, device: str, limit: int | None, task_manager: Any
) -> dict[str, Any]:
    """One lm-eval run of ``spec`` on ``model`` over the demo tasks; returns lm-eval's results."""
    import lm_eval

    return lm_eval.simple_evaluate(
        model="qeval",
        model_args=f"pretrained={model},{spec_model_args(spec)}",
        tasks=[DEMO_TASK],
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


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Main metric per task plus the qeval block's size and timing figures."""
    block = results.get("config", {}).get("qeval", {})
    row = {
        "bytes": block.get("param_bytes_after"),
        "seconds": block.get("quantize_seconds"),
        "options": block.get("options", {}),
    }
    for task, (metric, _) in MAIN_METRICS.items():
        values = results.get("results", {}).get(task, {})
        row[task] = values.get(f"{metric},none")
    return row


def render(rows: dict[str, dict[str, Any]], console) -> None:
    """Print the comparison table (rendering only)."""
    from rich.table import Table

    baseline = rows.get("none")
    table = Table(title="qeval demo: qeval-tiny on qeval_demo (change vs none)")
    table.add_column("quantizer", no_wrap=True)
    for task in MAIN_METRICS:
        table.add_column(COLUMN_TITLES[task], justify="right")
    table.add_column("MB", justify="right")
    table.add_column("load s", justify="right")
    for spec, row in rows.items():
        cells = [spec]
        for task, (_, higher) in MAIN_METRICS.items():
            value = row[task]
            text = "-" if value is None else f"{value:.3f}"
            if baseline and spec != "none" and value is not None and baseline[task] is not None:
                delta = value - baseline[task]
                worse = delta < 0 if higher else delta > 0
                colour = "red" if worse and not math.isclose(delta, 0) else "green"
                text += f" [{colour}]({delta:+.3f})[/{colour}]"
            cells.append(text)
        cells.append("-" if row["bytes"] is None else f"{row['bytes'] / 2**20:.2f}")
        cells.append("-" if row["seconds"] is None else f"{row['seconds']:.2f}")
        table.add_row(*cells)
    console.print(table)
    console.print(
        "MB: weights as stored (bitsandbytes: packed, scales included). rtn is simulated "
        "quantization, stored unquantized. load s: load + quantize wall time."
    )


def run_demo(
    quantizers: list[str], model: str, device: str, limit: int | None, output: str | None, console
) -> dict[str, dict[str, Any]]:
    """Evaluate every quantizer spec, print progress and the table; return the summary rows."""
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
    rows: dict[str, dict[str, Any]] = {}
    for index, spec in enumerate(quantizers, 1):
        with console.status(f"[{index}/{len(quantizers)}] evaluating {spec} ..."):
            results = evaluate_quietly(spec, model, device, limit, task_manager)
        if output:
            name = spec.replace(":", "_").replace("=", "-")
            write_json_atomic(Path(output) / name / "results.json", results)
        rows[spec] = summarize(results)
        console.print(f"[{index}/{len(quantizers)}] {spec} done")
    render(rows, console)
    return rows
