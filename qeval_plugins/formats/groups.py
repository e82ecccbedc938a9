"""Groups of weights that share one scale: the arguments' checks, the group length and the
storage cost in bits per weight (:func:`effective_bits`), without importing torch.

A group is ``group_size`` consecutive input elements of a weight row, the whole row for
``group_size=0`` (one scale per output channel), or an MX format's fixed block of
:data:`~qeval_plugins.formats.table.MX_BLOCK_SIZE`. Every check raises ValueError with one line.
"""

from __future__ import annotations

from qeval_plugins.formats.table import FormatSpec, format_spec

__all__ = ["check_format", "check_group_size", "effective_bits", "group_length"]

_SCALE_BITS = 16  # storage cost of a per-group/per-channel scale (and zero point) for non-MX
_MX_SCALE_BITS = 8  # E8M0 shared scale


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return value


def _check_bits(bits: object) -> int:
    bits = _check_int("bits", bits)
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8 for the 'int' format, got {bits}")
    return bits


def check_format(fmt: str, bits: object, symmetric: bool) -> tuple[FormatSpec, int]:
    """The format's spec and its checked ``bits`` (0 for a fixed-width format, whose ``bits``
    argument is ignored); ValueError for a wrong combination."""
    spec = format_spec(fmt)
    if spec.kind == "int":
        return spec, _check_bits(bits)
    if not symmetric:
        raise ValueError(
            f"symmetric=False (asymmetric, zero-point) quantization is only supported for the "
            f"'int' format, not {fmt!r}"
        )
    return spec, 0


def check_group_size(spec: FormatSpec, group_size: object) -> int:
    """``group_size`` checked against ``spec``: 0 or > 0, and for MX formats 0 or their block
    size, which is then returned."""
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


def group_length(fmt: str, group_size: int, in_features: int) -> int:
    """Consecutive input elements of a row that share one scale: ``group_size``, ``in_features``
    for ``group_size=0`` (per output channel), 32 for MX formats (whose last block may be
    shorter when ``in_features % 32 != 0``).

    Raises:
        ValueError: unknown ``fmt``, bad ``group_size``, or ``in_features % group_size != 0``.
    """
    spec = format_spec(fmt)
    group = check_group_size(spec, group_size)
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
    only. The scales themselves are computed in float32 by the rounding math; 16 bits is the
    storage they are assumed to take.
    """
    spec = format_spec(fmt)
    group = check_group_size(spec, group_size)
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
