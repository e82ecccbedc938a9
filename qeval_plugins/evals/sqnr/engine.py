"""The engine of the ``qeval_sqnr`` task: how far a quantized model is from its unquantized self.

Three comparisons, all against the unquantized model in the run's dtype (the "reference"):

* **weights** — every layer's effective dense weight (through the ``qeval_dequantize_weight``
  hook, so any quantizer works) against the checkpoint's tensor, read one tensor at a time;
* **outputs** — on the task's texts: logit SQNR, KL both ways per token (exact from the full
  cached log-probabilities, or top-k plus tail, a lower bound: setting ``kl``, by default exact
  whenever its cache fits ``kl_cache_budget``), Δp of the correct
  token, top-1 agreement and the perplexity of both models, summarized over all tokens
  (:mod:`qeval_plugins.metrics.divergence_stats`), and the tokens with the highest KL;
* **activations** — the hidden state after each decoder block, over a bounded number of tokens.

The reference's outputs are computed once per model + texts + settings and cached on disk
(:mod:`qeval_plugins.storage.reference_cache`). On a cache miss the quantized model is released,
the reference is loaded, run and released, and the quantized model is loaded again: the two are
never in memory together. SQNR_dB = 10·log10(Σx² / Σ(x − x̂)²), accumulated in float64.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from qeval_plugins.backend.requests import register_request_handler
from qeval_plugins.core.errors import QevalError, refuse_near_misses
from qeval_plugins.core.model_parts import decoder_layers
from qeval_plugins.metrics import divergence, divergence_stats

REQUEST_TYPE = "qeval_sqnr"
TEXT_SETTINGS = ("text_file", "text_field")  # metadata read by the task's document loader
KL_MODES = ("auto", "exact", "topk")  # auto: exact when its cache fits the budget, else topk
DEFAULT_KL_CACHE_BUDGET = "4G"
WORST_TOKENS = 10  # tokens with the highest KL named in the results
CONTEXT_TOKENS = 12  # tokens of context shown before each of them
logger = logging.getLogger("qeval")

# run-level divergence statistics (qeval_plugins.metrics.divergence_stats) the results name
DIVERGENCE_METRICS = (
    "kl_mean_err",
    *(f"kl_{name}" for name in divergence_stats.KL_PERCENTILES if name != "p99"),
    "kl_reverse_mean",
    "kl_reverse_mean_err",
    "kl_symmetric_mean",
    "kl_symmetric_mean_err",
    "kl_mean_pos_early",
    "kl_mean_pos_late",
    "kl_error_bound",
    "dp_mean",
    "dp_mean_err",
    *(f"dp_{name}" for name in divergence_stats.DP_PERCENTILES),
    "rms_dp",
    "rms_dp_err",
    "top1_agreement_err",
    "ppl_quantized_err",
    "ppl_reference_err",
    "ppl_ratio",
    "ppl_ratio_err",
    "ln_ppl_ratio",
    "ln_ppl_ratio_err",
    "ln_ppl_corr",
)
# every run-level metric: one value over all texts, computed here (the task's own aggregations
# over documents are logit_sqnr_db, kl_mean, kl_p99 and top1_agreement)
RUN_METRICS = (
    "ppl_reference",
    "ppl_quantized",
    "ppl_delta",
    "weight_sqnr_mean_db",
    "weight_sqnr_min_db",
    "weight_sqnr_global_db",
    "activation_sqnr_last_db",
    "activation_sqnr_min_db",
    *DIVERGENCE_METRICS,
)
# the headline metrics: the only ones in lm-eval's results (and so in its printed table); every
# other metric of RUN_METRICS goes to the qeval block, config.qeval.sqnr.metrics.
# kl_error_bound is the KL's lower-bound mark: "inf" when the KL is a top-k lower bound.
TABLE_METRICS = (
    "weight_sqnr_mean_db",
    "logit_sqnr_db",
    "kl_mean",
    "kl_median",
    "kl_p99",
    "kl_error_bound",
    "top1_agreement",
    "ppl_ratio",
)
BLOCK_METRICS = tuple(name for name in RUN_METRICS if name not in TABLE_METRICS)


@dataclass(frozen=True)
class SqnrSettings:
    """Task settings (YAML ``metadata``, overridable with ``lm_eval --metadata '{...}'``).

    max_tokens: tokens of each text that are scored (longer texts are cut).
    top_k: reference log-probabilities kept per token for KL (the rest is one tail category).
    logit_positions: token positions, over all texts, whose full reference logits are kept for
        logit SQNR (each costs vocab_size × 4 bytes of cache).
    activation_tokens: token positions, over all texts, whose block outputs are compared.
    worst_layers: how many of the worst layers the results name.
    kl: ``"exact"`` (the reference's full log-probabilities cached in 2 bytes per vocabulary
        entry, :func:`~qeval_plugins.metrics.divergence.encode_logprobs`: KL exact within the
        ``kl_error_bound`` the results state), ``"topk"`` (KL over the reference's top-k plus one
        tail category: a lower bound, O(k) cache per token) or ``"auto"`` (the default: exact
        when its cache fits ``kl_cache_budget``, else topk with one warning; :func:`resolve_kl`).
    kl_cache_budget: the most bytes ``kl=exact`` may cache (a number, or a size such as
        ``"2G"``); more is refused in one line before any model runs (``kl=auto``: top-k is
        used instead). Not part of the cache key, which holds the mode actually used.
    """

    max_tokens: int = 256
    top_k: int = 32
    logit_positions: int = 256
    activation_tokens: int = 256
    worst_layers: int = 5
    kl: str = "auto"
    kl_cache_budget: str = DEFAULT_KL_CACHE_BUDGET

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> SqnrSettings:
        """The settings in ``values`` (the task's metadata); a misspelt setting is one line."""
        refuse_near_misses(
            values, [*cls.__dataclass_fields__, *TEXT_SETTINGS], "qeval_sqnr setting"
        )
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        for name, value in known.items():
            if name in ("kl", "kl_cache_budget"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise QevalError(
                    f"qeval_sqnr setting '{name}' must be a positive integer, got {value!r}."
                )
        if known.get("kl", "auto") not in KL_MODES:
            raise QevalError(
                f"qeval_sqnr setting 'kl' must be one of {', '.join(KL_MODES)}, "
                f"got {known['kl']!r}."
            )
        if "kl_cache_budget" in known:
            known["kl_cache_budget"] = str(known["kl_cache_budget"])
        settings = cls(**known)
        settings.budget_bytes()  # a malformed size is one line now, not after the passes
        return settings

    def budget_bytes(self) -> int:
        """``kl_cache_budget`` in bytes (K, M, G, T are powers of 1024)."""
        from qeval_plugins.storage.cache_pruning import parse_size

        return parse_size(self.kl_cache_budget, "qeval_sqnr setting 'kl_cache_budget'")

    def cache_settings(self) -> dict[str, Any]:
        """The settings the cached reference depends on (all but ``kl_cache_budget``; ``kl`` the
        mode used, so these are settings :func:`resolve_kl` resolved)."""
        self.is_exact()
        values = asdict(self)
        del values["kl_cache_budget"]
        return values

    def is_exact(self) -> bool:
        """Whether KL is exact (``kl=exact``) rather than top-k; ValueError for ``kl=auto``, which
        :func:`resolve_kl` turns into one of them before any pass."""
        if self.kl not in ("exact", "topk"):
            raise ValueError(f"kl={self.kl} is not resolved: call resolve_kl first")
        return self.kl == "exact"


def exact_cache_bytes(texts: list[torch.Tensor], vocabulary: int) -> int:
    """Bytes the ``kl=exact`` codes of ``texts`` take: ``Σ (T − 1) · (2 V + 32)``."""
    positions = sum(max(0, ids.shape[0] - 1) for ids in texts)
    return positions * (divergence.BYTES_PER_LOGPROB * vocabulary + divergence.BYTES_PER_POSITION)


def _over_budget(texts: list[torch.Tensor], vocabulary: int, settings: SqnrSettings) -> str:
    """Why the exact mode's codes do not fit ``kl_cache_budget`` ("" when they do): the size
    needed, what it is made of, and the budget, as a phrase."""
    needed = exact_cache_bytes(texts, vocabulary)
    if needed <= settings.budget_bytes():
        return ""
    positions = sum(max(0, ids.shape[0] - 1) for ids in texts)
    unit, size = ("G", 2**30) if needed >= 2**30 else ("M", 2**20)
    return (
        f"needs {needed / size:.1f} {unit}iB of reference cache ({positions} scored tokens of "
        f"{len(texts)} texts x {vocabulary} vocabulary entries x 2 bytes), over "
        f"kl_cache_budget={settings.kl_cache_budget}; raise it with --metadata "
        f'\'{{"kl_cache_budget": "{math.ceil(needed / size)}{unit}"}}\''
    )


def check_exact_budget(texts: list[torch.Tensor], vocabulary: int, settings: SqnrSettings):
    """QevalError (one line, what to do) when ``kl=exact`` would cache more than the budget."""
    over = _over_budget(texts, vocabulary, settings) if settings.is_exact() else ""
    if over:
        raise QevalError(
            f"qeval_sqnr kl=exact {over}, score fewer tokens (max_tokens, --limit), or use "
            "kl=topk (a lower bound of the KL)."
        )


def resolve_kl(
    settings: SqnrSettings, texts: list[torch.Tensor], vocabulary: int | None
) -> tuple[SqnrSettings, str]:
    """``settings`` with ``kl=auto`` resolved, and why top-k was chosen ("" otherwise).

    ``auto`` is ``exact`` when the codes of ``texts`` over a vocabulary of ``vocabulary``
    entries (:func:`exact_cache_bytes`) fit ``kl_cache_budget``, else ``topk`` — as is a model
    whose vocabulary size is unknown (``None``). ``exact`` and ``topk`` stay as given."""
    if settings.kl != "auto":
        return settings, ""
    if vocabulary is None:
        reason = (
            "the model's config gives no vocab_size, so the exact cache cannot be sized; pass "
            '--metadata \'{"kl": "exact"}\' for exact KL'
        )
    else:
        over = _over_budget(texts, vocabulary, settings)
        reason = f"exact KL {over} for exact KL" if over else ""
    return replace(settings, kl="topk" if reason else "exact"), reason


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
    """What the metrics need from the reference model, per text (CPU tensors, bounded size).

    With ``kl=exact`` also the full log-probabilities, 2 bytes per entry
    (:func:`~qeval_plugins.metrics.divergence.encode_logprobs`), within ``kl_cache_budget``.
    ``settings.kl`` must be resolved (:func:`resolve_kl`).
    """
    exact = settings.is_exact()
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
            if exact:
                check_exact_budget(texts, logits.shape[1], settings)
                entry.update({k: v.cpu() for k, v in divergence.encode_logprobs(logits).items()})
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
    spent text by text. With ``kl=exact`` also int16 codes ``[T-1, V]`` and float64 finite
    minimum, split and non-negative steps ``[T-1]``. Values: logits and block outputs finite,
    NLL and log-probabilities never NaN. A cached reference is checked with it before use.
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
        if settings.is_exact():
            _check_codes(entry, number, positions, logits.shape[1])
        _check_tensor(blocks, f"text {number} blocks", torch.float32, None)
        if blocks.numel() and (blocks.dim() != 3 or blocks.shape[1] != tokens):
            raise ValueError(f"text {number} blocks: shape {tuple(blocks.shape)}, {tokens} tokens")
        _check_values(entry, number)


def _check_values(entry: dict, number: int) -> None:
    """Raise ValueError on a value no usable reference holds: logits or block outputs that are
    not finite (their SQNR would be undefined: ``sqnr_db`` raises), or a NaN NLL or
    log-probability (``±inf`` can be legitimate: an empty tail when k = V has log-mass −inf)."""
    for name in ("logits", "blocks"):
        if not torch.isfinite(entry[name]).all():
            raise ValueError(f"text {number} {name}: not finite")
    for name in (divergence.TOPK_LOGPROBS, divergence.TAIL_LOGPROB, "nll"):
        if torch.isnan(entry[name]).any():
            raise ValueError(f"text {number} {name}: NaN")


def _check_codes(entry: dict, number: int, positions: int, vocab: int) -> None:
    """Raise ValueError unless ``entry`` holds well-formed ``kl=exact`` codes."""
    codes = entry.get(divergence.LOGPROB_CODES)
    _check_tensor(codes, f"text {number} codes", torch.int16, (positions, vocab))
    for name in divergence.CODE_ROWS:
        _check_tensor(entry.get(name), f"text {number} {name}", torch.float64, (positions,))
        if not torch.isfinite(entry[name]).all():
            raise ValueError(f"text {number} {name}: not finite")
    for name in (divergence.LOGPROB_LOW_STEP, divergence.LOGPROB_HIGH_STEP):
        if (entry[name] < 0).any():
            raise ValueError(f"text {number} {name}: negative")


def _check_tensor(value: Any, name: str, dtype: torch.dtype, shape: tuple | None) -> None:
    if not isinstance(value, torch.Tensor) or value.dtype != dtype:
        kind = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name}: {kind}, expected {dtype}")
    if shape is not None and tuple(value.shape) != shape:
        raise ValueError(f"{name}: shape {tuple(value.shape)}, expected {shape}")


def compare(model: Any, texts: list[torch.Tensor], reference: dict) -> list[dict[str, Any]]:
    """Per text: sums and per-token values the task aggregates into its metrics.

    The KL is exact (within ``kl_bound``) when the reference holds ``kl=exact`` codes, else over
    the top-k plus tail (a lower bound). Per token: ``kl``, ``kl_reverse``, the NLL of the
    correct token under each model, whether the argmaxes agree and the quantized argmax.
    """
    results = []
    with captured_blocks(model) as blocks:
        for ids, ref in zip(texts, reference["texts"], strict=True):
            blocks.clear()
            logits = _logits(model, ids)
            ref_device = {k: v.to(logits.device) for k, v in ref.items() if k != "blocks"}
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
                    **_divergences(ref_device, logits),
                    "top1_agree": int(agree.sum()),
                    "agree_tokens": agree.tolist(),
                    "quantized_top1": logits.argmax(dim=-1).tolist(),
                    "nll_reference": float(ref["nll"].double().sum()),
                    "nll_quantized": float(nll.sum()),
                    "nll_reference_tokens": ref["nll"].double().tolist(),
                    "nll_quantized_tokens": nll.tolist(),
                    "logit_energy": logit_energy,
                    "block_energy": block_energy,
                }
            )
    return results


