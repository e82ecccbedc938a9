"""Each quantizer spec's round-to-nearest twin, and the specs that have none."""

from __future__ import annotations

import pytest

from qeval_plugins.core.errors import QevalError
from qeval_plugins.predict.rtn_twin import RtnTwin, rtn_twin, twin_of_spec


@pytest.mark.parametrize(
    ("spec", "twin"),
    [
        ("rtn", RtnTwin("int", 4, 128, True)),
        ("rtn:bits=3:group_size=0:symmetric=false", RtnTwin("int", 3, 0, False)),
        ("rtn:format=mxfp4", RtnTwin("mxfp4", 4, 32, True)),
        ("gptq-sim:format=fp8_e4m3:group_size=64", RtnTwin("fp8_e4m3", 8, 64, True)),
        ("bnb-nf4", RtnTwin("nf4", 4, 64, True, flat_blocks=True)),
        ("nf4-dq", RtnTwin("nf4", 4, 64, True, flat_blocks=True)),
        ("bnb-fp4", RtnTwin("fp4_e2m1", 4, 64, True, flat_blocks=True)),
        ("bnb-int8", RtnTwin("int", 8, 0, True)),
        ("gptq:bits=3:group_size=32:sym=false", RtnTwin("int", 3, 32, False)),
        ("hqq:nbits=2", RtnTwin("int", 2, 64, False)),
        ("autoround:bits=8", RtnTwin("int", 8, 128, True)),
        ("quanto-int4", RtnTwin("int", 4, 128, False)),
        ("torchao-int4:group_size=64", RtnTwin("int", 4, 64, False)),
        ("torchao-fp8", RtnTwin("fp8_e4m3", 8, 0, True)),
    ],
)
def test_twin_of_each_family(spec, twin):
    assert twin_of_spec(spec) == twin


def test_twin_labels_and_specs():
    assert RtnTwin("int", 3, 0, False).label == "int3 per-channel asym"
    assert RtnTwin("nf4", 4, 64, True).label == "nf4 g64"
    assert RtnTwin("nf4", 4, 64, True, flat_blocks=True).label == "nf4 b64"
    assert RtnTwin("nf4", 4, 64, True, True).spec.endswith("group_size=64:symmetric=true@flat")
    # the element width of a fixed-width format is written as bits, whatever was passed
    assert RtnTwin("nf4", 7, 64, True).spec == "rtn:bits=4:format=nf4:group_size=64:symmetric=true"


def test_the_baseline_and_unknown_quantizers_are_refused_by_spec():
    with pytest.raises(QevalError, match="'none' is the unquantized baseline"):
        rtn_twin("none", {}, "none")
    with pytest.raises(QevalError, match="spec 'prequantized': quantizer 'prequantized' has no"):
        rtn_twin("prequantized", {}, "prequantized")
    with pytest.raises(QevalError, match="1-bit integers have no RTN twin"):
        twin_of_spec("hqq:nbits=1")
    with pytest.raises(QevalError, match="unknown quantizer 'nosuch'"):
        twin_of_spec("nosuch:bits=3")


def test_the_bnb_nf4_twin_is_bitsandbytes_own_rounding_also_where_a_block_spans_rows():
    """A 32-wide layer: bitsandbytes' blocks of 64 run over the flattened weight (two rows
    each), so the twin's SQNR equals that of bitsandbytes' own quantize/dequantize."""
    import torch
    from bitsandbytes import functional

    from qeval_plugins.predict.features import twin_layer_energies

    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 96, bias=False)
    weight = layer.weight.data
    packed, state = functional.quantize_4bit(weight, blocksize=64, quant_type="nf4")
    noise = (weight - functional.dequantize_4bit(packed, state)).double().pow(2).sum()
    ((signal, twin_noise),) = twin_layer_energies([("x", layer)], twin_of_spec("bnb-nf4")).values()
    assert signal == pytest.approx(float(weight.double().pow(2).sum()))
    assert twin_noise == pytest.approx(float(noise), rel=1e-6)


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("rtn:bits=4:act_format=int", "act_format=int (activation quantization)"),
        ("rtn:bits=2:skip=mlp", "skip=mlp (layers kept unquantized)"),
        ("rtn:bits=2:include_lm_head=true", "include_lm_head=True (the output projection"),
        ("rtn:bits=8:smooth=0.5:act_format=int", "smooth=0.5 (SmoothQuant)"),
        ("torchao-w8a8", "torchao-w8a8 (activation quantization)"),
    ],
)
def test_a_spec_that_changes_more_than_the_weights_has_no_twin(spec, named):
    """Its features would be those of another spec (the weights' twin alone)."""
    from qeval_plugins.predict.rtn_twin import NotModelled

    with pytest.raises(NotModelled, match="describe the linear layers' weights only") as caught:
        twin_of_spec(spec)
    assert named in str(caught.value)
