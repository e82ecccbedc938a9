"""Reading lm-eval results files into comparable runs, and comparing each run with its baseline.

A *run* is one results JSON (``results_<timestamp>.json`` from ``lm_eval --output_path``,
``results.json`` from ``qeval run``), from ``--model qeval`` or any other backend. Runs are grouped
by model (``config.model_args`` ``pretrained``) and named by a *label*: the qeval block's ``spec``
(``rtn:bits=4``), else its quantizer plus the options given in ``model_args``, else the backend
(``hf``) plus ``dtype`` and lm-eval's own quantization switches when given.

Each task shows one *main metric* (:data:`MAIN_METRIC_PRIORITY`). Against the model's baseline
run, with q the run's value, b the baseline's, se their standard errors:

* delta Δ = q − b;
* relative degradation (Ahmadian et al.) = 100·(b − q)/|b| % when higher is better and
  100·(q − b)/|b| % when lower is better, so a positive value always means worse;
* significant = |Δ| > √(se_b² + se_q²) — a one-standard-error screen, not a formal test; unknown
  (None) when either standard error is missing.

The sampling-sensitivity tasks of a sweep (``qeval_temperature_0.5``, ``qeval_top_k_all``, …;
see ``evals.sampling.task``) are gathered into a :class:`Sweep` per model: each run's
metrics per setting, read from the task's ``configs`` metadata (else its name), and its
``qeval_<sweep>_summary`` figures. These per-setting tasks are still scored against the baseline
(JSON, CSV) but are no columns of the summary table; the summary tasks are, with ``rougeL_gap``.

Nothing read can crash the report: unreadable, empty or binary files, text that is not JSON, corrupt
or truncated JSON, JSON nested deeper than the interpreter's recursion limit, integers too long for
a float (more than 308 digits), files of other tools, values of unexpected types, NaN values,
infinite values (but dB figures), missing, negative or non-finite standard errors, different task
sets and duplicates each become one warning line, and everything else is still compared. Runs of one
model whose settings differ (limit, few-shot, gen_kwargs, seeds, chat template, model revision or
dtype, lm-eval or qeval version: :data:`SETTINGS`) get one warning line: their deltas may measure
the settings rather than the quantization.

Text read from a file may be hostile: :func:`printable` makes it safe for a terminal, and every
view applies it (:meth:`Report.to_dict` here, the tables in :mod:`qeval_plugins.report.render`).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from qeval_plugins.core.errors import QevalError, did_you_mean
from qeval_plugins.core.plan import HF_QUANTIZATION_ARGS
from qeval_plugins.core.specs import format_spec
from qeval_plugins.metrics.text import BAND_EDGE_TOLERANCE

# A task's main metric: the first of these it reports, else its first numeric metric.
MAIN_METRIC_PRIORITY = (
    "acc",
    "acc_norm",
    "exact_match",
    "em",
    "f1",
    "pass@1",
    "mcc",
    "bleu",
    "rougeL",
    "chrf",
    "word_perplexity",
    "perplexity",
    "byte_perplexity",
    "bits_per_byte",
)
SQNR_TASK = "qeval_sqnr"
# Sampling-sensitivity sweeps: tasks qeval_<sweep>_<setting> and qeval_<sweep>_summary.
SWEEPS = ("temperature", "top_k", "max_new_tokens")
SWEEP_TASK = re.compile(rf"qeval_({'|'.join(SWEEPS)})_(.+)")
SWEEP_SUMMARY = "summary"
INTEGER_SWEEPS = frozenset({"top_k", "max_new_tokens"})
SWEEP_SUMMARY_METRICS = ("rougeL_slope", "rougeL_spread", "rougeL_gap")
# The band of the temperature summary's rougeL_gap when its metadata gives none (Roy 2023).
TEMPERATURE_BAND = (0.5, 0.8)
TASK_MAIN_METRIC = {
    SQNR_TASK: "logit_sqnr_db",
    **{f"qeval_{sweep}_{SWEEP_SUMMARY}": "rougeL_gap" for sweep in SWEEPS},
}
# Direction of common metrics, used only when a file has no ``higher_is_better`` entry.
LOWER_IS_BETTER = frozenset(
    {
        "word_perplexity",
        "byte_perplexity",
        "perplexity",
        "bits_per_byte",
        "ter",
        "wer",
        "cer",
        "brier_score",
        "kl_mean",
        "kl_p99",
        "ppl_reference",
        "ppl_quantized",
        "ppl_delta",
        "self_bleu",
        "rougeL_spread",
        "rougeL_gap",
    }
)
HIGHER_IS_BETTER = frozenset(
    {
        "acc",
        "acc_norm",
        "exact_match",
        "em",
        "f1",
        "pass@1",
        "mcc",
        "bleu",
        "chrf",
        "top1_agreement",
        "rougeL",
        "reference_rougeL",
        "distinct_1",
        "distinct_2",
        "agree_tokens",
        "agree_rougeL",
        "rougeL_slope",
    }
)
# Backends whose runs are an unquantized baseline when they use none of HF_QUANTIZATION_ARGS.
HF_BACKENDS = frozenset({"hf", "hf-auto", "huggingface"})
DTYPE_BITS = {"float64": 64, "float32": 32, "float16": 16, "bfloat16": 16}
NON_METRIC_KEYS = frozenset({"alias", "name", "sample_len", "samples", "sample_count"})
MIB = 2**20
DEFAULT_WORST_LAYERS = 5
# A JSON integer of more digits may not fit a float (max ≈ 1.8·10³⁰⁸); it is not read as a figure.
MAX_INTEGER_DIGITS = 308
# Control characters (C0, DEL, C1), bidirectional overrides and lone surrogates: never printed raw.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Settings that change a run's scores, compared across the runs of a model. Each is read from
# the results file: ``config[key]``, else the top level ``key`` (lm-eval writes the chat template
# and fewshot_as_multiturn there), except revision and dtype (``config.model_args``; revision
# else ``config.model_revision``) and qeval_version (``config.qeval.qeval_version``).
SETTINGS = (
    "limit",
    "gen_kwargs",
    "random_seed",
    "numpy_seed",
    "torch_seed",
    "fewshot_seed",
    "apply_chat_template",
    "chat_template",
    "fewshot_as_multiturn",
    "system_instruction",
    "revision",
    "dtype",
    "lm_eval_version",
    "qeval_version",
)
# Settings whose text can be long: compared by their lm-eval ``<key>_sha`` or a hash of the text.
HASHED_SETTINGS = frozenset({"chat_template", "system_instruction"})


class Metric(NamedTuple):
    """One metric of one task: value (may be ±inf, never NaN), stderr when known, direction."""

    value: float
    stderr: float | None
    higher_is_better: bool | None


@dataclass
class Run:
    """One evaluated model configuration, read from one results file (or several merged)."""

    path: Path
    model: str
    label: str
    config: dict[str, Any]
    metrics: dict[str, dict[str, Metric]]
    qeval: dict[str, Any]
    date: float = 0.0  # lm-eval's "date" (Unix seconds), else the file's mtime: newest wins
    merged: list[Path] = field(default_factory=list)  # older files whose tasks were added
    # configs[task].metadata of its sampling-sweep tasks: their generation settings
    task_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    # :data:`SETTINGS` found in the file, as :func:`setting_text`; a setting absent is unknown
    settings: dict[str, str] = field(default_factory=dict)
    # task -> few-shot count (lm-eval's ``n-shot``, else ``configs[task].num_fewshot``)
    fewshot: dict[str, int] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return scalar_text(self.config.get("model")) or "unknown"

    @property
    def is_qeval(self) -> bool:
        return self.backend == "qeval" or "qeval" in self.config

    @property
    def quantizer(self) -> str | None:
        """The qeval quantizer's canonical name; None for runs of other backends."""
        if not self.is_qeval:
            return None
        return scalar_text(self.qeval.get("quantizer")) or self.label.partition(":")[0]

    @property
    def is_plain_hf(self) -> bool:
        """An ``--model hf`` run without lm-eval's own quantization switches."""
        args = model_args(self.config)
        return self.backend in HF_BACKENDS and not any(
            _given(args.get(name)) for name in HF_QUANTIZATION_ARGS
        )