def _divergences(reference: dict, logits: torch.Tensor) -> dict[str, list[float]]:
    """Per-token ``kl`` and ``kl_reverse`` (and, in exact mode, their error bounds)."""
    if divergence.LOGPROB_CODES in reference:
        exact = divergence.kl_from_codes(reference, logits)
        return {name: values.tolist() for name, values in exact.items()}
    return {
        "kl": divergence.kl_from_topk(reference, logits).tolist(),
        "kl_reverse": divergence.reverse_kl_from_topk(reference, logits).tolist(),
    }


def weight_energies(
    model: Any, checkpoint_dir: str, dequantize, dtype: torch.dtype | None = None
) -> tuple[dict[str, tuple], list[str]]:
    """(Σx², Σ(x − x̂)²) per layer: effective weight vs the checkpoint tensor, one at a time.

    ``dequantize(module, shape, layer)`` is a ``core.registry.Dequantizer`` (or
    ``Registry.dequantize_weight``): the checked ``qeval_dequantize_weight`` answer with its
    plugin, or None (no plugin reads the layer, or only with a refused answer; the registry
    warns once per plugin and layer type). It is asked for every module
    whose ``<name>.weight`` is a 2-D tensor of the checkpoint, whatever attributes the module
    has (a quantizer may replace a layer by one without ``.weight``). The checkpoint tensor is
    first cast to ``dtype`` (the run's dtype; None keeps the stored one), so the reference is the
    unquantized model exactly as the run would load it. Embeddings and the LM head are included
    only when the quantizer changed them (their noise is non-zero).

    Returns ``(energies, missing)``: ``missing`` names the layers no hook could read (a warning
    per layer type names the hook to implement).
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
        answer = dequantize(module, shape, name)
        if answer is None:
            missing[name] = type(module)
            continue
        dense = answer.tensor
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


def _warn_unreadable(missing: dict[str, type]) -> None:
    """One warning per layer type that has checkpoint weights but no usable dequantize answer
    (a refused answer has a warning of its own, naming the plugin)."""
    by_type: dict[type, list[str]] = {}
    for name, kind in missing.items():
        by_type.setdefault(kind, []).append(name)
    for kind, names in by_type.items():
        logger.warning(
            "weight SQNR leaves out %d layer(s) of type %s.%s (e.g. '%s'): no plugin's "
            "qeval_dequantize_weight hook gives a usable answer for them; implement "
            "qeval_dequantize_weight for %s",
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

    Returns one dict per request (per text) for the task's ``process_results``, each carrying the
    run-level metrics of :data:`TABLE_METRICS` under ``"model"``; the other run-level metrics
    (:data:`BLOCK_METRICS`, under ``metrics``), the per-layer and per-block figures, the KL mode
    with its error bounds and the most divergent tokens go to the run's ``qeval`` block under
    ``sqnr``. ``kl=auto`` is resolved
    (:func:`resolve_kl`; a fall-back to top-k is one warning and recorded as ``kl_fallback``)
    and, with ``kl=exact``, the cache budget checked before any pass; the cache key holds the
    mode used.
    """
    from qeval_plugins.core.registry import get_registry
    from qeval_plugins.storage import reference_cache
    from qeval_plugins.storage.cache_layout import reference_dir

    requested = SqnrSettings.from_mapping(requests[0].args[1])
    prefix = [lm.prefix_token_id] if lm.prefix_token_id is not None else []
    texts = [
        torch.tensor(prefix + lm.tok_encode(request.args[0])[: requested.max_tokens])
        for request in requests
    ]
    vocabulary = getattr(lm.model.config, "vocab_size", None)
    vocabulary = vocabulary if isinstance(vocabulary, int) else None
    settings, fallback = resolve_kl(requested, texts, vocabulary)
    if fallback:
        logger.warning("qeval_sqnr kl=auto uses top-k KL, a lower bound: %s", fallback)
    if vocabulary is not None:
        check_exact_budget(texts, vocabulary, settings)  # before any pass; rechecked on logits
    lm.require_reference()
    checkpoint = lm.reference_dir()
    dtype = lm.dtype_name
    key = reference_cache.reference_key(
        reference_cache.checkpoint_identity(checkpoint),
        [t.tolist() for t in texts],
        settings.cache_settings(),
        dtype,
    )
    run_dtype = getattr(torch, dtype) if dtype in ("float16", "bfloat16", "float32") else None
    dequantize = get_registry().dequantizer(lm.quantized_by)
    energies, missing = weight_energies(lm.model, checkpoint, dequantize, run_dtype)
    weights = {
        **summarize_weights(energies, settings.worst_layers),
        "missing_layers": missing,
        "dequantized_by": dequantize.answered_by,
        "compared_layers": len(energies),
    }
    if not energies and not missing:  # no hook to blame: no module is named as a weight there
        weights["not_measured"] = (
            f"no layer of the model has a weight of its name in the reference checkpoint "
            f"{checkpoint} (safetensors files)"
        )
        logger.warning("weight SQNR not measured: %s", weights["not_measured"])
    reference = reference_cache.load(key, check=lambda ref: check_reference(ref, texts, settings))
    reused = reference is not None
    if reference is None:
        reference = lm.on_reference_model(lambda model: compute_reference(model, texts, settings))
        meta = {"kind": "qeval_sqnr", "settings": settings.cache_settings(), "texts": len(texts)}
        meta.update(model=lm.reference_name, dtype=dtype)
        reference_cache.save(key, reference, meta=meta)
    results = compare(lm.model, texts, reference)
    blocks = summarize_blocks(results)
    mode = divergence_mode(settings, results)
    summary = {
        **{name: divergence_stats.json_safe(value) for name, value in statistics(results).items()},
        **perplexities(results),
        "kl_error_bound": mode["kl_error_bound"],
        "weight_sqnr_mean_db": weights["mean_db"],
        "weight_sqnr_min_db": weights["min_db"],
        "weight_sqnr_global_db": weights["global_db"],
        "activation_sqnr_last_db": blocks[-1] if blocks else None,
        "activation_sqnr_min_db": _worst(blocks),
    }
    lm.record(
        "sqnr",
        {
            "settings": {**asdict(settings), "kl": requested.kl},
            "reference_cache": {
                "key": key,
                "reused": reused,
                "dir": str(reference_dir()),
            },
            "metrics": {name: summary[name] for name in BLOCK_METRICS},
            "weights": weights,
            "activation_blocks_db": blocks,
            "divergence": {
                **mode,
                **({"kl_fallback": fallback} if fallback else {}),
                "worst_tokens": worst_tokens(results, texts, reference, lm.tok_decode),
            },
        },
    )
    table = {name: summary[name] for name in TABLE_METRICS if name in RUN_METRICS}
    for result in results:
        result["model"] = table
    return results


