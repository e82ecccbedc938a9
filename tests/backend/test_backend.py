"""The lm-eval backend ``qeval``: same numbers as ``hf`` unquantized, real quantized models."""

from __future__ import annotations

import math
import os
from pathlib import Path

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
    assert block["machine_load"]["cpus"] == os.cpu_count()
    measure = "other_cpus" if Path("/proc/stat").exists() else "load_average"  # Linux, or not
    assert block["machine_load"][measure] >= 0


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

    from qeval_plugins.backend.lm import QevalLM

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
    """After real forward passes (which repack 4-bit weights on CPUs with AVX512-BF16)."""
    import torch
    from safetensors.torch import load_file

    from qeval_plugins.core.registry import get_registry

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


@pytest.fixture(scope="module")
def bnb_4bit_models(tiny_model_dir):
    """One loaded (never run) model per 4-bit quantizer: weights still in the standard layout."""
    from qeval_plugins.backend.lm import QevalLM

    return {
        quantizer: QevalLM(pretrained=str(tiny_model_dir), quantizer=quantizer, device="cpu")
        for quantizer in BNB[1:]
    }


@pytest.mark.parametrize("quantizer", BNB[1:])
def test_bnb_4bit_weights_read_the_same_in_both_cpu_layouts(bnb_4bit_models, quantizer):
    """The standard layout and the AVX512-BF16 CPU layout, forced here on every machine.

    The repacking is bitsandbytes' own ``_convert_weight_packed_for_cpu`` (what ``forward`` runs on
    such CPUs); the reference is bitsandbytes' ``dequantize_4bit`` of the standard layout. The CPU
    layout keeps the block absmax in bfloat16, so the two agree to bfloat16's relative precision.
    """
    import copy

    import bitsandbytes.functional as F
    import torch

    from qeval_plugins.core.registry import get_registry

    hook = get_registry().manager.hook.qeval_dequantize_weight
    module = copy.deepcopy(bnb_4bit_models[quantizer].model.model.layers[0].mlp.up_proj)
    state = module.weight.quant_state
    assert not getattr(state, "packing_format_for_cpu", False)
    standard = F.dequantize_4bit(module.weight.data.clone(), copy.deepcopy(state)).float()
    assert torch.equal(hook(module=module).float(), standard)

    module.weight.data, module.weight.quant_state = F._convert_weight_packed_for_cpu(
        module.weight.data, module.weight.quant_state
    )
    packed_bytes = module.weight.data.clone()
    packed = hook(module=module).float()
    torch.testing.assert_close(packed, standard, rtol=2**-8, atol=0)
    # read-only: the live module keeps its layout and bytes
    assert module.weight.quant_state.packing_format_for_cpu
    assert torch.equal(module.weight.data, packed_bytes)
    assert torch.equal(hook(module=module).float(), packed)


def test_bnb_cpu_layout_decodes_to_what_the_cpu_kernel_computes(bnb_4bit_models):
    """Where the AVX512-BF16 kernel exists, x @ Wᵀ for x = I (bfloat16) is the decoded weight."""
    import copy

    import torch

    from qeval_plugins.core.registry import get_registry

    module = copy.deepcopy(bnb_4bit_models["bnb-nf4"].model.model.layers[0].mlp.up_proj).eval()
    if not module.support_avx512bf16_for_cpu:
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes never repacks here")
    module.compute_dtype = torch.bfloat16
    with torch.no_grad():
        columns = module(torch.eye(module.in_features, dtype=torch.bfloat16)).float()
    assert module.weight.quant_state.packing_format_for_cpu  # the forward repacked it
    dense = get_registry().manager.hook.qeval_dequantize_weight(module=module).float()
    torch.testing.assert_close(columns, dense.t(), rtol=2**-7, atol=1e-6)


def test_bitsandbytes_noise_is_quieted_and_real_warnings_are_not(tiny_model_dir, caplog):
    """The int8 cast line once (not once per matmul), the hub-kernel hint never, others always."""
    import logging

    caplog.set_level(logging.WARNING)
    loglikelihoods(tiny_model_dir, "bnb-int8")
    loglikelihoods(tiny_model_dir, "bnb-int8")
    casts = [r for r in caplog.records if r.getMessage().startswith("MatMul8bitLt: inputs")]
    assert len(casts) <= 1
    ops = logging.getLogger("bitsandbytes.backends.cpu.ops")
    caplog.clear()
    ops.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s", "no module")
    ops.warning("something a user should see")
    assert [r.getMessage() for r in caplog.records] == ["something a user should see"]


def test_measuring_storage_never_rewrites_a_repacked_layer(bnb_4bit_models):
    """Measuring bytes leaves the live module alone, in either layout.

    bitsandbytes' state_dict() undoes the AVX512-BF16 repacking in place and lossily: the outputs
    of the test model moved by 2.4 logits afterwards.
    """
    import copy

    import bitsandbytes.functional as F
    import torch

    from qeval_plugins.backend.memory import model_storage_bytes
    from qeval_plugins.core.registry import get_registry

    hook = get_registry().manager.hook.qeval_dequantize_weight
    model = copy.deepcopy(bnb_4bit_models["bnb-nf4"].model)
    measured = model_storage_bytes(model)
    module = model.model.layers[0].mlp.up_proj
    module.weight.data, module.weight.quant_state = F._convert_weight_packed_for_cpu(
        module.weight.data, module.weight.quant_state
    )
    packed, dense = module.weight.data.clone(), hook(module=module)
    assert model_storage_bytes(model) < measured  # the CPU layout keeps its scales in bfloat16
    assert module.weight.quant_state.packing_format_for_cpu
    assert torch.equal(module.weight.data, packed) and torch.equal(hook(module=module), dense)


def test_loading_a_model_prints_no_torchao_import_noise(caplog):
    """transformers imports torchao whenever it is installed (gptqmodel brings it): its lines about
    CUDA-only extensions and torch's enum deprecation came with every run; other torchao
    warnings still show."""
    import importlib.util
    import logging
    import subprocess
    import sys

    if importlib.util.find_spec("torchao") is None:
        pytest.skip("torchao is not installed: transformers has nothing to import")
    code = (
        "from qeval_plugins.backend.lm import QevalLM; "
        "QevalLM(pretrained='qeval-tiny', quantizer='rtn', device='cpu')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Failed to load" not in result.stderr and "Enum subclass" not in result.stderr
    import qeval_plugins.backend.lm  # noqa: F401  (installs the filters, as in a run)

    caplog.set_level(logging.WARNING)
    logging.getLogger("torchao").warning("Failed to load /x/_C_mxfp8.so: not on this CPU")
    logging.getLogger("torchao").warning("a torchao warning a user should see")
    assert [r.getMessage() for r in caplog.records] == ["a torchao warning a user should see"]
