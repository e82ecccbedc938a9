"""The layer-sensitivity scan: quantize one unit at a time and measure what it costs.

A **unit** is one quantized weight matrix (``--unit layer``: a linear layer) or every quantized
matrix of one decoder block (``--unit block``; a quantized layer outside the blocks, such as
``lm_head`` with ``include_lm_head``, is a unit of its own). The scan

1. runs the unquantized model once over the texts (the bundled ``qeval_sqnr`` passages) and
   keeps, per token, the top-k reference log-probabilities (:func:`divergence.topk_reference`)
   and the reference NLL of the next token — the one reference pass every unit is compared with;
2. quantizes one copy of the model with the quantizer (its own ``quantize``/``load_kwargs``, so
   any quantizer works) and reads each layer's effective dense weight through the
   ``qeval_dequantize_weight`` hook; the layers whose weight changed are the quantized ones, and
   the copy is released (the scan holds the model and, for this step only, one quantized copy);
3. per unit, writes the unit's quantized weights into the unquantized model in place, runs the
   texts, and writes the original weights back (bit for bit): no reload per unit, so the cost is
   one forward pass over the texts per unit.

Per unit it records ``kl_mean`` — the token-weighted mean of KL(P_ref‖P_unit) in nats over the
reference's top-k plus one lumped tail category (:func:`divergence.kl_from_topk`, a lower bound
of the full KL) — ``delta_nll`` = mean NLL(unit) − mean NLL(reference) in nats per token, and
``top1_agreement``. Weight-only: a spec that quantizes activations is refused (the swapped dense
weights cannot carry it).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.model_parts import decoder_layers
from qeval_plugins.metrics import divergence

UNITS = ("layer", "block")
PASSAGES = ("qeval_sqnr", "passages.jsonl")  # the bundled texts, under the tasks folder


@dataclass(frozen=True)
class Divergence:
    """How far a model's next-token distributions are from the reference's, over all tokens.

    kl_mean: mean KL(P_ref‖P) per token, nats (top-k + tail bound); delta_nll: mean NLL minus
    the reference's, nats per token; top1_agreement: share of tokens with the same argmax.
    """

    kl_mean: float
    delta_nll: float
    top1_agreement: float

    def record(self) -> dict[str, float]:
        return {
            "kl_mean": self.kl_mean,
            "delta_nll": self.delta_nll,
            "top1_agreement": self.top1_agreement,
        }


@dataclass
class Reference:
    """The reference pass: per text its ids, top-k log-probabilities and token NLLs (CPU)."""

    texts: list[torch.Tensor]
    topk: list[dict[str, torch.Tensor]]
    nll: list[torch.Tensor]
    top_k: int
    seconds: float = 0.0
    texts_from: tuple[str, ...] = PASSAGES

    @property
    def tokens(self) -> int:
        """Scored tokens: every position that predicts a next token."""
        return sum(int(n.numel()) for n in self.nll)

    def nll_mean(self) -> float:
        return float(torch.cat(self.nll).double().mean())

    def record(self) -> dict[str, Any]:
        """What the results say about the reference: texts, tokens, top-k, mean NLL, hash."""
        digest = hashlib.sha256(json.dumps([t.tolist() for t in self.texts]).encode()).hexdigest()
        return {
            "texts_from": "/".join(self.texts_from),
            "texts": len(self.texts),
            "tokens": self.tokens,
            "top_k": self.top_k,
            "kl_is_lower_bound": True,  # top-k + tail KL (divergence.kl_from_topk)
            "nll_mean": self.nll_mean(),
            "tokens_sha256": digest,
            "seconds": round(self.seconds, 4),
        }


@dataclass
class Unit:
    """One scanned unit: its name, the layers it holds and their quantized dense weights."""

    name: str
    layers: list[str]
    params: int
    weights: dict[str, torch.Tensor] = field(repr=False)


def load_texts(
    tokenizer: Any, limit: int | None, max_tokens: int, texts_from: tuple[str, ...] = PASSAGES
) -> list[torch.Tensor]:
    """Token ids of bundled passages (``texts_from``: a JSON Lines file of ``{"text"}`` under the
    tasks folder; the first ``limit``), each cut to ``max_tokens``, with the tokenizer's BOS
    first when it has one."""
    from qeval_plugins.paths import tasks_path

    path = tasks_path().joinpath(*texts_from)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    texts = []
    for row in rows[:limit]:
        ids = bos + tokenizer(row["text"], add_special_tokens=False)["input_ids"]
        texts.append(torch.tensor(ids[:max_tokens]))
    return texts


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """Next-token logits [T-1, V] in float32 (position t predicts t+1)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(ids.to(device)[None], use_cache=False).logits[0, :-1].float()


