"""The quantizer specs a command was given, each read and validated once, before any run.

A :class:`CheckedSpec` carries the spec as the user wrote it (a run's folder, label and settings
record name it so), the options as written (to compare with ``--model_args``) and the validated
:class:`~qeval_plugins.core.plan.QuantizationPlan` (quantizer, resolved options, KV cache).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from qeval_plugins.core.plan import QuantizationPlan, plan_quantization
from qeval_plugins.core.specs import parse_spec


@dataclass(frozen=True)
class CheckedSpec:
    """One spec, read and validated; two are equal when written alike."""

    text: str
    name: str = field(compare=False)
    options: Mapping[str, str] = field(compare=False)  # as written, KV-cache settings included
    plan: QuantizationPlan = field(compare=False)

    @property
    def model_args(self) -> str:
        """The spec as lm-eval model_args: ``rtn:bits=4`` -> ``quantizer=rtn,bits=4``."""
        return ",".join([f"quantizer={self.name}", *(f"{k}={v}" for k, v in self.options.items())])


def check_spec_text(spec: str, device: str | None) -> CheckedSpec:
    """``spec`` read (:func:`~qeval_plugins.core.specs.parse_spec`) and validated fully (name,
    options, packages, CUDA) without loading anything; one QevalError line when it is wrong."""
    name, options = parse_spec(spec)
    plan = plan_quantization(name, dict(options), set(), device)
    return CheckedSpec(spec, name, options, plan)
