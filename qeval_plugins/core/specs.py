"""Quantizer specs on the command line: ``NAME[:option=value[:option=value...]]``.

``rtn:bits=3:group_size=0`` is the same run as ``--model_args quantizer=rtn,bits=3,group_size=0``.
"""

from __future__ import annotations

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.plan import QuantizationPlan, plan_quantization


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``NAME:a=1:b=2`` into ``("NAME", {"a": "1", "b": "2"})``."""
    name, *pairs = spec.strip().split(":")
    if not name:
        raise QevalError(f"empty quantizer name in spec '{spec}'; write NAME[:option=value...].")
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise QevalError(
                f"bad option '{pair}' in quantizer spec '{spec}'; write NAME:option=value."
            )
        if key.strip() in options:
            raise QevalError(
                f"option '{key.strip()}' is given twice in quantizer spec '{spec}'; give it once."
            )
        options[key.strip()] = value.strip()
    return name.strip(), options


def spec_model_args(spec: str) -> str:
    """The lm-eval model_args fragment of a spec: ``quantizer=NAME,a=1,b=2``."""
    name, options = parse_spec(spec)
    return ",".join([f"quantizer={name}", *(f"{k}={v}" for k, v in options.items())])


def check_spec(spec: str, device: str | None = None) -> QuantizationPlan:
    """Validate a spec fully (name, options, packages, CUDA) without loading anything."""
    name, options = parse_spec(spec)
    return plan_quantization(name, dict(options), set(), device)
