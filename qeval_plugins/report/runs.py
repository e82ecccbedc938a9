"""A run: one evaluated model configuration read from an lm-eval results file, and its metrics.

Plain data plus the facts read straight off its config (backend, quantizer, model_args); how
files become runs is :mod:`.load`, how runs are named :mod:`.labels`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from qeval_plugins.core.plan import HF_QUANTIZATION_ARGS
from qeval_plugins.report.values import is_given, scalar_text

# Backends whose runs are an unquantized baseline when they use none of HF_QUANTIZATION_ARGS.
HF_BACKENDS = frozenset({"hf", "hf-auto", "huggingface"})


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
    # :data:`~.settings.SETTINGS` found in the file, as :func:`~.settings.setting_text`; a
    # setting absent is unknown
    settings: dict[str, str] = field(default_factory=dict)
    # task -> few-shot count (lm-eval's ``n-shot``, else ``configs[task].num_fewshot``)
    fewshot: dict[str, int] = field(default_factory=dict)
    # (task, metric) whose value is not a number (warned about when read): not "lacking"
    unread: frozenset[tuple[str, str]] = frozenset()
    # task/metric names whose value is NaN: the model's outputs were not finite (run flagged)
    nan_scores: tuple[str, ...] = ()

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
            is_given(args.get(name)) for name in HF_QUANTIZATION_ARGS
        )
