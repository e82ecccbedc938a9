"""The cheap features of one (model, quantizer spec) row: what the predictor reads.

Per model (no quantization): ``log10_params`` (log10 of the checkpoint's values),
``nll_reference`` (mean NLL of the unquantized model over the short pass of
:mod:`.landscape`, nats per token), ``landscape_20db_dnll`` and ``landscape_10db_dnll`` (NLL under
noise of 20 and 10 dB SQNR in every linear layer, minus ``nll_reference``).

Per spec, from its RTN twin (:mod:`.rtn_twin`) on every linear layer but the output projection
(what ``rtn`` quantizes by default): ``weight_sqnr_global_db`` = 10·log10(Σ‖W‖² / Σ‖W − Ŵ‖²)
over all those layers, ``weight_sqnr_min_db`` the worst layer's (both capped at
:data:`SQNR_CAP_DB`, so a layer the format keeps exactly is a number); the format's descriptors
``element_kind`` (:data:`ELEMENT_KINDS` code), ``element_bits``, ``group_log2`` (log2 of the
weights sharing a scale, a row of median width for per-channel scales), ``scale_type``
(:data:`SCALE_TYPES` code), ``bits_per_param``
(:func:`qeval_plugins.formats.groups.effective_bits`); and ``noise_equivalent_dnll``: the NLL
with Gaussian noise of the twin's own per-layer SQNR (:func:`.landscape.noisy_nll`) minus
``nll_reference``.

Entries are cached (:mod:`.feature_cache`) by the checkpoint's content hash, so a second fit or
predict over the same models loads no model at all.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.formats.groups import effective_bits
from qeval_plugins.formats.table import FORMATS
from qeval_plugins.predict import landscape
from qeval_plugins.predict.feature_cache import cached
from qeval_plugins.predict.rtn_twin import RtnTwin

FEATURES = (
    "log10_params",
    "nll_reference",
    "weight_sqnr_global_db",
    "weight_sqnr_min_db",
    "element_kind",
    "element_bits",
    "group_log2",
    "scale_type",
    "bits_per_param",
    "noise_equivalent_dnll",
    "landscape_20db_dnll",
    "landscape_10db_dnll",
)
MODEL_FEATURES = ("log10_params", "nll_reference", "landscape_20db_dnll", "landscape_10db_dnll")
ELEMENT_KINDS = {"int": 0, "float": 1, "lut": 2, "mxint": 3, "mxfp": 4}
SCALE_TYPES = {"symmetric": 0, "asymmetric": 1, "power_of_two": 2}
SQNR_CAP_DB = 200.0
FEATURES_VERSION = 1  # part of every cache key: bump when a feature's definition changes


def sqnr_db(signal: float, noise: float) -> float:
    """10·log10(signal / noise) in dB, :data:`SQNR_CAP_DB` when ``noise`` is 0 (or the ratio
    exceeds the cap)."""
    if noise <= 0.0 or signal / noise > 10.0 ** (SQNR_CAP_DB / 10.0):
        return SQNR_CAP_DB
    if signal <= 0.0:
        return -SQNR_CAP_DB
    return 10.0 * math.log10(signal / noise)


def linear_layers(model: Any) -> list[tuple[str, Any]]:
    """(name, module) of every ``torch.nn.Linear`` but the output projection: the layers
    ``rtn`` quantizes with its defaults."""
    import torch

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not output
    ]


def twin_layer_energies(layers: Sequence[tuple[str, Any]], twin: RtnTwin) -> dict[str, tuple]:
    """Per layer (Σ W², Σ (W − Ŵ)²) in float64, Ŵ the twin's round-to-nearest of W (blocks over
    the flattened weight for a ``flat_blocks`` twin, the last one zero-padded as bitsandbytes
    pads it: zeros change no block maximum and round to zero)."""
    import torch

    from qeval_plugins.formats.rounding import quantize_dequantize

    energies = {}
    with torch.no_grad():
        for name, module in layers:
            weight = module.weight.detach().float()
            grid = flat_blocks(weight, twin.group_size) if twin.flat_blocks else weight
            try:
                rounded = quantize_dequantize(
                    grid,
                    twin.format,
                    bits=twin.bits,
                    group_size=twin.group_size,
                    symmetric=twin.symmetric,
                )
            except ValueError as error:
                raise QevalError(f"RTN twin {twin.label}, layer '{name}': {error}") from None
            rounded = rounded.flatten()[: weight.numel()].view_as(weight)
            signal = float(weight.double().pow(2).sum())
            noise = float((weight - rounded).double().pow(2).sum())
            energies[name] = (signal, noise)
    return energies


def flat_blocks(weight: Any, block: int) -> Any:
    """``weight`` flattened into rows of ``block`` elements, the last one zero-padded."""
    import torch

    flat = weight.flatten()
    padding = -flat.numel() % block
    return torch.cat([flat, flat.new_zeros(padding)]).view(-1, block)


def format_descriptors(twin: RtnTwin, median_in_features: float) -> dict[str, float]:
    """The twin's ``element_kind``, ``element_bits``, ``group_log2``, ``scale_type`` and
    ``bits_per_param`` (module docstring)."""
    spec = FORMATS[twin.format]
    if spec.is_mx:
        group, scale = spec.block_size, "power_of_two"
    else:
        group = twin.group_size or median_in_features
        scale = "symmetric" if twin.symmetric else "asymmetric"
    bits = effective_bits(
        twin.format,
        twin.bits,
        twin.group_size,
        symmetric=twin.symmetric,
        in_features=max(1, round(median_in_features)),
    )
    return {
        "element_kind": float(ELEMENT_KINDS[spec.kind]),
        "element_bits": float(twin.element_bits),
        "group_log2": math.log2(max(group, 1)),
        "scale_type": float(SCALE_TYPES[scale]),
        "bits_per_param": float(bits),
    }


class ModelFeatures:
    """The features of one checkpoint folder and any twin on it; the model is loaded (once, on
    ``device``, float32) only when an entry is not cached. ``seconds`` adds up the time spent."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", text_file: str | None = None):
        from qeval_plugins.storage.reference_cache import checkpoint_identity

        self.model_dir = str(model_dir)
        self.device = device
        self.texts = landscape.read_texts(text_file)
        self.identity = checkpoint_identity(self.model_dir)[1:]  # content only, not the path
        self.seconds = 0.0
        self._loaded: tuple[Any, list[list[int]]] | None = None

    def _key(self, kind: str, **more: Any) -> dict[str, Any]:
        return {
            "kind": kind,
            "version": FEATURES_VERSION,
            "checkpoint": self.identity,
            "texts": landscape.texts_hash(self.texts),
            "seed": landscape.NOISE_SEED,
            **more,
        }

    def _layers(self, model: Any) -> list[tuple[str, Any]]:
        found = linear_layers(model)
        if not found:
            raise QevalError(
                f"model {self.model_dir} has no torch.nn.Linear layer besides its output "
                f"projection: no weights for an RTN twin to round (rtn quantizes only those)"
            )
        return found

    def _model(self) -> tuple[Any, list[list[int]]]:
        if self._loaded is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
                model = AutoModelForCausalLM.from_pretrained(
                    self.model_dir, dtype=torch.float32
                ).to(self.device)
            except (OSError, ValueError) as error:
                raise QevalError(f"cannot load model {self.model_dir}: {error}") from None
            model.eval()
            self._loaded = (model, landscape.token_ids(tokenizer, self.texts))
        return self._loaded

    def release(self) -> None:
        """Drop the loaded model (if any), so that the next model fits in memory."""
        self._loaded = None

    def model_level(self) -> dict[str, float]:
        """``nll_reference``, the fixed-radius ΔNLLs and ``median_in_features`` (cached), and
        ``log10_params`` (from the checkpoint's headers)."""
        started = time.perf_counter()
        values = {**self._model_values(), "log10_params": math.log10(max(self._parameters(), 1))}
        self.seconds += time.perf_counter() - started
        return values

    def _model_values(self) -> dict[str, float]:
        return cached(self._key("model", radii=landscape.RADII_DB), self._compute_model)[0]

    def _parameters(self) -> int:
        from qeval_plugins.backend.checkpoints import checkpoint_parameter_count

        count = checkpoint_parameter_count(self.model_dir)
        if count is None:
            model, _ = self._model()
            count = sum(p.numel() for p in model.parameters())
        return count

    def _compute_model(self) -> dict[str, float]:
        model, ids = self._model()
        layers = self._layers(model)
        reference = landscape.mean_nll(model, ids)
        values = {
            "nll_reference": reference,
            "median_in_features": float(statistics.median(m.in_features for _, m in layers)),
        }
        for radius in landscape.RADII_DB:
            noisy = landscape.noisy_nll(model, layers, {name: radius for name, _ in layers}, ids)
            values[f"landscape_{radius:g}db_dnll"] = noisy - reference
        return values

    def twin_level(self, twin: RtnTwin) -> dict[str, float]:
        """The twin's weight SQNRs and ``noise_equivalent_dnll`` (cached)."""
        started = time.perf_counter()
        values, _ = cached(self._key("twin", twin=twin.spec), lambda: self._compute_twin(twin))
        self.seconds += time.perf_counter() - started
        return values

    def _compute_twin(self, twin: RtnTwin) -> dict[str, float]:
        model, ids = self._model()
        layers = self._layers(model)
        energies = twin_layer_energies(layers, twin)
        per_layer = {name: sqnr_db(*pair) for name, pair in energies.items()}
        noisy = landscape.noisy_nll(model, layers, per_layer, ids)
        reference = self._model_values()["nll_reference"]
        return {
            "weight_sqnr_global_db": sqnr_db(
                sum(s for s, _ in energies.values()), sum(n for _, n in energies.values())
            ),
            "weight_sqnr_min_db": min(per_layer.values()),
            "noise_equivalent_dnll": noisy - reference,
        }

    def row(self, twin: RtnTwin) -> dict[str, float]:
        """Every feature of :data:`FEATURES` for ``twin`` on this model."""
        model = self.model_level()
        values = {
            **{name: model[name] for name in MODEL_FEATURES},
            **self.twin_level(twin),
            **format_descriptors(twin, model["median_in_features"]),
        }
        return {name: float(values[name]) for name in FEATURES}


def model_folder(pretrained: str) -> str:
    """The local folder of ``pretrained``: an embedded name, a path, or a hub id already in the
    local hub cache (never downloaded); QevalError when there is none."""
    from qeval_plugins.backend.checkpoints import local_folder, resolve_pretrained

    resolved = resolve_pretrained(pretrained)
    try:
        folder = local_folder(resolved, None)
    except Exception as error:  # huggingface_hub's offline/not-found errors have no common base
        raise QevalError(
            f"model '{pretrained}' is not on this machine (the features need its checkpoint): "
            f"{type(error).__name__}"
        ) from None
    if not (Path(folder) / "config.json").is_file():
        raise QevalError(f"model '{pretrained}': {folder} has no config.json")
    return folder
