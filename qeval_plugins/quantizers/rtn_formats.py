"""Round-to-nearest (RTN) simulated weight quantization over many number formats.

Everything here is *fake* quantization: :func:`quantize_dequantize` maps a 2-D linear weight
``[out_features, in_features]`` to the nearest value representable in the chosen format (after
scaling) and returns the dequantized result in the input's dtype and shape. Internally all
arithmetic is float32. Only ``torch`` and ``math`` are used; nothing relies on ``torch.float8_*``
dtypes (the minifloat rounding is generic, built from exponent bits, mantissa bits, bias and max).

Formats (see :data:`FORMATS`)
-----------------------------
``int``
    Uniform integer, ``bits`` in 2..8.

    * symmetric (default) uses the *restricted* (sign-magnitude-like) range:
      ``qmax = 2**(bits-1) - 1``, ``scale = absmax / qmax``,
      ``q = clamp(round(w / scale), -qmax, qmax)``, ``w_hat = q * scale``. The extra negative code
      ``-2**(bits-1)`` of two's complement is deliberately left unused so the grid is symmetric
      around zero and ``+absmax`` / ``-absmax`` are both exact (this is what GPTQ/AWQ-style
      symmetric RTN and most int8 weight kernels do). Note ``bits=2`` is therefore ternary
      ``{-1, 0, 1} * scale``.
    * asymmetric (``symmetric=False``): ``scale = (max - min) / (2**bits - 1)``,
      ``zp = round(-min / scale)``, ``q = clamp(round(w / scale) + zp, 0, 2**bits - 1)``,
      ``w_hat = (q - zp) * scale``. ``min``/``max`` are the group's own extremes (the range is not
      forced to include 0), so ``zp`` is an integer that may fall outside ``[0, 2**bits-1]``;
      it is accounted as a 16-bit value in :func:`effective_bits`. A constant group
      (``max == min``) uses ``scale = |max|`` (or 1 when the group is all zeros) so it is
      reproduced exactly.

``fp8_e4m3``, ``fp8_e5m2``, ``fp6_e3m2``, ``fp6_e2m3``, ``fp4_e2m1``
    OCP minifloats (E4M3 is the "FN" variant: max 448, no infinities). The group's absmax is
    mapped to the format's largest finite value (``scale = absmax / fmt_max``), then every
    element is rounded to the nearest representable value (normals and subnormals), saturating at
    ``+-fmt_max``.

``nf4``
    The 16 NormalFloat-4 levels of QLoRA (Dettmers et al., 2023, arXiv:2305.14314), copied
    verbatim from bitsandbytes' ``get_4bit_type("nf4")``. ``scale = absmax``; each ``w / scale``
    goes to the nearest level.

``mxint8``, ``mxint4``, ``mxfp8``, ``mxfp6``, ``mxfp4``
    OCP Microscaling formats, following "OCP Microscaling Formats (MX) Specification v1.0"
    (Open Compute Project, Sept. 2023,
    https://www.opencompute.org/documents/ocp-microscaling-formats-mx-v1-0-spec-final-pdf).
    Blocks of ``k = 32`` consecutive elements along ``in_features`` share one E8M0 (power of
    two) scale ``X = 2**shared_exp`` with ``shared_exp = floor(log2(max_i |V_i|)) - emax_elem``
    (clamped to the E8M0 range [-127, 127]), where ``emax_elem`` is the exponent of the element
    format's largest normal: E4M3 -> 8, E3M2 -> 4, E2M1 -> 2, INT8/INT4 -> 0. Elements are
    ``P_i = quantize_elem(V_i / X)`` with saturation to the element format's max (values in the
    top binade may exceed the element max and are clamped, as in the spec). Element formats:
    ``mxfp8`` E4M3, ``mxfp6`` E3M2, ``mxfp4`` E2M1, ``mxint8`` 8-bit two's complement with 6
    fractional bits (``k/64`` for ``k`` in [-128, 127], i.e. [-2, 127/64]); ``mxint4`` is not in
    the v1.0 spec and is the natural 4-bit analogue (2 fractional bits, ``k/4`` in [-2, 1.75]).
    An all-zero block gets ``shared_exp = 0`` (its elements are zero anyway). ``in_features``
    that is not a multiple of 32 is zero-padded internally; the padding is dropped again.

Tie rule
--------
Every rounding step is round-half-to-even (IEEE 754 ``roundTiesToEven``, which is what
``torch.round`` does): for ``int``/``mxint*`` a tie goes to the even integer code, for the
minifloats a tie goes to the neighbour whose last mantissa bit is 0 -- this is bit-identical to
``torch``'s float32 -> ``float8_e4m3fn`` / ``float8_e5m2`` casts for in-range values. ``nf4`` is
not a floating-point format: a value exactly on the midpoint between two levels goes to the
*lower* level, like bitsandbytes' ``x > threshold`` decision tree.

Scales are kept in float32 (the 16-bit scale assumed in :func:`effective_bits` is a storage cost
model, the scale value itself is not rounded to fp16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "FORMATS",
    "FormatSpec",
    "GroupParams",
    "effective_bits",
    "group_length",
    "group_params",
    "quantize_dequantize",
    "quantize_with_params",
]

MX_BLOCK_SIZE = 32
"""Block length ``k`` of all MX formats (elements sharing one E8M0 scale)."""

_SCALE_BITS = 16  # storage cost of a per-group/per-channel scale (and zero point) for non-MX
_MX_SCALE_BITS = 8  # E8M0 shared scale
_E8M0_MIN_EXP, _E8M0_MAX_EXP = -127, 127

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


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _get_spec(fmt: str) -> FormatSpec:
    try:
        return FORMATS[fmt]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown quantization format {fmt!r}; expected one of {sorted(FORMATS)}"
        ) from None


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return value


def _check_bits(bits: object) -> int:
    bits = _check_int("bits", bits)
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8 for the 'int' format, got {bits}")
    return bits


def _check_group_size(spec: FormatSpec, group_size: object) -> int:
    group_size = _check_int("group_size", group_size)
    if spec.is_mx:
        if group_size not in (0, spec.block_size):
            raise ValueError(
                f"format {spec.name!r} has a fixed block size of {spec.block_size}; "
                f"group_size must be 0 or {spec.block_size}, got {group_size}"
            )
        return spec.block_size
    if group_size < 0:
        raise ValueError(f"group_size must be 0 (per output channel) or > 0, got {group_size}")
    return group_size


# --------------------------------------------------------------------------------------------
# element rounding primitives (all float32, vectorised)
# --------------------------------------------------------------------------------------------


def _round_minifloat(x: torch.Tensor, man_bits: int, bias: int, max_value: float) -> torch.Tensor:
    """Round float32 ``x`` to the nearest value of a sign-magnitude minifloat, saturating.

    The format has ``man_bits`` explicit mantissa bits, exponent bias ``bias`` (so the smallest
    normal exponent is ``1 - bias``; below it values are subnormal with the same quantum) and
    largest finite magnitude ``max_value`` (the exponent width only matters through
    ``max_value``). For a magnitude ``a`` with binade exponent ``e = max(floor(log2 a), 1 - bias)``
    the spacing of representable values is ``2**(e - man_bits)``; ``a`` is rounded to a multiple
    of it with ties-to-even (= even last mantissa bit), then clamped to ``max_value``. Inputs are
    clamped before rounding too, so ``e`` stays small and the result never overflows.

    ``floor(log2 a)`` is read exactly from the float32 exponent field, and ``2**(e - man_bits)``
    and its inverse are built from bit patterns, so scaling by them is exact.
    """
    a = x.abs().clamp_(max=max_value)
    # biased float32 exponent = floor(log2 a) + 127 (0 for float32 subnormals), floored at the
    # format's smallest normal exponent 1 - bias (subnormals share that binade's quantum).
    e = (a.view(torch.int32) >> 23).clamp_(min=128 - bias)
    inv_quantum = ((254 + man_bits) - e).bitwise_left_shift_(23).view(torch.float32)
    quantum = e.sub_(man_bits).bitwise_left_shift_(23).view(torch.float32)
    q = a.mul_(inv_quantum).round_().mul_(quantum).clamp_(max=max_value)
    return q.copysign_(x)


def _round_int(x: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """``clamp(round_half_even(x), qmin, qmax)``."""
    return torch.round(x).clamp_(qmin, qmax)


_NF4_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def _nf4_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    key = str(device)
    if key not in _NF4_CACHE:
        levels = torch.tensor(NF4_LEVELS, dtype=torch.float32, device=device)
        mids = (levels[:-1] + levels[1:]) / 2
        _NF4_CACHE[key] = (levels, mids)
    return _NF4_CACHE[key]


def _round_nf4(x: torch.Tensor) -> torch.Tensor:
    """Nearest NF4 level for ``x`` in [-1, 1]; exact midpoints go to the lower level."""
    levels, mids = _nf4_tables(x.device)
    # bucketize(right=False): idx = #(mids < x), so x == mid stays on the lower level.
    return levels[torch.bucketize(x, mids)]


# --------------------------------------------------------------------------------------------
# per-format quantizers on grouped views [rows, n_groups, group_len]
# --------------------------------------------------------------------------------------------


def _div(t: torch.Tensor, c: float) -> torch.Tensor:
    """Correctly rounded ``t / c`` on every device.

    ``tensor / python_scalar`` is computed as ``tensor * (1 / c)`` by PyTorch's CUDA kernel but
    as a true division on CPU, which differs by an ulp and flips near-tie roundings; dividing by
    a same-shaped tensor is an IEEE division on both, so CPU and CUDA results are bit-identical.
    """
    return t / torch.full_like(t, c)


def _safe(scale: torch.Tensor) -> torch.Tensor:
    """Replace non-positive (all-zero group) scales by 1 so division never makes NaN."""
    return torch.where(scale > 0, scale, torch.ones_like(scale))


@dataclass(frozen=True)
class GroupParams:
    """The fixed parameters of quantization groups, broadcastable against their elements.

    ``scale``: float32 ``[..., 1]``, one per group: ``int`` symmetric ``absmax / qmax``, ``int``
    asymmetric ``(max - min) / (2**bits - 1)``, minifloats ``absmax / fmt_max``, ``nf4``
    ``absmax`` (all-zero groups: 1), MX ``X = 2**shared_exp``. ``zero``: the integer zero point
    ``round(-min / scale)`` of asymmetric ``int``, else None.
    """

    scale: torch.Tensor
    zero: torch.Tensor | None = None


def _params(g: torch.Tensor, spec: FormatSpec, bits: int, symmetric: bool) -> GroupParams:
    """:class:`GroupParams` of float32 groups ``g`` (elements along the last dimension)."""
    if spec.is_mx:
        # X = 2**shared_exp may be a float32 subnormal (shared_exp = -127), so build it with exp2
        # (exact for integer arguments) rather than from an exponent bit pattern.
        return GroupParams(torch.exp2(_mx_shared_exp(g, spec.emax_elem).to(torch.float32)))
    if spec.kind == "int" and not symmetric:
        gmin = g.amin(dim=-1, keepdim=True)
        gmax = g.amax(dim=-1, keepdim=True)
        scale = _div(gmax - gmin, 2**bits - 1)
        # Constant group: scale=|c| makes c/scale = +-1 exact, so w_hat == c; all-zero group: 1.
        degenerate = torch.where(gmax.abs() > 0, gmax.abs(), torch.ones_like(gmax))
        scale = torch.where(scale > 0, scale, degenerate)
        return GroupParams(scale, torch.round(-gmin / scale))
    absmax = g.abs().amax(dim=-1, keepdim=True)
    if spec.kind == "lut":
        return GroupParams(_safe(absmax))
    top = 2 ** (bits - 1) - 1 if spec.kind == "int" else spec.max_value
    return GroupParams(_safe(_div(absmax, top)))


def _round_with(g: torch.Tensor, p: GroupParams, spec: FormatSpec, bits: int) -> torch.Tensor:
    """Quantize-dequantize float32 ``g`` with fixed parameters ``p`` (saturating)."""
    if spec.is_mx:
        v = g / p.scale
        if spec.kind == "mxint":
            step = 2.0**spec.frac_bits
            n = spec.element_bits
            assert n is not None
            q = _round_int(v * step, -(2 ** (n - 1)), 2 ** (n - 1) - 1).div_(step)
        else:
            q = _round_minifloat(v, spec.man_bits, spec.bias, spec.max_value)
        return q.mul_(p.scale)
    if spec.kind == "int" and p.zero is not None:
        q = torch.round(g / p.scale).add_(p.zero).clamp_(0, 2**bits - 1)
        return (q - p.zero).mul_(p.scale)
    if spec.kind == "int":
        qmax = 2 ** (bits - 1) - 1
        return _round_int(g / p.scale, -qmax, qmax).mul_(p.scale)
    if spec.kind == "float":
        return _round_minifloat(g / p.scale, spec.man_bits, spec.bias, spec.max_value).mul_(p.scale)
    return _round_nf4((g / p.scale).clamp_(-1.0, 1.0)).mul_(p.scale)


def _mx_shared_exp(g: torch.Tensor, emax_elem: int) -> torch.Tensor:
    """E8M0 exponent per block: ``floor(log2(absmax)) - emax_elem``, 0 for all-zero blocks."""
    amax = g.abs().amax(dim=-1, keepdim=True)
    _, e = torch.frexp(amax)
    shared = (e - 1 - emax_elem).clamp_(_E8M0_MIN_EXP, _E8M0_MAX_EXP)
    return torch.where(amax > 0, shared, torch.zeros_like(shared))


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def quantize_dequantize(
    weight: torch.Tensor,
    fmt: str = "int",
    *,
    bits: int = 4,
    group_size: int = 0,
    symmetric: bool = True,
) -> torch.Tensor:
    """Simulate RTN quantization of a linear weight: quantize to ``fmt`` and dequantize back.

    Args:
        weight: floating-point tensor ``[out_features, in_features]`` (any float dtype/device).
        fmt: a key of :data:`FORMATS`.
        bits: integer width for ``fmt="int"`` (2..8). Ignored by every other format, whose
            element width is fixed (see ``FORMATS[fmt].element_bits``).
        group_size: 0 = one scale per output channel (row); ``N > 0`` = one scale per ``N``
            consecutive input elements of a row (``in_features % N == 0`` required). MX formats
            always use blocks of 32 and accept only 0 or 32 (``in_features`` need not be a
            multiple of 32 there).
        symmetric: ``False`` selects asymmetric (zero-point) quantization; only valid for
            ``fmt="int"``.

    Returns:
        A new tensor with the same shape, dtype and device as ``weight`` holding the dequantized
        values (computed in float32 and cast back; for fp16/bf16 inputs the final cast rounds
        once more).

    Raises:
        ValueError: unknown ``fmt``, bad ``bits``/``group_size``, ``symmetric=False`` with a
            non-int format, non-2-D or non-floating ``weight``, or indivisible ``group_size``.
    """
    spec, bits = _check_format(fmt, bits, symmetric)
    _check_group_size(spec, group_size)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 2:
        raise ValueError(
            f"weight must be 2-D [out_features, in_features], got shape {tuple(weight.shape)}"
        )
    if not weight.is_floating_point():
        raise ValueError(f"weight must be a floating-point tensor, got dtype {weight.dtype}")

    rows, cols = weight.shape
    if weight.numel() == 0:
        return weight.clone()
    group = group_length(fmt, group_size, cols)

    w = weight.detach().to(torch.float32)
    pad = (-cols) % group if spec.is_mx else 0
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    g = w.reshape(rows, -1, group)
    out = _round_with(g, _params(g, spec, bits, symmetric), spec, bits)
    out = out.reshape(rows, cols + pad)
    if pad:
        out = out[:, :cols]
    return out.to(weight.dtype).contiguous()


def _check_format(fmt: str, bits: object, symmetric: bool) -> tuple[FormatSpec, int]:
    """The format's spec and its checked ``bits`` (ValueError for a wrong combination)."""
    spec = _get_spec(fmt)
    if spec.kind == "int":
        return spec, _check_bits(bits)
    if not symmetric:
        raise ValueError(
            f"symmetric=False (asymmetric, zero-point) quantization is only supported for the "
            f"'int' format, not {fmt!r}"
        )
    return spec, 0


