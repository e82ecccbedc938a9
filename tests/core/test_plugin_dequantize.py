"""The dequantize hook is asked for every layer whose weight is in the checkpoint, and its
answers are checked: an HQQ-style layer with no ``.weight`` gets a real weight SQNR, a layer no
hook reads is named, and an answer of the wrong shape stops the run before the expensive passes.
"""

from __future__ import annotations

import logging
import math
import re

import pytest
import torch
from test_plugins import fake_plugins

from qeval_plugins import QevalError

PACKED = """
import torch
from qeval_plugins import Quantizer, hookimpl

class PackedLinear(torch.nn.Module):
    '''HQQ-style: 4-bit codes W_q with a scale and zero per row, and no .weight attribute.'''

    def __init__(self, linear):
        super().__init__()
        weight = linear.weight.detach().float()
        low = weight.min(dim=1, keepdim=True).values
        scale = (weight.max(dim=1, keepdim=True).values - low) / 15
        self.register_buffer("W_q", torch.round((weight - low) / scale).to(torch.uint8))
        self.register_buffer("scale", scale)
        self.register_buffer("zero", low)
        self.bias = linear.bias

    def dequantize(self):
        return self.W_q.float() * self.scale + self.zero

    def forward(self, x):
        return torch.nn.functional.linear(x, self.dequantize().to(x.dtype), self.bias)

class Packed(Quantizer):
    name = "packed"
    description = "HQQ-style packed 4-bit linear layers (test plugin)"

    def quantize(self, model, options, context):
        output = model.get_output_embeddings()
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear) and child is not output:
                    setattr(parent, name, PackedLinear(child))
        return model

@hookimpl
def qeval_register_quantizers(register):
    register(Packed())
"""

HOOKS = {
    "right": "return module.dequantize()",
    "transposed": "return module.dequantize().T",
    "codes": "return module.W_q",
}


def packed_plugin(monkeypatch, tmp_path, answer: str | None) -> None:
    """The ``packed`` plugin, with a dequantize hook answering ``HOOKS[answer]`` (None: no hook)."""
    source = PACKED
    if answer is not None:
        source += (
            "\n@hookimpl\ndef qeval_dequantize_weight(module):\n"
            "    if type(module).__name__ != 'PackedLinear':\n        return None\n"
            f"    {HOOKS[answer]}\n"
        )
    fake_plugins(monkeypatch, tmp_path, {"packed": source})


def packed_model(model_dir):
    """The tiny model quantized by the ``packed`` plugin, and the registry that loaded it."""
    from transformers import AutoModelForCausalLM

    from qeval_plugins.core.registry import get_registry

    registry = get_registry()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    quantizer = registry.get("packed").quantizer
    return quantizer.quantize(model, {}, None), registry


def expected_sqnr(model_dir) -> dict[str, float]:
    """SQNR (dB) of the packed 4-bit rows, per linear layer, computed here from the checkpoint."""
    from safetensors.torch import load_file

    expected = {}
    for key, weight in load_file(str(model_dir / "model.safetensors")).items():
        if not key.endswith("proj.weight"):
            continue
        low = weight.min(dim=1, keepdim=True).values
        scale = (weight.max(dim=1, keepdim=True).values - low) / 15
        dense = torch.round((weight - low) / scale) * scale + low
        noise = (weight.double() - dense.double()).pow(2).sum()
        expected[key.removesuffix(".weight")] = float(
            10 * torch.log10(weight.double().pow(2).sum() / noise)
        )
    return expected


def test_a_layer_without_weight_attribute_is_read_through_the_hook(
    monkeypatch, tmp_path, tiny_model_dir, fresh_registry
):
    from qeval_plugins.evals.sqnr.engine import weight_energies

    packed_plugin(monkeypatch, tmp_path, "right")
    model, registry = packed_model(tiny_model_dir)
    assert not hasattr(model.model.layers[0].mlp.up_proj, "weight")
    energies, missing = weight_energies(model, str(tiny_model_dir), registry.dequantize_weight)
    assert missing == []
    expected = expected_sqnr(tiny_model_dir)
    assert set(energies) == set(expected) and len(expected) == 2 * 7
    for layer, (signal, noise) in energies.items():
        assert 10 * math.log10(signal / noise) == pytest.approx(expected[layer], abs=1e-3)


