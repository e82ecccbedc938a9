"""``skip=``: the modules it names stay unquantized (bit for bit), every other one is quantized,
in rtn, gptq-sim and the library quantizers; patterns that are malformed or match nothing are
one error line."""

from __future__ import annotations

import copy

import pytest
import torch

from qeval_plugins import LoadContext, QevalError
from qeval_plugins.backend.checkpoints import EMBEDDED_MODELS
from qeval_plugins.core.calibration import build_calibration
from qeval_plugins.core.plan import check_spec
from qeval_plugins.core.registry import run_load_kwargs, run_quantize
from qeval_plugins.quantizers.skip import name_matches, skip_patterns, skipped_names

LINEARS = [
    f"model.layers.{block}.{part}"
    for block in range(4)
    for part in (
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    )
]


@pytest.mark.parametrize(
    "name, pattern, expected",
    [
        ("model.layers.3.mlp.down_proj", "model.layers.3.mlp.down_proj", True),  # whole name
        ("model.layers.3.mlp.down_proj", "layers.3.mlp.down_proj", True),  # dotted tail
        ("model.layers.3.mlp.down_proj", "down_proj", True),
        ("model.layers.3.mlp.down_proj", "layers.3", True),  # a parent skips its children
        ("model.layers.3.mlp.down_proj", "mlp", True),
        ("model.layers.13.mlp.down_proj", "layers.3", False),  # never part of a segment
        ("model.layers.3.mlp.gate_proj", "mlp.gate", False),
        ("model.layers.3.mlp.down_proj", "layers.[0-3].mlp.*", True),  # globs
        ("model.layers.5.mlp.down_proj", "layers.[0-3].mlp.*", False),
        ("model.layers.3.mlp.down_proj", "Down_proj", False),  # case-sensitive
    ],
)
def test_name_matches_whole_segments_tails_and_parents(name, pattern, expected):
    assert name_matches(name, pattern) is expected


def test_skipped_names_unions_the_patterns_and_none_skips_nothing():
    found = skipped_names(LINEARS, {"skip": "layers.0+layers.3.mlp.down_proj"}, "rtn")
    assert found == {n for n in LINEARS if ".layers.0." in n} | {"model.layers.3.mlp.down_proj"}
    assert skipped_names(LINEARS, {"skip": ""}, "rtn") == set()
    assert skipped_names(LINEARS, {"skip": "none"}, "rtn") == set()  # lm-eval's None


@pytest.mark.parametrize("value", ["a++b", "+a", "a+", "a b", "a\tb", "a\x1bb"])
def test_malformed_skip_is_one_line_before_loading(value):
    with pytest.raises(QevalError) as caught:
        skip_patterns({"skip": value}, "rtn")
    message = str(caught.value)
    assert message.startswith("rtn: bad skip pattern") and "\n" not in message


def test_a_pattern_that_matches_no_module_is_one_line_naming_it():
    with pytest.raises(QevalError) as caught:
        skipped_names(LINEARS, {"skip": "layers.0+layers.9"}, "rtn")
    message = str(caught.value)
    assert "'layers.9' matches none of the 28 modules" in message and "\n" not in message


def _quantized(base, spec, context=None):
    plan = check_spec(spec, "cpu")
    context = context or LoadContext(device="cpu", dtype="float32")
    return run_quantize(plan.quantizer, plan.plugin, copy.deepcopy(base), plan.options, context)


def _unchanged(base, model) -> set[str]:
    return {
        name
        for name, module in base.named_modules()
        if isinstance(module, torch.nn.Linear)
        and type(model.get_submodule(name)) is torch.nn.Linear
        and type(model.get_submodule(name).weight) is torch.nn.Parameter  # not torchao's
        and torch.equal(model.get_submodule(name).weight, module.weight)
    }


