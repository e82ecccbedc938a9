"""Comparing each run of a model with the model's baseline: the :class:`Report`.

Runs (:mod:`.load`) are grouped by model; runs of one model with one label are merged (a newer
file's tasks replace an older one's). Each task shows one *main metric*
(:data:`MAIN_METRIC_PRIORITY`). Against the model's baseline run, with q the run's value, b the
baseline's, se their standard errors:

* delta Δ = q − b;
* relative degradation (Ahmadian et al.) = 100·(b − q)/|b| % when higher is better and
  100·(q − b)/|b| % when lower is better, so a positive value always means worse;
* significant, when both runs logged per-document samples of the metric (lm-eval
  ``--log_samples``; :mod:`.samples`): the paired bootstrap interval of Δ over the documents both
  scored excludes 0 (:mod:`.paired`, which also gives McNemar's exact p for 0/1 metrics); the
  score's ``significance_method`` is then ``"paired"``;
* otherwise (``"screen"``): |Δ| > √(se_b² + se_q²) — a one-standard-error screen, not a formal
  test; unknown (None) when either standard error is missing.

Different task sets, duplicates and differing settings (:mod:`.settings`) each become one warning
line, and everything else is still compared. The records it makes are :mod:`.comparison`'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from qeval_plugins.core.errors import QevalError, did_you_mean
from qeval_plugins.core.text import printable
from qeval_plugins.report import sections
from qeval_plugins.report.comparison import (
    Comparison,
    MachineLoad,
    Report,
    Row,
    ScanSummary,
    Score,
)
from qeval_plugins.report.labels import (
    aliases,
    display_names,
    is_prequantized,
    matches_spec,
)
from qeval_plugins.report.outliers import OUTLIERS_TASK
from qeval_plugins.report.paired import Paired
from qeval_plugins.report.runs import Metric, Run
from qeval_plugins.report.samples import SamplesReader, paired_metric
from qeval_plugins.report.sensitivity import SWEEP_SUMMARY, SWEEP_TASK, SWEEPS, is_sweep_point
from qeval_plugins.report.settings import setting_differences
from qeval_plugins.report.sqnr import SQNR_TASK
from qeval_plugins.report.values import (
    as_mapping,
    as_value,
    listing,
    scalar_text,
)

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
TASK_MAIN_METRIC = {
    SQNR_TASK: "logit_sqnr_db",
    **{f"qeval_{sweep}_{SWEEP_SUMMARY}": "rougeL_gap" for sweep in SWEEPS},
}
DTYPE_BITS = {"float64": 64, "float32": 32, "float16": 16, "bfloat16": 16}
MIB = 2**20


def compare(
    runs: list[Run],
    baseline: str | None = None,
    *,
    warnings: Sequence[str] = (),
    scans: Sequence[ScanSummary] = (),
) -> Report:
    """Group ``runs`` by model, pick each model's baseline and compare every run with it; each
    section (:mod:`.sections`) then reads its figures of each model (:func:`compare_model`).
    ``scans`` (layer-sensitivity scans read beside the runs) are kept for the whole report.

    ``baseline`` is a spec (``none``, ``hf``, ``rtn:bits=8``; a quantizer's aliases work too)
    naming the baseline of every model; by default it is the model's qeval ``none`` run, else a
    plain ``--model hf`` run. ``warnings`` (from :func:`load_runs`) are kept at the front of the
    report's own warnings (duplicates, different task sets, different settings, a model without
    the ``--baseline`` run).

    Raises :class:`QevalError` when ``baseline`` picks the baseline of no model
    (:func:`check_baseline`).
    """
    notes = list(warnings)
    by_model = _by_model(_merge_duplicates(runs, notes))
    if baseline is not None and runs:
        check_baseline(by_model, baseline)
    names = display_names(list(by_model))
    comparisons = [
        compare_model(model, names[model], by_model[model], baseline, notes)
        for model in sorted(by_model, key=lambda model: (names[model].lower(), model))
    ]
    return Report(comparisons, notes, list(scans))


def _by_model(runs: list[Run]) -> dict[str, list[Run]]:
    """``runs`` grouped by model, in their order."""
    by_model: dict[str, list[Run]] = {}
    for run in runs:
        by_model.setdefault(run.model, []).append(run)
    return by_model


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
            unread=run.unread | {entry for entry in older.unread if entry[0] not in run.metrics},
        )
    return list(merged.values())


def check_baseline(by_model: dict[str, list[Run]], spec: str) -> None:
    """Raise :class:`QevalError` unless ``spec`` picks the baseline (:func:`choose_baseline`) of
    some model of ``by_model`` (model -> its runs): when it matches several runs of each model
    that has one of its name, the message says to give the options; else it suggests the
    closest run label, quantizer or alias."""
    if any(choose_baseline(runs, spec)[0] is not None for runs in by_model.values()):
        return
    runs = [run for model_runs in by_model.values() for run in model_runs]
    labels = sorted({run.label for run in runs})
    named = sorted({run.label for run in runs if matches_spec(run, spec, any_options=True)})
    if named and ":" not in spec:
        raise QevalError(
            printable(
                f"--baseline {spec} matches several runs of a model ({listing(named, 8)}); name "
                f"one with its options, e.g. --baseline {named[0]}."
            )
        )
    names = {run.label for run in runs} | {run.quantizer for run in runs if run.quantizer}
    names |= {alias for run in runs for alias in aliases(run)}
    raise QevalError(
        printable(
            f"--baseline {spec} names no run in the report.{did_you_mean(spec, sorted(names))} "
            f"Runs: {listing(labels, 8)}."
        )
    )


def compare_model(
    model: str, name: str, runs: list[Run], baseline: str | None, notes: list[str]
) -> Comparison:
    """The :class:`Comparison` of one model's runs, with every section's figures of them
    (warnings appended to ``notes``)."""
    base, reason = choose_baseline(runs, baseline)
    if baseline is not None and base is None:
        notes.append(f"{name}: {reason}")
    scored = main_metrics(runs, base)
    rows = sorted(
        (make_row(run, base, scored) for run in runs),
        key=lambda row: (not row.is_baseline, -(row.bits_per_param or 0.0), row.run.label),
    )
    if base is not None:
        pair_rows(rows, base, notes)
    missing = [
        f"{row.run.label} lacks {listing(lacks, 8)}"
        for row in rows
        if (lacks := [task for task in scored if _lacks(row, task, scored[task])])
    ]
    if missing:
        notes.append(
            f"{name}: runs cover different tasks (— in the table): {listing(missing, 8, '; ')}"
        )
    differences = setting_differences([row.run for row in rows])
    if differences:
        notes.append(
            f"{name}: compared runs differ in {'; '.join(differences)}: their deltas may measure "
            "these settings, not the quantization"
        )
    tasks = {task: metric for task, metric in scored.items() if not is_sweep_point(task)}
    comparison = Comparison(model, name, base, reason, tasks, rows)
    for section in sections.SECTIONS:
        comparison.figures[section.name] = section.read(comparison, notes)
    return comparison


def pair_rows(rows: list[Row], base: Run, notes: list[str]) -> None:
    """Decide significance by the paired test in every compared score whose runs both logged
    samples of it (:func:`~.samples.paired_metric`); each problem with samples becomes one
    warning line in ``notes`` (a baseline's only once)."""
    reader = SamplesReader()
    seen = set(notes)
    for row in rows:
        for task, found in row.scores.items():
            if row.is_baseline or found.delta is None:
                continue
            stats, warning = paired_metric(reader, base, row.run, task, found.metric)
            if stats is not None:
                row.scores[task] = paired_score(found, stats)
            elif warning is not None and warning not in seen:
                seen.add(warning)
                notes.append(warning)


def paired_score(found: Score, stats: Paired) -> Score:
    """``found`` with its significance decided by the paired statistics ``stats``."""
    return replace(
        found,
        significant=stats.significant,
        significance_method="paired",
        delta_ci_low=stats.low,
        delta_ci_high=stats.high,
        ci_level=stats.confidence,
        mcnemar_p=stats.mcnemar_p,
        paired_docs=stats.docs,
        paired_by=stats.pairing,
    )


def _lacks(row: Row, task: str, metric: str) -> bool:
    """Whether ``row``'s run has no score for ``task``'s main ``metric`` though it could have
    (:func:`_expected`) and its file did not give one that is not a number (warned about
    already)."""
    return task not in row.scores and _expected(row, task) and (task, metric) not in row.run.unread


def _expected(row: Row, task: str) -> bool:
    """Whether ``row``'s run could have run ``task`` (qeval_sqnr, qeval_outliers and the
    sampling tasks need ``--model qeval``)."""
    qeval_only = task in (SQNR_TASK, OUTLIERS_TASK) or SWEEP_TASK.fullmatch(task)
    return row.run.is_qeval or not qeval_only


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
        which = "several match" if ":" not in spec else "other options"
        found = f" ({which}: {listing(sorted(run.label for run in named), 8)})" if named else ""
        return None, f"no baseline: no run is --baseline {spec}{found}; deltas not computed"
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


def machine_load(recorded: dict) -> MachineLoad | None:
    """The run's recorded load per CPU: ``other_cpus`` / ``cpus`` where the run measured other
    processes' CPU use, else ``load_average`` / ``cpus``; None when neither is a non-negative
    number or ``cpus`` is not at least 1."""
    cpus = as_value(recorded.get("cpus"))
    for measure in ("other_cpus", "load_average"):
        load = as_value(recorded.get(measure))
        if load is not None and load >= 0 and cpus is not None and cpus >= 1:
            return MachineLoad(measure, load / cpus)
    return None


def make_row(run: Run, base: Run | None, tasks: dict[str, str]) -> Row:
    """Cost figures and scores of one run against ``base``."""
    block = run.qeval
    throughput = as_mapping(block.get("throughput"))
    peak = as_mapping(block.get("peak_memory"))
    peak_bytes = as_value(peak.get("bytes"))
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
        scheme=scheme_text(block.get("scheme"), as_value(block.get("kept_layers"))),
        size_mib=size,
        quantize_seconds=quantize_seconds(run),
        tokens_per_s={
            kind: rate
            for kind in ("loglikelihood", "generate")
            if (rate := as_value(as_mapping(throughput.get(kind)).get("tokens_per_s"))) is not None
        },
        machine_load=machine_load(as_mapping(block.get("machine_load"))),
        peak_memory_mib=None if peak_bytes is None else peak_bytes / MIB,
        peak_memory_kind=peak.get("kind") if isinstance(peak.get("kind"), str) else None,
        scores=scores,
    )