def group_length(fmt: str, group_size: int, in_features: int) -> int:
    """Consecutive input elements of a row that share one scale: ``group_size``, ``in_features``
    for ``group_size=0`` (per output channel), 32 for MX formats (whose last block may be
    shorter when ``in_features % 32 != 0``).

    Raises:
        ValueError: unknown ``fmt``, bad ``group_size``, or ``in_features % group_size != 0``.
    """
    spec = _get_spec(fmt)
    group = _check_group_size(spec, group_size)
    if spec.is_mx:
        return group
    if group == 0:
        return in_features
    if in_features % group != 0:
        raise ValueError(
            f"in_features={in_features} is not divisible by group_size={group}; choose a "
            f"group_size that divides in_features, or group_size=0 for per-output-channel scales"
        )
    return group


def group_params(
    block: torch.Tensor, fmt: str, *, bits: int = 4, symmetric: bool = True
) -> GroupParams:
    """Step one of two: the :class:`GroupParams` of the groups in ``block``.

    ``block``: ``[..., group_len]``, one group per row along the last dimension (a weight slice
    ``[out_features, group_len]`` gives one scale per output channel). The parameters are
    computed exactly as :func:`quantize_dequantize` computes them (float32), so
    ``quantize_with_params(block, group_params(block, ...), ...)`` equals RTN of the group.
    """
    spec, bits = _check_format(fmt, bits, symmetric)
    return _params(block.detach().to(torch.float32), spec, bits, symmetric)


