"""``reference=`` must be the model's own architecture with its layers, and weight SQNR over no
layer says so.

Before, ``pretrained=llama,reference=gpt2`` (one tokenizer) ran to the end: logit SQNR of two
unrelated models, weight SQNR null and no layer listed as missing.
"""

from __future__ import annotations

import logging
import shutil

import pytest
from conftest import evaluate

from qeval_plugins.core.errors import QevalError


def with_tokenizer_of(model_dir, target, model) -> str:
    """``model`` saved to ``target`` with the tokenizer files of ``model_dir``."""
    model.save_pretrained(target)
    for file in model_dir.iterdir():
        if "token" in file.name:
            shutil.copy(file, target / file.name)
    return str(target)


@pytest.fixture(scope="module")
def gpt2_dir(tiny_model_dir, tmp_path_factory) -> str:
    """A random 2-layer GPT-2 (hidden 128) with the tiny Llama's tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=128,
        n_layer=2,
        n_head=4,
        n_positions=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    target = tmp_path_factory.mktemp("models") / "gpt2"
    return with_tokenizer_of(tiny_model_dir, target, GPT2LMHeadModel(config))


@pytest.fixture(scope="module")
def three_layer_dir(tmp_path_factory) -> str:
    """A Llama like the tiny one (same tokenizer) with 3 decoder layers instead of 2."""
    from qeval_plugins.testing import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("models") / "three", num_layers=3))


@pytest.fixture(scope="module")
def bare_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny Llama with its weights named without ``model.`` (``layers.0...``, as checkpoints
    saved from the base class are): the same model, loaded the same."""
    from safetensors.torch import load_file, save_file

    target = tmp_path_factory.mktemp("models") / "bare"
    shutil.copytree(tiny_model_dir, target, dirs_exist_ok=True)
    tensors = load_file(str(target / "model.safetensors"))
    renamed = {name.removeprefix("model."): tensor for name, tensor in tensors.items()}
    save_file(renamed, str(target / "model.safetensors"), metadata={"format": "pt"})
    return str(target)


@pytest.fixture
def no_quantizing(monkeypatch):
    """Quantizing fails the test: the checks must come before any expensive step."""
    from qeval_plugins.core import registry

    def refuse(*args, **kwargs):
        raise AssertionError("quantized before the reference was checked")

    monkeypatch.setattr(registry, "run_quantize", refuse)


def test_a_reference_of_another_architecture_is_refused(tiny_model_dir, gpt2_dir, no_quantizing):
    from qeval_plugins.backend.lm import QevalLM

    with pytest.raises(QevalError) as error:
        QevalLM(pretrained=str(tiny_model_dir), quantizer="rtn", reference=gpt2_dir, device="cpu")
    assert str(error.value) == (
        f"reference={gpt2_dir} is another architecture (model_type gpt2) than "
        f"'{tiny_model_dir}' (llama); give the unquantized model this checkpoint was made from."
    )


def test_a_reference_with_other_layers_is_refused(tiny_model_dir, three_layer_dir, no_quantizing):
    from qeval_plugins.backend.lm import QevalLM

    with pytest.raises(QevalError) as error:
        QevalLM(
            pretrained=str(tiny_model_dir),
            quantizer="rtn",
            reference=three_layer_dir,
            device="cpu",
        )
    message = str(error.value)
    assert message.startswith(
        f"reference={three_layer_dir} does not have the layers of '{tiny_model_dir}': 7 "
        f"weight(s) differ in name or shape (e.g. 'model.layers.2.mlp.down_proj.weight' absent "
        f"in the model, [128, 256] in the reference)"
    )
    assert "\n" not in message


def test_layers_of_a_checkpoint_saved_quantized_are_compared_by_name(tiny_model_dir, tmp_path):
    """Packed tensors (``x.qweight``, a bitsandbytes ``x.weight`` of another shape) name their
    layers; the reference's layers must be the same ones."""
    import json

    from safetensors.torch import load_file, save_file

    from qeval_plugins.backend.reference import check_same_architecture

    def packed(target, drop: str = ""):
        shutil.copytree(tiny_model_dir, target)
        config = json.loads((target / "config.json").read_text())
        config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
        (target / "config.json").write_text(json.dumps(config))
        tensors = {
            (name.replace(".weight", ".qweight") if "proj" in name else name): tensor[:1]
            for name, tensor in load_file(str(target / "model.safetensors")).items()
            if not (drop and name.startswith(drop))
        }
        save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
        return str(target)

    check_same_architecture(str(tiny_model_dir), packed(tmp_path / "same"))
    with pytest.raises(QevalError, match=r"1 weight\(s\) differ in name \(e\.g\. "):
        check_same_architecture(
            str(tiny_model_dir), packed(tmp_path / "short", "model.layers.1.mlp.up_proj")
        )


def test_weight_sqnr_over_no_layer_says_so(tiny_model_dir, bare_dir, tasks_dir, caplog):
    """``layers.0.mlp.up_proj.weight`` is not the model's ``model.layers.0.mlp.up_proj``: the
    reference passes the checks (the same model), but no weight of it is compared. Before, the
    figures were null with ``missing_layers`` empty, without a word."""
    with caplog.at_level(logging.WARNING, logger="qeval"):
        results = evaluate(
            f"pretrained={tiny_model_dir},quantizer=rtn,bits=4,reference={bare_dir}",
            ["qeval_sqnr"],
            tasks_dir,
        )
    weights = results["config"]["qeval"]["sqnr"]["weights"]
    assert weights["compared_layers"] == 0 and weights["mean_db"] is None
    assert weights["missing_layers"] == []
    assert weights["not_measured"].startswith(
        f"no layer of the model has a weight of its name in the reference checkpoint {bare_dir}"
    )
    assert any("weight SQNR not measured" in record.getMessage() for record in caplog.records)
    # the logits are compared all the same: the reference is the same model
    assert results["results"]["qeval_sqnr"]["logit_sqnr_db,none"] > 5


def test_the_same_model_as_reference_compares_every_layer(tiny_model_dir, tasks_dir):
    results = evaluate(
        f"pretrained={tiny_model_dir},quantizer=rtn,bits=4,reference={tiny_model_dir}",
        ["qeval_sqnr"],
        tasks_dir,
    )
    weights = results["config"]["qeval"]["sqnr"]["weights"]
    assert weights["compared_layers"] == 14  # 2 layers x (4 attention + 3 MLP projections)
    assert "not_measured" not in weights
