"""baseline + quantizers on the embedded model, offline, in minutes

The main job end to end on the embedded model (qeval-tiny): evaluates the unquantized baseline
and each quantizer with lm-eval through the qeval backend on the qeval_demo group (facts,
cloze, perplexity on the model's world), the qeval_demo_temperature sweep (greedy and sampled
continuations of held-out stories of that world) and qeval_sqnr (divergence from the
unquantized model), then prints one table: per quantizer the tasks' chosen metrics, their
change versus the baseline, model size and load time. The reference outputs are computed with
the first spec and read from the cache by the others. Last, a layer-sensitivity scan of one
spec (--scan, by default the one that breaks the model) over held-out passages shows which
layers it hurts most and what keeping them unquantized gives back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from qeval_plugins.backend.checkpoints import EMBEDDED_MODELS, resolve_pretrained
from qeval_plugins.backend.preflight import preflight, preflight_spec
from qeval_plugins.core.arguments import comma_list, positive_int
from qeval_plugins.report.demo_table import demo_grid, demo_run, print_demo
from qeval_plugins.report.runs import Run
from qeval_plugins.storage.atomic import write_atomic
from qeval_plugins.storage.writable import check_writable_dir
from qeval_plugins.sweep.specs import CheckedSpec, check_spec_text

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
DEMO_SCAN_SPEC = "rtn:bits=2"  # the default spec whose layers the demo scans
DEMO_SCAN_TOP = 3  # layers shown
# the demo's scan: every linear layer, 8 held-out passages of the model's world, 128 tokens each
DEMO_SCAN = {
    "unit": "layer",
    "limit": 8,
    "max_tokens": 128,
    "texts_from": ("qeval_demo", "ppl.jsonl"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``qeval demo`` options."""
    parser.add_argument(
        "--model", default="qeval-tiny", help="model path or name (default: %(default)s)"
    )
    parser.add_argument(
        "--quantizers",
        default=",".join(DEFAULT_DEMO_QUANTIZERS),
        help="comma-separated quantizer specs, options after colons, e.g. "
        f"rtn:bits=3:group_size=0 (default: {', '.join(DEFAULT_DEMO_QUANTIZERS)})",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument(
        "--limit", type=positive_int, default=None, help="documents per task (default: all)"
    )
    parser.add_argument("--output", default=None, help="also write each run's results JSON here")
    parser.add_argument(
        "--scan",
        default=DEMO_SCAN_SPEC,
        metavar="SPEC",
        help="quantizer spec whose layer sensitivity the demo scans; 'none' skips the scan "
        "(default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    from rich.console import Console

    run_demo(
        quantizers=comma_list(args.quantizers),
        model=args.model,
        device=args.device,
        limit=args.limit,
        output=args.output,
        console=Console(),
        scan=None if args.scan.strip().lower() in ("", "none") else args.scan,
    )
    return 0


def evaluate_spec(
    spec: CheckedSpec, model: str, device: str, limit: int | None, task_manager: Any
) -> dict[str, Any]:
    """One lm-eval run of ``spec`` on ``model`` over :data:`DEMO_TASKS`; returns lm-eval's
    results."""
    import lm_eval

    return lm_eval.simple_evaluate(
        model="qeval",
        model_args=f"pretrained={model},{spec.model_args}",
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
    quantizers: list[str],
    model: str,
    device: str,
    limit: int | None,
    output: str | None,
    console,
    scan: str | None = DEMO_SCAN_SPEC,
) -> list[Run]:
    """Evaluate every quantizer spec, print progress and the table
    (:mod:`qeval_plugins.report.demo_table`), then the layer scan of ``scan`` (None: no scan);
    return the runs."""
    from qeval_plugins.evals.scan.runner import checked_plan

    # every spec (read and validated once), the model and the output are checked before any run
    checked = [check_spec_text(spec, device) for spec in quantizers]
    if scan:
        checked_plan(scan, device)
    pretrained = resolve_pretrained(model)
    for spec in checked:  # skip= names, kernels
        preflight(pretrained, spec.plan, device, shown=model)
    if scan:
        preflight_spec(model, scan, device)
    if output:
        check_writable_dir(Path(output), "--output")
    quiet_libraries()
    from lm_eval.tasks import TaskManager

    from qeval_plugins.paths import tasks_path

    task_manager = TaskManager(
        include_path=str(tasks_path()), include_defaults=False, verbosity="ERROR"
    )
    runs = []
    for index, spec in enumerate(checked, 1):
        with (
            console.status(f"[{index}/{len(checked)}] evaluating {spec.text} ..."),
            cpu_threads(demo_threads(model, device)),
        ):
            results = evaluate_quietly(spec, model, device, limit, task_manager)
        if output:
            name = spec.text.replace(":", "_").replace("=", "-")
            write_json_atomic(Path(output) / name / "results.json", results)
        runs.append(demo_run(spec.text, results))
        console.print(f"[{index}/{len(checked)}] {spec.text} done")
    print_demo(demo_grid(runs), console)
    if scan:
        scan_layers(scan, model, device, output, console)
    return runs


def scan_layers(spec: str, model: str, device: str, output: str | None, console) -> None:
    """``qeval scan`` of ``spec`` with :data:`DEMO_SCAN`'s settings; prints its
    :data:`DEMO_SCAN_TOP` most sensitive layers and the verified recommendation, and writes
    ``OUTPUT/scan/scan.json`` with ``output``."""
    from qeval_plugins.evals.scan.runner import ScanRequest, run_scan
    from qeval_plugins.report.scan import render_scans, summarize
    from qeval_plugins.storage.scan_result import json_ready, write_scan

    request = ScanRequest(model=model, spec=spec, device=device, **DEMO_SCAN)
    with (
        console.status(f"scanning the layers of {spec} ..."),
        cpu_threads(demo_threads(model, device)),
    ):
        result = run_scan(request)
    path = Path(output) / "scan" / "scan.json" if output else None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_scan(path, result)
    where = str(path) if path is not None else f"'qeval scan --model {model} --quantizer {spec}'"
    render_scans([summarize(json_ready(result), where)], [], console, top=DEMO_SCAN_TOP)
