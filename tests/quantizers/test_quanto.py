"""The ``quanto-*`` quantizers: optimum-quanto QLinear layers on CPU, the hook, int8 activations."""

from __future__ import annotations

import pytest
import torch
from conftest import hide_module

from qeval_plugins.core.plan import plan_quantization
from qeval_plugins.core.registry import get_registry
from qeval_plugins.formats.rounding import quantize_dequantize

pytest.importorskip("optimum.quanto", reason="optimum-quanto is not installed")

NAMES = ("quanto-int8", "quanto-int4", "quanto-int2", "quanto-fp8")
QUICK_CALIBRATION = {"calibration_samples": 4, "calibration_seqlen": 32}


def sqnr_db(reference: torch.Tensor, quantized: torch.Tensor) -> float:
    """10·log10(Σx² / Σ(x − x̂)²) in float64."""
    reference, quantized = reference.detach().double(), quantized.detach().double()
    return float(10 * torch.log10(reference.pow(2).sum() / (reference - quantized).pow(2).sum()))


def gaussian(rows: int = 256, columns: int = 512) -> torch.Tensor:
    return torch.randn(rows, columns, generator=torch.Generator().manual_seed(0))


def quanto_layer(name: str, weight: torch.Tensor, dtype=torch.float32):
    """``weight`` as a one-layer model through quantizer ``name``; returns its QLinear."""
    plan = plan_quantization(name, {}, set(), "cpu")
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=dtype)
    linear.weight.data = weight.to(dtype)
    context = plan.context("cpu", "auto")
    return plan.quantizer.quantize(torch.nn.Sequential(linear), plan.options, context)[0]


def dense(layer) -> torch.Tensor:
    answer = get_registry().dequantize_weight(layer)
    assert answer is not None and answer.plugin == "qeval.quanto"
    return answer.tensor


@pytest.mark.parametrize("name", NAMES)
def test_quanto_quantizers_pass_the_contract_check(tiny_model_dir, name):
    from qeval_plugins.testing import check_quantizer

    summary = check_quantizer(name, tiny_model_dir)  # weights only: no calibration
    assert summary["finite"] and summary["max_abs_logit_change"] > 0