def reference_pass(
    model: Any, texts: list[torch.Tensor], top_k: int, texts_from: tuple[str, ...] = PASSAGES
) -> Reference:
    """The one reference pass of the scan (see the module docstring) over ``texts`` (read from
    ``texts_from``)."""
    started = time.perf_counter()
    topk, nll = [], []
    for ids in texts:
        logits = _logits(model, ids)
        topk.append({k: v.cpu() for k, v in divergence.topk_reference(logits, top_k).items()})
        nll.append(divergence.token_nll(logits, ids[1:].to(logits.device)).cpu())
    return Reference(texts, topk, nll, top_k, time.perf_counter() - started, texts_from)


def measure(model: Any, reference: Reference) -> Divergence:
    """KL mean, ΔNLL and top-1 agreement of ``model`` against ``reference``, token-weighted."""
    kls, nlls, agree = [], [], []
    for ids, topk in zip(reference.texts, reference.topk, strict=True):
        logits = _logits(model, ids)
        ref = {k: v.to(logits.device) for k, v in topk.items()}
        kls.append(divergence.kl_from_topk(ref, logits).double().cpu())
        nlls.append(divergence.token_nll(logits, ids[1:].to(logits.device)).double().cpu())
        agree.append(divergence.top1_agreement(ref, logits).double().cpu())
    nll = float(torch.cat(nlls).mean())
    return Divergence(
        kl_mean=float(torch.cat(kls).mean()),
        delta_nll=nll - reference.nll_mean(),
        top1_agreement=float(torch.cat(agree).mean()),
    )


def quantized_model(model: Any, plan: Any, context: Any, load: Callable[[dict], Any]) -> Any:
    """``model`` quantized by ``plan``'s quantizer: a deep copy passed to its ``quantize``, or,
    when its ``load_kwargs`` asks to quantize while loading, ``load(extra)`` (the checkpoint
    loaded with those extra ``from_pretrained`` arguments) and then its ``quantize``."""
    from qeval_plugins.core.registry import run_load_kwargs, run_quantize

    extra = run_load_kwargs(plan.quantizer, plan.plugin, plan.options, context)
    target = load(extra) if extra else copy.deepcopy(model)
    return run_quantize(plan.quantizer, plan.plugin, target, plan.options, context).eval()


def quantized_weights(
    reference_model: Any, quantized: Any, owner: str | None = None
) -> dict[str, torch.Tensor]:
    """Name -> the quantized dense weight (CPU, the reference's dtype) of every linear or
    embedding layer whose effective weight differs from the reference's. ``owner``: the plugin
    whose quantizer made ``quantized``, asked first (``core.registry.Dequantizer``)."""
    from qeval_plugins.core.registry import get_registry

    dequantize = get_registry().dequantizer(owner)
    changed = {}
    for name, module in reference_model.named_modules():
        if not isinstance(module, torch.nn.Linear | torch.nn.Embedding):
            continue
        original = module.weight.data
        answer = dequantize(quantized.get_submodule(name), original.shape, name)
        if answer is None:
            continue
        dense = answer.tensor.detach().to(device="cpu", dtype=original.dtype)
        if not torch.equal(dense, original.cpu()):
            changed[name] = dense
    return changed


def make_units(model: Any, weights: dict[str, torch.Tensor], unit: str) -> list[Unit]:
    """The units of the scan over the quantized ``weights``: one per layer, or one per decoder
    block (layers outside the blocks stay units of their own), in model order."""
    if unit not in UNITS:
        raise QevalError(f"unknown scan unit '{unit}'; use one of {', '.join(UNITS)}.")
    groups: dict[str, list[str]] = {}
    blocks = []
    if unit == "block":
        names = {id(module): name for name, module in model.named_modules()}
        blocks = [names[id(block)] for block in decoder_layers(model)]
    for layer in weights:
        owner = next((b for b in blocks if layer.startswith(b + ".")), layer)
        groups.setdefault(owner, []).append(layer)
    return [
        Unit(name, layers, sum(weights[n].numel() for n in layers), {n: weights[n] for n in layers})
        for name, layers in groups.items()
    ]


def measure_unit(model: Any, unit: Unit, reference: Reference) -> Divergence:
    """``model`` with only ``unit`` quantized (weights written in place, then restored)."""
    saved = {}
    try:
        with torch.no_grad():
            for name, dense in unit.weights.items():
                weight = model.get_submodule(name).weight
                saved[name] = weight.data.clone()
                weight.data.copy_(dense.to(weight.device))
        return measure(model, reference)
    finally:
        with torch.no_grad():
            for name, original in saved.items():
                model.get_submodule(name).weight.data.copy_(original)


def refuse_activation_quantization(plan: Any) -> None:
    """The scan swaps weights only: a spec whose scheme quantizes activations is one line."""
    scheme = plan.quantizer.scheme(plan.options)
    if scheme is not None and scheme.activations != "unquantized":
        raise QevalError(
            f"qeval scan measures weight quantization, and '{plan.spec}' also quantizes "
            f"activations ({scheme.activations}); scan a weight-only spec."
        )
