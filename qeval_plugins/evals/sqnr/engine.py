"""The engine of the ``qeval_sqnr`` task: how far a quantized model is from its unquantized self.

Three comparisons, all against the unquantized model in the run's dtype (the "reference"):

* **weights** — every layer's effective dense weight (through the ``qeval_dequantize_weight``
  hook, so any quantizer works) against the checkpoint's tensor, read one tensor at a time;
* **outputs** — on the task's texts: logit SQNR, KL(P_ref‖P_quant) per token, top-1 agreement and
  the perplexity of both models;
* **activations** — the hidden state after each decoder block, over a bounded number of tokens.

The reference's outputs are computed once per model + texts + settings and cached on disk
(:mod:`qeval_plugins.storage.cache`). On a cache miss the quantized model is released, the
reference is loaded, run and released, and the quantized model is loaded again: the two are never
in memory together. SQNR_dB = 10·log10(Σx² / Σ(x − x̂)²), accumulated in float64.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from qeval_plugins.backend.requests import register_request_handler
from qeval_plugins.core.errors import QevalError, refuse_near_misses
from qeval_plugins.core.model_parts import decoder_layers
from qeval_plugins.metrics import divergence

REQUEST_TYPE = "qeval_sqnr"
TEXT_SETTINGS = ("text_file", "text_field")  # metadata read by the task's document loader
logger = logging.getLogger("qeval")


@dataclass(frozen=True)
class SqnrSettings:
    """Task settings (YAML ``metadata``, overridable with ``lm_eval --metadata '{...}'``).

    max_tokens: tokens of each text that are scored (longer texts are cut).
    top_k: reference log-probabilities kept per token for KL (the rest is one tail category).
    logit_positions: token positions, over all texts, whose full reference logits are kept for
        logit SQNR (each costs vocab_size × 4 bytes of cache).
    activation_tokens: token positions, over all texts, whose block outputs are compared.
    worst_layers: how many of the worst layers the results name.
    """

    max_tokens: int = 256
    top_k: int = 32
    logit_positions: int = 256
    activation_tokens: int = 256
    worst_layers: int = 5

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> SqnrSettings:
        """The settings in ``values`` (the task's metadata); a misspelt setting is one line."""
        refuse_near_misses(
            values, [*cls.__dataclass_fields__, *TEXT_SETTINGS], "qeval_sqnr setting"
        )
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        for name, value in known.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise QevalError(
                    f"qeval_sqnr setting '{name}' must be a positive integer, got {value!r}."
                )
        return cls(**known)


# ---------------------------------------------------------------- model plumbing


@contextlib.contextmanager
def captured_blocks(model: Any):
    """Yield a list that holds, after each forward pass, every decoder block's output tensor."""
    outputs: list[torch.Tensor] = []

    def keep(module, inputs, output):
        outputs.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(keep) for layer in decoder_layers(model)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """Next-token logits [T-1, V] in float32 for a 1-D id tensor (position t predicts t+1)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(ids.to(device)[None]).logits[0, :-1].float()


# ---------------------------------------------------------------- reference and comparison


def compute_reference(model: Any, texts: list[torch.Tensor], settings: SqnrSettings) -> dict:
    """What the metrics need from the reference model, per text (CPU tensors, bounded size)."""
    entries = []
    logit_budget, activation_budget = settings.logit_positions, settings.activation_tokens
    with captured_blocks(model) as blocks:
        for ids in texts:
            blocks.clear()
            logits = _logits(model, ids)
            entry = {
                k: v.cpu() for k, v in divergence.topk_reference(logits, settings.top_k).items()
            }
            entry["nll"] = divergence.token_nll(logits, ids[1:].to(logits.device)).cpu()
            keep_logits = min(logit_budget, logits.shape[0])
            # a copy: a slice (even an empty one) would keep, and save, the whole [T, V] tensor
            entry["logits"] = logits[:keep_logits].to("cpu", copy=True)
            logit_budget -= keep_logits
            keep_tokens = min(activation_budget, ids.shape[0])
            entry["blocks"] = (
                torch.stack([b[0, :keep_tokens].float().cpu() for b in blocks])
                if blocks
                else torch.empty(0)
            )
            activation_budget -= keep_tokens
            entries.append(entry)
    return {"texts": entries}


def check_reference(reference: Any, texts: list[torch.Tensor], settings: SqnrSettings) -> None:
    """Raise ValueError unless ``reference`` has the structure :func:`compute_reference` gives.

    Per text of T tokens: top-k log-probabilities float32 and token ids int32 ``[T-1, top_k]``
    (ids >= 0, and < V when logits are kept), tail log-mass float32 ``[T-1]``, NLL float64
    ``[T-1]``, full logits float32 ``[n, V]`` and block outputs float32 ``[L, m, H]`` (or empty),
    where n and m are what is left of the ``logit_positions`` and ``activation_tokens`` budgets,
    spent text by text. A cached reference is checked with it before use.
    """
    entries = reference.get("texts") if isinstance(reference, dict) else None
    if not isinstance(entries, list) or len(entries) != len(texts):
        raise ValueError(f"expected a 'texts' list of {len(texts)} entries")
    logit_budget, activation_budget = settings.logit_positions, settings.activation_tokens
    for number, (ids, entry) in enumerate(zip(texts, entries, strict=True)):
        positions = ids.shape[0] - 1
        rows, tokens = min(logit_budget, positions), min(activation_budget, ids.shape[0])
        logit_budget, activation_budget = logit_budget - rows, activation_budget - tokens
        if not isinstance(entry, dict):
            raise ValueError(f"text {number}: not a dict")
        expected = {
            divergence.TOPK_LOGPROBS: (torch.float32, (positions, settings.top_k)),
            divergence.TOPK_INDICES: (torch.int32, (positions, settings.top_k)),
            divergence.TAIL_LOGPROB: (torch.float32, (positions,)),
            "nll": (torch.float64, (positions,)),
        }
        for name, (dtype, shape) in expected.items():
            _check_tensor(entry.get(name), f"text {number} {name}", dtype, shape)
        logits, blocks = entry.get("logits"), entry.get("blocks")
        _check_tensor(logits, f"text {number} logits", torch.float32, None)
        if logits.dim() != 2 or logits.shape[0] != rows or logits.shape[1] < settings.top_k:
            raise ValueError(f"text {number} logits: shape {tuple(logits.shape)}, {rows} rows")
        indices = entry[divergence.TOPK_INDICES]
        vocab = logits.shape[1] if rows else None
        if indices.numel() and (indices.min() < 0 or (vocab and indices.max() >= vocab)):
            raise ValueError(f"text {number}: token ids out of range")
        _check_tensor(blocks, f"text {number} blocks", torch.float32, None)
        if blocks.numel() and (blocks.dim() != 3 or blocks.shape[1] != tokens):
            raise ValueError(f"text {number} blocks: shape {tuple(blocks.shape)}, {tokens} tokens")


def _check_tensor(value: Any, name: str, dtype: torch.dtype, shape: tuple | None) -> None:
    if not isinstance(value, torch.Tensor) or value.dtype != dtype:
        kind = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name}: {kind}, expected {dtype}")
    if shape is not None and tuple(value.shape) != shape:
        raise ValueError(f"{name}: shape {tuple(value.shape)}, expected {shape}")


def compare(model: Any, texts: list[torch.Tensor], reference: dict) -> list[dict[str, Any]]:
    """Per text: sums and per-token values the task aggregates into its metrics."""
    results = []
    with captured_blocks(model) as blocks:
        for ids, ref in zip(texts, reference["texts"], strict=True):
            blocks.clear()
            logits = _logits(model, ids)
            ref_device = {k: v.to(logits.device) for k, v in ref.items() if k != "blocks"}
            kl = divergence.kl_from_topk(ref_device, logits)
            agree = divergence.top1_agreement(ref_device, logits)
            nll = divergence.token_nll(logits, ids[1:].to(logits.device))
            kept = ref["logits"].shape[0]
            logit_energy = (
                divergence.energies(ref["logits"], logits[:kept].cpu()) if kept else (0.0, 0.0)
            )
            block_energy = (
                [
                    divergence.energies(ref["blocks"][i], block[0, : ref["blocks"].shape[1]].cpu())
                    for i, block in enumerate(blocks)
                ]
                if ref["blocks"].numel()
                else []
            )
            results.append(
                {
                    "tokens": int(logits.shape[0]),
                    "kl": kl.tolist(),
                    "top1_agree": int(agree.sum()),
                    "nll_reference": float(ref["nll"].double().sum()),
                    "nll_quantized": float(nll.sum()),
                    "logit_energy": logit_energy,
                    "block_energy": block_energy,
                }
            )
    return results


def weight_energies(
    model: Any, checkpoint_dir: str, dequantize, dtype: torch.dtype | None = None
) -> tuple[dict[str, tuple], list[str]]:
    """(Σx², Σ(x − x̂)²) per layer: effective weight vs the checkpoint tensor, one at a time.

    ``dequantize(module=...)`` is ``core.registry.Registry.dequantize_weight``: the
    ``qeval_dequantize_weight`` answer with its plugin, or None. It is asked for every module
    whose ``<name>.weight`` is a 2-D tensor of the checkpoint, whatever attributes the module
    has (a quantizer may replace a layer by one without ``.weight``). The checkpoint tensor is
    first cast to ``dtype`` (the run's dtype; None keeps the stored one), so the reference is the
    unquantized model exactly as the run would load it. Embeddings and the LM head are included
    only when the quantizer changed them (their noise is non-zero).

    Returns ``(energies, missing)``: ``missing`` names the layers no hook could read (a warning
    per layer type names the hook to implement). A hook answer that is not a floating-point
    tensor of the checkpoint tensor's shape is a QevalError naming the layer and the plugin.
    """
    from safetensors import safe_open

    files = {}
    for file in sorted(Path(checkpoint_dir).glob("*.safetensors")):
        with safe_open(str(file), "pt") as handle:
            files.update(dict.fromkeys(handle.keys(), file))
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    inputs = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    energies, missing = {}, {}
    for name, module in model.named_modules():
        key = f"{name}.weight"
        if key not in files:
            continue
        with safe_open(str(files[key]), "pt") as handle:
            shape = torch.Size(handle.get_slice(key).get_shape())
        if len(shape) != 2:
            continue
        answer = dequantize(module=module)
        if answer is None:
            missing[name] = type(module)
            continue
        dense = _checked_dense(answer, name, module, shape)
        with safe_open(str(files[key]), "pt") as handle:
            original = handle.get_tensor(key)
        if dtype is not None and original.is_floating_point():
            original = original.to(dtype)
        signal, noise = divergence.energies(original, dense.detach().cpu())
        if module in (output, inputs) and noise == 0:
            continue
        energies[name] = (signal, noise)
    _warn_unreadable(missing)
    return energies, list(missing)


def _checked_dense(answer: Any, layer: str, module: Any, shape: torch.Size) -> torch.Tensor:
    """The hook's dense weight for ``layer``; QevalError unless a float tensor of ``shape``."""
    dense = answer.tensor
    where = (
        f"plugin '{answer.plugin}': qeval_dequantize_weight returned for layer '{layer}' "
        f"({type(module).__name__})"
    )
    if not isinstance(dense, torch.Tensor) or not dense.is_floating_point():
        kind = dense.dtype if isinstance(dense, torch.Tensor) else type(dense).__name__
        raise QevalError(f"{where} a {kind}, not a floating-point torch.Tensor.")
    if dense.shape != shape:
        raise QevalError(
            f"{where} shape {list(dense.shape)}, but the checkpoint's weight has shape "
            f"{list(shape)}: return the dense weight in the checkpoint's layout."
        )
    return dense


def _warn_unreadable(missing: dict[str, type]) -> None:
    """One warning per layer type that has checkpoint weights but no dequantize answer."""
    by_type: dict[type, list[str]] = {}
    for name, kind in missing.items():
        by_type.setdefault(kind, []).append(name)
    for kind, names in by_type.items():
        logger.warning(
            "weight SQNR leaves out %d layer(s) of type %s.%s (e.g. '%s'): no plugin's "
            "qeval_dequantize_weight hook reads them; implement qeval_dequantize_weight for %s",
            len(names),
            kind.__module__,
            kind.__qualname__,
            names[0],
            kind.__name__,
        )


# ---------------------------------------------------------------- summaries


def sqnr_value(signal: float, noise: float) -> float | str:
    """SQNR in dB as a JSON-safe value: see :func:`json_db`."""
    return json_db(divergence.sqnr_db(signal, noise))


def json_db(value: float) -> float | str:
    """A dB figure for strict JSON: rounded to 4 decimals, or the string ``"inf"`` / ``"-inf"``.

    ``"inf"`` is the best case (no noise at all); ``"-inf"`` the worst (noise where the reference
    is all zeros). The sign is always kept.
    """
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return round(value, 4)


def mean_db(values: list[float]) -> float:
    """Mean of per-layer dB values over the layers that changed, in dB.

    ``-inf`` if any layer is ``-inf`` (the worst case dominates); layers the quantizer left exactly
    as they were (``inf``: no noise at all, e.g. kept in full precision) are left out, so that one
    of them cannot turn the mean into ``inf``; ``inf`` only when every layer is unchanged.
    """
    if any(value == -math.inf for value in values):
        return -math.inf
    changed = [value for value in values if value != math.inf]
    return sum(changed) / len(changed) if changed else math.inf


def summarize_weights(energies: dict[str, tuple], worst: int) -> dict[str, Any]:
    """Per-layer SQNR summarized: mean, minimum and global dB, unchanged layers, the worst layers.

    The mean is over the layers that changed (:func:`mean_db`); ``unchanged_layers`` counts those
    left exactly as they were; ``global_db`` is the SQNR of all weights together.
    """
    if not energies:
        return {
            "layers": {},
            "mean_db": None,
            "unchanged_layers": 0,
            "min_db": None,
            "global_db": None,
            "worst": [],
        }
    per_layer = {name: divergence.sqnr_db(*pair) for name, pair in energies.items()}
    ranked = sorted(per_layer.items(), key=lambda item: item[1])
    signal = sum(pair[0] for pair in energies.values())
    noise = sum(pair[1] for pair in energies.values())
    return {
        "layers": {name: json_db(value) for name, value in per_layer.items()},
        "mean_db": json_db(mean_db(list(per_layer.values()))),
        "unchanged_layers": sum(value == math.inf for value in per_layer.values()),
        "min_db": json_db(ranked[0][1]),
        "global_db": sqnr_value(signal, noise),
        "worst": [{"layer": name, "sqnr_db": json_db(value)} for name, value in ranked[:worst]],
    }


def summarize_blocks(results: list[dict[str, Any]]) -> list[float | str]:
    """Activation SQNR (dB) after each decoder block, over all compared tokens."""
    if not results or not results[0]["block_energy"]:
        return []
    count = len(results[0]["block_energy"])
    totals = [
        (
            sum(r["block_energy"][i][0] for r in results if r["block_energy"]),
            sum(r["block_energy"][i][1] for r in results if r["block_energy"]),
        )
        for i in range(count)
    ]
    return [sqnr_value(*pair) for pair in totals]


def run(lm: Any, requests: list) -> list[dict[str, Any]]:
    """Answer ``qeval_sqnr`` requests on ``lm`` (a QevalLM): reference (cached), compare, summarize.

    Returns one dict per request (per text) for the task's ``process_results``; the per-layer and
    per-block figures go to the run's ``qeval`` block under ``sqnr``.
    """
    from qeval_plugins.core.registry import get_registry
    from qeval_plugins.storage import cache as reference_cache

    settings = SqnrSettings.from_mapping(requests[0].args[1])
    prefix = [lm.prefix_token_id] if lm.prefix_token_id is not None else []
    texts = [
        torch.tensor(prefix + lm.tok_encode(request.args[0])[: settings.max_tokens])
        for request in requests
    ]
    lm.require_reference()
    checkpoint = lm.reference_dir()
    dtype = lm.dtype_name
    key = reference_cache.reference_key(
        reference_cache.checkpoint_identity(checkpoint),
        [t.tolist() for t in texts],
        asdict(settings),
        dtype,
    )
    run_dtype = getattr(torch, dtype) if dtype in ("float16", "bfloat16", "float32") else None
    # first: a wrong dequantize answer fails here, before the expensive passes
    energies, missing = weight_energies(
        lm.model, checkpoint, get_registry().dequantize_weight, run_dtype
    )
    weights = {**summarize_weights(energies, settings.worst_layers), "missing_layers": missing}
    reference = reference_cache.load(key, check=lambda ref: check_reference(ref, texts, settings))
    reused = reference is not None
    if reference is None:
        reference = lm.on_reference_model(lambda model: compute_reference(model, texts, settings))
        meta = {"kind": "qeval_sqnr", "settings": asdict(settings), "texts": len(texts)}
        meta.update(model=lm.reference_name, dtype=dtype)
        reference_cache.save(key, reference, meta=meta)
    results = compare(lm.model, texts, reference)
    blocks = summarize_blocks(results)
    lm.record(
        "sqnr",
        {
            "settings": asdict(settings),
            "reference_cache": {
                "key": key,
                "reused": reused,
                "dir": str(reference_cache.cache_dir()),
            },
            "weights": weights,
            "activation_blocks_db": blocks,
        },
    )
    summary = {
        "weight_sqnr_mean_db": weights["mean_db"],
        "weight_sqnr_min_db": weights["min_db"],
        "weight_sqnr_global_db": weights["global_db"],
        "activation_sqnr_last_db": blocks[-1] if blocks else None,
        "activation_sqnr_min_db": _worst(blocks),
    }
    for result in results:
        result["model"] = summary
    return results


def _worst(values: list[float | str]) -> float | str | None:
    """The lowest of JSON dB values (``"-inf"`` below every number, ``"inf"`` above), or None."""
    return json_db(min(float(value) for value in values)) if values else None


register_request_handler(REQUEST_TYPE, run)