@dataclass(frozen=True)
class Score:
    """A run's main metric on one task, compared with the baseline (None where not defined)."""

    metric: str
    value: float
    stderr: float | None
    higher_is_better: bool | None
    delta: float | None = None
    relative_degradation_pct: float | None = None
    significant: bool | None = None


@dataclass
class Row:
    """One run of a model: its cost figures and a score per task."""

    run: Run
    is_baseline: bool
    bits_per_param: float | None
    simulated: bool
    size_mib: float | None
    quantize_seconds: float | None
    tokens_per_s: dict[str, float]  # "loglikelihood" and/or "generate"
    peak_memory_mib: float | None
    peak_memory_kind: str | None
    scores: dict[str, Score]


@dataclass
class SqnrRun:
    """A run's ``qeval_sqnr`` figures: task metrics, weight SQNR per layer, activation SQNR."""

    label: str
    metrics: dict[str, float]
    layers: dict[str, float]  # weight SQNR (dB) per layer, checkpoint order
    worst: list[tuple[str, float]]
    activation_blocks_db: list[float]


@dataclass
class SweepRun:
    """One run's share of a sampling sweep: its metrics per setting and its summary metrics."""

    label: str
    is_baseline: bool
    points: dict[float, dict[str, Metric]]  # setting -> metric -> Metric, settings ascending
    summary: dict[str, Metric]  # metrics of qeval_<sweep>_summary (rougeL_slope, ...)


@dataclass
class Sweep:
    """One model's sampling sweep (temperature, top_k or max_new_tokens) over all its runs."""

    name: str
    settings: list[float]  # every setting any run covers, ascending (top_k "all" = +∞, last)
    band: tuple[float, float] | None  # the settings rougeL_gap averages over; None: not marked
    runs: list[SweepRun]  # in the summary table's row order

    def in_band(self, setting: float) -> bool:
        """Whether ``setting`` lies in the band: low − ε ≤ setting ≤ high + ε (ε = 1e-9)."""
        return self.band is not None and (
            self.band[0] - BAND_EDGE_TOLERANCE <= setting <= self.band[1] + BAND_EDGE_TOLERANCE
        )

    def label(self, setting: float) -> str:
        """:func:`setting_label` of one of this sweep's settings."""
        return setting_label(self.name, setting)


@dataclass
class Comparison:
    """Every run of one model, each compared with the model's baseline."""

    model: str
    name: str
    baseline: Run | None
    baseline_reason: str
    tasks: dict[str, str]  # task -> main metric, in column order (no per-setting sweep tasks)
    rows: list[Row]
    sqnr: list[SqnrRun]
    sensitivity: list[Sweep]  # in SWEEPS order; empty without sampling tasks


