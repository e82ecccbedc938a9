"""qeval_plugins.testing: check_quantizer checks what its docstring promises, on every built-in
quantizer that runs on a CPU, and catches the plugin mistakes it is there to catch."""

from __future__ import annotations

import re

import pytest
from conftest import fake_plugins
from test_plugin_dequantize import packed_plugin

from qeval_plugins import QevalError
from qeval_plugins.testing import check_quantizer

SMALL = {"calibration_samples": 4, "calibration_seqlen": 64}  # for calibrating quantizers
CPU_BUILTINS = [
    ("none", {}),
    ("bnb-int8", {}),
    ("bnb-nf4", {}),
    ("bnb-fp4", {}),
    ("bnb-nf4-dq", {}),
    ("bnb-fp4-dq", {}),
    ("rtn", {}),
    ("rtn", {"bits": 3, "group_size": 0, "symmetric": False}),
    ("rtn", {"format": "fp8_e4m3"}),
    ("rtn", {"format": "nf4", "include_lm_head": True}),
    ("rtn", {"format": "mxfp4"}),
    ("gptq-sim", SMALL),
    ("gptq-sim", {"format": "mxfp4", "calibration_samples": 4, "calibration_seqlen": 64}),
    ("gptq", SMALL),
    ("torchao-int8", {}),
    ("torchao-int4", {}),
    ("torchao-w8a8", {}),
    ("hqq", {}),
    ("quanto-int8", {}),  # calibrated only with activations=int8
    ("quanto-int4", {}),
    ("quanto-int2", {}),
    ("quanto-fp8", {"activations": "int8", **SMALL}),
    ("autoround", {"iters": 2, **SMALL}),
    ("rtn", {"act_format": "int", "act_bits": 8}),
    ("rtn", {"act_format": "mxfp4"}),
    ("rtn", {"act_format": "int", "act_granularity": "tensor", "smooth": 0.5, **SMALL}),
]
# checked on a checkpoint saved already quantized (tests/backend/test_prequantized.py), and
# needing a GPU of compute capability 8.9+ (tests/quantizers/test_torchao.py checks its refusal)
NOT_CHECKED_HERE = {"prequantized", "torchao-fp8"}


def test_every_cpu_builtin_is_checked():
    from qeval_plugins.core.plan import availability
    from qeval_plugins.core.registry import Registry

    registry = Registry().load()
    builtins = {
        entry.quantizer.name
        for entry in registry.all()
        if entry.plugin.source == "built-in" and availability(entry.quantizer) == "ok"
    }
    assert builtins - NOT_CHECKED_HERE == {name for name, _ in CPU_BUILTINS}


@pytest.mark.parametrize(("name", "options"), CPU_BUILTINS)
def test_builtin_quantizers_honour_the_contract(tiny_model_dir, name, options):
    summary = check_quantizer(name, tiny_model_dir, **options)
    assert summary["finite"] and summary["quantizer"] == name
    if name == "none":
        assert summary["max_abs_logit_change"] == 0 and summary["changed_layers"] == []
    else:
        assert summary["max_abs_logit_change"] > 0
        assert len(summary["changed_layers"]) >= 14  # 2 blocks × 7 linear layers
        assert ("lm_head" in summary["changed_layers"]) is options.get("include_lm_head", False)


BROKEN = """
from qeval_plugins import Quantizer, hookimpl

class DoesNothing(Quantizer):
    name = "does-nothing"
    description = "claims to quantize, changes nothing"

class FakeIdentity(Quantizer):
    name = "fake-identity"
    description = "claims to be the identity, changes the model"
    identity = True
    def quantize(self, model, options, context):
        model.lm_head.weight.data.mul_(1.5)
        return model

@hookimpl
def qeval_register_quantizers(register):
    register(DoesNothing())
    register(FakeIdentity())
"""


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("does-nothing", r"outputs equal the unquantized model's \(identity = True\?\)"),
        ("fake-identity", r"declares identity = True but changes logits by"),
    ],
)
def test_identity_is_checked_both_ways(
    monkeypatch, tmp_path, tiny_model_dir, fresh_registry, name, rule
):
    fake_plugins(monkeypatch, tmp_path, {"broken": BROKEN})
    with pytest.raises(AssertionError, match=rule):
        check_quantizer(name, tiny_model_dir)


