"""What the host holds a quantizer's methods to: quantize() and load_kwargs() answers, read-only
options, strict-JSON records, and the resolved dtype a plugin is told (LoadContext.dtype)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import fake_plugins

from qeval_plugins import QevalError

CONTRACT_BREAKERS = """
from qeval_plugins import Option, Quantizer, hookimpl

class Base(Quantizer):
    description = "a quantizer for a contract test"
    options = (Option("level", float, 1.0, "how strong", minimum=0.0),)

class ReturnsNone(Base):
    name = "returns-none"
    def quantize(self, model, options, context):
        model.requires_grad_(False)  # forgot 'return model'

class ReturnsDict(Base):
    name = "returns-dict"
    def quantize(self, model, options, context):
        return {"model": model}

class Raises(Base):
    name = "raises"
    def quantize(self, model, options, context):
        raise RuntimeError("kaboom")

class SaysNo(Base):
    name = "says-no"
    def quantize(self, model, options, context):
        from qeval_plugins import QevalError
        raise QevalError("says-no: level 1.0 cannot be applied to this model; use level=2.")

class Mutates(Base):
    name = "mutates"
    def quantize(self, model, options, context):
        options["level"] = float("nan")
        return model

class MutatesLoad(Base):
    name = "mutates-load"
    def load_kwargs(self, options, context):
        options.pop("level")
        return {}

class LoadList(Base):
    name = "load-list"
    def load_kwargs(self, options, context):
        return ["not", "kwargs"]

class FinalNan(Base):
    name = "final-nan"
    def finalize_options(self, options):
        return {**options, "level": float("nan")}

class FinalDrops(Base):
    name = "final-drops"
    def finalize_options(self, options):
        return {}

class FinalMutates(Base):
    name = "final-mutates"
    def finalize_options(self, options):
        options["level"] = 2.0
        return options

class Records(Base):
    name = "records"
    seen = []
    def quantize(self, model, options, context):
        Records.seen.append((context, dict(options)))
        return model

@hookimpl
def qeval_register_quantizers(register):
    for kind in (ReturnsNone, ReturnsDict, Raises, SaysNo, Mutates, MutatesLoad, LoadList):
        register(kind())
    for kind in (FinalNan, FinalDrops, FinalMutates, Records):
        register(kind())
