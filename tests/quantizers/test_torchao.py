"""The torchao quantizers: contract, weights read through the hook, W8A8 and the fp8 refusals."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("torchao")

import torch

from qeval_plugins import LoadContext, QevalError
from qeval_plugins.core.options import resolve_options
from qeval_plugins.core.plan import availability, check_spec
from qeval_plugins.core.registry import get_registry
from qeval_plugins.formats.rounding import quantize_dequantize
from qeval_plugins.quantizers import torchao as tq
from qeval_plugins.testing import check_quantizer

CPU_QUANTIZERS = ("torchao-int8", "torchao-int4", "torchao-w8a8")
OPTIONS = {"include_lm_head": False}


def gaussian_linear(seed: int = 0, out_features: int = 256, in_features: int = 512):
    torch.manual_seed(seed)
    layer = torch.nn.Linear(in_features, out_features, bias=False)
    with torch.no_grad():
        layer.weight.normal_()
    return layer


class TwoLayers(torch.nn.Module):
    """A decoder projection and an LM head, the shape ``quantize_``'s filter sees in a model."""

    def __init__(self):
        super().__init__()
        self.proj = gaussian_linear()
        self.lm_head = gaussian_linear(1, 64, 256)

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, x):
        return self.lm_head(self.proj(x))


def quantized(name: str, **options):
    """(model, original proj weight) after the named quantizer, float32 on CPU."""
    model = TwoLayers()
    original = model.proj.weight.detach().clone()
    quantizer = get_registry().get(name).quantizer
    resolved = resolve_options(name, quantizer.options, options)  # the defaults filled in
    quantizer.quantize(model, resolved, LoadContext(dtype="float32"))
    return model, original


def sqnr_db(reference, approximation) -> float:
    """``10 · log10(Σw² / Σ(w − ŵ)²)``."""
    noise = (reference - approximation).double().pow(2).sum()
    return float(10 * torch.log10(reference.double().pow(2).sum() / noise))


def hook_weight(module):
    """The dense weight through the registry (so the built-in plain-Linear answer must lose)."""
    answer = get_registry().dequantize_weight(module)
    assert answer is not None and answer.plugin == "qeval.torchao"
    return answer.tensor


@pytest.mark.parametrize("name", CPU_QUANTIZERS)
def test_check_quantizer_passes(name, tiny_model_dir):
    summary = check_quantizer(name, tiny_model_dir)
    assert summary["max_abs_logit_change"] > 0
    assert summary["changed_layers"] and not any("lm_head" in n for n in summary["changed_layers"])


@pytest.mark.parametrize(
    ("name", "options", "rtn", "gap"),
    [
        ("torchao-int8", {}, {"bits": 8, "group_size": 0}, 0.1),
        ("torchao-int4", {}, {"bits": 4, "group_size": 128, "symmetric": False}, 0.05),
    ],
)
def test_weight_sqnr_matches_rtn_of_the_same_format(name, options, rtn, gap):
    """256×512 N(0,1) weights, float32. Measured: int8 per-channel 42.54 dB vs rtn 42.52 dB;
    int4 g128 asymmetric (torchao-int4's default) 19.91 dB vs rtn 19.91 dB."""
    model, original = quantized(name, **options)
    ours = sqnr_db(original, hook_weight(model.proj))
    reference = sqnr_db(original, quantize_dequantize(original, "int", **rtn))
    assert abs(ours - reference) < gap, (ours, reference)


def test_symmetric_int4_uses_torchaos_finer_grid():
    """torchao's symmetric int4 scale is ``absmax / 7.5`` with codes clamped to [−8, 7] (the
    +absmax end clips to 7); ``rtn``'s is ``absmax / 7``. The finer grid wins on Gaussian
    weights: 19.06 dB vs 18.57 dB (g128, 256×512). The hook equals that rule computed here, with
    torchao's ``w · (1 / scale)`` (dividing instead moves 93 of these 131,072 codes one step)."""
    model, original = quantized("torchao-int4", symmetric=True)
    dense = hook_weight(model.proj)
    groups = original.reshape(256, -1, 128)
    scale = groups.abs().amax(dim=-1, keepdim=True) / 7.5
    expected = (torch.round(groups * (1.0 / scale)).clamp(-8, 7) * scale).reshape(256, 512)
    torch.testing.assert_close(dense, expected, rtol=0, atol=1e-6)
    ours = sqnr_db(original, dense)
    rtn = sqnr_db(original, quantize_dequantize(original, "int", bits=4, group_size=128))
    assert 0.3 < ours - rtn < 0.7, (ours, rtn)


@pytest.mark.parametrize("name", CPU_QUANTIZERS)
def test_hook_equals_torchaos_codes_and_scales(name):
    """The dense weight is ``scale · (code − zero point)`` from the tensor's own fields."""
    model, _ = quantized(name)
    weight = model.proj.weight
    codes = weight.qdata.float()
    zero = weight.zero_point.float() if weight.zero_point is not None else 0.0
    group = weight.block_size[-1]
    scale = weight.scale.float().reshape(256, -1, 1)
    zero = zero.reshape(256, -1, 1) if torch.is_tensor(zero) else zero
    expected = ((codes.reshape(256, -1, group) - zero) * scale).reshape(256, 512)
    torch.testing.assert_close(hook_weight(model.proj), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ("torchao-int8", "torchao-int4"))
