"""Reading lm-eval results files into :class:`Run` objects.

A *run* is one results JSON (``results_<timestamp>.json`` from ``lm_eval --output_path``,
``results.json`` from ``qeval run``), from ``--model qeval`` or any other backend; its model is
``config.model_args`` ``pretrained`` and its name a label (:mod:`.labels`).

Nothing read can crash or hang the report: unreadable, empty or binary files, what is not a
regular file (a FIFO, a link to ``/dev/zero``: :mod:`qeval_plugins.core.safe_read`), files over
:data:`MAX_RESULTS_BYTES`, text that is not JSON, corrupt or truncated JSON, JSON nested deeper
than the interpreter's recursion limit, integers too long for a float (more than 308 digits),
files of other tools, metric values that are not numbers (text such as "0.5", true/false), NaN
values, infinite values (but dB figures), missing, negative or non-finite standard errors, and
cost figures or settings that cannot be true (:mod:`.impossible`) each become one warning line, and
everything else is still read. A metric's direction is the file's
``higher_is_better`` entry, else :func:`qeval_plugins.metrics.directions.direction`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qeval_plugins.core.safe_read import read_regular
from qeval_plugins.core.text import printable
from qeval_plugins.metrics.directions import direction
from qeval_plugins.report.impossible import checked_config, checked_settings, nan_scores_phrase
from qeval_plugins.report.labels import run_label
from qeval_plugins.report.runs import Metric, Run, model_args
from qeval_plugins.report.sensitivity import SWEEP_TASK
from qeval_plugins.report.settings import fewshot_counts, run_settings
from qeval_plugins.report.sqnr import SQNR_TASK
from qeval_plugins.report.values import (
    as_mapping,
    as_number,
    as_score,
    is_placeholder,
    listing,
    parse_int,
    scalar_text,
    value_kind,
)

NON_METRIC_KEYS = frozenset({"alias", "name", "sample_len", "samples", "sample_count"})
MAX_RESULTS_BYTES = 256 << 20  # 256 MiB; lm-eval's results file of 60 MMLU subtasks: ~1 MiB


def load_runs(paths: Sequence[str | Path]) -> tuple[list[Run], list[str]]:
    """Read every results file in ``paths`` (files, or folders searched for ``results*.json``,
    hidden folders skipped).

    Returns the runs in path order and one warning line per problem; never raises for content.
    """
    runs: list[Run] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for path in _result_files(paths, warnings):
        key = os.path.abspath(path)  # the same file named twice (a folder and a file in it)
        if key in seen:
            continue
        seen.add(key)
        try:
            run, problems = read_run(path)
        except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as error:
            # the net under read_run's own checks: a file of a shape no check foresaw
            run, problems = None, [f"{path}: unexpected content ({_error_text(error)}); skipped"]
        warnings.extend(problems)
        if run is not None:
            runs.append(run)
    return runs, warnings


def no_runs_message(paths: Sequence[str | Path]) -> tuple[str, bool]:
    """The error line for ``paths`` that gave no run, and whether they hold results files at all
    (then none could be read, and the load warnings say why)."""
    found = len({os.path.abspath(path) for path in _result_files(paths, [])})
    shown = printable(listing([str(path) for path in paths], 3))
    wanted = (
        "pass the folder that lm_eval --output_path or qeval run --output wrote, or its "
        "results*.json files"
    )
    if not found:
        return f"no lm-eval results files (results*.json) in {shown}; {wanted}", False
    unread = (
        f"the results file in {shown} could not be read"
        if found == 1
        else f"none of the {found} results files in {shown} could be read"
    )
    return f"no runs to report: {unread} (see the warnings); {wanted}", True


def _result_files(paths: Sequence[str | Path], warnings: list[str]) -> Iterable[Path]:
    """Given files as they are; in folders, ``results*.json`` outside hidden folders (such as
    ``qeval run``'s unfinished ``.partial-*``)."""
    for given in map(Path, paths):
        if given.is_dir():
            found = results_files_in(given)
            if not found:
                warnings.append(f"{given}: no results*.json files in this folder")
            yield from found
        elif given.exists():
            yield given
        else:
            warnings.append(f"{given}: no such file or folder")


def results_files_in(folder: Path) -> list[Path]:
    """The ``results*.json`` files under ``folder`` outside hidden folders, sorted."""
    return sorted(
        path
        for path in folder.rglob("results*.json")
        if not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def read_run(path: Path) -> tuple[Run | None, list[str]]:
    """One results file as a :class:`Run` (None if it is not one) and its warning lines."""
    try:
        raw = read_regular(path, MAX_RESULTS_BYTES)  # never a FIFO or a device
    except OSError as error:
        return None, [f"{path}: cannot read ({error}); skipped"]
    text = _as_text(raw)
    if text is None:
        return None, [f"{path}: not text (binary: NUL bytes or not UTF-8); skipped"]
    if not text.strip():
        return None, [f"{path}: empty file; skipped"]
    huge: list[int] = []  # digit counts of integers too long for a float
    try:
        data = json.loads(text, parse_int=lambda digits: parse_int(digits, huge))
    except json.JSONDecodeError as error:
        return None, [f"{path}: {_json_problem(error, text)}; skipped"]
    except RecursionError:
        return None, [f"{path}: JSON nested too deeply to read; skipped"]
    return results_run(data, path, huge)


def results_run(data: Any, path: Path, huge: Sequence[int] = ()) -> tuple[Run | None, list[str]]:
    """Parsed results JSON ``data`` (read from ``path``) as a :class:`Run` (None if it is not
    one) and its warning lines; ``huge`` holds the digit counts of the integers too long for a
    number that the parser left out (:func:`~.values.parse_int`). Dates are lm-eval's ``date``,
    else the file's modification time (0 when ``path`` names no file)."""
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        return None, [f'{path}: not an lm-eval results file (no "results" object); skipped']
    config, problems = checked_config(as_mapping(data.get("config")))
    settings, unknown = checked_settings(run_settings(data, config))
    notes = MetricNotes()
    metrics = parse_metrics(data, notes)
    warnings = []
    if huge:
        count = f"{len(huge)} integers" if len(huge) > 1 else "an integer"
        warnings.append(
            f"{path}: {count} of up to {max(huge)} digits, too long for a number; left out"
        )
    warnings += notes.warnings(path)
    if problems or unknown:
        warnings.append(f"{path}: {'; '.join([*problems, *unknown])}")
    if not metrics:
        return None, [*warnings, f"{path}: no numeric metrics in its results; skipped"]
    args = model_args(config)
    block = as_mapping(config.get("qeval"))
    date = as_number(data.get("date"))
    configs = as_mapping(data.get("configs"))
    run = Run(
        path=path,
        model=compared_model(args, block) or scalar_text(data.get("model_name")) or "unknown",
        label="",
        config=config,
        metrics=metrics,
        qeval=block,
        date=date if date is not None and math.isfinite(date) else _modified(path),
        task_metadata={
            task: metadata
            for task in metrics
            if SWEEP_TASK.fullmatch(task)
            and (metadata := as_mapping(as_mapping(configs.get(task)).get("metadata")))
        },
        settings=settings,
        fewshot=fewshot_counts(data, metrics),
        unread=frozenset(notes.unread),
        nan_scores=tuple(notes.nan),
    )
    run.label = run_label(run)
    return run, warnings


def compared_model(args: dict[str, Any], block: dict[str, Any]) -> str | None:
    """The model a run is grouped (and compared) with: ``pretrained``, except for a checkpoint
    saved already quantized and given a ``reference=``: that base model, so the checkpoint sits
    in one table with the base model's own runs and is compared with its ``none`` run."""
    reference = scalar_text(args.get("reference"))
    if reference and scalar_text(block.get("quantizer")) == "prequantized":
        return reference
    return scalar_text(args.get("pretrained"))


def _modified(path: Path) -> float:
    """``path``'s modification time (Unix seconds), 0 when it cannot be read."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _error_text(error: BaseException, limit: int = 200) -> str:
    """``Kind: message`` of an exception, cut to ``limit`` characters."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _as_text(raw: bytes) -> str | None:
    """``raw`` decoded as UTF-8 (a byte-order mark dropped); None for binary data: NUL bytes, or
    bytes that are not UTF-8."""
    if b"\0" in raw:
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def _json_problem(error: json.JSONDecodeError, text: str) -> str:
    """What is wrong with a text that is not JSON: it does not start as JSON ("not JSON"), it
    stops before its closing bracket ("truncated JSON") or it breaks the syntax inside."""
    where = f"line {error.lineno}, column {error.colno}: {error.msg}"
    if not text.lstrip().startswith(("{", "[")):
        return f"not JSON ({where})"
    if not text.rstrip().endswith(("}", "]")):
        return f"truncated JSON (cut off at line {text.count(chr(10)) + 1})"
    return f"not valid JSON ({where})"


@dataclass
class MetricNotes:
    """What :func:`parse_metrics` found amiss, as ``task/metric`` names per kind: values that are
    not numbers (text such as "0.5", true/false, containers: left out, also kept as
    ``(task, metric)`` in ``unread``), NaN values (left out, the run flagged:
    :func:`~.impossible.nan_scores_phrase`), infinite values other than dB
    figures (shown, not compared), missing stderrs, and unusable stderrs (negative, NaN or
    infinite: treated as missing)."""

    not_number: list[str] = field(default_factory=list)
    unread: list[tuple[str, str]] = field(default_factory=list)
    nan: list[str] = field(default_factory=list)
    infinite: list[str] = field(default_factory=list)
    no_stderr: list[str] = field(default_factory=list)
    bad_stderr: list[str] = field(default_factory=list)

    def warnings(self, path: Path) -> list[str]:
        """One warning line per kind found, for the file ``path``."""
        lines = [
            (self.not_number, "not a number: {}; left out, not compared"),
            (self.nan, None),  # the whole run is suspect: nan_scores_phrase
            (self.infinite, "infinite value of {}; shown as ∞, not compared"),
            (self.no_stderr, "no stderr for {}; significance not assessed"),
            (
                self.bad_stderr,
                "stderr negative or not finite for {}; treated as missing, significance not "
                "assessed",
            ),
        ]
        return [
            f"{path}: {nan_scores_phrase(names) if text is None else text.format(listing(names))}"
            for names, text in lines
            if names
        ]


def parse_metrics(data: dict[str, Any], notes: MetricNotes) -> dict[str, dict[str, Metric]]:
    """``results`` as task -> metric -> :class:`Metric`; what is amiss is noted in ``notes``.

    ±∞ is a value (an SQNR of identical or all-zero weights, an infinite perplexity), noted unless
    the metric is in dB; a stderr below 0, NaN or infinite is None (no stderr).

    Keys are lm-eval's ``"metric,filter"`` (plain ``"metric"`` in older files); the metric is named
    ``metric`` for filter ``none``, else ``metric,filter``. Subtasks of a group that reports its
    own aggregate (mmlu) are folded into the group. ``qeval_sqnr``'s metrics kept in the qeval
    block are read as the task's own (:func:`_with_block_metrics`).
    """
    directions = as_mapping(data.get("higher_is_better"))
    folded = _folded_subtasks(data)
    metrics: dict[str, dict[str, Metric]] = {}
    for task, entry in data["results"].items():
        if task in folded or not isinstance(entry, dict):
            continue
        entry = _with_block_metrics(data, task, entry)
        task_directions = as_mapping(directions.get(task))
        found = {}
        for key, raw in entry.items():
            base, _, kind = key.partition(",")
            if base in NON_METRIC_KEYS or base.endswith("_stderr"):
                continue
            name = base if kind in ("", "none") else key
            value = as_score(raw)
            if value is None:
                if not is_placeholder(raw):
                    notes.not_number.append(f"{task}/{name} ({value_kind(raw)})")
                    notes.unread.append((task, name))
                continue
            if math.isnan(value):
                notes.nan.append(f"{task}/{name}")
                continue
            if math.isinf(value) and not base.endswith(("_db", "_bound")):  # ∞ there by design
                notes.infinite.append(f"{task}/{name}")
            stderr_key = f"{base}_stderr,{kind}" if kind else f"{base}_stderr"
            stderr = as_number(entry.get(stderr_key))
            stated_error = _stated_error(entry, base, kind)
            if stderr_key not in entry and stated_error is None:
                notes.no_stderr.append(f"{task}/{name}")
            elif stderr is not None and not (math.isfinite(stderr) and stderr >= 0):
                notes.bad_stderr.append(f"{task}/{name}")
                stderr = None
            if stderr is None:
                stderr = stated_error
            stated = task_directions.get(base)
            found[name] = Metric(
                value,
                stderr,
                stated if isinstance(stated, bool) else direction(base),
            )
        if found:
            metrics[task] = found
    return metrics


def _with_block_metrics(data: dict[str, Any], task: str, entry: dict[str, Any]) -> dict:
    """``entry`` (``results[task]``) and, for ``qeval_sqnr``, the metrics its run keeps out of
    lm-eval's table, in the qeval block (``config.qeval.sqnr.metrics``: name -> value), as lm-eval
    would write them (``name,none``, stderr "N/A"), so that a results file from before the move
    (every metric in ``results``) reads the same; a metric in ``results`` wins."""
    if task != SQNR_TASK:
        return entry
    block = as_mapping(as_mapping(as_mapping(data.get("config")).get("qeval")).get("sqnr"))
    moved = {}
    for name, value in as_mapping(block.get("metrics")).items():
        moved |= {f"{name},none": value, f"{name}_stderr,none": "N/A"}
    return {**entry, **{key: value for key, value in moved.items() if key not in entry}}


def _stated_error(entry: dict[str, Any], base: str, kind: str) -> float | None:
    """The task's own standard error of ``base`` (``kl_mean_err`` for ``kl_mean``: qeval_sqnr's
    run-level figures, for which lm-eval writes ``_stderr`` "N/A"), when finite and >= 0."""
    value = as_number(entry.get(f"{base}_err,{kind}" if kind else f"{base}_err"))
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def _folded_subtasks(data: dict[str, Any]) -> set[str]:
    groups = {
        group: children
        for group, children in as_mapping(data.get("group_subtasks")).items()
        if isinstance(children, list) and children
    }
    results = data["results"]
    stack = [group for group in groups if _has_scores(results.get(group))]
    folded: set[str] = set()
    while stack:
        for child in groups.get(stack.pop(), ()):
            if isinstance(child, str) and child not in folded:
                folded.add(child)
                stack.append(child)
    return folded


def _has_scores(entry: Any) -> bool:
    return isinstance(entry, dict) and any(
        "," in key and "_stderr," not in key and as_score(value) is not None
        for key, value in entry.items()
    )