@dataclass
class Report:
    """What :mod:`qeval_plugins.report.render` renders and exports."""

    comparisons: list[Comparison]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The report as strict-JSON-safe data: infinities as the strings "inf" / "-inf", every
        text through :func:`printable`."""
        return _json_safe(
            {
                "models": [_comparison_dict(comparison) for comparison in self.comparisons],
                "warnings": self.warnings,
            }
        )


# ---------------------------------------------------------------- reading


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
    shown = printable(_listing([str(path) for path in paths], 3))
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
            found = sorted(
                path
                for path in given.rglob("results*.json")
                if not any(part.startswith(".") for part in path.relative_to(given).parts)
            )
            if not found:
                warnings.append(f"{given}: no results*.json files in this folder")
            yield from found
        elif given.exists():
            yield given
        else:
            warnings.append(f"{given}: no such file or folder")


def read_run(path: Path) -> tuple[Run | None, list[str]]:
    """One results file as a :class:`Run` (None if it is not one) and its warning lines."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        return None, [f"{path}: cannot read ({error}); skipped"]
    text = _as_text(raw)
    if text is None:
        return None, [f"{path}: not text (binary: NUL bytes or not UTF-8); skipped"]
    if not text.strip():
        return None, [f"{path}: empty file; skipped"]
    huge: list[int] = []  # digit counts of integers too long for a float
    try:
        data = json.loads(text, parse_int=lambda digits: _parse_int(digits, huge))
    except json.JSONDecodeError as error:
        return None, [f"{path}: {_json_problem(error, text)}; skipped"]
    except RecursionError:
        return None, [f"{path}: JSON nested too deeply to read; skipped"]
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        return None, [f'{path}: not an lm-eval results file (no "results" object); skipped']
    config = _mapping(data.get("config"))
    notes = MetricNotes()
    metrics = parse_metrics(data, notes)
    warnings = []
    if huge:
        count = f"{len(huge)} integers" if len(huge) > 1 else "an integer"
        warnings.append(
            f"{path}: {count} of up to {max(huge)} digits, too long for a number; left out"
        )
    warnings += notes.warnings(path)
    if not metrics:
        return None, [*warnings, f"{path}: no numeric metrics in its results; skipped"]
    args = model_args(config)
    block = _mapping(config.get("qeval"))
    date = _number(data.get("date"))
    configs = _mapping(data.get("configs"))
    run = Run(
        path=path,
        model=scalar_text(args.get("pretrained"))
        or scalar_text(data.get("model_name"))
        or "unknown",
        label="",
        config=config,
        metrics=metrics,
        qeval=block,
        date=date if date is not None and math.isfinite(date) else path.stat().st_mtime,
        task_metadata={
            task: metadata
            for task in metrics
            if SWEEP_TASK.fullmatch(task)
            and (metadata := _mapping(_mapping(configs.get(task)).get("metadata")))
        },
        settings=run_settings(data, config),
        fewshot=fewshot_counts(data, metrics),
    )
    run.label = run_label(run)
    return run, warnings


@dataclass(frozen=True)
class HugeInteger:
    """A JSON integer of more than :data:`MAX_INTEGER_DIGITS` digits: kept as its digit count,
    never converted (``int()`` of 4,300+ digits raises, ``float()`` of 309+ overflows)."""

    digits: int

    def __str__(self) -> str:
        return f"<{self.digits}-digit integer>"


def _parse_int(text: str, huge: list[int]) -> int | HugeInteger:
    """A JSON integer as ``int``, or as :class:`HugeInteger` (its digits noted in ``huge``)."""
    digits = len(text) - text.startswith("-")
    if digits <= MAX_INTEGER_DIGITS:
        return int(text)
    huge.append(digits)
    return HugeInteger(digits)


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
    """What :func:`parse_metrics` found amiss, as ``task/metric`` names per kind: NaN values (left
    out), infinite values other than dB figures (shown, not compared), missing stderrs, and
    unusable stderrs (negative, NaN or infinite: treated as missing)."""

    nan: list[str] = field(default_factory=list)
    infinite: list[str] = field(default_factory=list)
    no_stderr: list[str] = field(default_factory=list)
    bad_stderr: list[str] = field(default_factory=list)

    def warnings(self, path: Path) -> list[str]:
        """One warning line per kind found, for the file ``path``."""
        lines = [
            (self.nan, "NaN in {}; left out"),
            (self.infinite, "infinite value of {}; shown as ∞, not compared"),
            (self.no_stderr, "no stderr for {}; significance not assessed"),
            (
                self.bad_stderr,
                "stderr negative or not finite for {}; treated as missing, significance not "
                "assessed",
            ),
        ]
        return [f"{path}: {text.format(_listing(names))}" for names, text in lines if names]


def parse_metrics(data: dict[str, Any], notes: MetricNotes) -> dict[str, dict[str, Metric]]:
    """``results`` as task -> metric -> :class:`Metric`; what is amiss is noted in ``notes``.

    ±∞ is a value (an SQNR of identical or all-zero weights, an infinite perplexity), noted unless
    the metric is in dB; a stderr below 0, NaN or infinite is None (no stderr).

    Keys are lm-eval's ``"metric,filter"`` (plain ``"metric"`` in older files); the metric is named
    ``metric`` for filter ``none``, else ``metric,filter``. Subtasks of a group that reports its
    own aggregate (mmlu) are folded into the group.
    """
    directions = _mapping(data.get("higher_is_better"))
    folded = _folded_subtasks(data)
    metrics: dict[str, dict[str, Metric]] = {}
    for task, entry in data["results"].items():
        if task in folded or not isinstance(entry, dict):
            continue
        task_directions = _mapping(directions.get(task))
        found = {}
        for key, raw in entry.items():
            base, _, kind = key.partition(",")
            if base in NON_METRIC_KEYS or base.endswith("_stderr"):
                continue
            value = _number(raw)
            if value is None:
                continue
            name = base if kind in ("", "none") else key
            if math.isnan(value):
                notes.nan.append(f"{task}/{name}")
                continue
            if math.isinf(value) and not base.endswith("_db"):
                notes.infinite.append(f"{task}/{name}")
            stderr_key = f"{base}_stderr,{kind}" if kind else f"{base}_stderr"
            stderr = _number(entry.get(stderr_key))
            if stderr_key not in entry:
                notes.no_stderr.append(f"{task}/{name}")
            elif stderr is not None and not (math.isfinite(stderr) and stderr >= 0):
                notes.bad_stderr.append(f"{task}/{name}")
                stderr = None
            direction = task_directions.get(base)
            found[name] = Metric(
                value,
                stderr,
                direction if isinstance(direction, bool) else default_higher_is_better(base),
            )
        if found:
            metrics[task] = found
    return metrics