def scheme_text(block: object, kept_layers: float | None = None) -> str | None:
    """The run's quantization scheme as a table shows it, from a results file's ``qeval.scheme``.

    ``W int4 g128``, plus `` · A FORMAT`` when activations are quantized too, plus `` + 7 kept``
    when ``skip=`` kept layers unquantized (``qeval.kept_layers``); each field printable
    and at most 40 characters. None when the run states no scheme (or not as text).
    """
    scheme = as_mapping(block)
    weights, activations = scheme.get("weights"), scheme.get("activations")
    if not isinstance(weights, str) or not weights:
        return None
    text = f"W {printable(weights)[:40]}"
    if isinstance(activations, str) and activations not in ("", "unquantized"):
        text += f" · A {printable(activations)[:40]}"
    if kept_layers:
        text += f" + {kept_layers:g} kept"
    return text


def quantize_seconds(run: Run) -> float | None:
    """Seconds the quantization took (``qeval.quantize_seconds``), None for ``quantizer=none``.

    Since qeval records ``load_seconds`` apart, the figure leaves the checkpoint load out,
    except for methods that quantize inside from_pretrained (``quantized_while_loading``);
    older results files (those with ``transform_seconds``) recorded load + quantize.
    """
    if run.quantizer == "none":
        return None
    return as_value(run.qeval.get("quantize_seconds"))