def test_layers_no_hook_reads_fail_the_check(monkeypatch, tmp_path, tiny_model_dir, fresh_registry):
    packed_plugin(monkeypatch, tmp_path, None)
    with pytest.raises(AssertionError, match=r"no qeval_dequantize_weight answer for layers \["):
        check_quantizer("packed", tiny_model_dir)


def test_a_hook_answer_of_the_wrong_shape_fails_the_check(
    monkeypatch, tmp_path, tiny_model_dir, fresh_registry
):
    packed_plugin(monkeypatch, tmp_path, "transposed")
    with pytest.raises(QevalError, match=r"plugin 'packed' \(unknown\): .*shape"):
        check_quantizer("packed", tiny_model_dir)
    from qeval_plugins.core.registry import reset_registry

    (tmp_path / "right").mkdir()
    packed_plugin(monkeypatch, tmp_path / "right", "right")
    reset_registry()
    assert check_quantizer("packed", tiny_model_dir)["max_abs_logit_change"] > 0


ROUND_TRIP = """
import torch
from qeval_plugins import Quantizer, hookimpl

DROP_SCALES = {drop}

class KernelLinear(torch.nn.Module):
    '''Packed 4-bit rows (codes, scale, zero) read by the hook, and the unpacked weight a kernel
    would use in forward.'''

    def __init__(self, linear):
        super().__init__()
        weight = linear.weight.detach().float()
        low = weight.min(dim=1, keepdim=True).values
        scale = (weight.max(dim=1, keepdim=True).values - low) / 15
        codes = torch.round((weight - low) / scale)
        self.register_buffer("W_q", codes.to(torch.uint8))
        self.register_buffer("scale", scale)
        self.register_buffer("zero", low)
        self.register_buffer("unpacked", codes * scale + low)
        self.bias = linear.bias

    def dequantize(self):
        return self.W_q.float() * self.scale + self.zero

    def forward(self, x):
        return torch.nn.functional.linear(x, self.unpacked.to(x.dtype), self.bias)

def pack(model):
    output = model.get_output_embeddings()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and child is not output:
                setattr(parent, name, KernelLinear(child))
    return model

class Cached(Quantizer):
    name = "cached-packed"
    description = "packed 4-bit rows with a cache format of its own (test plugin)"
    cache_quantized = True

    def quantize(self, model, options, context):
        context.record("layers", sum(isinstance(m, KernelLinear) for m in model.modules()))
        return pack(model)

    def save_quantized(self, model, folder, options, context):
        state = model.state_dict()
        if DROP_SCALES:
            state = {{key: value for key, value in state.items() if not key.endswith(".scale")}}
        torch.save(state, folder / "packed.pt")

    def load_quantized(self, folder, options, context):
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(context.checkpoint)
        model = pack(AutoModelForCausalLM.from_config(config, dtype=torch.float32))
        model.load_state_dict(torch.load(folder / "packed.pt"), strict=False)
        return model

@hookimpl
def qeval_register_quantizers(register):
    register(Cached())

@hookimpl
def qeval_dequantize_weight(module):
    return module.dequantize() if type(module).__name__ == "KernelLinear" else None
"""


def test_a_cache_round_trip_that_drops_what_the_hook_reads_fails_the_check(
    monkeypatch, tmp_path, tiny_model_dir, fresh_registry
):
    """The broken save keeps the forward's unpacked weight (same outputs) but not the scales the
    dequantize hook reads: the check compares each layer's weight SQNR and names the layers."""
    fake_plugins(monkeypatch, tmp_path, {"roundtrip": ROUND_TRIP.format(drop=True)})
    with pytest.raises(AssertionError) as caught:
        check_quantizer("cached-packed", tiny_model_dir)
    message = str(caught.value)
    assert "the dequantize hook reads other weights after save_quantized/load_quantized" in message
    assert "in 14 layers: model.layers.0.mlp.down_proj (" in message  # 2 blocks × 7 linears
    was, now = re.search(r"down_proj \((-?[\d.]+) dB -> (-?[\d.]+) dB\)", message).groups()
    assert float(was) > 15 and abs(float(was) - float(now)) > 1


def test_a_faithful_cache_round_trip_passes_the_check(
    monkeypatch, tmp_path, tiny_model_dir, fresh_registry
):
    fake_plugins(monkeypatch, tmp_path, {"roundtrip": ROUND_TRIP.format(drop=False)})
    summary = check_quantizer("cached-packed", tiny_model_dir)
    assert len(summary["changed_layers"]) == 14
    assert summary["record"] == {"layers": 0}  # recorded before packing: no KernelLinear yet