def test_a_layer_no_hook_reads_is_named_with_the_hook_to_write(
    monkeypatch, tmp_path, tiny_model_dir, fresh_registry, caplog
):
    from qeval_plugins.evals.sqnr.engine import weight_energies

    packed_plugin(monkeypatch, tmp_path, None)
    model, registry = packed_model(tiny_model_dir)
    with caplog.at_level(logging.WARNING, logger="qeval"):
        energies, missing = weight_energies(model, str(tiny_model_dir), registry.dequantize_weight)
    assert energies == {}  # the LM head is plain and unchanged: left out as before
    assert len(missing) == 14 and "model.layers.0.self_attn.q_proj" in missing
    [warning] = [r.getMessage() for r in caplog.records if "weight SQNR" in r.getMessage()]
    assert "14 layer(s) of type fakeplugin_packed.PackedLinear" in warning
    assert "implement qeval_dequantize_weight for PackedLinear" in warning


@pytest.mark.parametrize(
    ("answer", "rule"),
    [
        ("transposed", r"shape \[(\d+), (\d+)\], but the checkpoint's weight has shape \[\2, \1\]"),
        ("codes", r"a torch.uint8, not a floating-point torch.Tensor"),
    ],
)
def test_a_wrong_answer_names_the_layer_and_the_plugin(
    monkeypatch, tmp_path, tiny_model_dir, fresh_registry, answer, rule
):
    from qeval_plugins.evals.sqnr.engine import weight_energies

    packed_plugin(monkeypatch, tmp_path, answer)
    model, registry = packed_model(tiny_model_dir)
    with pytest.raises(QevalError) as caught:
        weight_energies(model, str(tiny_model_dir), registry.dequantize_weight)
    message = str(caught.value)
    assert message.startswith("plugin 'packed': qeval_dequantize_weight returned for layer 'model.")
    assert "(PackedLinear)" in message and re.search(rule, message), message


def sqnr_task(model_dir, tasks_dir, model_args: str) -> dict:
    """qeval_sqnr through lm-eval on 2 texts; returns config.qeval.sqnr."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model="qeval",
        model_args=f"pretrained={model_dir},{model_args}",
        tasks=["qeval_sqnr"],
        device="cpu",
        limit=2,
        task_manager=TaskManager(
            include_path=str(tasks_dir), include_defaults=False, metadata={"max_tokens": 32}
        ),
    )
    return results["config"]["qeval"]["sqnr"]


def test_the_sqnr_block_lists_missing_layers(
    monkeypatch, tmp_path, tiny_model_dir, tasks_dir, fresh_registry
):
    packed_plugin(monkeypatch, tmp_path, None)
    weights = sqnr_task(tiny_model_dir, tasks_dir, "quantizer=packed")["weights"]
    assert len(weights["missing_layers"]) == 14 and weights["layers"] == {}
    assert weights["mean_db"] is None
    rtn = sqnr_task(tiny_model_dir, tasks_dir, "quantizer=rtn")["weights"]
    assert rtn["missing_layers"] == [] and len(rtn["layers"]) == 14


def test_a_wrong_shape_stops_the_run_before_the_expensive_passes(
    monkeypatch, tmp_path, tiny_model_dir, tasks_dir, fresh_registry
):
    from qeval_plugins.evals.sqnr import engine as sqnr

    def expensive(*args):
        raise AssertionError("an expensive pass ran before the weights were checked")

    monkeypatch.setattr(sqnr, "compute_reference", expensive)
    monkeypatch.setattr(sqnr, "compare", expensive)
    packed_plugin(monkeypatch, tmp_path, "transposed")
    with pytest.raises(QevalError, match=r"^plugin 'packed': .* for layer 'model\.layers\.0\."):
        sqnr_task(tiny_model_dir, tasks_dir, "quantizer=packed")
