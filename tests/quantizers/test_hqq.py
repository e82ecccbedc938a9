"""The ``hqq`` quantizer: HQQLinear layers on CPU, the dequantize hook, its error vs RTN."""

from __future__ import annotations

import pytest
import torch
from conftest import hide_module

from qeval_plugins import QevalError
from qeval_plugins.core.plan import plan_quantization
from qeval_plugins.core.registry import get_registry
from qeval_plugins.formats.rounding import quantize_dequantize

pytest.importorskip("hqq", reason="hqq is not installed: pip install 'qeval[hqq]'")


def sqnr_db(reference: torch.Tensor, quantized: torch.Tensor) -> float:
    """10·log10(Σx² / Σ(x − x̂)²) in float64."""
    reference, quantized = reference.detach().double(), quantized.detach().double()
    return float(10 * torch.log10(reference.pow(2).sum() / (reference - quantized).pow(2).sum()))


def gaussian(rows: int = 256, columns: int = 512) -> torch.Tensor:
    return torch.randn(rows, columns, generator=torch.Generator().manual_seed(0))


def hqq_layer(weight: torch.Tensor, dtype=torch.float32, **options):
    """``weight`` as a one-layer model through the ``hqq`` quantizer; returns its HQQLinear."""
    plan = plan_quantization("hqq", options, set(), "cpu")
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=dtype)
    linear.weight.data = weight.to(dtype)
    model = plan.quantizer.quantize(
        torch.nn.Sequential(linear), plan.options, plan.context("cpu", "auto")
    )
    return model[0]


def dense(layer) -> torch.Tensor:
    answer = get_registry().dequantize_weight(layer)
    assert answer is not None and answer.plugin == "qeval.hqq"
    return answer.tensor


@pytest.mark.parametrize("options", [{}, {"nbits": 3, "axis": 0}])
def test_hqq_passes_the_contract_check(tiny_model_dir, options):
    from qeval_plugins.testing import check_quantizer

    summary = check_quantizer("hqq", tiny_model_dir, **options)
    assert summary["finite"] and summary["max_abs_logit_change"] > 0


def test_decoder_linears_become_hqq_layers_and_the_lm_head_stays(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    plan = plan_quantization("hqq", {}, set(), "cpu")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = plan.quantizer.quantize(model, plan.options, plan.context("cpu", "float32"))
    kinds = {type(module).__name__ for name, module in model.named_modules() if "proj" in name}
    assert kinds == {"HQQLinear"}
    assert isinstance(model.lm_head, torch.nn.Linear)


# measured on this weight (N(0,1), 256×512, seed 0), axis=1, group 64, float32: HQQ − RTN asym
# = +0.49 dB (8 bits), +0.40 (4), +0.56 (3), +0.48 (2)
@pytest.mark.parametrize("nbits", [8, 4, 3, 2])
def test_hqq_beats_rtn_asymmetric_at_the_same_bits_and_group(nbits):
    """HQQ optimises the zero point of the same min/max affine grid RTN rounds to."""
    weight = gaussian()
    hqq = sqnr_db(weight, dense(hqq_layer(weight, nbits=nbits)))
    rtn = sqnr_db(
        weight, quantize_dequantize(weight, "int", bits=nbits, group_size=64, symmetric=False)
    )
    assert 0.2 < hqq - rtn < 1.0, (hqq, rtn)


def test_hook_matches_an_independent_decoding_of_the_packed_codes():
    """4 bits, axis 1: W_q packs rows r and r + R/2 of the [N·K/64, 64] code matrix in the high
    and low nibble of one byte; W = (code − zero) · scale per row of that matrix."""
    weight = gaussian()
    layer = hqq_layer(weight)
    packed = layer.W_q.data
    assert packed.dtype == torch.uint8 and packed.shape == (256 * 512 // 64 // 2, 64)
    codes = torch.cat([packed >> 4, packed & 0xF]).float()  # [N·K/64, 64]
    scale, zero = layer.meta["scale"].float(), layer.meta["zero"].float()  # [N·K/64, 1]
    expected = ((codes - zero) * scale).reshape(256, 512)
    assert torch.equal(dense(layer), expected)
    # the optimised zero leaves the integer grid RTN's zero point is on (only its start is rounded)
    assert (zero - zero.round()).abs().max() > 0.1


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-6), (torch.bfloat16, 0.0)])
@pytest.mark.parametrize("axis", [0, 1])
def test_hook_equals_the_layers_forward_on_the_identity(dtype, tolerance, axis):
    weight = gaussian(128, 256)
    layer = hqq_layer(weight, dtype=dtype, axis=axis)
    with torch.no_grad():
        computed = layer(torch.eye(256, dtype=dtype)).t()
    hook = dense(layer)
    assert hook.dtype == dtype and hook.shape == (128, 256)
    assert torch.allclose(hook.float(), computed.float(), rtol=0, atol=tolerance)


def test_group_size_must_be_a_multiple_of_8_and_divide_the_layer():
    with pytest.raises(QevalError, match="multiple of 8"):
        plan_quantization("hqq", {"group_size": 60}, set(), "cpu")
    with pytest.raises(QevalError, match=r"layer '0' has in_features=96.*group_size=64"):
        hqq_layer(gaussian(64, 96))


def test_scheme_and_effective_bits():
    for options, bits in [
        ({}, 4.5),
        ({"nbits": 3, "group_size": 128}, 3.2 + 0.25),
        ({"nbits": 8}, 8.5),
    ]:
        plan = plan_quantization("hqq", options, set(), "cpu")
        assert plan.quantizer.effective_bits(plan.options) == pytest.approx(bits)
    plan = plan_quantization("hqq", {}, set(), "cpu")
    scheme = plan.quantizer.scheme(plan.options)
    assert scheme.weights == "int4 g64 asym axis1 hqq" and scheme.activations == "unquantized"


def test_qeval_lm_runs_hqq_and_records_its_scheme():
    from qeval_plugins.backend.lm import QevalLM

    lm = QevalLM(pretrained="qeval-tiny", quantizer="hqq", device="cpu")
    with torch.no_grad():
        logits = lm.model(torch.arange(1, 17).unsqueeze(0)).logits
    assert torch.isfinite(logits).all()
    assert type(lm.model.model.layers[0].mlp.up_proj).__name__ == "HQQLinear"
    block = lm.get_model_info()["qeval"]
    assert block["scheme"]["weights"] == "int4 g64 asym axis1 hqq"


def test_listing_names_the_extra_when_hqq_is_missing(monkeypatch, capsys):
    from qeval_plugins.cli.main import main

    hide_module(monkeypatch, "hqq")
    assert main(["quantizers"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "hqq" in text and "missing hqq → pip install 'qeval[hqq]'" in text
