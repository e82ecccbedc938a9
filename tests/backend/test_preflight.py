"""The pre-run check: skip= patterns against the checkpoint's layer names, gptq's CUDA kernels
against the run's device, and a plugin's own ``check_run``, all before anything is loaded."""

from __future__ import annotations

import shutil

import pytest
import torch

from qeval_plugins import Option, QevalError, Quantizer
from qeval_plugins.backend.checkpoints import EMBEDDED_MODELS
from qeval_plugins.backend.preflight import checkpoint_layers, preflight, preflight_spec
from qeval_plugins.core.plan import QuantizationPlan
from qeval_plugins.core.registry import PluginInfo, get_registry

TINY = EMBEDDED_MODELS["qeval-tiny"]


def refused(model: str, spec: str, device: str | None, model_args: dict | None = None) -> str:
    with pytest.raises(QevalError) as caught:
        preflight_spec(model, spec, device, model_args)
    message = str(caught.value)
    assert "\n" not in message
    return message


def skip_quantizers() -> list[str]:
    """Every installed quantizer that declares qeval's shared skip= option."""
    return sorted(
        entry.quantizer.name
        for entry in get_registry().all()
        if any(option.name == "skip" for option in entry.quantizer.options)
        and entry.quantizer.missing_requirement() is None
        and not entry.quantizer.needs_cuda
    )


def test_the_layer_names_are_read_from_the_safetensors_headers():
    layers = checkpoint_layers(str(TINY))
    assert layers["model.layers.0.self_attn.q_proj"] == (128, 128)
    assert layers["model.layers.3.mlp.down_proj"] == (128, 384)
    assert len(layers) == 2 + 4 * 7  # lm_head, embed_tokens, 7 linears in each of 4 blocks
    assert not any(name.endswith("norm") for name in layers)  # 1-D weights are no layers


@pytest.mark.parametrize("name", skip_quantizers())
def test_a_skip_pattern_that_matches_no_layer_is_refused_for_every_quantizer(name):
    message = refused("qeval-tiny", f"{name}:skip=layers.0+foo.*", "cpu")
    assert message == (
        f"{name}:skip=layers.0+foo.* on qeval-tiny: skip pattern 'foo.*' matches no layer of the "
        "model (its linear layers are named like model.layers.0.mlp.down_proj): fix the pattern."
    )


@pytest.mark.parametrize("skip", ["layers.0", "model.layers.[0-1].mlp", "down_proj+layers.3"])
def test_skip_patterns_that_match_a_layer_pass(skip):
    preflight_spec("qeval-tiny", f"rtn:skip={skip}", "cpu")


def test_skip_is_not_checked_when_the_layer_names_cannot_be_read(tmp_path):
    preflight_spec("someone/not-downloaded", "rtn:skip=foo.*", "cpu")  # a hub id not in cache
    folder = tmp_path / "bin-only"
    folder.mkdir()
    shutil.copy(TINY / "config.json", folder / "config.json")  # weights in .bin: no headers
    assert checkpoint_layers(str(folder)) is None
    preflight_spec(str(folder), "rtn:skip=foo.*", "cpu")


