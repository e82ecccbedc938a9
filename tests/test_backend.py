"""The lm-eval backend ``qeval``: same numbers as ``hf`` unquantized, real quantized models."""

from __future__ import annotations

import math

import pytest

BNB = ["bnb-int8", "bnb-nf4", "bnb-fp4", "bnb-nf4-dq", "bnb-fp4-dq"]
TASKS = ["qeval_demo_facts", "qeval_demo_cloze"]  # a loglikelihood and a generation task


def evaluate(model: str, model_args: str, tasks_dir, limit: int = 12) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=TASKS,
        device="cpu",
        batch_size=4,
        limit=limit,
        log_samples=True,
        task_manager=TaskManager(include_path=str(tasks_dir)),
    )


def responses(results: dict) -> dict:
    return {task: [s["resps"] for s in samples] for task, samples in results["samples"].items()}


@pytest.fixture(scope="module")
def hf_run(tiny_model_dir, tasks_dir):
    return evaluate("hf", f"pretrained={tiny_model_dir}", tasks_dir)


def test_quantizer_none_is_bit_identical_to_hf(hf_run, tiny_model_dir, tasks_dir):
    qeval_run = evaluate("qeval", f"pretrained={tiny_model_dir},quantizer=none", tasks_dir)
    assert qeval_run["results"] == hf_run["results"]
    assert responses(qeval_run) == responses(hf_run)  # every loglikelihood and generation
    # lm-eval's own keys are untouched; qeval adds exactly one block
    assert set(qeval_run["config"]) == set(hf_run["config"]) | {"qeval"}
    block = qeval_run["config"]["qeval"]
    assert block["quantizer"] == "none" and block["plugin"]["distribution"] == "built-in"
    assert block["spec"] == "none"
    assert block["param_bytes_before"] == block["param_bytes_after"] > 0
    assert block["bits_per_param"] == 32.0  # float32 checkpoint
    scored = block["throughput"]["loglikelihood"]
    assert scored["tokens"] > 0 and scored["tokens_per_s"] > 0
    generated = block["throughput"]["generate"]
    assert generated["new_tokens"] > 0 and generated["tokens_per_s"] > 0
    assert block["peak_memory"]["kind"] == "cpu_peak_rss"
    assert block["peak_memory"]["bytes"] > block["param_bytes_after"]


def test_none_with_dtype_matches_hf_with_dtype(tiny_model_dir, tasks_dir):
    hf = evaluate("hf", f"pretrained={tiny_model_dir},dtype=bfloat16", tasks_dir, limit=4)
    ours = evaluate(
        "qeval", f"pretrained={tiny_model_dir},quantizer=none,dtype=bfloat16", tasks_dir, limit=4
    )
    assert responses(ours) == responses(hf)
    assert ours["config"]["qeval"]["param_bytes_after"] * 2 == (
        ours["config"]["qeval"]["param_bytes_before"] * 2
    )


def loglikelihoods(model_dir, quantizer: str, **options) -> list[float]:
    from lm_eval.api.instance import Instance

    from qeval_plugins.lm import QevalLM

    lm = QevalLM(
        pretrained=str(model_dir), quantizer=quantizer, device="cpu", batch_size=4, **options
    )
    pairs = [
        ("the quick brown", " fox jumps"),
        ("numbers one two", " three four five"),
        ("a small model", " reads a short text"),
    ]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    return [ll for ll, _ in lm.loglikelihood(requests)], lm


@pytest.mark.parametrize("quantizer", BNB)
def test_bitsandbytes_quantizers_evaluate_on_cpu(tiny_model_dir, quantizer):
    baseline, _ = loglikelihoods(tiny_model_dir, "none")
    quantized, lm = loglikelihoods(tiny_model_dir, quantizer)
    assert all(math.isfinite(value) for value in quantized)
    assert quantized != baseline
    block = lm.get_model_info()["qeval"]
    assert block["quantizer"] == quantizer and block["simulated"] is False
    assert block["param_bytes_after"] < block["param_bytes_before"]  # packed weights
    kind = "Linear8bitLt" if quantizer == "bnb-int8" else "Linear4bit"
    assert type(lm.model.model.layers[0].mlp.up_proj).__name__ == kind


def test_rtn_changes_outputs_more_at_fewer_bits(tiny_model_dir):
    baseline, _ = loglikelihoods(tiny_model_dir, "none")
    errors = {}
    for bits in (2, 4, 8):
        quantized, lm = loglikelihoods(tiny_model_dir, "rtn", bits=bits)
        errors[bits] = sum(abs(q - b) for q, b in zip(quantized, baseline, strict=True))
    assert errors[2] > errors[4] > errors[8] > 0
    block = lm.get_model_info()["qeval"]
    assert block["simulated"] is True and block["options"]["bits"] == 8
    assert block["spec"] == "rtn:bits=8"
    assert block["effective_bits"] == pytest.approx(8 + 16 / 128)


def test_bnb_dequantize_hook_recovers_the_weights(tiny_model_dir):
    import torch
    from safetensors.torch import load_file

    from qeval_plugins.plugins import get_registry

    original = load_file(str(tiny_model_dir / "model.safetensors"))
    name = "model.layers.0.mlp.up_proj"
    for quantizer, worst_db in (("bnb-int8", 30.0), ("bnb-nf4", 15.0)):
        _, lm = loglikelihoods(tiny_model_dir, quantizer)
        module = lm.model.get_submodule(name)
        dense = get_registry().manager.hook.qeval_dequantize_weight(module=module).float()
        reference = original[f"{name}.weight"].float()
        assert dense.shape == reference.shape
        sqnr = 10 * torch.log10(reference.pow(2).sum() / (reference - dense).pow(2).sum())
        assert sqnr > worst_db, (quantizer, float(sqnr))
