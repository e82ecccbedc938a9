"""The engine of the ``qeval_outliers`` task: outlier features before and after quantization.

What is measured, per decoder layer l, on the task's texts (every token position, the prefix
token included), for the unquantized reference and for the quantized model alike:

* the layer's **projection inputs** X_l: the hidden states the block hands to its sublayers
  (attention, MLP) that their linear layers read — in pre-norm (Llama-like) blocks the
  normalised residual stream read by q/k/v and the one read by gate/up. A linear reading a
  tensor computed inside a sublayer (o_proj: the attention output; down_proj: the MLP's
  intermediate) is left out, as are linears whose input width is not the hidden size; a tensor
  read by several linears counts once. They are taken before any input quantization a quantizer
  adds to those linears (forward pre-hooks that run first): the hidden states the model
  computes, as in LLM.int8();
* ``absmax``: max |x| over X_l;
* ``kurtosis``: excess (Fisher) kurtosis of all elements of X_l pooled (normal = 0);
* ``dims_above_share``: the share of the hidden dimensions i with |X_l[t, i]| ≥ threshold at
  one position t at least;
* ``weight_kurtosis`` / ``weight_kurtosis_max``: excess kurtosis of each linear weight of the
  block (the effective dense weight, through the ``qeval_dequantize_weight`` hook), mean and
  maximum over the block's linears.

**Outlier features** (Dettmers et al. 2022, LLM.int8(), §4.1): a hidden dimension i whose
magnitude reaches ``threshold`` (6.0) in at least ``layer_share`` (25 %) of the decoder layers
(layers with |X_l[t, i]| ≥ threshold at some position t) and at at least ``position_share``
(6 %) of the token positions (positions t with |X_l[t, i]| ≥ threshold in some layer l).

The reference's figures are computed once per model + texts + settings and cached on disk
(:mod:`qeval_plugins.storage.reference_cache`), on the reference model loaded in place of the
quantized one (:meth:`QevalLM.on_reference_model`): the two are never in memory together.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import asdict, dataclass
from typing import Any

import torch

from qeval_plugins.backend.requests import register_request_handler
from qeval_plugins.core.errors import QevalError, refuse_near_misses
from qeval_plugins.core.model_parts import decoder_layers
from qeval_plugins.evals.outliers import stats

REQUEST_TYPE = "qeval_outliers"
TEXT_SETTINGS = ("text_file", "text_field")  # metadata read by the task's document loader
FORMAT = 1  # of the cached reference figures


@dataclass(frozen=True)
class OutlierSettings:
    """Task settings (YAML ``metadata``, overridable with ``lm_eval --metadata '{...}'``).

    max_tokens: tokens of each text that are measured (longer texts are cut).
    threshold: the magnitude |x| from which a hidden-state element counts as an outlier (6.0).
    layer_share: share of the decoder layers an outlier feature must reach it in (0.25).
    position_share: share of the token positions an outlier feature must reach it at (0.06).
    """

    max_tokens: int = 256
    threshold: float = 6.0
    layer_share: float = 0.25
    position_share: float = 0.06

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> OutlierSettings:
        """The settings in ``values`` (the task's metadata); a bad or misspelt one is one line."""
        refuse_near_misses(
            values, [*cls.__dataclass_fields__, *TEXT_SETTINGS], "qeval_outliers setting"
        )
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        for name, value in known.items():
            number = not isinstance(value, bool) and isinstance(value, int | float)
            if name == "max_tokens" and not (number and isinstance(value, int) and value >= 1):
                raise QevalError(
                    f"qeval_outliers setting 'max_tokens' must be a positive integer, got "
                    f"{value!r}."
                )
            if name == "threshold" and not (number and math.isfinite(value) and value > 0):
                raise QevalError(
                    f"qeval_outliers setting 'threshold' must be a positive number (LLM.int8(): "
                    f"6.0), got {value!r}."
                )
            if name.endswith("_share") and not (number and 0 < value <= 1):
                raise QevalError(
                    f"qeval_outliers setting '{name}' must be a share in (0, 1], e.g. 0.25, got "
                    f"{value!r}."
                )
        return cls(**{k: float(v) if k != "max_tokens" else v for k, v in known.items()})


# ---------------------------------------------------------------- measuring one model


@dataclass
class _Accumulator:
    """Running figures of one model over the texts (see :func:`measure`)."""

    absmax: torch.Tensor  # [L] float64
    moments: torch.Tensor  # [L, 5] float64
    layer_hits: torch.Tensor  # [L, H] bool
    position_hits: torch.Tensor  # [H] int64
    text_hits: torch.Tensor | None = None  # [T, H] bool, of the text being measured


def hidden_size(model: Any) -> int:
    """The model's hidden size (``config.hidden_size``, else the input embeddings' width)."""
    size = getattr(getattr(model, "config", None), "hidden_size", None)
    if isinstance(size, int) and size > 0:
        return size
    return int(model.get_input_embeddings().weight.shape[1])


def projection_modules(layer: Any, hidden: int) -> list[Any]:
    """The modules of a decoder block that may read the hidden state: modules without children
    whose ``in_features`` is the hidden size (``nn.Linear`` and the quantized linears of every
    library qeval supports). o_proj qualifies when heads × head_dim is the hidden size;
    :func:`measured_inputs` keeps only the inputs the block handed to a sublayer."""
    return [
        module
        for module in layer.modules()
        if getattr(module, "in_features", None) == hidden and not list(module.children())
    ]


@contextlib.contextmanager
def measured_inputs(model: Any, accumulator: _Accumulator, threshold: float):
    """While open, each forward pass adds every decoder block's projection inputs to
    ``accumulator`` (absmax, moments, hits of ``threshold``), each distinct tensor once.

    A block's projection input is a tensor of hidden-size width that the block passed to one of
    its direct children (positionally or by keyword) and that one of its
    :func:`projection_modules` reads; tensors are recognised by identity (weak references, so
    nothing is kept alive).
    """
    hidden = accumulator.position_hits.shape[0]
    handles = []
    for index, layer in enumerate(decoder_layers(model)):
        handed: list[weakref.ref] = []  # tensors the block passed to its children in this pass
        read: list[weakref.ref] = []  # projection inputs already added in this pass

        def start(module, args, handed=handed, read=read):
            handed.clear()
            read.clear()

        def enter(module, args, kwargs, handed=handed):
            for value in (*args, *kwargs.values()):
                if isinstance(value, torch.Tensor) and value.dim() and value.shape[-1] == hidden:
                    handed.append(weakref.ref(value))

        def reads(module, args, index=index, handed=handed, read=read):
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or not any(ref() is x for ref in handed):
                return
            if any(ref() is x for ref in read):  # q, k and v read one tensor
                return
            read.append(weakref.ref(x))
            _add(accumulator, index, x.detach().reshape(-1, hidden), threshold)

        handles.append(layer.register_forward_pre_hook(start))
        for module in projection_modules(layer, hidden):
            handles.append(module.register_forward_pre_hook(reads, prepend=True))
        for child in layer.children():  # after: a linear child records its input, then reads
            handles.append(child.register_forward_pre_hook(enter, with_kwargs=True, prepend=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _add(accumulator: _Accumulator, layer: int, x: torch.Tensor, threshold: float) -> None:
    """Add one projection input ``x`` [T, H] of decoder block ``layer`` to the figures."""
    magnitude = x.abs()
    hits = magnitude >= threshold
    peak = float(magnitude.max()) if magnitude.numel() else 0.0
    accumulator.absmax[layer] = max(float(accumulator.absmax[layer]), peak)
    accumulator.moments[layer] = stats.combine(accumulator.moments[layer], stats.moments(x))
    accumulator.layer_hits[layer] |= hits.any(0).cpu()
    if accumulator.text_hits is not None:
        accumulator.text_hits |= hits.cpu()


def measure(
    model: Any, texts: list[torch.Tensor], settings: OutlierSettings, dequantize
) -> dict[str, Any]:
    """The figures of ``model`` on ``texts`` (1-D token id tensors), CPU tensors only:

    ``absmax`` [L] and ``moments`` [L, 5] (float64) of each block's projection inputs,
    ``layer_hits`` [L, H] (bool: dimension i reached the threshold in block l),
    ``position_hits`` [H] (int64: positions at which it reached it in some block),
    ``positions`` (the number of token positions), ``weight_kurtosis`` [L, 2] (float64, mean
    and max over the block's linears; NaN without any) and ``format``.
    """
    layers = decoder_layers(model)
    if not layers:
        raise QevalError(
            f"qeval_outliers found no decoder layers in {type(model).__name__}: it looks for the "
            f"ModuleList of config.num_hidden_layers blocks (model.model.layers in Llama-like "
            f"models)."
        )
    hidden = hidden_size(model)
    accumulator = _Accumulator(
        absmax=torch.zeros(len(layers), dtype=torch.float64),
        moments=torch.zeros(len(layers), stats.MOMENTS, dtype=torch.float64),
        layer_hits=torch.zeros(len(layers), hidden, dtype=torch.bool),
        position_hits=torch.zeros(hidden, dtype=torch.int64),
    )
    device = next(model.parameters()).device
    with measured_inputs(model, accumulator, settings.threshold), torch.no_grad():
        for ids in texts:
            accumulator.text_hits = torch.zeros(ids.shape[0], hidden, dtype=torch.bool)
            model(ids.to(device)[None])
            accumulator.position_hits += accumulator.text_hits.sum(0)
    if texts:
        _check_read(layers, accumulator.moments[:, 0], hidden)
    return {
        "format": FORMAT,
        "absmax": accumulator.absmax,
        "moments": accumulator.moments,
        "layer_hits": accumulator.layer_hits,
        "position_hits": accumulator.position_hits,
        "positions": sum(int(ids.shape[0]) for ids in texts),
        "weight_kurtosis": weight_kurtosis(layers, dequantize),
    }


def _check_read(layers: list[Any], counts: torch.Tensor, hidden: int) -> None:
    """A one-line QevalError when some decoder block had no projection input read (``counts``:
    elements read per block): its linears could not be recognised, and its figures would be
    silently empty."""
    for index, (layer, count) in enumerate(zip(layers, counts.tolist(), strict=True)):
        if count == 0:
            kinds = sorted({type(m).__name__ for m in layer.modules() if not list(m.children())})
            raise QevalError(
                f"qeval_outliers read no hidden state in decoder layer {index}: none of its "
                f"layers ({', '.join(kinds)}) has in_features = {hidden} (the hidden size) and "
                f"reads what the layer passes to its attention or MLP; a quantized linear layer "
                f"needs an in_features attribute, as torch.nn.Linear has."
            )


def weight_kurtosis(layers: list[Any], dequantize) -> torch.Tensor:
    """[L, 2] float64: mean and max excess kurtosis of the linear weights of each block.

    A block's linears are its modules without children that ``dequantize(module)`` (a
    ``core.registry.Dequantizer``: checked answers, floating point and finite) answers with a
    2-D tensor;
    a weight of constant values has no kurtosis and is left out; NaN where none is left.
    """
    figures = torch.full((len(layers), 2), math.nan, dtype=torch.float64)
    for index, layer in enumerate(layers):
        values = []
        for module in layer.modules():
            if list(module.children()):
                continue
            answer = dequantize(module)
            dense = None if answer is None else answer.tensor
            if dense is not None and dense.dim() == 2:
                kurtosis = stats.excess_kurtosis(stats.moments(dense))
                values += [] if kurtosis is None else [kurtosis]
        if values:
            figures[index] = torch.tensor(
                [sum(values) / len(values), max(values)], dtype=torch.float64
            )
    return figures


def check_figures(figures: Any, positions: int) -> None:
    """Raise ValueError unless ``figures`` has the structure :func:`measure` gives for texts of
    ``positions`` token positions in all, and values it can give (counts in range, peaks >= 0;
    a cached reference is checked with it before use)."""
    if not isinstance(figures, dict) or figures.get("format") != FORMAT:
        raise ValueError("not qeval_outliers figures of this format")
    if figures.get("positions") != positions:
        raise ValueError(f"positions {figures.get('positions')!r}, expected {positions}")
    absmax = figures.get("absmax")
    if not isinstance(absmax, torch.Tensor) or absmax.dim() != 1:
        raise ValueError("absmax: not a 1-D tensor")
    layers = absmax.shape[0]
    hits = figures.get("layer_hits")
    hidden = hits.shape[1] if isinstance(hits, torch.Tensor) and hits.dim() == 2 else -1
    expected = {
        "absmax": (torch.float64, (layers,)),
        "moments": (torch.float64, (layers, stats.MOMENTS)),
        "layer_hits": (torch.bool, (layers, hidden)),
        "position_hits": (torch.int64, (hidden,)),
        "weight_kurtosis": (torch.float64, (layers, 2)),
    }
    for name, (dtype, shape) in expected.items():
        value = figures.get(name)
        if not isinstance(value, torch.Tensor) or value.dtype != dtype or value.shape != shape:
            raise ValueError(f"{name}: expected a {dtype} tensor of shape {shape}")
    hits_per_dim = figures["position_hits"]
    if hits_per_dim.numel() and (hits_per_dim.min() < 0 or hits_per_dim.max() > positions):
        raise ValueError("position_hits: counts outside 0..positions")
    if not (figures["absmax"] >= 0).all():  # measure() never stores a NaN or negative peak
        raise ValueError("absmax: NaN or negative")


# ---------------------------------------------------------------- summaries


def json_number(value: float | None) -> float | str | None:
    """A figure for strict JSON: the float, ``"inf"`` / ``"-inf"``, or None for NaN / none."""
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


def summarize(figures: dict[str, Any], settings: OutlierSettings) -> dict[str, Any]:
    """One model's figures as JSON-safe data: its outlier features and per-layer lists."""
    features = stats.outlier_features(
        figures["layer_hits"],
        figures["position_hits"],
        figures["positions"],
        settings.layer_share,
        settings.position_share,
    )
    kurtosis = [stats.excess_kurtosis(row) for row in figures["moments"]]
    weights = figures["weight_kurtosis"]
    return {
        "outlier_features": features,
        "absmax": [json_number(float(v)) for v in figures["absmax"]],
        "kurtosis": [json_number(v) for v in kurtosis],
        "dims_above_share": [json_number(float(v)) for v in figures["layer_hits"].double().mean(1)]
        if figures["layer_hits"].shape[1]
        else [],
        "weight_kurtosis": [json_number(float(v)) for v in weights[:, 0]],
        "weight_kurtosis_max": [json_number(float(v)) for v in weights[:, 1]],
    }


def _mean(values: list[Any]) -> float | None:
    """Mean of the numbers among ``values`` (None and text left out); None when there is none."""
    numbers = [v for v in values if isinstance(v, float)]
    return sum(numbers) / len(numbers) if numbers else None


def _max(values: list[Any]) -> float | str | None:
    """Largest of JSON figures (``"inf"`` above every number), or None when there is none."""
    numbers = [float(v) for v in values if v is not None]
    return json_number(max(numbers)) if numbers else None


def model_metrics(reference: dict[str, Any], quantized: dict[str, Any]) -> dict[str, Any]:
    """The task's lm-eval metrics from both models' :func:`summarize` data."""
    ref, quant = set(reference["outlier_features"]), set(quantized["outlier_features"])
    return {
        "outlier_features_quantized": len(quant),
        "outlier_features_reference": len(ref),
        "outliers_created": len(quant - ref),
        "outliers_destroyed": len(ref - quant),
        "act_absmax_quantized": _max(quantized["absmax"]),
        "act_absmax_reference": _max(reference["absmax"]),
        "act_kurtosis_quantized": _mean(quantized["kurtosis"]),
        "act_kurtosis_reference": _mean(reference["kurtosis"]),
        "weight_kurtosis_quantized": _mean(quantized["weight_kurtosis"]),
        "weight_kurtosis_reference": _mean(reference["weight_kurtosis"]),
    }


def run(lm: Any, requests: list) -> list[dict[str, Any]]:
    """Answer ``qeval_outliers`` requests on ``lm`` (a QevalLM): the reference's figures
    (cached), the quantized model's, their summaries in the run's ``qeval`` block under
    ``outliers`` and, per request, the model-level metrics."""
    from qeval_plugins.core.registry import get_registry
    from qeval_plugins.storage import reference_cache
    from qeval_plugins.storage.cache_layout import reference_dir

    settings = OutlierSettings.from_mapping(requests[0].args[1])
    prefix = [lm.prefix_token_id] if lm.prefix_token_id is not None else []
    texts = [
        torch.tensor(prefix + lm.tok_encode(request.args[0])[: settings.max_tokens])
        for request in requests
    ]
    positions = sum(int(ids.shape[0]) for ids in texts)
    lm.require_reference()
    registry = get_registry()
    key = reference_cache.reference_key(
        reference_cache.checkpoint_identity(lm.reference_dir()),
        [ids.tolist() for ids in texts],
        {"kind": REQUEST_TYPE, "format": FORMAT, **asdict(settings)},
        lm.dtype_name,
    )
    reference = reference_cache.load(key, check=lambda figures: check_figures(figures, positions))
    reused = reference is not None
    if reference is None:
        reference = lm.on_reference_model(
            lambda model: measure(model, texts, settings, registry.dequantizer())
        )
        meta = {"kind": REQUEST_TYPE, "settings": asdict(settings), "texts": len(texts)}
        meta.update(model=lm.reference_name, dtype=lm.dtype_name)
        reference_cache.save(key, reference, meta=meta)
    quantized = measure(lm.model, texts, settings, registry.dequantizer(lm.quantized_by))
    if quantized["layer_hits"].shape != reference["layer_hits"].shape:
        raise QevalError(
            f"qeval_outliers: the reference {lm.reference_name} has "
            f"{tuple(reference['layer_hits'].shape)} (layers, hidden size) and the quantized "
            f"model {tuple(quantized['layer_hits'].shape)}; give reference= the model it was "
            f"made from."
        )
    ref_summary, quant_summary = summarize(reference, settings), summarize(quantized, settings)
    ref_set = set(ref_summary["outlier_features"])
    quant_set = set(quant_summary["outlier_features"])
    lm.record(
        "outliers",
        {
            "settings": asdict(settings),
            "positions": positions,
            "hidden_size": int(quantized["layer_hits"].shape[1]),
            "reference_cache": {
                "key": key,
                "reused": reused,
                "dir": str(reference_dir()),
            },
            "reference": ref_summary,
            "quantized": quant_summary,
            "created": sorted(quant_set - ref_set),
            "destroyed": sorted(ref_set - quant_set),
        },
    )
    metrics = model_metrics(ref_summary, quant_summary)
    return [{"model": metrics} for _ in requests]


register_request_handler(REQUEST_TYPE, run)