def test_a_local_checkpoint_is_checked_by_its_own_names(tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(TINY, folder)
    message = refused(str(folder), "rtn:skip=layers.4", "cpu")  # blocks 0-3 only
    assert message.startswith(f"rtn:skip=layers.4 on {folder}: skip pattern 'layers.4' ")


def saved_checkpoint(folder, names: list[str], config: dict):
    """A checkpoint folder whose safetensors file holds one 4x4 weight per name."""
    import json

    from safetensors.torch import save_file

    folder.mkdir()
    save_file({name: torch.zeros(4, 4) for name in names}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_a_pattern_with_the_model_class_prefix_passes_on_a_checkpoint_saved_without_it(tmp_path):
    gpt2_style = saved_checkpoint(  # GPT-2 stores h.0..., loaded as transformer.h.0...
        tmp_path / "gpt2", ["wte.weight", "h.0.attn.c_attn.weight"], {"model_type": "gpt2"}
    )
    preflight_spec(gpt2_style, "rtn:skip=transformer.h.0", "cpu")
    preflight_spec(gpt2_style, "rtn:skip=h.0.attn", "cpu")
    assert "'transformer.h.9'" in refused(gpt2_style, "rtn:skip=transformer.h.9", "cpu")


@pytest.mark.parametrize("tie", [True, False, None])
def test_an_output_head_tied_to_the_embeddings_is_a_layer(tmp_path, tie):
    config = {"model_type": "llama"} | ({} if tie is None else {"tie_word_embeddings": tie})
    tied = saved_checkpoint(tmp_path / "tied", ["model.embed_tokens.weight"], config)
    assert ("lm_head" in checkpoint_layers(tied)) is (tie is not False)  # transformers: True
    if tie is not False:
        preflight_spec(tied, "rtn:include_lm_head=true:skip=lm_head", "cpu")


@pytest.mark.parametrize("kernel", ["marlin", "exllama_v2", "triton"])
def test_a_cuda_kernel_on_the_cpu_is_refused_before_the_run(kernel):
    message = refused("qeval-tiny", f"gptq:kernel={kernel}", "cpu")
    assert message == (
        f"gptq:kernel={kernel} on qeval-tiny: kernel={kernel} needs a CUDA GPU (this run is on "
        "cpu); use kernel=auto or torch_fused on CPU."
    )


@pytest.mark.parametrize("cuda", [True, False])
def test_the_default_device_is_cuda_only_where_torch_sees_a_gpu(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    bf16 = {"dtype": "bfloat16"}  # marlin computes in float16 or bfloat16 only
    if cuda:
        preflight_spec("qeval-tiny", "gptq:kernel=marlin", None, bf16)
    else:
        message = refused("qeval-tiny", "gptq:kernel=marlin", None, bf16)
        assert "kernel=marlin needs a CUDA GPU (this run is on cpu)" in message
    preflight_spec("qeval-tiny", "gptq:kernel=auto", None)  # GPTQModel picks for the device


@pytest.mark.parametrize("cuda", [True, False])
def test_a_cpu_kernel_is_refused_on_cuda_and_accepted_on_the_cpu(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    if cuda:
        message = refused("qeval-tiny", "gptq:kernel=torch_fused", None)
        assert "kernel=torch_fused runs on CPU or Intel XPU only (this run is on cuda)" in message
    else:
        preflight_spec("qeval-tiny", "gptq:kernel=torch_fused", None)


def test_the_kernel_is_judged_in_the_checkpoints_dtype_unless_one_is_given():
    message = refused("qeval-tiny", "gptq:kernel=torch", "cpu")  # qeval-tiny is float32
    assert "kernel=torch computes in float16 or bfloat16 only (this run is float32)" in message
    preflight_spec("qeval-tiny", "gptq:kernel=torch", "cpu", {"dtype": "bfloat16"})


class Picky(Quantizer):
    name = "picky"
    description = "refuses wide layers before the run"
    options = (Option("limit", int, 64, "widest layer allowed"),)

    def check_run(self, options, context, layers):
        widest = max(shape[1] for shape in layers.values())
        if widest > options["limit"]:
            raise QevalError(f"a layer is {widest} wide, over limit={options['limit']}")
        if context.device != "cpu" or context.dtype != "float32":
            raise QevalError(f"unexpected context {context}")


class Broken(Quantizer):
    name = "broken"
    description = "its check has a bug"

    def check_run(self, options, context, layers):
        raise ValueError("oops\nsecond line")


def plan_of(quantizer: Quantizer, options: dict) -> QuantizationPlan:
    plugin = PluginInfo("thirdparty", "thirdparty-dist", "1.0")
    return QuantizationPlan(quantizer.name, quantizer, plugin, options, given=options)


def test_any_quantizer_takes_part_through_check_run():
    preflight(str(TINY), plan_of(Picky(), {"limit": 384}), "cpu", shown="qeval-tiny")
    with pytest.raises(QevalError) as caught:
        preflight(str(TINY), plan_of(Picky(), {"limit": 256}), "cpu", shown="qeval-tiny")
    assert str(caught.value) == "picky:limit=256 on qeval-tiny: a layer is 384 wide, over limit=256"


def test_a_check_run_that_crashes_is_named_as_the_plugins_bug():
    with pytest.raises(QevalError) as caught:
        preflight(str(TINY), plan_of(Broken(), {}), "cpu")
    message = str(caught.value)
    assert message.startswith(
        f"broken on {TINY}: quantizer 'broken' of plugin 'thirdparty' (thirdparty-dist): "
        "check_run() raised ValueError: oops second line (a plugin bug"
    )


def test_the_default_check_run_accepts_everything():
    assert Quantizer().check_run({}, None, None) is None
    preflight_spec("qeval-tiny", "rtn:bits=2", "cpu")


def test_the_backend_checks_before_it_loads_the_model(monkeypatch):
    from lm_eval.models.huggingface import HFLM

    from qeval_plugins.backend.lm import QevalLM

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the pre-run check")

    monkeypatch.setattr(HFLM, "__init__", never)
    with pytest.raises(QevalError) as caught:
        QevalLM(pretrained="qeval-tiny", quantizer="rtn", skip="foo.*", device="cpu")
    assert str(caught.value).startswith("rtn:skip=foo.* on qeval-tiny: skip pattern 'foo.*' ")
    with pytest.raises(QevalError) as caught:
        QevalLM(pretrained="qeval-tiny", quantizer="gptq", kernel="marlin", device="cpu")
    assert str(caught.value).startswith("gptq:kernel=marlin on qeval-tiny: kernel=marlin needs")
