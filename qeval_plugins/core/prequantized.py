"""What a checkpoint saved already quantized holds, in the words of a :class:`~.quantizer.Scheme`.

Read from the subset of its ``quantization_config`` that qeval records (see
:func:`qeval_plugins.backend.checkpoints.checkpoint_quantization`): GPTQ and AWQ give ``bits`` and
``group_size`` (``-1``: per output channel) and ``sym``; bitsandbytes gives ``load_in_8bit`` or
``load_in_4bit`` with ``bnb_4bit_quant_type`` and ``bnb_4bit_use_double_quant``. Anything else
(compressed-tensors keeps its formats in nested groups) is described by its method alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qeval_plugins.core.quantizer import Scheme


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def weight_format(config: Mapping[str, Any]) -> str:
    """``int4 g128``, ``int4 per-channel asym``, ``nf4 dq``, ``int8``; "" when not known."""
    if config.get("load_in_8bit") is True:
        return "int8"
    if config.get("load_in_4bit") is True:
        kind = config.get("bnb_4bit_quant_type")
        text = kind if kind in ("nf4", "fp4") else "4-bit"
        return text + (" dq" if config.get("bnb_4bit_use_double_quant") is True else "")
    bits = _number(config.get("bits"))
    if bits is None:
        return ""
    group = _number(config.get("group_size"))
    text = f"int{bits}"
    if group is not None:
        text += f" g{group}" if group > 0 else " per-channel"
    if config.get("desc_act") is True:
        text += " act-order"
    return text + (" asym" if config.get("sym") is False else "")


def describe(config: Mapping[str, Any]) -> str:
    """``gptq int4 g128``, ``bitsandbytes nf4``: method (at most 40 characters: the config may
    be hostile) and weight format, for labels."""
    method = config.get("quant_method")
    method = method[:40] if isinstance(method, str) and method else "unknown"
    found = weight_format(config)
    return f"{method} {found}" if found else method


def checkpoint_scheme(config: Mapping[str, Any]) -> Scheme:
    """The :class:`Scheme` of a checkpoint saved already quantized."""
    method = config.get("quant_method")
    found = weight_format(config)
    weights = found or f"as saved ({method if isinstance(method, str) else 'unknown'})"
    return Scheme(weights=weights)