"""


@pytest.fixture
def breakers(monkeypatch, tmp_path, fresh_registry):
    from qeval_plugins.core.registry import get_registry

    fake_plugins(monkeypatch, tmp_path, {"breakers": CONTRACT_BREAKERS})
    registry = get_registry()
    assert registry.plugins["breakers"].problems == []
    return registry


def call(registry, name: str, method: str, options: dict | None = None):
    """Run ``method`` of quantizer ``name`` the way the backend does, on a small model."""
    from qeval_plugins.core.quantizer import LoadContext
    from qeval_plugins.core.registry import run_finalize_options, run_load_kwargs, run_quantize

    entry = registry.get(name)
    options = {"level": 1.0} if options is None else options
    if method == "finalize_options":
        return run_finalize_options(entry.quantizer, entry.plugin, options)
    if method == "load_kwargs":
        return run_load_kwargs(entry.quantizer, entry.plugin, options, LoadContext())
    return run_quantize(
        entry.quantizer, entry.plugin, torch.nn.Linear(4, 4), options, LoadContext()
    )


@pytest.mark.parametrize(
    ("name", "method", "rule"),
    [
        (
            "returns-none",
            "quantize",
            r"quantize\(\) must return the quantized model .* got NoneType",
        ),
        ("returns-dict", "quantize", r"quantize\(\) must return the quantized model .* got dict"),
        ("raises", "quantize", r"quantize\(\) raised RuntimeError: kaboom \(a plugin bug"),
        ("mutates", "quantize", r"quantize\(\) must not change its options"),
        ("mutates-load", "load_kwargs", r"load_kwargs\(\) must not change its options"),
        ("load-list", "load_kwargs", r"load_kwargs\(\) must return a dict .* got list"),
        ("final-nan", "finalize_options", r"invalid value: .*'level' .* must be a finite number"),
        ("final-drops", "finalize_options", r"exactly the declared options \(level\), got \[\]"),
        ("final-mutates", "finalize_options", r"finalize_options\(\) must not change"),
    ],
)
def test_a_broken_method_is_one_line_naming_plugin_and_rule(breakers, name, method, rule):
    options = {"level": 1.0}
    with pytest.raises(QevalError) as caught:
        call(breakers, name, method, options)
    message = str(caught.value)
    assert message.startswith(f"quantizer '{name}' of plugin 'breakers' (unknown): "), message
    assert re.search(rule, message) and "\n" not in message
    assert options == {"level": 1.0}  # the caller's options are untouched


def test_a_plugins_own_error_line_passes_unchanged(breakers):
    with pytest.raises(QevalError, match=r"^says-no: level 1.0 cannot be applied"):
        call(breakers, "says-no", "quantize")


def test_good_methods_get_a_read_only_copy_and_their_answer_back(breakers):
    from qeval_plugins.core.options import FrozenOptions

    model = call(breakers, "records", "quantize")
    assert isinstance(model, torch.nn.Linear)
    records = breakers.get("records").quantizer.seen
    assert records[-1][1] == {"level": 1.0}
    assert call(breakers, "records", "load_kwargs") == {}
    assert call(breakers, "records", "finalize_options", {"level": 3}) == {"level": 3.0}
    assert isinstance(FrozenOptions({"level": 1.0}), dict)


def load(model_dir, quantizer: str, **model_args):
    """The lm-eval backend, as ``lm_eval --model qeval`` builds it."""
    from qeval_plugins.backend.lm import QevalLM

    return QevalLM(pretrained=str(model_dir), quantizer=quantizer, device="cpu", **model_args)


@pytest.mark.parametrize(
    ("name", "rule"),
    [("returns-none", "must return the quantized model"), ("mutates", "must not change")],
)
def test_the_backend_holds_quantize_to_the_contract(breakers, tiny_model_dir, name, rule):
    with pytest.raises(QevalError, match=rf"^quantizer '{name}' of plugin 'breakers'.*{rule}"):
        load(tiny_model_dir, name)


def test_records_hold_the_validated_options_as_strict_json(breakers, tiny_model_dir):
    lm = load(tiny_model_dir, "records", level="2.5")
    block = lm.get_model_info()["qeval"]
    assert block["options"] == {"level": 2.5}
    json.dumps(block, allow_nan=False)  # strict JSON: no NaN or infinity anywhere
    with pytest.raises(QevalError, match=r"'level' of quantizer 'records' must be a finite"):
        load(tiny_model_dir, "records", level="inf")


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("auto", "float32"), ("bfloat16", "bfloat16"), ("float16", "float16")],
)
def test_the_context_holds_the_resolved_dtype(breakers, tiny_model_dir, dtype, expected):
    """With auto, the checkpoint's dtype (the tiny model's config says float32), never 'auto'."""
    load(tiny_model_dir, "records", dtype=dtype)
    context, _ = breakers.get("records").quantizer.seen[-1]
    assert context.dtype == expected and context.device == "cpu"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"dtype": "bfloat16"}, "bfloat16"),
        ({"torch_dtype": "float16"}, "float16"),  # the key older checkpoints use
        ({}, "float32"),  # no dtype in the config: the weights' own type, as transformers does
    ],
)
def test_auto_reads_the_checkpoint(tmp_path, config, expected):
    from safetensors.torch import save_file

    from qeval_plugins.core.quantizer import resolve_dtype

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", **config}))
    save_file({"w": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    assert resolve_dtype("auto", str(tmp_path)) == expected
    assert resolve_dtype(None, str(tmp_path)) == expected
    assert resolve_dtype(torch.bfloat16) == "bfloat16"
    assert resolve_dtype("half") == resolve_dtype("torch.float16") == "float16"
    assert resolve_dtype("auto") == "auto"  # nothing to read: stays auto
