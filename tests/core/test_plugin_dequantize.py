"""The dequantize hook is asked for every layer whose weight is in the checkpoint, and its
answers are checked: an HQQ-style layer with no ``.weight`` gets a real weight SQNR, a layer no
hook reads is named, a wrong answer is refused with one warning naming the plugin (the run goes
on), another plugin's hook cannot change a built-in's numbers, and the results record who read
each layer type.
"""

from __future__ import annotations

import logging
import math
import re

import pytest
import torch
from conftest import fake_plugins

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
def test_a_wrong_answer_is_one_warning_naming_the_layer_and_the_plugin(
    monkeypatch, tmp_path, tiny_model_dir, fresh_registry, caplog, answer, rule
):
    """It stopped the run with a QevalError; now the plugin's answers for the type are refused
    from its first wrong one on, and the layers are missing (the first layer, q_proj, is square:
    transposed, it has the right shape and cannot be told apart)."""
    from qeval_plugins.evals.sqnr.engine import weight_energies

    packed_plugin(monkeypatch, tmp_path, answer)
    model, registry = packed_model(tiny_model_dir)
    dequantize = registry.dequantizer("packed")
    with caplog.at_level(logging.WARNING, logger="qeval"):
        energies, missing = weight_energies(model, str(tiny_model_dir), dequantize)
    first = 1 if answer == "transposed" else 0
    assert len(energies) == first and len(missing) == 14 - first
    [refused] = [r.getMessage() for r in caplog.records if "weight returned" in r.getMessage()]
    assert refused.startswith(
        "plugin 'packed' (unknown): qeval_dequantize_weight returned for layer 'model."
    )
    assert "(PackedLinear)" in refused and re.search(rule, refused), refused
    assert "its answers for PackedLinear are not used" in refused


def test_the_contract_checker_makes_a_wrong_answer_an_error(
    monkeypatch, tmp_path, tiny_model_dir, fresh_registry
):
    from qeval_plugins.evals.sqnr.engine import weight_energies

    packed_plugin(monkeypatch, tmp_path, "codes")
    model, registry = packed_model(tiny_model_dir)
    with pytest.raises(
        QevalError, match=r"^plugin 'packed' \(unknown\): .* for layer 'model\.layers\.0\."
    ):
        weight_energies(model, str(tiny_model_dir), registry.dequantizer("packed", strict=True))


HOSTILE = """
import torch
from qeval_plugins import hookimpl

@hookimpl(tryfirst=True)
def qeval_dequantize_weight(module):
    # answers for every plain linear layer, before anyone else: zeros
    if isinstance(module, torch.nn.Linear):
        return torch.zeros_like(module.weight)
    return None
"""


def rtn_model(model_dir):
    """The tiny model quantized by the built-in ``rtn:bits=4``, and the registry."""
    from transformers import AutoModelForCausalLM

    from qeval_plugins.core.plan import plan_quantization
    from qeval_plugins.core.registry import get_registry, run_quantize

    plan = plan_quantization("rtn", {"bits": 4}, set(), "cpu")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return run_quantize(plan.quantizer, plan.plugin, model, plan.options, None), get_registry()


def direct_sqnr(model, model_dir) -> dict[str, float]:
    """SQNR (dB) of each changed linear's own ``.weight`` against the checkpoint, in float64."""
    from safetensors.torch import load_file

    checkpoint = load_file(str(model_dir / "model.safetensors"))
    expected = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and f"{name}.weight" in checkpoint:
            x = checkpoint[f"{name}.weight"].double()
            noise = (x - module.weight.detach().double()).pow(2).sum()
            if noise > 0:
                expected[name] = float(10 * torch.log10(x.pow(2).sum() / noise))
    return expected


BUILT_IN_READERS = {
    "torch.nn.modules.linear.Linear": "qeval.baseline",
    "torch.nn.modules.sparse.Embedding": "qeval.baseline",
}


def test_a_foreign_hook_cannot_rewrite_a_builtins_weights(
    monkeypatch, tmp_path, tiny_model_dir, fresh_registry
):
    """A third-party hook answering zeros for nn.Linear turned rtn:bits=4 into 0.0 dB."""
    from qeval_plugins.evals.sqnr.engine import weight_energies

    fake_plugins(monkeypatch, tmp_path, {"hostile": HOSTILE})
    model, registry = rtn_model(tiny_model_dir)
    expected = direct_sqnr(model, tiny_model_dir)
    assert len(expected) == 14 and all(10 < db < 40 for db in expected.values())
    for owner in ("qeval.rtn", None):  # the run's plugin, or a model no plugin made
        dequantize = registry.dequantizer(owner)
        energies, missing = weight_energies(model, str(tiny_model_dir), dequantize)
        assert missing == [] and set(energies) == set(expected)
        for layer, (signal, noise) in energies.items():
            assert 10 * math.log10(signal / noise) == pytest.approx(expected[layer], abs=1e-9)
        assert dequantize.answered_by == BUILT_IN_READERS
    # asked first only for a model its own quantizer made
    assert registry.dequantizer("hostile")(model.lm_head).plugin == "hostile"


