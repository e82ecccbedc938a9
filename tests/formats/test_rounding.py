"""The rounding math of every number format (qeval_plugins.formats.rounding), against hand
computed values, brute-force references, torch's fp8 casts and bitsandbytes' NF4 levels."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from bitsandbytes.functional import get_4bit_type

from qeval_plugins.formats.rounding import quantize_dequantize
from qeval_plugins.formats.table import FORMATS

MX_FORMATS = ["mxint8", "mxint4", "mxfp8", "mxfp6", "mxfp4"]
MINIFLOATS = {  # name -> (exp_bits, man_bits, bias, max)
    "fp8_e4m3": (4, 3, 7, 448.0),
    "fp8_e5m2": (5, 2, 15, 57344.0),
    "fp6_e3m2": (3, 2, 3, 28.0),
    "fp6_e2m3": (2, 3, 1, 7.5),
    "fp4_e2m1": (2, 1, 1, 6.0),
}
E2M1_GRID = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def qdq_row(values, fmt, **kw) -> list[float]:
    """Quantize a single row (one group / channel) given as a Python list; return a list."""
    w = torch.tensor([values], dtype=torch.float32)
    return quantize_dequantize(w, fmt, **kw)[0].tolist()


def sqnr_db(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    w64, e64 = w.double(), (w.double() - w_hat.double())
    return 10.0 * math.log10(float((w64**2).sum() / (e64**2).sum()))


@pytest.fixture(scope="module")
def gaussian() -> torch.Tensor:
    return torch.randn(256, 1024, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------
# int
# ---------------------------------------------------------------------------------------------


def test_int4_symmetric_hand_example():
    # absmax 1 -> scale 1/7; w/scale = [-7, -4.2, 0, 2.1, 7] -> q = [-7, -4, 0, 2, 7]
    out = qdq_row([-1.0, -0.6, 0.0, 0.3, 1.0], "int", bits=4)
    assert out == pytest.approx([-1.0, -4 / 7, 0.0, 2 / 7, 1.0], rel=1e-6, abs=1e-7)


def test_int_symmetric_ties_to_even_and_restricted_range():
    # absmax 7 with bits=4 -> scale exactly 1, so the ties below are exact ties.
    w = [-7.0, -3.5, -2.5, -0.5, 0.5, 1.5, 2.4, 2.6, 7.0]
    assert qdq_row(w, "int", bits=4) == [-7.0, -4.0, -2.0, -0.0, 0.0, 2.0, 2.0, 3.0, 7.0]
    # bits=3: qmax = 3, restricted range [-3, 3] (no -4 code): scale = 6/3 = 2
    assert qdq_row([-6.0, -5.0, -1.0, 1.2, 6.0], "int", bits=3) == [-6.0, -4.0, -0.0, 2.0, 6.0]
    # bits=2 is ternary {-1, 0, 1} * absmax
    assert qdq_row([-2.0, -0.9, 1.1, 2.0], "int", bits=2) == [-2.0, -0.0, 2.0, 2.0]
    # bits=8: absmax 127 -> scale 1
    assert qdq_row([127.0, -127.0, 0.5, 1.5, -100.4], "int", bits=8) == [
        127.0,
        -127.0,
        0.0,
        2.0,
        -100.0,
    ]


def test_int_asymmetric_hand_examples():
    # min -0.5, max 7: scale = 7.5/15 = 0.5, zp = round(1) = 1
    # w/scale = [-1, 0, 0.5, 2, 14] -> round (0.5 ties to 0) -> +zp = [0, 1, 1, 3, 15]
    w = [-0.5, 0.0, 0.25, 1.0, 7.0]
    assert qdq_row(w, "int", bits=4, symmetric=False) == [-0.5, 0.0, 0.0, 1.0, 7.0]
    # bits=2: min -1 max 2 -> scale 1, zp 1; q = round(w) + 1 = [0, 1, 2, 3]
    assert qdq_row([-1.0, 0.2, 1.4, 2.0], "int", bits=2, symmetric=False) == [-1, 0, 1, 2]
    # all-positive group: zero point -1 (outside the code range) still reproduces the grid
    assert qdq_row([1.0, 2.0, 3.0, 4.0], "int", bits=2, symmetric=False) == [1, 2, 3, 4]
    # rounding to the 2-bit grid {0, 1, 2, 3}
    assert qdq_row([0.0, 1.6, 3.0], "int", bits=2, symmetric=False) == [0.0, 2.0, 3.0]
    # constant (zero-range) groups are reproduced exactly
    assert qdq_row([2.5, 2.5, 2.5], "int", bits=4, symmetric=False) == [2.5, 2.5, 2.5]
    assert qdq_row([-0.3] * 4, "int", bits=3, symmetric=False) == pytest.approx([-0.3] * 4)


def test_int_asymmetric_beats_symmetric_on_skewed_rows():
    g = torch.Generator().manual_seed(1)
    w = torch.rand(64, 256, generator=g)  # all positive: symmetric wastes half the codes
    sym = sqnr_db(w, quantize_dequantize(w, "int", bits=4))
    asym = sqnr_db(w, quantize_dequantize(w, "int", bits=4, symmetric=False))
    assert asym > sym + 4.0


@pytest.mark.parametrize("symmetric", [True, False])
def test_int_sqnr_about_6db_per_bit(gaussian, symmetric):
    s = [
        sqnr_db(gaussian, quantize_dequantize(gaussian, "int", bits=b, symmetric=symmetric))
        for b in range(2, 9)
    ]
    gains = [b - a for a, b in itertools.pairwise(s)]
    assert all(d > 0 for d in gains), s  # monotone increasing in bits
    for bits, d in zip(range(3, 8), gains[1:], strict=True):  # gain from `bits` to `bits + 1`
        assert 4.5 <= d <= 7.5, (bits, d, s)
    # in the fine-step regime the classic 6.02 dB/bit shows up
    assert all(abs(d - 6.02) < 0.4 for d in gains[3:]), gains
    # sanity on absolute levels (per-channel, absmax scaling of a 1024-wide Gaussian row)
    assert 40.0 < s[-1] < 45.0


# ---------------------------------------------------------------------------------------------
# minifloats
# ---------------------------------------------------------------------------------------------


def _minifloat_grid(e_bits: int, m_bits: int, bias: int, fmax: float) -> tuple[list, list]:
    """Non-negative values (and their mantissa codes) by enumerating bit patterns."""
    vals, mant = [], []
    for e in range(2**e_bits):
        for m in range(2**m_bits):
            if e == 0:
                v = (m / 2**m_bits) * 2.0 ** (1 - bias)
            else:
                v = (1 + m / 2**m_bits) * 2.0 ** (e - bias)
            if v <= fmax:
                vals.append(v)
                mant.append(m)
    return vals, mant


def _reference_round(x: torch.Tensor, e_bits: int, m_bits: int, bias: int, fmax: float):
    """Brute force: nearest grid value, ties to the even mantissa code, saturating at fmax."""
    vals, mant = _minifloat_grid(e_bits, m_bits, bias, fmax)
    grid = torch.tensor(vals, dtype=torch.float64)
    even = torch.tensor([m % 2 == 0 for m in mant], dtype=torch.float64)
    a = x.double().abs().clamp(max=fmax)[:, None]
    dist = (a - grid[None, :]).abs()
    nearest = (dist == dist.min(dim=1, keepdim=True).values).double()
    best = (nearest * (1.0 + even[None, :])).argmax(dim=1)  # among ties prefer even mantissa
    return torch.copysign(grid[best], x.double()).float()


def test_fp4_e2m1_grid_and_ties():
    # absmax 6 -> scale 1: the E2M1 grid itself survives unchanged
    grid = E2M1_GRID + [-v for v in E2M1_GRID[1:]]
    assert qdq_row(grid, "fp4_e2m1") == grid
    # midpoints go to the even mantissa; other values to the nearest; saturation at 6
    w = [6.0, 0.25, 0.26, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -5.1, 4.9, 0.1, -2.6]
    expected = [6.0, 0.0, 0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -6.0, 4.0, 0.0, -3.0]
    assert qdq_row(w, "fp4_e2m1") == expected
    # absmax 3 -> scale 0.5: the half-size grid is exactly representable
    half = [v / 2 for v in E2M1_GRID]
    assert qdq_row(half, "fp4_e2m1") == half


def test_fp6_hand_examples():
    # E2M3 (max 7.5): spacing 1/8 in [0, 2), 1/4 in [2, 4), 1/2 in [4, 7.5]
    w = [7.5, 0.0625, 0.1875, 1.9, 2.125, 2.375, 4.25, 4.75, 7.3]
    assert qdq_row(w, "fp6_e2m3") == [7.5, 0.0, 0.25, 1.875, 2.0, 2.5, 4.0, 5.0, 7.5]
    # E3M2 (max 28): subnormal spacing 1/16 below 0.25; binade [16, 28] spacing 4
    w = [28.0, 0.03125, 0.09375, 18.0, 22.0, 26.0, 27.9, 0.3]
    assert qdq_row(w, "fp6_e3m2") == [28.0, 0.0, 0.125, 16.0, 24.0, 24.0, 28.0, 0.3125]


@pytest.mark.parametrize("fmt", list(MINIFLOATS))
def test_minifloat_matches_bruteforce_reference(fmt):
    e_bits, m_bits, bias, fmax = MINIFLOATS[fmt]
    vals, _ = _minifloat_grid(e_bits, m_bits, bias, fmax)
    grid = torch.tensor(vals)
    mids = (grid[:-1] + grid[1:]) / 2  # exact ties (exactly representable in float32)
    g = torch.Generator().manual_seed(2)
    rand = torch.rand(4000, generator=g) * fmax
    tiny = torch.rand(1000, generator=g) * float(grid[1]) * 4  # subnormal region
    x = torch.cat([grid, mids, rand, tiny])
    x = torch.cat([x, -x])
    # one row with absmax == fmax -> scale 1 -> pure element rounding
    w = torch.cat([torch.tensor([fmax]), x])[None, :]
    out = quantize_dequantize(w, fmt)[0, 1:]
    ref = _reference_round(x, e_bits, m_bits, bias, fmax)
    assert torch.equal(out, ref)
    # representable values survive unchanged
    assert torch.equal(out[: len(vals)], grid)


@pytest.mark.parametrize(
    ("fmt", "dtype"), [("fp8_e4m3", torch.float8_e4m3fn), ("fp8_e5m2", torch.float8_e5m2)]
)
def test_fp8_agrees_with_torch_cast(fmt, dtype):
    fmax = MINIFLOATS[fmt][3]
    # every finite value of the format, and every midpoint between neighbours (exact ties)
    allv = torch.arange(256, dtype=torch.uint8).view(dtype).float()
    allv = allv[torch.isfinite(allv)].unique()
    assert float(allv.max()) == fmax
    mids = (allv[:-1] + allv[1:]) / 2
    g = torch.Generator().manual_seed(3)
    n = 20000
    mag = torch.exp2(torch.randint(-22, math.frexp(fmax)[1], (n,), generator=g).float())
    rand = (torch.randn(n, generator=g) * mag).clamp(-fmax, fmax)
    x = torch.cat([allv, mids, rand])
    w = torch.cat([torch.tensor([fmax]), x])[None, :]  # absmax == fmax -> scale 1
    out = quantize_dequantize(w, fmt)[0, 1:]
    assert torch.equal(out, x.to(dtype).float())
    assert torch.equal(out[: len(allv)], allv)  # representable values are fixed points


def test_fp_scaling_uses_group_absmax():
    # absmax 12 -> scale 2 for fp4: w/scale = [6, 0.7, -2.6] -> [6, 0.5, -3] -> *2
    assert qdq_row([12.0, 1.4, -5.2], "fp4_e2m1") == [12.0, 1.0, -6.0]
    # same numbers scaled by 2**-20 give the same code pattern
    s = 2.0**-20
    assert qdq_row([12.0 * s, 1.4 * s, -5.2 * s], "fp4_e2m1") == [12.0 * s, 1.0 * s, -6.0 * s]


# ---------------------------------------------------------------------------------------------
# nf4
# ---------------------------------------------------------------------------------------------

# the table qeval copied, taken here from bitsandbytes itself
NF4 = get_4bit_type("nf4", device="cpu").tolist()


def test_nf4_levels_are_fixed_points():
    levels = torch.tensor([NF4])
    assert torch.equal(quantize_dequantize(levels, "nf4"), levels)
    scaled = levels * 2.5
    assert torch.equal(quantize_dequantize(scaled, "nf4"), scaled)


def test_nf4_hand_example_and_ties():
    w = [1.0, 0.5, -0.2, 0.05, 0.03, -0.95, 0.65]
    # nearest levels; 0.65 is above the 0.5626/0.7230 midpoint (0.6428)
    exp = torch.tensor([[NF4[15], NF4[12], NF4[5], NF4[8], NF4[7], NF4[0], NF4[14]]])
    assert torch.equal(quantize_dequantize(torch.tensor([w]), "nf4"), exp)
    # exact midpoints (computed in float32) go to the lower level, like bitsandbytes
    lv = torch.tensor(NF4)
    mids = (lv[:-1] + lv[1:]) / 2
    row = torch.cat([torch.tensor([1.0]), mids])[None, :]
    assert torch.equal(quantize_dequantize(row, "nf4")[0, 1:], lv[:-1])
    above = torch.nextafter(mids, torch.tensor(2.0))
    row = torch.cat([torch.tensor([1.0]), above])[None, :]
    assert torch.equal(quantize_dequantize(row, "nf4")[0, 1:], lv[1:])


# ---------------------------------------------------------------------------------------------
# MX formats
# ---------------------------------------------------------------------------------------------


def test_mxfp4_hand_block():
    # block 0: absmax 3 -> shared_exp = floor(log2 3) - 2 = -1 -> X = 0.5
    #   w/X = [6, -6, 0.2, 0.4, 0.6, 1, 1.4, 2, 2.6, 5.8, 4.4] -> E2M1 -> * 0.5
    b0 = [3.0, -3.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.3, 2.9, 2.2]
    e0 = [3.0, -3.0, 0.0, 0.25, 0.25, 0.5, 0.75, 1.0, 1.5, 3.0, 2.0]
    # block 1: absmax 3.9 -> same X = 0.5; 3.9/0.5 = 7.8 saturates to 6 -> 3.0 (spec clamping)
    b1 = [3.9, -0.3]
    e1 = [3.0, -0.25]
    # block 2: absmax 0.1 -> floor(log2 0.1) = -4 -> shared_exp -6 -> X = 1/64; 6.4 -> 6
    b2 = [0.1, 0.02]
    e2 = [6 / 64, 1.5 / 64]  # 0.02 * 64 = 1.28 -> nearest E2M1 value is 1.5
    pad = lambda v: v + [0.0] * (32 - len(v))  # noqa: E731
    out = qdq_row(pad(b0) + pad(b1) + pad(b2), "mxfp4")
    assert out == pad(e0) + pad(e1) + pad(e2)


def test_mxint8_and_mxint4_hand_blocks():
    # mxint8, absmax 3 -> shared_exp = 1 - 0 = 1, X = 2; elements k/64
    b0 = [3.0, 0.01, 1.0, 3 / 64, -3.0]
    e0 = [3.0, 0.0, 1.0, 2 / 64 * 2, -3.0]  # 3/128*64 = 1.5 -> 2 (ties to even)
    # two's complement range [-2, 127/64]: -3.99/2*64 = -127.68 -> -128 (-2.0 -> -4.0)
    # while +3.99 -> 127.68 -> 128 -> clamped to 127 -> 127/64 * 2
    b1 = [-3.99, 3.99]
    e1 = [-4.0, 127 / 32]
    pad = lambda v: v + [0.0] * (32 - len(v))  # noqa: E731
    assert qdq_row(pad(b0) + pad(b1), "mxint8") == pad(e0) + pad(e1)
    # mxint4, absmax 1 -> X = 1; elements k/4 in [-2, 1.75]
    b0 = [1.0, 0.3, 0.375, 0.125, -0.625]
    e0 = [1.0, 0.25, 0.5, 0.0, -0.5]  # 1.5 -> 2, 0.5 -> 0, -2.5 -> -2 (ties to even)
    b1 = [1.9, -1.9]  # absmax 1.9 -> X = 1: 7.6 -> 8 -> clamp 7; -7.6 -> -8 allowed
    e1 = [1.75, -2.0]
    assert qdq_row(pad(b0) + pad(b1), "mxint4") == pad(e0) + pad(e1)


def test_mxfp8_mxfp6_match_scaled_element_rounding():
    g = torch.Generator().manual_seed(5)
    w = torch.rand(8, 64, generator=g) * 2 - 1
    w[:, 0] = 1.0  # block 0 absmax 1 -> shared_exp = 0 - 8 = -8 for E4M3
    w[:, 32] = -0.75  # block 1 absmax in [0.5, 1) -> shared_exp = -1 - 8 = -9
    w[:, 33:] *= 0.7
    out = quantize_dequantize(w, "mxfp8")
    x0 = w[:, :32] * 2.0**8  # <= 256 < 448: no saturation, torch's cast is the reference
    x1 = w[:, 32:] * 2.0**9
    assert torch.equal(out[:, :32], x0.to(torch.float8_e4m3fn).float() / 2.0**8)
    assert torch.equal(out[:, 32:], x1.to(torch.float8_e4m3fn).float() / 2.0**9)
    # top-binade saturation: absmax 1.99 -> x = 1.99 * 256 = 509.4 > 448 -> 448 -> 1.75
    assert qdq_row([1.99] + [0.0] * 31, "mxfp8")[0] == 1.75
    # mxfp6 (E3M2, emax 4): absmax 3 -> shared_exp = 1 - 4 = -3, X = 1/8
    out = qdq_row([3.0, 2.1, 0.3, -1.1] + [0.0] * 28, "mxfp6")
    # w/X = [24, 16.8, 2.4, -8.8] -> E3M2: [24, 16, 2.5, -8] -> /8
    assert out[:4] == [3.0, 2.0, 0.3125, -1.0]


@pytest.mark.parametrize("fmt", MX_FORMATS)
def test_mx_padding_and_group_size(fmt):
    g = torch.Generator().manual_seed(6)
    w = torch.randn(4, 40, generator=g)
    out = quantize_dequantize(w, fmt)
    padded = torch.nn.functional.pad(w, (0, 24))
    assert out.shape == w.shape
    assert torch.equal(out, quantize_dequantize(padded, fmt)[:, :40])
    assert torch.equal(out, quantize_dequantize(w, fmt, group_size=32))
    # blocks are independent: quantizing the 32-column slices separately gives the same
    w64 = torch.randn(4, 64, generator=g)
    whole = quantize_dequantize(w64, fmt)
    assert torch.equal(whole[:, :32], quantize_dequantize(w64[:, :32].contiguous(), fmt))
    assert torch.equal(whole[:, 32:], quantize_dequantize(w64[:, 32:].contiguous(), fmt))
    with pytest.raises(ValueError, match="block size of 32"):
        quantize_dequantize(w, fmt, group_size=16)


def test_mx_quality_ordering(gaussian):
    s = {f: sqnr_db(gaussian, quantize_dequantize(gaussian, f)) for f in MX_FORMATS}
    assert s["mxint8"] > s["mxfp8"] > s["mxfp6"] > s["mxfp4"]
    assert s["mxint8"] > 38 and 15 < s["mxfp4"] < 22


# ---------------------------------------------------------------------------------------------
# grouping, edge cases, validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["int", "fp4_e2m1", "nf4"])
def test_groupwise_beats_per_channel(gaussian, fmt):
    per_channel = sqnr_db(gaussian, quantize_dequantize(gaussian, fmt, bits=4))
    for gs in (32, 128):
        grouped = sqnr_db(gaussian, quantize_dequantize(gaussian, fmt, bits=4, group_size=gs))
        assert grouped > per_channel + 0.3, (fmt, gs, grouped, per_channel)


def test_group_size_is_per_row_segments():
    w = torch.tensor([[1.0, 0.1, 100.0, 10.0]])
    # groups of 2: [1, 0.1] has scale 1/7 and [100, 10] has scale 100/7
    out = quantize_dequantize(w, "int", bits=4, group_size=2)[0].tolist()
    assert out == pytest.approx([1.0, 1 / 7, 100.0, 100 / 7], rel=1e-6)
    # per-channel: 0.1 and 1.0 are crushed by the row absmax of 100
    out = quantize_dequantize(w, "int", bits=4, group_size=0)[0].tolist()
    assert out == pytest.approx([0.0, 0.0, 100.0, 100 / 7], rel=1e-6)
    # group_size == in_features is the same as per-channel
    assert torch.equal(
        quantize_dequantize(w, "int", bits=4, group_size=4),
        quantize_dequantize(w, "int", bits=4),
    )


ALL_CONFIGS = [(f, True) for f in FORMATS] + [("int", False)]


@pytest.mark.parametrize(("fmt", "symmetric"), ALL_CONFIGS)
def test_zero_rows_give_zeros(fmt, symmetric):
    w = torch.randn(4, 64, generator=torch.Generator().manual_seed(7))
    w[1] = 0.0
    w[3, :32] = 0.0  # a zero group / MX block inside a non-zero row
    gs = 0 if FORMATS[fmt].block_size else 32
    out = quantize_dequantize(w, fmt, bits=4, group_size=gs, symmetric=symmetric)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], torch.zeros(64))
    assert torch.equal(out[3, :32], torch.zeros(32))
    zeros = quantize_dequantize(torch.zeros(3, 64), fmt, symmetric=symmetric)
    assert torch.equal(zeros, torch.zeros(3, 64))


@pytest.mark.parametrize(("fmt", "symmetric"), ALL_CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtype_and_shape_preserved(fmt, symmetric, dtype):
    w = torch.randn(16, 96, generator=torch.Generator().manual_seed(8)).to(dtype)
    out = quantize_dequantize(w, fmt, bits=4, symmetric=symmetric)
    assert out.dtype == dtype and out.shape == w.shape
    assert torch.isfinite(out).all()
    ref = quantize_dequantize(w.float(), fmt, bits=4, symmetric=symmetric).to(dtype)
    assert torch.equal(out, ref)
    assert out.data_ptr() != w.data_ptr()


def test_float32_output_is_new_tensor_and_input_untouched():
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(9))
    before = w.clone()
    out = quantize_dequantize(w, "int", bits=3, group_size=16)
    assert torch.equal(w, before)
    assert out.dtype == torch.float32 and out.data_ptr() != w.data_ptr()


def test_invalid_arguments_raise_clear_errors():
    w = torch.randn(4, 48)
    with pytest.raises(ValueError, match="unknown quantization format 'int4'"):
        quantize_dequantize(w, "int4")
    for bad in (1, 9, 0, 16):
        with pytest.raises(ValueError, match=r"bits must be in 2\.\.8"):
            quantize_dequantize(w, "int", bits=bad)
    with pytest.raises(ValueError, match="bits must be an int"):
        quantize_dequantize(w, "int", bits=4.0)
    with pytest.raises(ValueError, match="not divisible by group_size=32"):
        quantize_dequantize(w, "int", group_size=32)
    with pytest.raises(ValueError, match="not divisible by group_size=40"):
        quantize_dequantize(w, "nf4", group_size=40)
    with pytest.raises(ValueError, match="group_size must be 0"):
        quantize_dequantize(w, "fp4_e2m1", group_size=-1)
    with pytest.raises(ValueError, match="block size of 32"):
        quantize_dequantize(w, "mxfp4", group_size=64)
    with pytest.raises(ValueError, match="only supported for the 'int' format"):
        quantize_dequantize(w, "nf4", symmetric=False)
    with pytest.raises(ValueError, match="2-D"):
        quantize_dequantize(torch.randn(48), "int")
    with pytest.raises(ValueError, match="floating-point"):
        quantize_dequantize(torch.ones(4, 48, dtype=torch.int32), "int")
    # bits is ignored (not validated) for formats whose width is fixed
    assert torch.equal(
        quantize_dequantize(w, "fp8_e4m3", bits=4), quantize_dequantize(w, "fp8_e4m3", bits=8)
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("fmt", "symmetric"), ALL_CONFIGS)
def test_cuda_matches_cpu_bit_for_bit(fmt, symmetric):
    g = torch.Generator().manual_seed(10)
    w = torch.randn(64, 256, generator=g) * torch.exp2(torch.randint(-8, 4, (64, 1), generator=g))
    gs = 0 if FORMATS[fmt].block_size else 32
    cpu = quantize_dequantize(w, fmt, bits=3, group_size=gs, symmetric=symmetric)
    gpu = quantize_dequantize(w.cuda(), fmt, bits=3, group_size=gs, symmetric=symmetric)
    assert gpu.device.type == "cuda"
    assert torch.equal(cpu, gpu.cpu())
