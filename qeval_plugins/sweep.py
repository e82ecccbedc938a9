"""``qeval run``: evaluate every model × quantizer spec with lm-eval, resumably.

Each run is a fresh ``python -m lm_eval --model qeval ...`` process (memory is fully released
between runs) writing into a private ``.partial-*`` folder; only when it succeeds is its results
file moved into place as ``DIR/<model>__<spec>/results.json`` with an atomic rename. A rerun
skips runs whose results file exists and covers every requested task; ``--force`` recomputes.
An interrupted sweep therefore leaves finished runs intact and never a half-written results file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from qeval_plugins.errors import QevalError
from qeval_plugins.models import resolve_pretrained
from qeval_plugins.specs import check_spec, spec_model_args

RESULTS_FILE = "results.json"
LOG_FILE = "lm_eval.log"


def slug(text: str) -> str:
    """A folder-safe form of a model name or spec: ``rtn:bits=4`` -> ``rtn_bits-4``."""
    text = text.rstrip("/").replace("/", "--").replace(":", "_").replace("=", "-")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


@dataclass(frozen=True)
class PlannedRun:
    model: str
    spec: str
    directory: Path

    @property
    def label(self) -> str:
        return f"{Path(self.model).name or self.model} × {self.spec}"


def plan_runs(models: list[str], specs: list[str], output: Path, device: str) -> list[PlannedRun]:
    """Validate every model and spec (no model is loaded) and name each run's folder."""
    for spec in specs:
        check_spec(spec, device)
    runs = []
    for model in models:
        resolve_pretrained(model)  # a missing local path fails here, before any run starts
        name = Path(model).name if Path(model).exists() else model
        runs += [PlannedRun(model, spec, output / f"{slug(name)}__{slug(spec)}") for spec in specs]
    names = [run.directory for run in runs]
    if len(set(names)) != len(names):
        raise QevalError("two runs would share a folder; give each --model a distinct name.")
    return runs


def is_complete(directory: Path, tasks: list[str]) -> bool:
    """True when ``directory`` holds a readable results file covering every task in ``tasks``."""
    try:
        data = json.loads((directory / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return False
    covered = set(data.get("results", {})) | set(data.get("group_subtasks", {}))
    return all(task in covered for task in tasks)


def lm_eval_command(
    run: PlannedRun, tasks: list[str], device: str, partial: Path, extra: list[str]
) -> list[str]:
    from qeval_plugins.paths import tasks_path

    return [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "qeval",
        "--model_args",
        f"pretrained={run.model},{spec_model_args(run.spec)}",
        "--tasks",
        ",".join(tasks),
        "--include_path",
        str(tasks_path()),
        "--device",
        device,
        "--output_path",
        str(partial),
        *extra,
    ]


def execute(run: PlannedRun, tasks: list[str], device: str, extra: list[str]) -> None:
    """One lm-eval process; on success its results file is renamed into place atomically."""
    run.directory.mkdir(parents=True, exist_ok=True)
    for stale in run.directory.glob(".partial-*"):  # left by an interrupted earlier sweep
        shutil.rmtree(stale, ignore_errors=True)
    partial = run.directory / f".partial-{os.getpid()}"
    log_path = run.directory / LOG_FILE
    with open(log_path, "w") as log:
        code = subprocess.call(
            lm_eval_command(run, tasks, device, partial, extra),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        found = sorted(partial.rglob("results_*.json"))
        if code != 0 or not found:
            errors = [
                line
                for line in log_path.read_text().splitlines()
                if line.startswith("qeval: error:")
            ]
            reason = errors[-1] if errors else f"lm_eval exited with status {code}"
            raise QevalError(f"run {run.label} failed: {reason} (log: {log_path})")
        for samples in partial.rglob("samples_*.jsonl"):
            os.replace(samples, run.directory / samples.name)
        os.replace(found[-1], run.directory / RESULTS_FILE)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def sweep(
    models: list[str],
    specs: list[str],
    tasks: list[str],
    output: Path,
    device: str,
    extra: list[str],
    force: bool,
    console,
) -> list[str]:
    """Run the sweep with a progress display; returns one line per failed run."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    runs = plan_runs(models, specs, output, device)
    failures: list[str] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} runs"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task("sweep", total=len(runs))
        for index, run in enumerate(runs, 1):
            if not force and is_complete(run.directory, tasks):
                progress.console.print(f"[dim]skip[/dim] {run.label}: results exist")
                progress.advance(overall)
                continue
            progress.update(overall, description=f"[{index}/{len(runs)}] {run.label}")
            started = time.perf_counter()
            try:
                execute(run, tasks, device, extra)
            except QevalError as error:
                failures.append(str(error))
                progress.console.print(f"[red]failed[/red] {error}")
            else:
                progress.console.print(
                    f"[green]done[/green] {run.label} in {time.perf_counter() - started:.1f} s"
                )
            progress.advance(overall)
        progress.update(overall, description="sweep")
    return failures
