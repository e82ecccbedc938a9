"""Helpers for testing quantizers, for qeval itself and for plugin authors.

* :func:`make_tiny_model` writes a small random Llama checkpoint with a real BPE tokenizer to a
  directory, offline, in about a second;
* :func:`check_quantizer` checks that a quantizer honours the contract: it registered (its
  declaration passed the registry's rules), its defaults validate, ``quantize`` returns a model
  and leaves its options alone, the dequantize hook answers with the checkpoint's shape for every
  layer, and the quantized model's outputs are finite and differ from the original's (equal to
  them when the quantizer declares ``identity = True``); a cached quantizer's model comes back
  from its own save and load with the same outputs and the same weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_TEXT = (
    "the quick brown fox jumps over the lazy dog . a small model reads a short text . "
    "numbers one two three four five six seven eight nine ten . "
    "quantization maps weights to fewer bits and measures what is lost . "
)


def make_tiny_model(
    directory: str | Path,
    *,
    hidden_size: int = 128,
    intermediate_size: int = 256,
    num_layers: int = 2,
    vocab_size: int = 384,
    seed: int = 0,
) -> Path:
    """Write a random-init ``LlamaForCausalLM`` and a byte-level BPE tokenizer to ``directory``.

    Hidden sizes default to multiples of 128 so group-128 quantization applies. Returns the path.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([TINY_TEXT] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=256,
    )
    fast.save_pretrained(directory)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger-than-default weights so quantization error is visible
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.08)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def check_quantizer(name: str, model_dir: str | Path | None = None, **options: Any) -> dict:
    """Run ``name`` through the qeval loading path on a tiny model and check the contract.

    Builds a tiny model in a temporary directory unless ``model_dir`` is given (a checkpoint with
    safetensors weights). Checks, in order:

    1. the quantizer is registered and enabled (its name, aliases, description and option
       declarations pass :func:`qeval_plugins.core.quantizer.contract_problems`) and every option
       has help text;
    2. the defaults validate: ``resolve_options`` and ``finalize_options`` accept them;
    3. ``load_kwargs`` and ``quantize`` keep the contract (a dict; a ``torch.nn.Module``; the
       options untouched), with ``options`` as given here;
    4. the ``qeval_dequantize_weight`` hook reads every layer whose 2-D weight is in the
       checkpoint, in the checkpoint's shape;
    5. outputs on 32 tokens are finite and differ from the unquantized model's, or are
       identical to them when the quantizer declares ``identity = True``;
    6. a ``cache_quantized`` quantizer's ``save_quantized`` writes a folder from which
       ``load_quantized`` (or, when it returns None, ``from_pretrained``) gives back a model with
       the same outputs and, through the dequantize hook, the same weights: each layer's weight
       SQNR, 10·log10(Σw² / Σ(w − ŵ)²) dB against the checkpoint, within 0.01 dB of the
       quantized model's (a save that drops state only the hook reads, such as the scales, fails
       naming the layers).

    A ``calibrated`` quantizer gets qeval's calibration windows, as in a run (pass
    ``calibration_samples=`` and ``calibration_seqlen=`` to keep the check quick).

    Raises ``AssertionError`` (or the QevalError the host would print) naming the broken rule.
    Returns a summary: the quantizer, the resolved options, the maximum absolute logit change
    versus the unquantized model, whether outputs are finite, the layers whose weight
    changed and what the quantizer recorded with ``context.record`` (``record``).
    """
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM

    from qeval_plugins.core.options import resolve_options
    from qeval_plugins.core.plan import plan_quantization
    from qeval_plugins.core.registry import (
        get_registry,
        run_finalize_options,
        run_load_kwargs,
        run_quantize,
    )
    from qeval_plugins.evals.sqnr.engine import weight_energies

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = Path(model_dir) if model_dir else make_tiny_model(Path(scratch) / "tiny")
        plan = plan_quantization(name, dict(options), set(), "cpu")
        quantizer = plan.quantizer
        for option in quantizer.options:
            assert option.help, f"{name}: option '{option.name}' has no help text"
        defaults = resolve_options(quantizer.name, quantizer.options, {})
        run_finalize_options(quantizer, plan.plugin, defaults)  # the defaults go together
        context = _load_context(plan, model_dir, Path(scratch))
        extra = run_load_kwargs(quantizer, plan.plugin, plan.options, context)
        extra.setdefault("dtype", torch.float32)
        reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        quantized = AutoModelForCausalLM.from_pretrained(model_dir, device_map="cpu", **extra)
        quantized = run_quantize(quantizer, plan.plugin, quantized, plan.options, context)
        dequantize = get_registry().dequantizer(plan.plugin.name, strict=True)
        energies, missing = weight_energies(quantized, str(model_dir), dequantize, torch.float32)
        assert not missing, f"{name}: no qeval_dequantize_weight answer for layers {missing}"
        tokens = torch.arange(1, 33).unsqueeze(0)
        with torch.no_grad():
            expected = reference(tokens).logits.float()
            got = quantized(tokens).logits.float()
        assert got.shape == expected.shape, f"{name}: output shape changed"
        finite = bool(torch.isfinite(got).all())
        assert finite, f"{name}: outputs contain NaN or inf"
        change = float((got - expected).abs().max())
        if quantizer.identity:
            assert change == 0, f"{name}: declares identity = True but changes logits by {change}"
        else:
            assert change > 0, f"{name}: outputs equal the unquantized model's (identity = True?)"
        if quantizer.cache_quantized:
            reloaded = _saved_and_loaded(plan, quantized, context, Path(scratch) / "saved")
            with torch.no_grad():
                again = reloaded(tokens).logits.float()
            assert torch.equal(again, got), f"{name}: the model load_quantized gives back differs"
            _check_round_trip_weights(name, energies, reloaded, model_dir, dequantize)
        return {
            "quantizer": quantizer.name,
            "options": plan.options,
            "max_abs_logit_change": change,
            "finite": finite,
            "changed_layers": sorted(layer for layer, (_, noise) in energies.items() if noise),
            "record": dict(context.records.values),
        }