def test_rtn_skip_keeps_exactly_the_matched_weights_bitwise(base):
    model = _quantized(base, "rtn:bits=4:skip=layers.0+layers.3.mlp.down_proj")
    kept = {n for n in LINEARS if ".layers.0." in n} | {"model.layers.3.mlp.down_proj"}
    assert _unchanged(base, model) == kept | {"lm_head"}  # lm_head: rtn's default
    plain = _quantized(base, "rtn:bits=4")
    for name in set(LINEARS) - kept:  # the rest is quantized exactly as without skip=
        assert torch.equal(model.get_submodule(name).weight, plain.get_submodule(name).weight)


def test_rtn_skip_that_matches_nothing_fails_before_any_weight_changes(base):
    model = copy.deepcopy(base)
    plan = check_spec("rtn:skip=layers.7", "cpu")
    with pytest.raises(QevalError, match="matches none"):
        plan.quantizer.quantize(model, plan.options, LoadContext(device="cpu", dtype="float32"))
    assert _unchanged(base, model) == set(LINEARS) | {"lm_head"}


def test_skip_is_in_the_scheme(base):
    plan = check_spec("rtn:skip=layers.0", "cpu")
    assert plan.quantizer.scheme(plan.options).kept == ("lm_head", "embeddings", "layers.0")


def test_gptq_sim_skip_keeps_the_layers_and_quantizes_the_rest(base, tokenizer):
    options = "calibration_samples=4:calibration_seqlen=64"
    plan = check_spec(f"gptq-sim:{options}:skip=layers.1.mlp", "cpu")
    context = LoadContext(
        device="cpu", dtype="float32", calibration=build_calibration(tokenizer, plan.options)
    )
    model = run_quantize(plan.quantizer, plan.plugin, copy.deepcopy(base), plan.options, context)
    kept = {n for n in LINEARS if ".layers.1.mlp." in n}
    assert _unchanged(base, model) == kept | {"lm_head"}


@pytest.mark.parametrize(
    "spec",
    [
        "torchao-int8:skip=layers.1+q_proj",
        "hqq:skip=layers.1+q_proj",
        "quanto-int8:skip=layers.1+q_proj",
    ],
)
def test_library_quantizers_leave_skipped_linears_plain(base, spec):
    model = _quantized(base, spec)  # quanto reads calibration windows only for int8 activations
    kept = {n for n in LINEARS if ".layers.1." in n or n.endswith("q_proj")}
    assert _unchanged(base, model) == kept | {"lm_head"}


def test_bnb_skip_is_passed_as_exact_names_and_keeps_lm_head():
    from transformers import AutoModelForCausalLM

    folder = str(EMBEDDED_MODELS["qeval-tiny"])
    plan = check_spec("bnb-nf4:skip=layers.2.mlp", "cpu")
    context = LoadContext(device="cpu", dtype="float32", checkpoint=folder)
    extra = run_load_kwargs(plan.quantizer, plan.plugin, plan.options, context)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **extra)
    plain = {n for n, m in model.named_modules() if type(m) is torch.nn.Linear}
    assert plain == {n for n in LINEARS if ".layers.2.mlp." in n} | {"lm_head"}


def test_gptq_skip_becomes_gptqmodel_dynamic_exclusions(base, tokenizer, tmp_path):
    from qeval_plugins.quantizers.gptq import packed_layers

    plan = check_spec(
        "gptq:calibration_samples=2:calibration_seqlen=32:skip=layers.3+layers.0.mlp.up_proj", "cpu"
    )
    context = LoadContext(
        dtype="float32",
        checkpoint=str(EMBEDDED_MODELS["qeval-tiny"]),
        calibration=build_calibration(tokenizer, plan.options),
        cache_dir=str(tmp_path / "cache"),
    )
    model = run_quantize(plan.quantizer, plan.plugin, copy.deepcopy(base), plan.options, context)
    kept = {n for n in LINEARS if ".layers.3." in n} | {"model.layers.0.mlp.up_proj"}
    assert _unchanged(base, model) == kept | {"lm_head"}
    assert {name for name, _ in packed_layers(model)} == set(LINEARS) - kept
