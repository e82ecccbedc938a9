"""The number formats qeval simulates, by name, without importing torch (:data:`FORMATS`).

``int`` (uniform integer, 2..8 bits), the OCP minifloats ``fp8_e4m3``, ``fp8_e5m2``,
``fp6_e3m2``, ``fp6_e2m3``, ``fp4_e2m1``, QLoRA's ``nf4`` and the OCP Microscaling (MX) block
formats ``mxint8``, ``mxint4``, ``mxfp8``, ``mxfp6``, ``mxfp4`` (blocks of
:data:`MX_BLOCK_SIZE` elements sharing one E8M0 power-of-two scale). How each is scaled and
rounded is in :mod:`qeval_plugins.formats.rounding`; here are only their parameters, so that
quantizers can declare the formats as option choices at no cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["FORMATS", "MX_BLOCK_SIZE", "NF4_LEVELS", "FormatSpec", "format_spec"]

MX_BLOCK_SIZE = 32
"""Block length ``k`` of all MX formats (elements sharing one E8M0 scale)."""

# bitsandbytes.functional.get_4bit_type("nf4"), in increasing order (QLoRA NormalFloat-4).
NF4_LEVELS: tuple[float, ...] = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)


@dataclass(frozen=True)
class FormatSpec:
    """Description of one quantization format.

    Attributes:
        name: registry key (e.g. ``"fp8_e4m3"``).
        element_bits: storage bits per weight element, excluding scales; ``None`` for ``int``,
            whose width is the ``bits`` argument.
        description: one-line human readable description.
        kind: ``"int"``, ``"float"`` (scaled minifloat), ``"lut"`` (nf4), ``"mxfp"`` or
            ``"mxint"``.
        exp_bits, man_bits, bias, max_value: minifloat parameters (``kind`` float/mxfp).
            ``max_value`` is the largest finite magnitude.
        frac_bits: fractional bits of MX integer elements (``kind`` mxint).
        emax_elem: exponent of the element format's largest normal (MX only).
        block_size: elements per shared scale for MX formats, 0 otherwise.
    """

    name: str
    element_bits: int | None
    description: str
    kind: str
    exp_bits: int = 0
    man_bits: int = 0
    bias: int = 0
    max_value: float = 0.0
    frac_bits: int = 0
    emax_elem: int = 0
    block_size: int = 0

    @property
    def is_mx(self) -> bool:
        return self.block_size > 0


def _minifloat_max(exp_bits: int, man_bits: int, bias: int, *, ieee_like: bool) -> float:
    """Largest finite value of a minifloat.

    ``ieee_like`` formats (E5M2) reserve the all-ones exponent for inf/NaN; the others use it for
    normals, except E4M3FN whose all-ones exponent *and* mantissa pattern is NaN.
    """
    top_exp = (2**exp_bits - 1) - bias
    if ieee_like:
        return (2.0 - 2.0**-man_bits) * 2.0 ** (top_exp - 1)
    if exp_bits == 4 and man_bits == 3:  # E4M3FN: S.1111.111 is NaN -> max mantissa 1.110
        return (2.0 - 2.0 ** (1 - man_bits)) * 2.0**top_exp
    return (2.0 - 2.0**-man_bits) * 2.0**top_exp


def _fp(name: str, e: int, m: int, bias: int, ieee_like: bool, desc: str) -> FormatSpec:
    return FormatSpec(
        name=name,
        element_bits=1 + e + m,
        description=desc,
        kind="float",
        exp_bits=e,
        man_bits=m,
        bias=bias,
        max_value=_minifloat_max(e, m, bias, ieee_like=ieee_like),
    )


def _mx_from(base: FormatSpec, name: str, desc: str) -> FormatSpec:
    emax = math.frexp(base.max_value)[1] - 1  # floor(log2(max)), exact
    return FormatSpec(
        name=name,
        element_bits=base.element_bits,
        description=desc,
        kind="mxfp",
        exp_bits=base.exp_bits,
        man_bits=base.man_bits,
        bias=base.bias,
        max_value=base.max_value,
        emax_elem=emax,
        block_size=MX_BLOCK_SIZE,
    )


def _mx_int(name: str, bits: int, desc: str) -> FormatSpec:
    frac = bits - 2  # sign + 1 integer bit + fractional bits (two's complement)
    return FormatSpec(
        name=name,
        element_bits=bits,
        description=desc,
        kind="mxint",
        frac_bits=frac,
        max_value=(2 ** (bits - 1) - 1) / 2**frac,
        emax_elem=0,
        block_size=MX_BLOCK_SIZE,
    )


_E4M3 = _fp("fp8_e4m3", 4, 3, 7, False, "OCP FP8 E4M3FN minifloat (max 448, no inf), absmax-scaled")
_E5M2 = _fp("fp8_e5m2", 5, 2, 15, True, "OCP FP8 E5M2 minifloat (max 57344), absmax-scaled")
_E3M2 = _fp("fp6_e3m2", 3, 2, 3, False, "OCP FP6 E3M2 minifloat (max 28), absmax-scaled")
_E2M3 = _fp("fp6_e2m3", 2, 3, 1, False, "OCP FP6 E2M3 minifloat (max 7.5), absmax-scaled")
_E2M1 = _fp("fp4_e2m1", 2, 1, 1, False, "OCP FP4 E2M1 minifloat (+-{0,.5,1,1.5,2,3,4,6}), scaled")

FORMATS: dict[str, FormatSpec] = {
    "int": FormatSpec(
        name="int",
        element_bits=None,
        description="uniform integer, 2..8 bits, symmetric (restricted range) or asymmetric",
        kind="int",
    ),
    "fp8_e4m3": _E4M3,
    "fp8_e5m2": _E5M2,
    "fp6_e3m2": _E3M2,
    "fp6_e2m3": _E2M3,
    "fp4_e2m1": _E2M1,
    "nf4": FormatSpec(
        name="nf4",
        element_bits=4,
        description="QLoRA NormalFloat-4: 16 normal-quantile levels in [-1, 1], absmax-scaled",
        kind="lut",
        max_value=1.0,
    ),
    "mxint8": _mx_int("mxint8", 8, "OCP MX: 32 x INT8 (k/64, 6 fraction bits) + E8M0 scale"),
    "mxint4": _mx_int("mxint4", 4, "MX-style: 32 x INT4 (k/4, 2 fraction bits) + E8M0 scale"),
    "mxfp8": _mx_from(_E4M3, "mxfp8", "OCP MX: 32 x FP8 E4M3 + one E8M0 shared scale"),
    "mxfp6": _mx_from(_E3M2, "mxfp6", "OCP MX: 32 x FP6 E3M2 + one E8M0 shared scale"),
    "mxfp4": _mx_from(_E2M1, "mxfp4", "OCP MX: 32 x FP4 E2M1 + one E8M0 shared scale"),
}
"""Registry of supported format names -> :class:`FormatSpec`."""


def format_spec(fmt: str) -> FormatSpec:
    """``FORMATS[fmt]``; ValueError naming the known formats for any other ``fmt``."""
    try:
        return FORMATS[fmt]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown quantization format {fmt!r}; expected one of {sorted(FORMATS)}"
        ) from None