ROUND_TRIP_DB = 0.01  # how far a layer's weight SQNR may move through save and load


def _check_round_trip_weights(
    name: str, before: dict[str, tuple], reloaded: Any, model_dir: Path, dequantize: Any
) -> None:
    """Each layer's weight SQNR read through the dequantize hook from the reloaded model equals
    the quantized model's (within :data:`ROUND_TRIP_DB`); else an AssertionError naming up to
    five layers with both figures."""
    import torch

    from qeval_plugins.evals.sqnr.engine import weight_energies
    from qeval_plugins.metrics.divergence import sqnr_db

    after, missing = weight_energies(reloaded, str(model_dir), dequantize, torch.float32)
    assert not missing, (
        f"{name}: after save_quantized/load_quantized no qeval_dequantize_weight answer for "
        f"layers {missing}"
    )
    changed = []
    for layer in sorted(set(before) | set(after)):  # an unchanged embedding is left out: +inf
        was, now = sqnr_db(*before.get(layer, (1.0, 0.0))), sqnr_db(*after.get(layer, (1.0, 0.0)))
        if not (was == now or abs(was - now) <= ROUND_TRIP_DB):
            changed.append(f"{layer} ({was:.2f} dB -> {now:.2f} dB)")
    assert not changed, (
        f"{name}: the dequantize hook reads other weights after save_quantized/load_quantized in "
        f"{len(changed)} layers: {', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}; "
        f"save_quantized must keep every tensor the hook needs (scales, zeros, codes)."
    )


def _load_context(plan: Any, model_dir: Path, scratch: Path) -> Any:
    """The LoadContext a run would give: checkpoint, tokenizer, calibration, cache folder, the
    load arguments, the plugin's name and a fresh record."""
    from types import MappingProxyType

    from transformers import AutoTokenizer

    from qeval_plugins.core.calibration import build_calibration
    from qeval_plugins.core.quantizer import LoadContext

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    calibrated = plan.quantizer.needs_calibration(plan.options)
    return LoadContext(
        device="cpu",
        dtype="float32",
        checkpoint=str(model_dir),
        tokenizer=tokenizer,
        calibration=build_calibration(tokenizer, plan.options) if calibrated else None,
        cache_dir=str(scratch / "quantizer-cache"),
        load_kwargs=MappingProxyType({"dtype": "float32", "device_map": "cpu"}),
        plugin=plan.plugin.name,
    )


def _saved_and_loaded(plan: Any, model: Any, context: Any, folder: Path) -> Any:
    """``model`` through ``save_quantized`` and back (``load_quantized`` or from_pretrained)."""
    import torch
    from transformers import AutoModelForCausalLM

    from qeval_plugins.core.registry import run_load_quantized, run_save_quantized

    folder.mkdir()
    run_save_quantized(plan.quantizer, plan.plugin, model, folder, plan.options, context)
    loaded = run_load_quantized(plan.quantizer, plan.plugin, folder, plan.options, context)
    if loaded is None:
        loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return loaded.eval()