def test_int8_activations_are_calibrated_and_cost_accuracy(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qeval_plugins.core.calibration import build_calibration
    from qeval_plugins.core.quantizer import LoadContext
    from qeval_plugins.testing import check_quantizer

    weights_only = check_quantizer("quanto-int8", tiny_model_dir)
    w8a8 = check_quantizer("quanto-int8", tiny_model_dir, activations="int8", **QUICK_CALIBRATION)
    # measured: 0.10 (W8) vs 0.47 (W8A8) on the tiny model
    assert w8a8["max_abs_logit_change"] > 2 * weights_only["max_abs_logit_change"]
    plan = plan_quantization(
        "quanto-int8", {"activations": "int8", **QUICK_CALIBRATION}, set(), "cpu"
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    context = LoadContext(calibration=build_calibration(tokenizer, dict(plan.options)))
    model = plan.quantizer.quantize(model, plan.options, context)
    scales = [float(m.input_scale) for n, m in model.named_modules() if n.endswith("up_proj")]
    assert scales and all(scale != 1.0 for scale in scales)  # set by the calibration pass
    scheme = plan.quantizer.scheme(plan.options)
    assert scheme.activations.startswith("int8 per-tensor static")


# measured on this weight (N(0,1), 256×512, seed 0), float32, quanto vs rtn:
# int8 42.55 vs 42.55 dB (rtn int8 per-channel sym), fp8 31.59 vs 31.59 (fp8_e4m3 per-channel),
# int4 20.01 vs 19.93 (int4 g128 asym), int2 5.99 vs 5.94 (int2 g128 asym): quanto's float shift
# (rtn rounds the zero point to an integer) gives int4/int2 their ~0.07 dB.
@pytest.mark.parametrize(
    ("name", "fmt", "bits", "group", "symmetric", "within"),
    [
        ("quanto-int8", "int", 8, 0, True, 0.01),
        ("quanto-fp8", "fp8_e4m3", 8, 0, True, 0.01),
        ("quanto-int4", "int", 4, 128, False, 0.5),
        ("quanto-int2", "int", 2, 128, False, 0.5),
    ],
)
def test_weight_sqnr_matches_rtn_of_the_same_format(name, fmt, bits, group, symmetric, within):
    weight = gaussian()
    quanto = sqnr_db(weight, dense(quanto_layer(name, weight)))
    rtn = quantize_dequantize(weight, fmt, bits=bits, group_size=group, symmetric=symmetric)
    assert abs(quanto - sqnr_db(weight, rtn)) < within, (quanto, sqnr_db(weight, rtn))


@pytest.mark.parametrize("name", NAMES)
def test_hook_equals_the_layers_forward_on_the_identity(name):
    layer = quanto_layer(name, gaussian(128, 256))
    with torch.no_grad():
        computed = layer(torch.eye(256)).t()
    hook = dense(layer)
    assert hook.shape == (128, 256)
    assert torch.allclose(hook, computed, rtol=0, atol=1e-6)


def test_hook_in_bfloat16_int4_is_within_rounding_of_the_cpu_kernel():
    """bfloat16 int4 on CPU runs quanto's tinygemm kernel, which folds the shift into a bfloat16
    zero: measured 46.8 dB between ``dequantize()`` and the kernel's effective weight (max
    difference 2^-6 on N(0,1) weights), so the weight SQNR read through the hook moves < 0.01 dB."""
    weight = gaussian(128, 256)
    layer = quanto_layer("quanto-int4", weight, torch.bfloat16)
    assert type(layer.weight).__name__ == "TinyGemmWeightQBitsTensor"
    with torch.no_grad():
        computed = layer(torch.eye(256, dtype=torch.bfloat16)).t()
    hook = dense(layer)
    assert hook.dtype == torch.bfloat16 and sqnr_db(computed, hook) > 40
    assert abs(sqnr_db(weight, hook) - sqnr_db(weight, computed)) < 0.05


def test_schemes_and_effective_bits():
    expected = {
        "quanto-int8": ("int8 per-channel", 8.0),
        "quanto-fp8": ("fp8_e4m3 per-channel", 8.0),
        "quanto-int4": ("int4 g128 asym", 4.25),
        "quanto-int2": ("int2 g128 asym", 2.25),
    }
    for name, (weights, bits) in expected.items():
        plan = plan_quantization(name, {}, set(), "cpu")
        scheme = plan.quantizer.scheme(plan.options)
        assert (scheme.weights, scheme.activations) == (weights, "unquantized")
        assert plan.quantizer.effective_bits(plan.options) == bits


def test_qeval_lm_runs_quanto_and_records_its_scheme():
    from qeval_plugins.backend.lm import QevalLM

    lm = QevalLM(pretrained="qeval-tiny", quantizer="quanto-int4", device="cpu")
    with torch.no_grad():
        logits = lm.model(torch.arange(1, 17).unsqueeze(0)).logits
    assert torch.isfinite(logits).all()
    assert type(lm.model.model.layers[0].mlp.up_proj).__name__ == "QLinear"
    assert type(lm.model.lm_head).__name__ == "Linear"
    block = lm.get_model_info()["qeval"]
    assert block["scheme"]["weights"] == "int4 g128 asym"
    # measured on the live modules (quanto's tensors cannot be copied): packed, not float32
    assert block["param_bytes_after"] < 0.6 * block["param_bytes_before"]


def test_listing_names_the_extra_when_quanto_is_missing(monkeypatch, capsys):
    from qeval_plugins.cli.main import main

    hide_module(monkeypatch, "optimum.quanto")
    assert main(["quantizers"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in NAMES:
        assert name in text
    assert "missing optimum.quanto → pip install 'qeval[quanto]'" in text
