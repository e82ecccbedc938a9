"""``qeval study``'s phases: train or reuse the family, sweep it through ``qeval run``, fit the
predictor, time generation per quantizer, write the report.

The sweep runs one ``qeval run`` process per :class:`~.plan.SweepGroup` (one model each), ``jobs``
at a time; ``qeval run`` skips finished runs, so an interrupted study resumes where it stopped,
and two processes never work on the same model. Each process's whole output is kept in
``RUNS/logs/<part>/<model>.log``; its run lines (``done``/``skip``/``failed``, heartbeats) are
echoed with the group's position.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from qeval_plugins.core.errors import QevalError
from qeval_plugins.storage.atomic import write_atomic
from qeval_plugins.study.plan import (
    EARLY_FRACTION,
    StudyModel,
    StudyPlan,
    SweepGroup,
    build_plan,
    checkpoint_name,
    family_models,
)
from qeval_plugins.sweep.child import die_with_parent
from qeval_plugins.sweep.heartbeat import elapsed_text

Progress = Callable[[str], None]
RUN_LINE = re.compile(r"^\s*(done|skip|failed|qeval: error|\[\d+/\d+\])")
RUNS_GITIGNORE = (
    "# only results.json and qeval_run.json are committed\nlogs/\n*.log\n*.jsonl\n.lock\n"
    ".partial-*\n"
)


@dataclass(frozen=True)
class StudySettings:
    """What ``qeval study`` was asked for."""

    output: Path
    sizes: tuple[str, ...] = ("xs", "s", "m", "l")
    seeds: tuple[int, ...] = (1, 2)
    steps: int | None = None
    device: str = "cpu"
    jobs: int = 1
    models: tuple[str, ...] = ()  # hub ids or paths: no training, size series only
    specs: tuple[str, ...] = ()  # the size series' specs on every seed (default: the plan's)
    variant_size: str = "s"

    @property
    def runs_dir(self) -> Path:
        return self.output / "runs"


@dataclass
class Prepared:
    """The plan and where each of its models is."""

    plan: StudyPlan
    paths: dict[str, str]  # model name -> path or hub id given to qeval run
    family: dict[str, dict]  # model name -> its config.json "qeval_family" block (family only)


def external_models(models: Sequence[str]) -> dict[str, StudyModel]:
    """``--models`` as study models (model as given -> its study model): each its own size,
    named as ``qeval run`` names its folder, no recipe, no seed."""
    named = {}
    for model in models:
        name = Path(model).name if Path(model).exists() else model.replace("/", "--")
        named[model] = StudyModel(name, name, recipe=None, seed=None)
    return named


def prepare(settings: StudySettings, progress: Progress, train: bool = True) -> Prepared:
    """Train or reuse the family (or take ``--models``), link each checkpoint under a unique
    name in ``OUTPUT/models/`` and plan the sweep. ``train`` False: only plan (the report of
    existing runs), with the family's records where its checkpoints exist."""
    if settings.models:
        given = external_models(settings.models)
        paths = {m.name: model for model, m in given.items()}
        models = list(given.values())
        plan = build_plan(models, passages=None, prompts=None, specs=settings.specs)
        return Prepared(plan, paths, {})
    from qeval_plugins.paths import tasks_path
    from qeval_plugins.study.family import checkpoint_dir, default_family, held_out_passages
    from qeval_plugins.study.training import train_family

    members = default_family(
        sizes=settings.sizes, seeds=settings.seeds, variant_size=settings.variant_size
    )
    if train:
        progress(f"family: {len(members)} models; training what is not trained yet")
        started = time.monotonic()
        train_family(members, steps=settings.steps, device=settings.device, progress=progress)
        progress(f"family ready ({elapsed_text(time.monotonic() - started)})")
    models = family_models(members, settings.variant_size)
    by_name = {m.name: m for m in members}
    links = settings.output / "models"
    links.mkdir(parents=True, exist_ok=True)
    write_atomic(links / ".gitignore", b"*\n")
    paths, family = {}, {}
    for model in models:
        member = by_name[model.name.removesuffix(f"-at{round(EARLY_FRACTION * 100)}pct")]
        target = checkpoint_dir(member, model.fraction).resolve()
        link = links / checkpoint_name(member.name, model.fraction)
        if not (target / "config.json").is_file():
            continue  # report only, on a machine without this checkpoint
        if link.is_symlink() and link.resolve() != target:
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
        paths[model.name] = str(link.absolute())
        config = json.loads((target / "config.json").read_text())
        family[model.name] = config.get("qeval_family", {})
    prompts = tasks_path() / "qeval_demo" / "sampling.jsonl"
    plan = build_plan(
        models,
        passages=str(held_out_passages()),
        prompts=str(prompts),
        variant_size=settings.variant_size,
        specs=settings.specs,
    )
    return Prepared(plan, paths, family)


