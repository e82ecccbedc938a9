"""The ``rtn`` quantizer plugin on a real (tiny) model: layers chosen, options honoured."""

from __future__ import annotations

import pytest
import torch

from qeval_plugins.core.plan import plan_quantization
from qeval_plugins.formats.table import FORMATS


def sqnr_db(reference: torch.Tensor, quantized: torch.Tensor) -> float:
    """10·log10(Σx² / Σ(x − x̂)²) in float64."""
    reference, quantized = reference.detach().double(), quantized.detach().double()
    return float(10 * torch.log10(reference.pow(2).sum() / (reference - quantized).pow(2).sum()))


def quantize_tiny(model_dir, **options):
    from transformers import AutoModelForCausalLM

    plan = plan_quantization("rtn", dict(options), set(), "cpu")
    original = AutoModelForCausalLM.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model = plan.quantizer.quantize(model, plan.options, plan.context("cpu", "auto"))
    return original, model


def linear_sqnr(original, model) -> float:
    """Global weight SQNR over all decoder linear layers."""
    pairs = [
        (a.weight, b.weight)
        for (name, a), (_, b) in zip(original.named_modules(), model.named_modules(), strict=True)
        if isinstance(a, torch.nn.Linear) and name.startswith("model.layers")
    ]
    return sqnr_db(
        torch.cat([a.flatten() for a, _ in pairs]), torch.cat([b.flatten() for _, b in pairs])
    )


def test_every_format_of_the_table_plans_with_its_own_width_and_block():
    """A fixed-width format implies its element bits, an MX format its block of 32."""
    for fmt, spec in FORMATS.items():
        options = plan_quantization("rtn", {"format": fmt}, set(), "cpu").options
        assert options["bits"] == (spec.element_bits or 4), fmt
        assert options["group_size"] == (32 if spec.is_mx else 128), fmt


def test_lm_head_and_embeddings_stay_unless_asked(tiny_model_dir):
    original, model = quantize_tiny(tiny_model_dir, bits=2)
    assert torch.equal(original.lm_head.weight, model.lm_head.weight)
    assert torch.equal(original.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert not torch.equal(
        original.model.layers[0].mlp.down_proj.weight, model.model.layers[0].mlp.down_proj.weight
    )
    _, both = quantize_tiny(tiny_model_dir, bits=2, include_lm_head=True, include_embeddings=True)
    assert not torch.equal(original.lm_head.weight, both.lm_head.weight)
    assert not torch.equal(original.model.embed_tokens.weight, both.model.embed_tokens.weight)


def test_weight_sqnr_rises_about_6_db_per_bit(tiny_model_dir):
    sqnr = {
        bits: linear_sqnr(*quantize_tiny(tiny_model_dir, bits=bits, group_size=0))
        for bits in (2, 3, 4, 8)
    }
    assert sqnr[2] < sqnr[3] < sqnr[4] < sqnr[8]
    assert (sqnr[8] - sqnr[4]) / 4 == pytest.approx(6.02, abs=0.6)


@pytest.mark.parametrize("fmt", ["int", "fp4_e2m1", "nf4"])
def test_group_wise_beats_per_channel(tiny_model_dir, fmt):
    per_channel = linear_sqnr(*quantize_tiny(tiny_model_dir, format=fmt, group_size=0))
    grouped = linear_sqnr(*quantize_tiny(tiny_model_dir, format=fmt, group_size=32))
    assert grouped > per_channel


def test_every_format_runs_and_keeps_dtype(tiny_model_dir):
    for fmt in FORMATS:
        original, model = quantize_tiny(tiny_model_dir, format=fmt)
        weight = model.model.layers[1].self_attn.o_proj.weight
        assert weight.dtype == original.model.layers[1].self_attn.o_proj.weight.dtype
        assert torch.isfinite(weight).all()
        assert 0 < linear_sqnr(original, model) < 60, fmt