def perplexities(results: list[dict[str, Any]]) -> dict[str, float | str]:
    """``ppl_reference`` and ``ppl_quantized``: token perplexity exp(Σ NLL / Σ tokens) of each
    model over every scored token of every text; ``ppl_delta``: quantized minus reference
    (``"inf"`` when not finite). JSON-safe (:func:`.divergence_stats.json_safe`)."""
    tokens = sum(result["tokens"] for result in results)
    reference = divergence.perplexity(sum(r["nll_reference"] for r in results), tokens)
    quantized = divergence.perplexity(sum(r["nll_quantized"] for r in results), tokens)
    delta = quantized - reference
    return {
        "ppl_reference": divergence_stats.json_safe(reference),
        "ppl_quantized": divergence_stats.json_safe(quantized),
        "ppl_delta": divergence_stats.json_safe(delta if math.isfinite(delta) else math.inf),
    }


def _pooled(results: list[dict[str, Any]], name: str) -> torch.Tensor:
    """The per-token list ``name`` of every text, concatenated: float64 ``[n]``."""
    return torch.tensor([v for result in results for v in result[name]], dtype=torch.float64)


def statistics(results: list[dict[str, Any]]) -> dict[str, float | None]:
    """The run's divergence statistics (:mod:`~qeval_plugins.metrics.divergence_stats`) over
    every scored token of every text."""
    positions = torch.tensor([t for result in results for t in range(result["tokens"])])
    return {
        **divergence_stats.kl_statistics(
            _pooled(results, "kl"), _pooled(results, "kl_reverse"), positions
        ),
        **divergence_stats.probability_statistics(
            _pooled(results, "nll_reference_tokens"), _pooled(results, "nll_quantized_tokens")
        ),
        **divergence_stats.agreement_statistics(_pooled(results, "agree_tokens")),
    }


