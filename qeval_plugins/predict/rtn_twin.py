"""The round-to-nearest twin of a quantizer spec: the RTN format whose weight SQNR is the cheap
feature of that spec.

``rtn`` and ``gptq-sim`` specs are their own format (``format``, ``bits``, ``group_size``,
``symmetric``); bitsandbytes' 4-bit types are their element type in blocks of 64 taken, as
bitsandbytes takes them, over the flattened weight (``bnb-nf4`` → ``nf4`` b64, ``bnb-fp4`` →
``fp4_e2m1`` b64, double quantization ignored; a block may span rows), ``bnb-int8`` is int8
per output channel; the integer methods (``gptq``, ``hqq``, ``autoround``, ``quanto-int*``,
``torchao-int*``) are ``int`` with their bits, group size and zero point; the float8 ones
``fp8_e4m3`` per channel. The baseline ``none`` is not a row; any other quantizer is one line
naming the spec.

The twin describes the linear layers' weights only: a spec that also changes something else —
quantized activations (``act_format``, ``torchao-w8a8``), SmoothQuant (``smooth``), layers kept
(``skip``) or the embeddings and output projection quantized (``include_*``) — would get the
features of a spec it is not, so it is refused (:class:`NotModelled`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.specs import format_spec as canonical_spec
from qeval_plugins.core.specs import parse_spec
from qeval_plugins.formats.table import FORMATS

BNB_BLOCK = 64  # bitsandbytes' 4-bit block length
QUANTO_GROUP = 128  # optimum-quanto's int4/int2 group length


@dataclass(frozen=True)
class RtnTwin:
    """An RTN weight format: what :func:`qeval_plugins.formats.rounding.quantize_dequantize`
    takes. ``group_size`` 0 is one scale per output channel; ``flat_blocks``: the groups run over
    the flattened weight (bitsandbytes' blocks), not along each row."""

    format: str
    bits: int
    group_size: int
    symmetric: bool
    flat_blocks: bool = False

    @property
    def spec(self) -> str:
        """The twin as an ``rtn`` spec, every format option written (a cache key part), with
        ``@flat`` after it for blocks over the flattened weight."""
        return canonical_spec(
            "rtn",
            {
                "format": self.format,
                "bits": self.element_bits,
                "group_size": self.group_size,
                "symmetric": self.symmetric,
            },
        ) + ("@flat" if self.flat_blocks else "")

    @property
    def element_bits(self) -> int:
        """Bits per element: ``bits`` for ``int``, the format's own width otherwise."""
        return FORMATS[self.format].element_bits or self.bits

    @property
    def label(self) -> str:
        """``int4 g128``, ``nf4 b64`` (flattened blocks), ``int8 per-channel asym``."""
        name = f"int{self.bits}" if self.format == "int" else self.format
        group = f"{'b' if self.flat_blocks else 'g'}{self.group_size}"
        group = group if self.group_size else "per-channel"
        return f"{name} {group}" + ("" if self.symmetric else " asym")


class NotModelled(QevalError):
    """A spec whose effect the weights' twin does not describe (module docstring)."""


#: option -> (value that changes nothing, what a different value does)
UNMODELLED_OPTIONS = {
    "act_format": ("none", "activation quantization"),
    "smooth": (0.0, "SmoothQuant"),
    "skip": ("", "layers kept unquantized"),
    "include_lm_head": (False, "the output projection quantized"),
    "include_embeddings": (False, "the embeddings quantized"),
}
#: quantizers that always quantize activations too
ACTIVATION_QUANTIZERS = ("torchao-w8a8",)


def unmodelled(quantizer: str, options: Mapping[str, Any]) -> list[str]:
    """What ``quantizer`` with ``options`` changes beyond the linear layers' weights, as
    ``act_format=int (activation quantization)`` items; empty when the twin describes it."""
    found = [
        f"{name}={options[name]} ({what})"
        for name, (neutral, what) in UNMODELLED_OPTIONS.items()
        if name in options and options[name] not in (None, neutral)
    ]
    if quantizer in ACTIVATION_QUANTIZERS:
        found.append(f"{quantizer} (activation quantization)")
    return found


def _int(bits: Any, group_size: Any, symmetric: Any) -> RtnTwin:
    return RtnTwin("int", int(bits), int(group_size), bool(symmetric))


# quantizer name -> its twin from the resolved options
_TWINS = {
    "rtn": lambda o: RtnTwin(o["format"], int(o["bits"]), int(o["group_size"]), o["symmetric"]),
    "gptq-sim": lambda o: RtnTwin(
        o["format"], int(o["bits"]), int(o["group_size"]), o["symmetric"]
    ),
    "bnb-nf4": lambda o: RtnTwin("nf4", 4, BNB_BLOCK, True, flat_blocks=True),
    "bnb-nf4-dq": lambda o: RtnTwin("nf4", 4, BNB_BLOCK, True, flat_blocks=True),
    "bnb-fp4": lambda o: RtnTwin("fp4_e2m1", 4, BNB_BLOCK, True, flat_blocks=True),
    "bnb-fp4-dq": lambda o: RtnTwin("fp4_e2m1", 4, BNB_BLOCK, True, flat_blocks=True),
    "bnb-int8": lambda o: _int(8, 0, True),
    "gptq": lambda o: _int(o["bits"], o["group_size"], o["sym"]),
    "autoround": lambda o: _int(o["bits"], o["group_size"], o["sym"]),
    "hqq": lambda o: _int(o["nbits"], o["group_size"], False),
    "quanto-int8": lambda o: _int(8, 0, True),
    "quanto-int4": lambda o: _int(4, QUANTO_GROUP, False),
    "quanto-int2": lambda o: _int(2, QUANTO_GROUP, False),
    "quanto-fp8": lambda o: RtnTwin("fp8_e4m3", 8, 0, True),
    "torchao-int8": lambda o: _int(8, 0, True),
    "torchao-w8a8": lambda o: _int(8, 0, True),
    "torchao-int4": lambda o: _int(4, o["group_size"], o["symmetric"]),
    "torchao-fp8": lambda o: RtnTwin("fp8_e4m3", 8, 0, True),
}
KNOWN_QUANTIZERS = tuple(_TWINS)


def rtn_twin(quantizer: str, options: Mapping[str, Any], spec: str) -> RtnTwin:
    """The twin of ``quantizer`` run with the resolved ``options`` (``spec`` names it in errors).

    QevalError for the baseline, a quantizer without a twin, or options a twin cannot take
    (an integer width outside 2..8, such as hqq's ``nbits=1``); :class:`NotModelled` for a spec
    that changes more than the weights.
    """
    if quantizer == "none":
        raise QevalError(
            f"spec '{spec}' is the unquantized baseline: there is no damage to predict"
        )
    make = _TWINS.get(quantizer)
    if make is None:
        raise QevalError(
            f"spec '{spec}': quantizer '{quantizer}' has no round-to-nearest twin to take "
            f"features from; qeval predict knows {', '.join(KNOWN_QUANTIZERS)}"
        )
    beyond = unmodelled(quantizer, options)
    if beyond:
        raise NotModelled(
            f"spec '{spec}': qeval predict's features describe the linear layers' weights only, "
            f"not {', '.join(beyond)}"
        )
    try:
        twin = make(options)
    except (KeyError, TypeError, ValueError) as error:
        raise QevalError(f"spec '{spec}': options unreadable for its twin ({error})") from None
    if twin.format not in FORMATS:
        raise QevalError(f"spec '{spec}': unknown number format '{twin.format}'")
    if twin.format == "int" and not 2 <= twin.bits <= 8:
        raise QevalError(
            f"spec '{spec}': {twin.bits}-bit integers have no RTN twin (formats take 2..8 bits)"
        )
    return twin


def resolved_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``spec``'s quantizer (canonical name, aliases resolved) and its options as a run records
    them: every option with its default, then the quantizer's ``finalize_options`` (nothing is
    loaded or checked against a device)."""
    from qeval_plugins.core.options import resolve_options
    from qeval_plugins.core.registry import get_registry, run_finalize_options

    name, given = parse_spec(spec)
    entry = get_registry().get(name)
    quantizer = entry.quantizer
    options = resolve_options(quantizer.name, quantizer.options, given)
    return quantizer.name, run_finalize_options(quantizer, entry.plugin, options)


def twin_of_spec(spec: str) -> RtnTwin:
    """:func:`rtn_twin` of a spec as a user writes it (``gptq:bits=3``)."""
    quantizer, options = resolved_spec(spec)
    return rtn_twin(quantizer, options, spec)