def quantize_with_params(
    values: torch.Tensor,
    params: GroupParams,
    fmt: str,
    *,
    bits: int = 4,
    symmetric: bool = True,
) -> torch.Tensor:
    """Step two of two: round ``values`` with fixed ``params`` and dequantize.

    ``values``: ``[..., k]`` broadcastable against ``params`` (``[..., 1]``), e.g. one or more
    columns of a group whose parameters were fixed earlier (GPTQ). Values beyond the group's
    range saturate at the format's largest code. Returns the dequantized values (computed in
    float32, by the same code :func:`quantize_dequantize` uses) in ``values``' dtype.
    """
    spec, bits = _check_format(fmt, bits, symmetric)
    if params.zero is not None and not (spec.kind == "int" and not symmetric):
        raise ValueError("params with a zero point belong to symmetric=False int quantization")
    out = _round_with(values.detach().to(torch.float32), params, spec, bits)
    return out.to(values.dtype)


def effective_bits(
    fmt: str,
    bits: int = 4,
    group_size: int = 0,
    *,
    symmetric: bool = True,
    in_features: int | None = None,
) -> float:
    """Average storage cost in bits per weight: element bits + amortised scale overhead.

    Cost model (units: bits per weight element):

    * ``int``: ``bits + (16 + (16 if asymmetric else 0)) / G``
    * ``fp8_*``, ``fp6_*``, ``fp4_e2m1``, ``nf4``: ``element_bits + 16 / G``
    * MX formats: ``element_bits + 8 / 32`` (one E8M0 scale per 32 elements), e.g. mxfp4 = 4.25

    where ``G = group_size`` for ``group_size > 0``. For ``group_size == 0`` (one scale per output
    channel) ``G = in_features``; if ``in_features`` is not given, the per-channel overhead is
    treated as negligible and only the element bits are returned. ``bits`` is used for ``int``
    only.
    """
    spec = _get_spec(fmt)
    group = _check_group_size(spec, group_size)
    if spec.is_mx:
        assert spec.element_bits is not None
        return float(spec.element_bits) + _MX_SCALE_BITS / spec.block_size
    if spec.kind == "int":
        elem = float(_check_bits(bits))
        overhead = _SCALE_BITS * (1 if symmetric else 2)
    else:
        if not symmetric:
            raise ValueError(f"symmetric=False is only supported for the 'int' format, not {fmt!r}")
        assert spec.element_bits is not None
        elem = float(spec.element_bits)
        overhead = _SCALE_BITS
    if group == 0:
        if in_features is None:
            return elem
        group = _check_int("in_features", in_features)
        if group <= 0:
            raise ValueError(f"in_features must be > 0, got {group}")
    return elem + overhead / group