def divergence_mode(settings: SqnrSettings, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Which KL ran and how exact it is, for the results (JSON-safe).

    ``kl_error_bound`` / ``kl_reverse_error_bound``: in exact mode the mean over tokens of the
    per-token bound on |KL̃ − KL| (a bound on the error of ``kl_mean`` / ``kl_reverse_mean``);
    ``..._max``: the largest per-token bound, which bounds the error of every per-token KL and
    so of every KL percentile. In topk mode the KL (forward, reverse, symmetric) is a lower
    bound with no finite upper bound: ``"inf"``. ``kl_is_lower_bound``: true in topk mode, for
    every KL figure (means, percentiles, forward, reverse and symmetric).
    """
    if not settings.is_exact():
        return {
            "kl_mode": "topk",
            "kl_is_lower_bound": True,
            "kl_is": (
                "a lower bound (forward, reverse and symmetric KL): the reference's top-k tokens "
                "plus one lumped tail category; Δp, perplexities and top-1 agreement are exact"
            ),
            "top_k": settings.top_k,
            **dict.fromkeys(BOUND_FIELDS, "inf"),
        }
    forward, reverse = _pooled(results, "kl_bound"), _pooled(results, "kl_reverse_bound")
    values = [float(part.mean()) if part.numel() else 0.0 for part in (forward, reverse)] + [
        float(part.max()) if part.numel() else 0.0 for part in (forward, reverse)
    ]
    return {
        "kl_mode": "exact",
        "kl_is_lower_bound": False,
        "kl_is": (
            "exact within kl_error_bound: every reference log-probability cached as a uint16 "
            f"code, step <= {divergence.HIGH_SEGMENT_NATS / (divergence.HIGH_LEVELS - 1):.2g} "
            f"nats within {divergence.HIGH_SEGMENT_NATS:g} nats of the top token"
        ),
        **{
            name: divergence_stats.json_safe(value)
            for name, value in zip(BOUND_FIELDS, values, strict=True)
        },
    }


BOUND_FIELDS = (
    "kl_error_bound",
    "kl_reverse_error_bound",
    "kl_error_bound_max",
    "kl_reverse_error_bound_max",
)


def worst_tokens(
    results: list[dict[str, Any]], texts: list[torch.Tensor], reference: dict, decode
) -> list[dict[str, Any]]:
    """The :data:`WORST_TOKENS` tokens with the highest KL, highest first, for inspection.

    Each: ``text`` (index) and ``position`` (of the predicted token in the scored ids, 0 = the
    first predicted), ``kl`` / ``kl_reverse`` (nats), ``context`` (the up to
    :data:`CONTEXT_TOKENS` tokens before it, decoded), ``token`` (the correct next token),
    ``reference_top1`` / ``quantized_top1`` (each model's most likely token), ``p_reference`` /
    ``p_quantized`` (each model's probability of the correct token). Text is raw decoded
    model output: pass it through ``core.text.printable`` before showing it.
    """
    ranked = sorted(
        (
            (kl, number, position)
            for number, r in enumerate(results)
            for position, kl in enumerate(r["kl"])
        ),
        key=lambda item: (-item[0] if not math.isnan(item[0]) else math.inf, item[1], item[2]),
    )[:WORST_TOKENS]
    worst = []
    for kl, number, position in ranked:
        ids, result = texts[number].tolist(), results[number]
        top1 = int(reference["texts"][number][divergence.TOPK_INDICES][position, 0])
        worst.append(
            {
                "text": number,
                "position": position,
                "kl": divergence_stats.json_safe(kl),
                "kl_reverse": divergence_stats.json_safe(result["kl_reverse"][position]),
                "context": decode(ids[max(0, position + 1 - CONTEXT_TOKENS) : position + 1]),
                "token": decode([ids[position + 1]]),
                "reference_top1": decode([top1]),
                "quantized_top1": decode([result["quantized_top1"][position]]),
                "p_reference": math.exp(-result["nll_reference_tokens"][position]),
                "p_quantized": math.exp(-result["nll_quantized_tokens"][position]),
            }
        )
    return worst


def _worst(values: list[float | str]) -> float | str | None:
    """The lowest of JSON dB values (``"-inf"`` below every number, ``"inf"`` above), or None."""
    return json_db(min(float(value) for value in values)) if values else None


register_request_handler(REQUEST_TYPE, run)