def group_command(group: SweepGroup, path: str, runs_dir: Path, device: str) -> list[str]:
    """The ``qeval run`` command line of one sweep group."""
    command = [
        sys.executable,
        "-m",
        "qeval_plugins.cli.main",
        "run",
        "--model",
        path,
        "--quantizers",
        ",".join(group.specs),
        "--tasks",
        ",".join(group.tasks),
        "--output",
        str(runs_dir / group.part),
        "--device",
        device,
        "--no-log-samples",
    ]
    if group.metadata:
        command += ["--metadata", json.dumps(group.metadata, sort_keys=True)]
    if group.limit is not None:
        command += ["--limit", str(group.limit)]
    return command


def run_sweep(prepared: Prepared, settings: StudySettings, progress: Progress) -> list[str]:
    """Every sweep group through ``qeval run``, ``settings.jobs`` at a time; returns the
    groups that failed (one line each)."""
    groups = prepared.plan.groups
    runs_dir = settings.runs_dir
    runs_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(runs_dir / ".gitignore", RUNS_GITIGNORE.encode())
    lock = threading.Lock()
    failures: list[str] = []
    started = time.monotonic()
    progress(
        f"sweep: {prepared.plan.run_count} runs in {len(groups)} groups, "
        f"{settings.jobs} at a time (finished runs are skipped)"
    )

    def say(text: str) -> None:
        with lock:
            progress(text)

    def one(index: int, group: SweepGroup) -> None:
        where = f"[group {index}/{len(groups)} {group.part}/{group.model.name}]"
        log_path = runs_dir / "logs" / group.part / f"{group.model.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = group_command(group, prepared.paths[group.model.name], runs_dir, settings.device)
        with log_path.open("w", buffering=1) as log:  # line by line: readable while it runs
            child = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},  # its lines as they come
                preexec_fn=die_with_parent(),  # dies with this thread's process (Linux)
            )
            for line in child.stdout:
                log.write(line)
                if RUN_LINE.match(line):
                    say(f"{where} {line.strip()}")
            code = child.wait()
        if code != 0:
            with lock:
                failures.append(f"{where} qeval run exited {code}; see {log_path}")
            say(f"{where} failed (exit {code}); log: {log_path}")

    with ThreadPoolExecutor(max_workers=max(1, settings.jobs)) as pool:
        for future in [pool.submit(one, i, g) for i, g in enumerate(groups, 1)]:
            future.result()
    progress(f"sweep finished ({elapsed_text(time.monotonic() - started)})")
    return failures


def fit_predictor(settings: StudySettings, progress: Progress) -> Path | None:
    """``qeval predict fit RUNS --out OUTPUT/predictor.json``; None (with a note) when the
    ``predict`` command is not installed or the fit fails."""
    out = settings.output / "predictor.json"
    command = [sys.executable, "-m", "qeval_plugins.cli.main", "predict", "fit"]
    command += [str(settings.runs_dir / "divergence"), "--out", str(out)]
    probe = subprocess.run(
        [sys.executable, "-m", "qeval_plugins.cli.main", "predict", "--help"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        progress("predictor: skipped ('qeval predict' is not available in this qeval)")
        return None
    progress("predictor: qeval predict fit")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        progress(f"predictor: fit failed ({tail[0]}); the report says so")
        return None
    return out


def run_study(
    settings: StudySettings, progress: Progress = print, report_only: bool = False
) -> list[str]:
    """The whole study; returns one line per sweep group that failed (the report is written
    from whatever runs exist)."""
    from qeval_plugins.study.report_writer import write_report
    from qeval_plugins.study.speed import measure_speeds

    if settings.jobs < 1:
        raise QevalError("--jobs must be at least 1.")
    prepared = prepare(settings, progress, train=not report_only)
    failures: list[str] = []
    if not report_only:
        failures = run_sweep(prepared, settings, progress)
        fit_predictor(settings, progress)
        speed_model = speed_target(prepared)
        if speed_model is not None:
            measure_speeds(
                prepared.paths[speed_model.name],
                speed_model.name,
                settings.output / "speed.json",
                settings.device,
                progress,
            )
    report = write_report(settings, prepared)
    progress(f"report: {report}")
    return failures


def speed_target(prepared: Prepared) -> StudyModel | None:
    """The model whose generation speed is timed: the temperature sweep's first (largest)."""
    for group in prepared.plan.groups:
        if group.part == "temperature":
            return group.model
    return None