GARBAGE = {
    "raises": "raise ValueError('cannot read this layer')",
    "nan": "return torch.full(module.dequantize().shape, float('nan'))",
    "shape": "return torch.zeros(3, 3)",
    "text": "return 'a dense weight'",
}
READER = """
import torch
from qeval_plugins import hookimpl

@hookimpl({order})
def qeval_dequantize_weight(module):
    if type(module).__name__ != 'PackedLinear':
        return None
    {answer}
"""


@pytest.mark.parametrize("garbage", sorted(GARBAGE))
def test_a_garbage_answer_is_one_warning_and_the_next_plugin_answers(
    monkeypatch, tmp_path, tiny_model_dir, fresh_registry, caplog, garbage
):
    """For a layer type no built-in claims, the first plugin's bad answer is refused once (not
    once per layer, and not a QevalError) and the next plugin's answer is used for every layer."""
    from qeval_plugins.evals.sqnr.engine import weight_energies

    modules = {
        "packed": PACKED,  # no hook of its own
        "garbage": READER.format(order="tryfirst=True", answer=GARBAGE[garbage]),
        "rescue": READER.format(order="", answer=HOOKS["right"]),
    }
    fake_plugins(monkeypatch, tmp_path, modules)
    model, registry = packed_model(tiny_model_dir)
    dequantize = registry.dequantizer("packed")
    with caplog.at_level(logging.WARNING, logger="qeval"):
        energies, missing = weight_energies(model, str(tiny_model_dir), dequantize)
    assert missing == []
    expected = expected_sqnr(tiny_model_dir)
    assert set(energies) == set(expected)
    for layer, (signal, noise) in energies.items():
        assert 10 * math.log10(signal / noise) == pytest.approx(expected[layer], abs=1e-3)
    assert dequantize.answered_by == {
        "fakeplugin_packed.PackedLinear": "rescue",
        **BUILT_IN_READERS,
    }
    [warning] = [r.getMessage() for r in caplog.records]  # one, for 14 layers
    assert warning.startswith("plugin 'garbage' (unknown): qeval_dequantize_weight ")
    assert "its answers for PackedLinear are not used" in warning


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


def test_the_sqnr_block_records_who_read_each_layer_type(
    monkeypatch, tmp_path, tiny_model_dir, tasks_dir, fresh_registry
):
    """rtn:bits=4 with a hostile plugin installed: the built-in answer, recorded."""
    fake_plugins(monkeypatch, tmp_path, {"hostile": HOSTILE})
    weights = sqnr_task(tiny_model_dir, tasks_dir, "quantizer=rtn,bits=4")["weights"]
    assert weights["dequantized_by"] == BUILT_IN_READERS
    model, _ = rtn_model(tiny_model_dir)
    expected = direct_sqnr(model, tiny_model_dir)
    assert weights["layers"] == pytest.approx(expected, abs=1e-4)
    assert weights["mean_db"] > 10


def test_a_wrong_answer_no_longer_stops_the_run(
    monkeypatch, tmp_path, tiny_model_dir, tasks_dir, fresh_registry
):
    packed_plugin(monkeypatch, tmp_path, "codes")
    weights = sqnr_task(tiny_model_dir, tasks_dir, "quantizer=packed")["weights"]
    assert len(weights["missing_layers"]) == 14 and weights["layers"] == {}
    assert weights["dequantized_by"] == BUILT_IN_READERS  # the plain LM head and embeddings


def test_a_refusal_lasts_one_models_pass_not_the_process(tiny_model_dir, caplog):
    """A model with NaN weights had the built-in nn.Linear reader refused for every later model
    of the process (its layers then listed as missing, e.g. the next run's lm_head)."""
    from transformers import AutoModelForCausalLM

    from qeval_plugins.core.registry import get_registry
    from qeval_plugins.evals.sqnr.engine import weight_energies

    registry = get_registry()
    broken = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        for module in broken.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.fill_(float("nan"))
    with caplog.at_level(logging.WARNING, logger="qeval"):
        _, missing = weight_energies(broken, str(tiny_model_dir), registry.dequantizer())
    assert len(missing) == 15  # 14 projections and the LM head: NaN answers are refused
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    energies, missing = weight_energies(model, str(tiny_model_dir), registry.dequantizer())
    assert missing == [] and len(energies) == 14  # every projection read again, unchanged
    assert all(noise == 0 for _, noise in energies.values())
