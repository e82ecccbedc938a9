"""Round-to-nearest (RTN) simulated quantization to every format of the table: the torch math.

Everything here is *fake* quantization: :func:`quantize_dequantize` maps a 2-D linear weight
``[out_features, in_features]`` to the nearest value representable in the chosen format (after
scaling) and returns the dequantized result in the input's dtype and shape. Internally all
arithmetic is float32. Only ``torch`` and ``math`` are used; nothing relies on ``torch.float8_*``
dtypes (the minifloat rounding is generic, built from exponent bits, mantissa bits, bias and max).

Formats (see :data:`~qeval_plugins.formats.table.FORMATS`)
---------------------------------------------------------
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
      it is accounted as a 16-bit value in
      :func:`~qeval_plugins.formats.groups.effective_bits`. A constant group
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

Scales are kept in float32 (the 16-bit scale assumed in
:func:`~qeval_plugins.formats.groups.effective_bits` is a storage cost model, the scale value
itself is not rounded to fp16).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qeval_plugins.formats.groups import check_format, check_group_size, group_length
from qeval_plugins.formats.table import NF4_LEVELS, FormatSpec

__all__ = ["GroupParams", "group_params", "quantize_dequantize", "quantize_with_params"]

_E8M0_MIN_EXP, _E8M0_MAX_EXP = -127, 127


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
        fmt: a key of :data:`~qeval_plugins.formats.table.FORMATS`.
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
    spec, bits = check_format(fmt, bits, symmetric)
    check_group_size(spec, group_size)
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


def group_params(
    block: torch.Tensor, fmt: str, *, bits: int = 4, symmetric: bool = True
) -> GroupParams:
    """Step one of two: the :class:`GroupParams` of the groups in ``block``.

    ``block``: ``[..., group_len]``, one group per row along the last dimension (a weight slice
    ``[out_features, group_len]`` gives one scale per output channel). The parameters are
    computed exactly as :func:`quantize_dequantize` computes them (float32), so
    ``quantize_with_params(block, group_params(block, ...), ...)`` equals RTN of the group.
    """
    spec, bits = check_format(fmt, bits, symmetric)
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
    spec, bits = check_format(fmt, bits, symmetric)
    if params.zero is not None and not (spec.kind == "int" and not symmetric):
        raise ValueError("params with a zero point belong to symmetric=False int quantization")
    out = _round_with(values.detach().to(torch.float32), params, spec, bits)
    return out.to(values.dtype)
