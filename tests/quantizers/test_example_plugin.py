"""The example third-party plugin, pip-installed, used by name with no change to qeval."""

from __future__ import annotations

import json

import pytest
from conftest import lm_eval_args, run_cli


@pytest.mark.slow
def test_installed_plugin_is_listed_with_its_distribution(example_plugin_path):
    result = run_cli(["qeval", "plugins"], extra_path=example_plugin_path)
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "ternary" in line)
    assert "qeval-ternary" in row and "0.1.0" in row and "loaded" in row


@pytest.mark.slow
def test_plugin_runs_through_stock_lm_eval(
    example_plugin_path, tiny_model_dir, tasks_dir, tmp_path
):
    result = run_cli(
        [
            "lm_eval",
            *lm_eval_args(
                f"pretrained={tiny_model_dir},quantizer=bitnet,threshold=0.7",
                "qeval_demo_facts",
                tasks_dir,
                *("--limit", "4", "--output_path", str(tmp_path / "out")),
            ),
        ],
        extra_path=example_plugin_path,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [results_file] = (tmp_path / "out").rglob("results_*.json")
    block = json.loads(results_file.read_text())["config"]["qeval"]
    assert block["quantizer"] == "ternary" and block["requested_as"] == "bitnet"
    assert block["plugin"] == {
        "name": "ternary",
        "distribution": "qeval-ternary",
        "version": "0.1.0",
    }
    assert block["options"] == {"threshold": 0.7}
    assert block["quantizer_version"] == "1"
    # what the plugin recorded with context.record, against the checkpoint's own weights
    shares = expected_zero_shares(tiny_model_dir, 0.7)
    record = block["plugin_record"]
    assert record["zero_share_per_layer"] == pytest.approx(shares[0], abs=1e-6)
    assert record["zero_share"] == pytest.approx(shares[1], abs=1e-6) and 0.2 < shares[1] < 0.6
    # and what it logged (context.logger, context.progress) reached lm_eval's stderr
    assert "[qeval.plugin.ternary] ternarizing: started (14 steps)" in result.stderr
    assert "[qeval.plugin.ternary] 14 layers ternarized, " in result.stderr
    assert block["scheme"] == {
        "weights": "ternary per-row",
        "activations": "unquantized",
        "kept": ["lm_head", "embeddings"],
    }


@pytest.mark.slow
def test_plugin_honours_the_contract_and_its_dequantize_hook(
    example_plugin_path, tiny_model_dir, monkeypatch
):
    """qeval_plugins.testing.check_quantizer, then the hook on the plugin's own layer type."""
    import torch

    monkeypatch.syspath_prepend(str(example_plugin_path))
    from qeval_plugins.core.registry import reset_registry

    reset_registry()
    try:
        from qeval_plugins.core.quantizer import LoadContext
        from qeval_plugins.core.registry import get_registry
        from qeval_plugins.testing import check_quantizer

        summary = check_quantizer("ternary", tiny_model_dir)
        assert summary["finite"] and summary["max_abs_logit_change"] > 0
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        original = model.model.layers[0].mlp.up_proj.weight.detach().clone()
        quantizer = get_registry().get("ternary").quantizer
        quantizer.quantize(model, {"threshold": 1.0}, LoadContext(plugin="ternary"))
        layer = model.model.layers[0].mlp.up_proj
        dense = get_registry().manager.hook.qeval_dequantize_weight(module=layer)
        assert type(layer).__name__ == "TernaryLinear" and dense.shape == original.shape
        scale = original.abs().mean(dim=1, keepdim=True)
        expected = torch.clamp(torch.round(original / scale), -1, 1) * scale
        assert torch.allclose(dense, expected, atol=1e-6)
    finally:
        reset_registry()


def expected_zero_shares(model_dir, threshold: float) -> tuple[dict[str, float], float]:
    """The share of ternary codes that are 0, per linear layer and over all of them:
    |w| < threshold · mean(|w| of the row) / 2, from the checkpoint's tensors."""
    import torch
    from safetensors.torch import load_file

    per_layer, zeros, total = {}, 0, 0
    for key, weight in load_file(str(model_dir / "model.safetensors")).items():
        if not key.endswith("proj.weight"):
            continue
        scale = weight.float().abs().mean(dim=1, keepdim=True) * threshold
        zero = int((torch.round(weight.float() / scale) == 0).sum())
        per_layer[key.removesuffix(".weight")] = zero / weight.numel()
        zeros, total = zeros + zero, total + weight.numel()
    return per_layer, zeros / total