def test_hook_equals_the_layers_forward_on_the_identity(name):
    """Weight-only layers compute ``x @ Ŵᵀ``: with x = I the output is Ŵᵀ, exactly (float32)."""
    model, _ = quantized(name)
    with torch.no_grad():
        computed = model.proj(torch.eye(512)).t()
    torch.testing.assert_close(hook_weight(model.proj), computed, rtol=0, atol=1e-6)


def test_w8a8_output_error_exceeds_int8_weight_only():
    """Same int8 weights; W8A8 also rounds the inputs to int8 per token. On 64 N(0,1) inputs
    the output SQNR falls from about 42.5 dB (weights only) to about 39.5 dB."""
    weight_only, original = quantized("torchao-int8")
    w8a8, _ = quantized("torchao-w8a8")
    torch.testing.assert_close(hook_weight(weight_only.proj), hook_weight(w8a8.proj))
    torch.manual_seed(2)
    x = torch.randn(64, 512)
    exact = x @ original.t()
    with torch.no_grad():
        only = sqnr_db(exact, weight_only.proj(x))
        both = sqnr_db(exact, w8a8.proj(x))
    assert only - both > 1.5, (only, both)


def test_lm_head_is_kept_unless_asked():
    kept, _ = quantized("torchao-int8")
    assert type(kept.lm_head.weight) is torch.nn.Parameter
    assert tq.qeval_dequantize_weight(module=kept.lm_head) is None
    included, _ = quantized("torchao-int8", include_lm_head=True)
    assert type(included.lm_head.weight).__name__ == "Int8Tensor"
    assert hook_weight(included.lm_head).shape == (64, 256)


def test_hook_ignores_other_layers():
    assert tq.qeval_dequantize_weight(module=torch.nn.Linear(4, 4)) is None
    assert tq.qeval_dequantize_weight(module=torch.nn.LayerNorm(4)) is None


def test_schemes_and_effective_bits():
    registry = get_registry()
    int4 = registry.get("torchao-int4").quantizer
    options = {"group_size": 64, "symmetric": False, **OPTIONS}
    assert (
        int4.scheme(options).describe()
        == "W int4 g64 asym · A unquantized · kept lm_head, embeddings"
    )
    assert int4.effective_bits(options) == 4 + 24 / 64
    w8a8 = registry.get("torchao-w8a8").quantizer
    assert w8a8.scheme(OPTIONS).activations == "int8 per-token dynamic"
    assert registry.get("torchao-int8").quantizer.effective_bits(OPTIONS) == 8.0


def test_float64_is_refused_in_one_line():
    quantizer = get_registry().get("torchao-int8").quantizer
    with pytest.raises(QevalError) as error:
        quantizer.load_kwargs(OPTIONS, LoadContext(dtype="float64"))
    assert "not float64" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
def test_fp8_needs_cuda():
    quantizer = get_registry().get("torchao-fp8").quantizer
    assert availability(quantizer) == "needs CUDA sm89+"
    assert "CUDA sm89+" in quantizer.description
    with pytest.raises(QevalError) as error:
        check_spec("torchao-fp8")
    message = str(error.value)
    assert "needs a CUDA GPU" in message and "\n" not in message


def test_fp8_refuses_a_gpu_below_sm89(monkeypatch):
    """An A100 (8.0) is refused before loading, naming the capability it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    quantizer = get_registry().get("torchao-fp8").quantizer
    with pytest.raises(QevalError) as error:
        quantizer.load_kwargs(OPTIONS, LoadContext(device="cuda", dtype="bfloat16"))
    assert "8.9 or newer" in str(error.value) and "has 8.0" in str(error.value)
    with pytest.raises(QevalError, match="needs a bfloat16 model"):
        quantizer.load_kwargs(OPTIONS, LoadContext(device="cuda", dtype="float32"))


def test_registering_imports_neither_torch_nor_torchao():
    code = (
        "import sys; from qeval_plugins.core.registry import get_registry; r = get_registry(); "
        "assert r.get('torchao-int4'); print(sorted({'torch', 'torchao'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_qeval_lm_runs_torchao_int4():
    from qeval_plugins.backend.lm import QevalLM

    lm = QevalLM(pretrained="qeval-tiny", quantizer="torchao-int4", device="cpu")
    weights = lm.model.model.layers[0].mlp.down_proj.weight
    assert type(weights).__name__ == "IntxUnpackedToInt8Tensor"
    with torch.no_grad():
        logits = lm.model(torch.arange(1, 17).unsqueeze(0)).logits
    assert torch.isfinite(logits).all()
    scheme = lm.get_model_info()["qeval"]["scheme"]
    assert scheme == {
        "weights": "int4 g128 asym",
        "activations": "unquantized",
        "kept": ["lm_head", "embeddings"],
    }
