"""The table of number formats (qeval_plugins.formats.table): names, widths, parameters."""

from __future__ import annotations

import pytest

from qeval_plugins.formats.table import FORMATS, MX_BLOCK_SIZE, FormatSpec, format_spec

MX_FORMATS = ["mxint8", "mxint4", "mxfp8", "mxfp6", "mxfp4"]
MINIFLOAT_MAX = {  # OCP maxima: E4M3FN 1.75 * 2**8, E5M2 1.75 * 2**15, E3M2 1.75 * 2**4, ...
    "fp8_e4m3": 448.0,
    "fp8_e5m2": 57344.0,
    "fp6_e3m2": 28.0,
    "fp6_e2m3": 7.5,
    "fp4_e2m1": 6.0,
}


def test_registry_names_and_element_bits():
    expected = {
        "int": None,
        "fp8_e4m3": 8,
        "fp8_e5m2": 8,
        "fp6_e3m2": 6,
        "fp6_e2m3": 6,
        "fp4_e2m1": 4,
        "nf4": 4,
        "mxint8": 8,
        "mxint4": 4,
        "mxfp8": 8,
        "mxfp6": 6,
        "mxfp4": 4,
    }
    assert set(FORMATS) == set(expected)
    for name, bits in expected.items():
        spec = FORMATS[name]
        assert isinstance(spec, FormatSpec)
        assert spec.name == name
        assert spec.element_bits == bits
        assert spec.description and "\n" not in spec.description
    for name, fmax in MINIFLOAT_MAX.items():
        assert FORMATS[name].max_value == fmax
    # emax_elem of the MX element formats (exponent of the largest normal)
    assert [FORMATS[f].emax_elem for f in MX_FORMATS] == [0, 0, 8, 4, 2]


def test_only_the_mx_formats_have_blocks():
    assert [name for name, spec in FORMATS.items() if spec.is_mx] == MX_FORMATS
    assert {FORMATS[name].block_size for name in MX_FORMATS} == {MX_BLOCK_SIZE} == {32}


def test_format_spec_names_the_known_formats():
    assert format_spec("nf4") is FORMATS["nf4"]
    with pytest.raises(ValueError, match=r"unknown quantization format 'fp9'; expected one of \["):
        format_spec("fp9")
    with pytest.raises(ValueError, match="unknown quantization format"):
        format_spec(["int"])  # unhashable


def test_the_public_names_are_the_formats_packages():
    """``from qeval_plugins import FORMATS, quantize_dequantize`` (the README's public API)."""
    from qeval_plugins import FORMATS as public_formats
    from qeval_plugins import quantize_dequantize
    from qeval_plugins.formats import rounding

    assert public_formats is FORMATS
    assert quantize_dequantize is rounding.quantize_dequantize
