"""``qeval scan`` end to end: reference, per-unit scan, ranking, recommendation, verification.

The verification is a real run of the quantizer: the whole model quantized as the spec says
(``all_quantized``), with ``skip=`` the recommended units (``recommended``), and with ``skip=``
as many of the *least* sensitive units (``least_sensitive``, the control); each is measured
against the same reference pass. ``improves`` says the recommendation beats all-quantized,
``beats_least_sensitive`` that it beats the control.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.logs import MODEL_LOADING_NOISE, quiet
from qeval_plugins.core.quantizer import bits_per_param
from qeval_plugins.evals.scan import engine
from qeval_plugins.evals.scan.recommend import check_target_bits, recommend

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ScanRequest:
    """What to scan: model, quantizer spec, unit, device, dtype, texts and the target."""

    model: str
    spec: str
    unit: str = "layer"
    device: str = "cpu"
    dtype: str = "auto"
    limit: int | None = None
    texts_from: tuple[str, ...] = engine.PASSAGES  # bundled JSON Lines, under the tasks folder
    max_tokens: int = 256
    top_k: int = 32
    target_bits: float | None = None


def checked_plan(spec: str, device: str) -> Any:
    """The spec's plan, refused in one line when the scan cannot verify or measure it: a
    ``skip=`` already given, a quantizer without ``skip=``, activation or KV-cache
    quantization, a quantizer that changes nothing."""
    from qeval_plugins.core.plan import check_spec

    plan = check_spec(spec, device)
    if plan.quantizer.identity:
        raise QevalError(
            f"quantizer '{plan.quantizer.name}' changes no weight, so there is nothing to scan; "
            f"give a quantizer spec such as rtn:bits=3."
        )
    if "skip" in plan.given:
        raise QevalError("qeval scan chooses skip= itself; drop skip= from --quantizer.")
    if plan.kv is not None:
        raise QevalError(
            "qeval scan measures weight quantization only (it generates nothing, so a KV cache "
            "is never used); drop the kv_* options from --quantizer."
        )
    if not _has_skip(plan.quantizer):
        raise QevalError(
            f"quantizer '{plan.quantizer.name}' has no skip= option, so a recommendation could "
            f"not be verified; scan one of: {', '.join(scannable())}."
        )
    engine.refuse_activation_quantization(plan)
    return plan


def _has_skip(quantizer: Any) -> bool:
    return any(option.name == "skip" for option in quantizer.options)


def scannable() -> list[str]:
    """The quantizers a scan takes at their defaults: with ``skip=``, weight-only, not CUDA-only
    (the list a refusal offers)."""
    from qeval_plugins.core.registry import get_registry

    names = []
    for entry in get_registry().all():
        quantizer = entry.quantizer
        defaults = {option.name: option.default for option in quantizer.options}
        scheme = quantizer.scheme(defaults) if _has_skip(quantizer) else None
        weight_only = scheme is None or scheme.activations == "unquantized"
        if _has_skip(quantizer) and weight_only and not quantizer.needs_cuda:
            names.append(quantizer.name)
    return sorted(names)


def run_scan(request: ScanRequest, progress: Callable[[str], None] = lambda line: None) -> dict:
    """Scan, recommend and verify (module docstring); returns the ``scan.json`` document.
    ``progress`` gets one line per step and per unit."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qeval_plugins.backend.checkpoints import resolve_pretrained
    from qeval_plugins.backend.quantized import QuantizedCache
    from qeval_plugins.core.quantizer import resolve_dtype

    quiet(MODEL_LOADING_NOISE)  # torchao's CUDA-only extensions, torch deprecations
    if request.unit not in engine.UNITS:
        raise QevalError(f"unknown --unit '{request.unit}'; use one of {', '.join(engine.UNITS)}.")
    plan = checked_plan(request.spec, request.device)
    check_target_bits(plan.quantizer.effective_bits(plan.options), request.target_bits)
    started = time.perf_counter()
    pretrained = resolve_pretrained(request.model)
    dtype_name = resolve_dtype(request.dtype, pretrained, None)
    dtype = getattr(torch, dtype_name) if dtype_name != "auto" else "auto"
    try:
        tokenizer = AutoTokenizer.from_pretrained(pretrained)
        model = AutoModelForCausalLM.from_pretrained(pretrained, dtype=dtype)
    except OSError as error:  # transformers' "not a local folder and not a valid hub id"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise QevalError(
            f"could not load model '{request.model}': {first} Give a local model directory (or "
            f"a hub id with network access)."
        ) from error
    model = model.to(request.device).eval()
    load_seconds = time.perf_counter() - started
    kept_bits = float(next(model.parameters()).element_size() * 8)
    texts = engine.load_texts(tokenizer, request.limit, request.max_tokens, request.texts_from)
    reference = engine.reference_pass(model, texts, request.top_k, request.texts_from)
    progress(f"reference: {len(texts)} texts, {reference.tokens} tokens")

    def quantize(spec_plan: Any) -> Any:
        context = QuantizedCache(spec_plan).context(
            request.device,
            request.dtype,
            pretrained,
            None,
            tokenizer,
            getattr(model.config, "max_position_embeddings", None),
        )

        def load(extra: dict) -> Any:
            extra = dict(extra)
            chosen = extra.pop("dtype", dtype)
            placement = {"device_map": request.device} if request.device != "cpu" else {}
            return AutoModelForCausalLM.from_pretrained(
                pretrained, dtype=chosen, **placement, **extra
            )

        return engine.quantized_model(model, spec_plan, context, load)

    def measure_spec(spec: str) -> engine.Divergence:
        from qeval_plugins.core.plan import check_spec

        quantized = quantize(check_spec(spec, request.device))
        return engine.measure(quantized, reference)

    clock = time.perf_counter()
    quantized = quantize(plan)
    all_quantized = engine.measure(quantized, reference)
    weights = engine.quantized_weights(model, quantized, plan.plugin.name)
    del quantized
    quantize_seconds = time.perf_counter() - clock
    units = engine.make_units(model, weights, request.unit)
    if not units:
        raise QevalError(f"'{plan.spec}' changed no weight of {request.model}; nothing to scan.")
    progress(f"quantized {len(weights)} layers ({quantize_seconds:.1f}s); scanning {len(units)}")
    rows, unit_seconds = [], []
    for number, unit in enumerate(units, 1):
        clock = time.perf_counter()
        found = engine.measure_unit(model, unit, reference)
        unit_seconds.append(time.perf_counter() - clock)
        rows.append({"name": unit.name, "layers": unit.layers, "params": unit.params})
        rows[-1].update(found.record())
        progress(
            f"[{number}/{len(units)}] {unit.name}: KL {found.kl_mean:.4g} nats, "
            f"ΔNLL {found.delta_nll:+.4g} ({unit_seconds[-1]:.2f}s)"
        )
    ranking = rank(rows)
    quantized_bits = plan.quantizer.effective_bits(plan.options)
    advice = recommend(ranking, quantized_bits, kept_bits, request.target_bits)
    advice["skip"] = skip_value(advice["units"])
    clock = time.perf_counter()
    checks = verify(plan.spec, ranking, advice["units"], all_quantized, measure_spec, progress)
    params = {row["name"]: row["params"] for row in ranking}
    for key in ("recommended", "least_sensitive"):
        if checks.get(key) and quantized_bits is not None:
            checks[key]["bits_per_param"] = bits_per_param(
                params, checks[key]["units"], quantized_bits, kept_bits
            )
    checks["seconds"] = round(time.perf_counter() - clock, 4)
    return {
        "qeval_scan": FORMAT_VERSION,
        "model": request.model,
        "spec": plan.spec,
        "quantizer": plan.quantizer.name,
        "options": dict(plan.options),
        "unit": request.unit,
        "device": request.device,
        "dtype": dtype_name,
        "settings": {
            "limit": request.limit,
            "max_tokens": request.max_tokens,
            "top_k": request.top_k,
            "target_bits": request.target_bits,
        },
        "reference": reference.record(),
        "timing": {
            "model_load_seconds": round(load_seconds, 4),
            "quantize_seconds": round(quantize_seconds, 4),
            "unit_seconds_mean": round(sum(unit_seconds) / len(unit_seconds), 4),
            "total_seconds": round(time.perf_counter() - started, 4),
        },
        "units": ranking,
        "recommendation": advice,
        "verification": checks,
    }


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows sorted most sensitive first (KL, then ΔNLL, both descending, NaN as +∞: a unit
    that breaks the model's numbers ranks first; then name), numbered from 1."""

    def worse_first(value: float) -> float:
        return -math.inf if math.isnan(value) else -value

    ordered = sorted(
        rows, key=lambda r: (worse_first(r["kl_mean"]), worse_first(r["delta_nll"]), r["name"])
    )
    return [{"rank": number, **row} for number, row in enumerate(ordered, 1)]


def skip_value(names: list[str]) -> str:
    """The ``skip=`` value that keeps exactly ``names`` (full module names; ``[`` escaped for
    the glob)."""
    return "+".join(name.replace("[", "[[]") for name in names)


def verify(
    spec: str,
    ranking: list[dict[str, Any]],
    chosen: list[str],
    all_quantized: engine.Divergence,
    measure_spec: Callable[[str], engine.Divergence],
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Real runs (``measure_spec``) of ``spec`` with ``skip=`` the ``chosen`` units and with
    ``skip=`` as many least-sensitive units (see the module docstring); those entries are None
    when nothing is chosen."""
    checks: dict[str, Any] = {"all_quantized": {"units": [], **all_quantized.record()}}
    control = [row["name"] for row in ranking[::-1][: len(chosen)]]
    for key, names in (("recommended", chosen), ("least_sensitive", control)):
        if not names:
            checks[key] = None
            continue
        found = measure_spec(f"{spec}:skip={skip_value(names)}")
        checks[key] = {"units": names, "skip": skip_value(names), **found.record()}
        progress(f"verify {key} (skip {len(names)}): KL {found.kl_mean:.4g} nats")
    recommended, least = checks["recommended"], checks["least_sensitive"]
    all_kl = checks["all_quantized"]["kl_mean"]
    checks["improves"] = recommended is not None and recommended["kl_mean"] < all_kl
    checks["beats_least_sensitive"] = (
        recommended is not None
        and least is not None
        and (recommended["kl_mean"] < least["kl_mean"] or set(chosen) == set(control))
    )
    return checks