def _folded_subtasks(data: dict[str, Any]) -> set[str]:
    groups = {
        group: children
        for group, children in _mapping(data.get("group_subtasks")).items()
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
        "," in key and "_stderr," not in key and _number(value) is not None
        for key, value in entry.items()
    )


def run_settings(data: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    """The :data:`SETTINGS` a results file records, as :func:`setting_text` (absent: unknown)."""
    args = model_args(config)
    places = {
        "revision": [
            args,
            {"revision": config.get("model_revision")} if "model_revision" in config else {},
        ],
        "dtype": [args],
        "qeval_version": [_mapping(config.get("qeval"))],
    }
    found: dict[str, Any] = {}
    for key in SETTINGS:
        place = next((place for place in places.get(key, [config, data]) if key in place), None)
        if place is not None:
            found[key] = place[key]
    for key in HASHED_SETTINGS & found.keys():
        sha = data.get(f"{key}_sha")
        found[key] = sha if isinstance(sha, str) and sha else _digest(found[key])
    return {key: setting_text(found[key]) for key in SETTINGS if key in found}


def _digest(value: Any) -> str | None:
    """A short SHA-256 of a long text setting (None, empty and non-text stay as they are)."""
    if not isinstance(value, str) or not value:
        return value
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def setting_text(value: Any) -> str:
    """A setting as comparable text: "none" for null and empty values, whole numbers without
    ".0" (a limit of 4.0 is "4"), true/false, containers as sorted compact JSON."""
    if value in (None, "", {}, []):
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return str(value)


def fewshot_counts(data: dict[str, Any], metrics: dict[str, Any]) -> dict[str, int]:
    """Task -> few-shot count of the tasks in ``metrics``: lm-eval's ``n-shot``, else
    ``configs[task].num_fewshot``; tasks with neither (or not a count) are left out."""
    shots = _mapping(data.get("n-shot"))
    configs = _mapping(data.get("configs"))
    counts = {}
    for task in metrics:
        count = shots.get(task, _mapping(configs.get(task)).get("num_fewshot"))
        if type(count) is int and count >= 0:
            counts[task] = count
    return counts


def default_higher_is_better(metric: str) -> bool | None:
    """Built-in direction of a metric (dB figures are SQNRs: higher is better); None if unknown."""
    if metric in LOWER_IS_BETTER:
        return False
    if metric in HIGHER_IS_BETTER or metric.endswith("_db"):
        return True
    return None


def model_args(config: dict[str, Any]) -> dict[str, Any]:
    """``config.model_args`` as a dict, also when lm-eval stored the ``"k=v,k=v"`` string."""
    args = config.get("model_args")
    if isinstance(args, dict):
        return args
    parsed = {}
    if isinstance(args, str):
        for pair in args.split(","):
            key, sep, value = pair.partition("=")
            if sep:
                parsed[key.strip()] = value.strip()
    return parsed


def run_label(run: Run) -> str:
    """``spec`` of the qeval block, else quantizer + given options, else backend + dtype; then
    :func:`prequantized_note` (``none (prequantized bitsandbytes)``)."""
    args = model_args(run.config)
    if run.is_qeval:
        spec = run.qeval.get("spec")
        if not (isinstance(spec, str) and spec):
            options = _mapping(run.qeval.get("options"))
            name = scalar_text(run.qeval.get("quantizer")) or scalar_text(args.get("quantizer"))
            spec = spec_text(name or "none", {key: args[key] for key in options if key in args})
        return spec + prequantized_note(run)
    keys = ("dtype", *HF_QUANTIZATION_ARGS)
    return spec_text(run.backend, {key: args[key] for key in keys if _given(args.get(key))})


def prequantized_note(run: Run) -> str:
    """`` (prequantized METHOD)`` for a qeval run of a checkpoint saved already quantized (its
    block's ``prequantized`` holds the checkpoint's quantization_config; METHOD its
    ``quant_method``), else "": such a run's ``none`` is not an unquantized model."""
    config = run.qeval.get("prequantized")
    if not config:
        return ""
    method = scalar_text(_mapping(config).get("quant_method"))
    return f" (prequantized {method})" if method else " (prequantized)"


def is_prequantized(run: Run) -> bool:
    """Whether ``run`` evaluated a checkpoint saved already quantized
    (:func:`prequantized_note`)."""
    return bool(run.qeval.get("prequantized"))


def spec_text(name: str, options: dict[str, Any]) -> str:
    """The canonical spec (:func:`~qeval_plugins.core.specs.format_spec`) of values read from a
    results file, each first made short, printable text (containers become ``?``)."""
    return format_spec(name, {key: _text(value) for key, value in options.items()})


# ---------------------------------------------------------------- comparing


def compare(
    runs: list[Run], baseline: str | None = None, *, warnings: Sequence[str] = ()
) -> Report:
    """Group ``runs`` by model, pick each model's baseline and compare every run with it.

    ``baseline`` is a spec (``none``, ``hf``, ``rtn:bits=8``; a quantizer's aliases work too)
    naming the baseline of every model; by default it is the model's qeval ``none`` run, else a
    plain ``--model hf`` run. ``warnings`` (from :func:`load_runs`) are kept at the front of the
    report's own warnings (duplicates, different task sets, different settings, a model without
    the ``--baseline`` run).

    Raises :class:`QevalError` when ``baseline`` names no run of any model (with "did you mean").
    """
    notes = list(warnings)
    if baseline is not None and runs:
        check_baseline(runs, baseline)
    by_model: dict[str, list[Run]] = {}
    for run in _merge_duplicates(runs, notes):
        by_model.setdefault(run.model, []).append(run)
    names = display_names(list(by_model))
    comparisons = [
        compare_model(model, names[model], by_model[model], baseline, notes)
        for model in sorted(by_model, key=lambda model: (names[model].lower(), model))
    ]
    return Report(comparisons, notes)


def _merge_duplicates(runs: list[Run], notes: list[str]) -> list[Run]:
    """One run per model + label: a newer file's tasks replace an older one's, others are added.

    Overlapping tasks are a duplicate (one warning, newest kept); disjoint ones are the same
    configuration evaluated in several lm_eval calls and are merged silently.
    """
    merged: dict[tuple[str, str], Run] = {}
    for run in sorted(runs, key=lambda run: (run.date, str(run.path))):
        key = (run.model, run.label)
        older = merged.get(key)
        if older is None:
            merged[key] = run
            continue
        overlap = sorted(set(older.metrics) & set(run.metrics))
        if overlap:
            notes.append(
                f"{run.model}: two {run.label} runs with {', '.join(overlap)}; kept the newer "
                f"{run.path} over {older.path}"
            )
        qeval = {**older.qeval, **run.qeval}
        adds = set(older.metrics) - set(run.metrics)
        merged[key] = replace(
            run,
            config={**run.config, "qeval": qeval} if qeval else run.config,
            qeval=qeval,
            metrics={**older.metrics, **run.metrics},
            merged=[*older.merged, older.path] if adds else older.merged,
            task_metadata={**older.task_metadata, **run.task_metadata},
            settings={**older.settings, **run.settings},
            fewshot={**older.fewshot, **run.fewshot},
        )
    return list(merged.values())


def check_baseline(runs: list[Run], spec: str) -> None:
    """Raise :class:`QevalError` unless ``spec`` names (:func:`matches_spec`, any options) a run
    of some model; the message suggests the closest run label, quantizer or alias."""
    if any(matches_spec(run, spec, any_options=True) for run in runs):
        return
    names = {run.label for run in runs} | {run.quantizer for run in runs if run.quantizer}
    names |= {alias for run in runs for alias in _aliases(run)}
    labels = sorted({run.label for run in runs})
    raise QevalError(
        printable(
            f"--baseline {spec} names no run in the report.{did_you_mean(spec, sorted(names))} "
            f"Runs: {_listing(labels, 8)}."
        )
    )


def display_names(models: list[str]) -> dict[str, str]:
    """Short names: a local path's last folder, a hub id as is; the full id where two clash."""
    short = {}
    for model in models:
        trimmed = model.rstrip("/\\")
        local = trimmed.startswith(("/", ".", "~")) or "\\" in trimmed
        short[model] = Path(trimmed).name if local and Path(trimmed).name else model
    counts: dict[str, int] = {}
    for name in short.values():
        counts[name] = counts.get(name, 0) + 1
    return {model: name if counts[name] == 1 else model for model, name in short.items()}


def compare_model(
    model: str, name: str, runs: list[Run], baseline: str | None, notes: list[str]
) -> Comparison:
    """The :class:`Comparison` of one model's runs (warnings appended to ``notes``)."""
    base, reason = choose_baseline(runs, baseline)
    if baseline is not None and base is None:
        notes.append(f"{name}: {reason}")
    scored = main_metrics(runs, base)
    rows = sorted(
        (make_row(run, base, scored) for run in runs),
        key=lambda row: (not row.is_baseline, -(row.bits_per_param or 0.0), row.run.label),
    )
    missing = [
        f"{row.run.label} lacks {_listing(lacks, 8)}"
        for row in rows
        if (lacks := [task for task in scored if task not in row.scores and _expected(row, task)])
    ]
    if missing:
        notes.append(
            f"{name}: runs cover different tasks (— in the table): {_listing(missing, 8, '; ')}"
        )
    differences = setting_differences([row.run for row in rows])
    if differences:
        notes.append(
            f"{name}: compared runs differ in {'; '.join(differences)}: their deltas may measure "
            "these settings, not the quantization"
        )
    sqnr = [summary for row in rows if (summary := sqnr_summary(row.run)) is not None]
    tasks = {task: metric for task, metric in scored.items() if not is_sweep_point(task)}
    sweeps = sensitivity(rows, name, notes)
    return Comparison(model, name, base, reason, tasks, rows, sqnr, sweeps)


def setting_differences(runs: list[Run]) -> list[str]:
    """One phrase per :data:`SETTINGS` entry (and few-shot count per task) on which runs that
    record it disagree: ``limit 4 (none, bnb-nf4) vs 20 (rtn:bits=2)``. A run that does not
    record a setting is not compared on it."""
    phrases = []
    for key in SETTINGS:
        phrase = _disagreement(
            key, {run.label: run.settings[key] for run in runs if key in run.settings}
        )
        phrases += [phrase] if phrase else []
    tasks = sorted({task for run in runs for task in run.fewshot})
    for task in tasks:
        counts = {run.label: str(run.fewshot[task]) for run in runs if task in run.fewshot}
        phrase = _disagreement(f"num_fewshot of {task}", counts)
        phrases += [phrase] if phrase else []
    return phrases


def _disagreement(name: str, values: dict[str, str], width: int = 24) -> str | None:
    """``name v1 (labels) vs v2 (labels)`` when ``values`` (label -> text) hold several texts,
    each cut to ``width`` characters; None when they agree."""
    by_value: dict[str, list[str]] = {}
    for label, value in values.items():
        by_value.setdefault(value, []).append(label)
    if len(by_value) < 2:
        return None
    shown = [
        f"{value if len(value) <= width else value[: width - 1] + '…'} ({_listing(labels)})"
        for value, labels in by_value.items()
    ]
    return f"{name} {' vs '.join(shown)}"


def _expected(row: Row, task: str) -> bool:
    """Whether ``row``'s run could have run ``task`` (qeval_sqnr and the sampling tasks need
    ``--model qeval``)."""
    return row.run.is_qeval or not (task == SQNR_TASK or SWEEP_TASK.fullmatch(task))


def choose_baseline(runs: list[Run], spec: str | None) -> tuple[Run | None, str]:
    """The baseline run and a sentence saying why it was chosen, or why there is none.

    With ``spec``: the run it names exactly (:func:`matches_spec`), else — when ``spec`` has no
    options — the only run of that name (``hf`` finds ``hf:dtype=bfloat16``). Without: the
    qeval ``none`` run (``none`` before ``none:dtype=...``), else a plain ``--model hf`` run.
    """
    if spec is not None:
        exact = [run for run in runs if matches_spec(run, spec)]
        named = [run for run in runs if matches_spec(run, spec, any_options=True)]
        chosen = exact or (named if ":" not in spec and len(named) == 1 else [])
        if chosen:
            first = min(chosen, key=_by_label)
            return first, f"baseline {first.label} (--baseline {spec})"
        several = f" (several match: {', '.join(sorted(r.label for r in named))})" if named else ""
        return None, f"no baseline: no run is --baseline {spec}{several}; deltas not computed"
    # a checkpoint saved already quantized, evaluated with quantizer=none, is not unquantized
    nones = [run for run in runs if run.quantizer == "none"]
    unquantized = [run for run in nones if not is_prequantized(run)]
    if unquantized:
        first = min(unquantized, key=_by_label)
        return first, f"baseline {first.label} (the unquantized qeval run)"
    plain = [run for run in runs if run.is_plain_hf]
    if plain:
        first = min(plain, key=_by_label)
        return first, f"baseline {first.label} (plain {first.backend} run; no qeval none run)"
    if nones:
        which = (
            "the only quantizer=none run is" if len(nones) == 1 else "every quantizer=none run is"
        )
        return None, (
            f"no baseline: {which} of an already-quantized checkpoint (evaluate the unquantized "
            "model with quantizer=none, or pass --baseline SPEC); deltas not computed"
        )
    return None, (
        "no baseline: no quantizer=none or plain hf run of this model (pass --baseline SPEC); "
        "deltas not computed"
    )


def _by_label(run: Run) -> tuple[bool, str]:
    return (":" in run.label, run.label)


def matches_spec(run: Run, spec: str, any_options: bool = False) -> bool:
    """Whether ``spec`` names ``run``: its name is the label's, the quantizer or one of its
    aliases, and its options are the label's (in any order; any options if ``any_options``)."""
    name, options = _split_spec(spec)
    label_name, label_options = _split_spec(run.label.removesuffix(prequantized_note(run)))
    names = {label_name, run.quantizer, scalar_text(run.qeval.get("requested_as")), *_aliases(run)}
    return name in names and (any_options or options == label_options)


def _aliases(run: Run) -> list[str]:
    """The qeval block's ``aliases`` of the run's quantizer (texts only)."""
    aliases = run.qeval.get("aliases")
    return (
        [alias for alias in aliases if isinstance(alias, str)] if isinstance(aliases, list) else []
    )


def _split_spec(spec: str) -> tuple[str, list[str]]:
    name, *pairs = spec.strip().split(":")
    return name.strip(), sorted(pair.strip().lower().replace(" ", "") for pair in pairs)


def main_metrics(runs: list[Run], base: Run | None) -> dict[str, str]:
    """Task -> main metric: :data:`TASK_MAIN_METRIC`, else the first of
    :data:`MAIN_METRIC_PRIORITY` any run reports, else the first metric found."""
    ordered = ([base] if base is not None else []) + [run for run in runs if run is not base]
    found: dict[str, list[str]] = {}
    for run in ordered:
        for task, metrics in run.metrics.items():
            names = found.setdefault(task, [])
            names.extend(name for name in metrics if name not in names)
    tasks = {}
    for task in sorted(found):
        names = found[task]
        preferred = [TASK_MAIN_METRIC.get(task), *MAIN_METRIC_PRIORITY]
        tasks[task] = next((name for name in preferred if name in names), names[0])
    return tasks


def make_row(run: Run, base: Run | None, tasks: dict[str, str]) -> Row:
    """Cost figures and scores of one run against ``base``."""
    block = run.qeval
    throughput = _mapping(block.get("throughput"))
    peak = _mapping(block.get("peak_memory"))
    peak_bytes = _value(peak.get("bytes"))
    bits, size = bits_and_size(run)
    scores = {}
    for task, name in tasks.items():
        metric = run.metrics.get(task, {}).get(name)
        if metric is None:
            continue
        reference = None if base is None or base is run else base.metrics.get(task, {}).get(name)
        scores[task] = score(name, metric, reference)
    return Row(
        run=run,
        is_baseline=run is base,
        bits_per_param=bits,
        simulated=bool(block.get("simulated")),
        size_mib=size,
        quantize_seconds=_value(block.get("quantize_seconds")),
        tokens_per_s={
            kind: rate
            for kind in ("loglikelihood", "generate")
            if (rate := _value(_mapping(throughput.get(kind)).get("tokens_per_s"))) is not None
        },
        peak_memory_mib=None if peak_bytes is None else peak_bytes / MIB,
        peak_memory_kind=peak.get("kind") if isinstance(peak.get("kind"), str) else None,
        scores=scores,
    )


def bits_and_size(run: Run) -> tuple[float | None, float | None]:
    """Bits per parameter and size in MiB (bytes / 2²⁰).

    qeval runs: ``effective_bits`` for simulated quantizers (storage stays unquantized), else
    ``bits_per_param`` or 8·param_bytes_after / param_count; size = param_bytes_after. Other
    backends: the bits of ``model_dtype`` and model_num_parameters × bytes per parameter.
    """
    block = run.qeval
    if run.is_qeval:
        after = _value(block.get("param_bytes_after"))
        count = _value(block.get("param_count"))
        bits = _value(block.get("bits_per_param"))
        if bits is None and after is not None and count:
            bits = 8 * after / count
        effective = _value(block.get("effective_bits"))
        if block.get("simulated") and effective is not None:
            bits = effective
        return bits, None if after is None else after / MIB
    dtype = (scalar_text(run.config.get("model_dtype")) or "").removeprefix("torch.")
    dtype_bits = DTYPE_BITS.get(dtype)
    count = _value(run.config.get("model_num_parameters"))
    if dtype_bits is None or count is None:
        return dtype_bits, None
    return float(dtype_bits), count * dtype_bits / 8 / MIB


def score(name: str, metric: Metric, base: Metric | None) -> Score:
    """``metric`` compared with the baseline's ``base`` (no comparison when either is infinite)."""
    if base is None or not (math.isfinite(metric.value) and math.isfinite(base.value)):
        return Score(name, metric.value, metric.stderr, metric.higher_is_better)
    delta = metric.value - base.value
    return Score(
        name,
        metric.value,
        metric.stderr,
        metric.higher_is_better,
        delta,
        relative_degradation_pct(base.value, metric.value, metric.higher_is_better),
        significant(delta, base.stderr, metric.stderr),
    )


def relative_degradation_pct(
    base: float, value: float, higher_is_better: bool | None
) -> float | None:
    """100·(base − value)/|base| if higher is better, 100·(value − base)/|base| if lower is better.

    Positive means worse in both cases; None when base is 0 or the direction is unknown.
    """
    if base == 0 or higher_is_better is None:
        return None
    worse_by = base - value if higher_is_better else value - base
    return 100.0 * worse_by / abs(base)


def significant(delta: float, stderr_base: float | None, stderr_run: float | None) -> bool | None:
    """|Δ| > √(se_b² + se_q²): outside one combined standard error; None if either is unknown."""
    if stderr_base is None or stderr_run is None:
        return None
    return abs(delta) > math.hypot(stderr_base, stderr_run)


def sqnr_summary(run: Run) -> SqnrRun | None:
    """The run's ``qeval_sqnr`` metrics and ``config.qeval.sqnr`` details; None without either."""
    block = _mapping(run.qeval.get("sqnr"))
    metrics = {name: metric.value for name, metric in run.metrics.get(SQNR_TASK, {}).items()}
    if not block and not metrics:
        return None
    weights = _mapping(block.get("weights"))
    layers = {
        name: value
        for name, raw in _mapping(weights.get("layers")).items()
        if (value := _value(raw)) is not None
    }
    count = _mapping(block.get("settings")).get("worst_layers")
    blocks = block.get("activation_blocks_db")
    return SqnrRun(
        label=run.label,
        metrics=metrics,
        layers=layers,
        worst=heapq.nsmallest(
            count if type(count) is int and count >= 0 else DEFAULT_WORST_LAYERS,
            layers.items(),
            key=itemgetter(1),
        ),
        activation_blocks_db=[
            value
            for raw in (blocks if isinstance(blocks, list) else [])
            if (value := _value(raw)) is not None
        ],
    )


def is_sweep_point(task: str) -> bool:
    """Whether ``task`` is one setting of a sampling sweep (``qeval_temperature_0.5``), by name."""
    match = SWEEP_TASK.fullmatch(task)
    return match is not None and match[2] != SWEEP_SUMMARY


def sweep_setting(sweep: str, suffix: str, metadata: dict[str, Any]) -> float | None:
    """The setting of task ``qeval_<sweep>_<suffix>``: ``metadata[sweep]`` (the task's generation
    settings in the results file's ``configs``), else the number ``suffix``; None if neither is a
    finite number.

    top_k ≤ 0 and the name's ``all`` mean unrestricted top-k: +∞, so it sorts last.
    """
    value = _finite(metadata.get(sweep))
    if value is None:
        value = math.inf if suffix == "all" and sweep == "top_k" else _finite(suffix)
    if value is not None and sweep == "top_k" and value <= 0:
        return math.inf
    return value


def setting_label(sweep: str, setting: float) -> str:
    """A setting as text: "all" for +∞, counts as "64", temperatures as "1.0" or "0.5"."""
    if setting == math.inf:
        return "all"
    if setting.is_integer():
        return f"{setting:.0f}" if sweep in INTEGER_SWEEPS else f"{setting:.1f}"
    return f"{setting:g}"


def sensitivity(rows: list[Row], name: str, notes: list[str]) -> list[Sweep]:
    """Every sampling sweep that a run of the model covers, in :data:`SWEEPS` order.

    A task whose setting cannot be told (:func:`sweep_setting`) is one warning in ``notes`` and
    left out. The band is the summary's ``gap_low``–``gap_high`` metadata, else for temperature
    :data:`TEMPERATURE_BAND`.
    """
    found: dict[str, dict[str, SweepRun]] = {sweep: {} for sweep in SWEEPS}
    unknown = []
    for row in rows:
        run = row.run
        for task, metrics in run.metrics.items():
            match = SWEEP_TASK.fullmatch(task)
            if match is None:
                continue
            sweep, suffix = match.groups()
            entry = found[sweep].setdefault(run.label, SweepRun(run.label, row.is_baseline, {}, {}))
            if suffix == SWEEP_SUMMARY:
                entry.summary = metrics
            elif (setting := sweep_setting(sweep, suffix, run.task_metadata.get(task, {}))) is None:
                unknown.append(f"{run.label} {task}")
            else:
                entry.points[setting] = metrics
    if unknown:
        notes.append(
            f"{name}: no setting in the configs metadata or task name of {_listing(unknown)}; "
            "left out of the sensitivity tables"
        )
    sweeps = []
    for sweep, by_label in found.items():
        for entry in by_label.values():
            entry.points = dict(sorted(entry.points.items()))
        if by_label:
            settings = sorted({setting for entry in by_label.values() for setting in entry.points})
            sweeps.append(Sweep(sweep, settings, _band(sweep, rows), list(by_label.values())))
    return sweeps


def _band(sweep: str, rows: list[Row]) -> tuple[float, float] | None:
    for row in rows:
        metadata = row.run.task_metadata.get(f"qeval_{sweep}_{SWEEP_SUMMARY}", {})
        low, high = _finite(metadata.get("gap_low")), _finite(metadata.get("gap_high"))
        if low is not None and high is not None:
            return low, high
    return TEMPERATURE_BAND if sweep == "temperature" else None


# ---------------------------------------------------------------- helpers


def _number(raw: Any) -> float | None:
    """A JSON number, or a string such as "inf" / "NaN", as float; None for anything else."""
    kind = type(raw)  # exact types: fast, and bool (an int subclass) is not a number here
    if kind is float:
        return raw
    if kind is int:
        return float(raw)
    if kind is str:
        try:
            return float(raw)
        except ValueError:
            return None
    return None


def _value(raw: Any) -> float | None:
    """:func:`_number` without NaN: a figure that is missing or unusable is None."""
    value = _number(raw)
    return None if value is None or math.isnan(value) else value


def _finite(raw: Any) -> float | None:
    """:func:`_number` when finite, else None."""
    value = _number(raw)
    return value if value is not None and math.isfinite(value) else None


def _mapping(raw: Any) -> dict[str, Any]:
    return raw if isinstance(raw, dict) else {}


def _given(value: Any) -> bool:
    return value not in (None, False, "", "False", "false", "0")


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else scalar_text(value) or "?"


def scalar_text(value: Any) -> str | None:
    """A JSON scalar (text, number, true/false) as text; None for null, "" and containers (whose
    text could be huge or too deeply nested to build)."""
    if isinstance(value, str | int | float | HugeInteger) and value != "":
        return str(value)
    return None


def printable(text: str) -> str:
    """``text`` with every control character (C0 such as ESC, BEL, CR, LF, TAB; DEL; C1 such as
    CSI), bidirectional override and lone surrogate written as a visible escape (``\\x1b``,
    ``\\n``, ``\\u202e``): no name read from a file can clear the screen, retitle the terminal,
    open a hyperlink, reorder text or break a table line. Other text is unchanged."""
    return CONTROL.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    code = ord(char)
    return CONTROL_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _listing(items: list[str], limit: int = 4, separator: str = ", ") -> str:
    """The first ``limit`` items joined, then "and N more" (a warning stays one short line)."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return separator.join(items[:limit]) + more


def _comparison_dict(comparison: Comparison) -> dict[str, Any]:
    base = comparison.baseline
    return {
        "model": comparison.model,
        "name": comparison.name,
        "baseline": None if base is None else base.label,
        "baseline_reason": comparison.baseline_reason,
        "tasks": comparison.tasks,
        "runs": [_row_dict(row) for row in comparison.rows],
        "sqnr": [
            {
                **vars(summary),
                "worst": [{"layer": layer, "sqnr_db": value} for layer, value in summary.worst],
            }
            for summary in comparison.sqnr
        ],
        "sensitivity": [_sweep_dict(sweep) for sweep in comparison.sensitivity],
    }


def _sweep_dict(sweep: Sweep) -> dict[str, Any]:
    """Settings as their labels ("0.5", "all"); per run, every metric's value per setting."""
    return {
        "sweep": sweep.name,
        "settings": [sweep.label(setting) for setting in sweep.settings],
        "band": None if sweep.band is None else list(sweep.band),
        "runs": [
            {
                "label": entry.label,
                "is_baseline": entry.is_baseline,
                "metrics": {
                    sweep.label(setting): {name: metric.value for name, metric in metrics.items()}
                    for setting, metrics in entry.points.items()
                },
                "summary": {name: metric.value for name, metric in entry.summary.items()},
            }
            for entry in sweep.runs
        ],
    }


def _row_dict(row: Row) -> dict[str, Any]:
    run = row.run
    return {
        "label": run.label,
        "backend": run.backend,
        "quantizer": run.quantizer,
        "options": {
            key: _option_value(value) for key, value in _mapping(run.qeval.get("options")).items()
        },
        "settings": run.settings,
        "num_fewshot": run.fewshot,
        "is_baseline": row.is_baseline,
        "paths": [str(path) for path in [run.path, *run.merged]],
        "bits_per_param": row.bits_per_param,
        "simulated": row.simulated,
        "size_mib": row.size_mib,
        "quantize_seconds": row.quantize_seconds,
        "tokens_per_s": row.tokens_per_s,
        "peak_memory_mib": row.peak_memory_mib,
        "peak_memory_kind": row.peak_memory_kind,
        "scores": {task: vars(score) for task, score in row.scores.items()},
    }


def _option_value(value: Any) -> Any:
    """An option's value for export: a JSON scalar as is, anything else as short text (a
    container read from a file could be nested too deeply to copy)."""
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value) if isinstance(value, HugeInteger) else f"<{type(value).__name__}>"


def _json_safe(value: Any) -> Any:
    """``value`` for strict JSON: ±inf as "inf" / "-inf", NaN as null, texts :func:`printable`."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(key)): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value