def load_and_quantize_seconds(run: Run) -> float | None:
    """This run's wall time from checkpoint to quantized model: ``load_seconds`` plus the
    quantize step (``quantize_seconds``, unless it was inside the load or reused from the
    quantized-model cache); older results files (no ``load_seconds``, or ``transform_seconds``)
    recorded that sum as ``quantize_seconds``."""
    block = run.qeval
    load = as_value(block.get("load_seconds"))
    if load is None or "transform_seconds" in block:
        return as_value(block.get("quantize_seconds"))
    reused = as_mapping(block.get("quantized_cache")).get("reused") is True
    if block.get("quantized_while_loading") or reused:
        return load
    return load + (as_value(block.get("quantize_seconds")) or 0.0)


def bits_and_size(run: Run) -> tuple[float | None, float | None]:
    """Bits per parameter and size in MiB (bytes / 2²⁰).

    qeval runs: ``effective_bits`` for simulated quantizers (storage stays unquantized; None
    when not recorded), else
    ``bits_per_param`` or 8·param_bytes_after / param_count; size = param_bytes_after. Other
    backends: the bits of ``model_dtype`` and model_num_parameters × bytes per parameter.
    """
    block = run.qeval
    if run.is_qeval:
        after = as_value(block.get("param_bytes_after"))
        count = as_value(block.get("param_count"))
        bits = as_value(block.get("bits_per_param"))
        if bits is None and after is not None and count:
            bits = 8 * after / count
        if block.get("simulated"):  # the storage's bits are not the quantization's
            bits = as_value(block.get("effective_bits"))
        return bits, None if after is None else after / MIB
    dtype = (scalar_text(run.config.get("model_dtype")) or "").removeprefix("torch.")
    dtype_bits = DTYPE_BITS.get(dtype)
    count = as_value(run.config.get("model_num_parameters"))
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
        "screen",
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
