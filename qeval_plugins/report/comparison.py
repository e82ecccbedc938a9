"""What :mod:`.compare` produces and every view draws: :class:`Score`, :class:`Row`,
:class:`Comparison` (one model), :class:`ScanSummary` (one scan file, :class:`UnitRow` a
unit of it) and :class:`Report` (all of them). Records only: the comparing is
:mod:`.compare`'s, the drawing the sections' (:mod:`.sections`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qeval_plugins.report.runs import Run


@dataclass(frozen=True)
class Score:
    """A run's main metric on one task, compared with the baseline (None where not defined).

    ``significance_method`` says how ``significant`` was decided: "paired" (the interval
    ``delta_ci_low``..``delta_ci_high`` at ``ci_level`` over ``paired_docs`` documents excludes
    0; McNemar's exact ``mcnemar_p`` for 0/1 metrics; ``paired_by`` "doc_hash" or "position": how
    the documents were matched) or "screen" (the unpaired screen)."""

    metric: str
    value: float
    stderr: float | None
    higher_is_better: bool | None
    delta: float | None = None
    relative_degradation_pct: float | None = None
    significant: bool | None = None
    significance_method: str | None = None
    delta_ci_low: float | None = None
    delta_ci_high: float | None = None
    ci_level: float | None = None
    mcnemar_p: float | None = None
    paired_docs: int | None = None
    paired_by: str | None = None  # "doc_hash" or "position" (no hashes in either run's samples)


@dataclass(frozen=True)
class MachineLoad:
    """How busy the rest of the machine was while a run's requests were timed, per CPU, in the
    measure the run recorded (``other_cpus``: other processes' CPU use; ``load_average``)."""

    measure: str
    per_cpu: float


@dataclass
class Row:
    """One run of a model: its cost figures and a score per task."""

    run: Run
    is_baseline: bool
    bits_per_param: float | None
    simulated: bool
    scheme: str | None  # "W int4 g128" (+ " · A int8"): the quantizer's stated scheme, if any
    size_mib: float | None
    quantize_seconds: float | None
    tokens_per_s: dict[str, float]  # "loglikelihood" and/or "generate"
    machine_load: MachineLoad | None  # how busy the rest of the machine was while timed
    peak_memory_mib: float | None
    peak_memory_kind: str | None
    scores: dict[str, Score]


@dataclass
class Comparison:
    """Every run of one model, each compared with the model's baseline, and what each section
    read of them (``figures``: section name -> its :meth:`~.section.Section.read`)."""

    model: str
    name: str
    baseline: Run | None
    baseline_reason: str
    tasks: dict[str, str]  # task -> main metric, in column order (no per-setting sweep tasks)
    rows: list[Row]
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UnitRow:
    """One ranked unit: rank, name, weight count, KL mean (nats), ΔNLL (nats/token)."""

    rank: int
    name: str
    params: int
    kl_mean: float
    delta_nll: float


@dataclass(frozen=True)
class ScanSummary:
    """What the report shows of one scan file."""

    path: str
    model: str
    spec: str
    unit: str
    units: tuple[UnitRow, ...]
    recommended: tuple[str, ...]
    bits_per_param: float | None
    checks: dict[str, float | None]  # all_quantized / recommended / least_sensitive KL means
    improves: bool | None
    beats_least_sensitive: bool | None


@dataclass
class Report:
    """Every model's comparison, the layer-sensitivity scans read beside the runs and the
    warnings: what :mod:`.render` draws, :mod:`.export` writes and :mod:`.plot` charts."""

    comparisons: list[Comparison]
    warnings: list[str]
    scans: list[ScanSummary] = field(default_factory=list)
