"""What the backend gives a quantizer before it runs, and the reuse of quantized models.

:class:`QuantizedCache` builds the :class:`~qeval_plugins.core.quantizer.LoadContext` of each load
(with the calibration windows of a ``calibrated`` quantizer, built once per run and recorded) and,
for a quantizer that sets ``cache_quantized``, saves the quantized model to
:mod:`qeval_plugins.storage.model_cache` and loads it from there instead of quantizing again:
for the reload after a reference pass and for every later run of the same spec on the same
checkpoint, calibration and dtype.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from types import MappingProxyType
from typing import Any

from qeval_plugins.backend.checkpoints import local_folder
from qeval_plugins.core.calibration import CalibrationSet, build_calibration
from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.plan import QuantizationPlan
from qeval_plugins.core.quantizer import LoadContext, PluginRecord, bits_per_param, resolve_dtype
from qeval_plugins.core.registry import run_load_quantized, run_save_quantized
from qeval_plugins.storage import model_cache, reference_cache
from qeval_plugins.storage.cache_layout import cache_root

logger = logging.getLogger("qeval")


class QuantizedCache:
    """Per-run state: the plan, its calibration windows, its quantized-model cache key and what
    the plugin recorded (``records``: kept with a cache entry, given back when it is reused)."""

    def __init__(self, plan: QuantizationPlan) -> None:
        self.plan = plan
        self.records = PluginRecord()
        self.calibration: CalibrationSet | None = None
        self.key: str | None = None
        self.identity: list[Any] | None = None

    def context(
        self,
        device: str,
        dtype: Any,
        pretrained: str,
        revision: str | None,
        tokenizer: Any,
        context_length: int | None = None,
        load_kwargs: Mapping[str, Any] | None = None,
    ) -> LoadContext:
        """The quantizer's view of a load of ``pretrained`` (calibration built on first use;
        windows longer than the model's ``context_length`` are a one-line QevalError).
        ``load_kwargs``: lm-eval's model-loading arguments, handed on read-only."""
        quantizer = self.plan.quantizer
        checkpoint = _local_folder(pretrained, revision)
        needed = quantizer.needs_calibration(self.plan.options)
        seqlen = self.plan.options.get("calibration_seqlen")
        if needed and context_length and seqlen > context_length:
            raise QevalError(
                f"{quantizer.name}: calibration_seqlen={seqlen} is longer than the model's "
                f"context ({context_length} tokens); give calibration_seqlen={context_length} "
                f"or less."
            )
        if needed and self.calibration is None:
            self.calibration = build_calibration(tokenizer, dict(self.plan.options))
            self.plan.measured["calibration"] = self.calibration.record()
        context = LoadContext(
            device=device,
            dtype=resolve_dtype(dtype, pretrained, revision),
            checkpoint=checkpoint,
            tokenizer=tokenizer,
            calibration=self.calibration,
            cache_dir=str(cache_root() / "quantizers" / quantizer.name),
            load_kwargs=MappingProxyType(dict(load_kwargs or {})),
            plugin=self.plan.plugin.name,
            records=self.records,
        )
        if quantizer.cache_quantized and self.key is None and checkpoint is not None:
            self.identity = reference_cache.checkpoint_identity(checkpoint)
            self.key = model_cache.model_key(self.identity, self.recipe(context))
        return context

    def recipe(self, context: LoadContext) -> dict[str, Any]:
        """Everything besides the checkpoint that the quantized weights depend on."""
        quantizer = self.plan.quantizer
        return {
            "quantizer": quantizer.name,
            "version": quantizer.version,
            "plugin": self.plan.plugin.name,
            "options": dict(self.plan.options),
            "packages": {module: _package_version(module) for module in quantizer.requires},
            "calibration": self.calibration.tokens_sha256 if self.calibration else None,
            "dtype": context.dtype,
            "device": "cuda" if context.on_cuda else context.device.split(":")[0],
        }

    def load(self, context: LoadContext, load_folder: Callable[[str], Any]) -> Any:
        """The cached quantized model (``load_quantized``, else ``load_folder(folder)``), or None.

        Records ``quantized_cache`` (key, reused, original quantize time) in the results.
        """
        if self.key is None:
            return None
        plan = self.plan
        with model_cache.opened(self.key) as entry:
            if entry is None:
                return None
            folder, meta = entry
            self.records.restore(meta.get("plugin_record"))
            started = time.perf_counter()
            model = run_load_quantized(plan.quantizer, plan.plugin, folder, plan.options, context)
            model = load_folder(str(folder)) if model is None else model
        seconds = meta.get("quantize_seconds")
        plan.measured.setdefault(
            "quantized_cache",
            {
                "key": self.key,
                "reused": True,
                "dir": str(folder),
                "quantize_seconds": seconds if isinstance(seconds, (int, float)) else None,
                "load_seconds": round(time.perf_counter() - started, 4),
            },
        )
        return model

    def save(self, model: Any, context: LoadContext, seconds: float) -> None:
        """Store ``model`` (just quantized, in ``seconds``) under the run's key, once."""
        if self.key is None:
            return
        plan = self.plan
        self.plan.measured.setdefault(
            "quantized_cache",
            {"key": self.key, "reused": False, "quantize_seconds": round(seconds, 4)},
        )
        meta = {
            "model": context.checkpoint,
            "spec": plan.spec,
            "quantizer": plan.quantizer.name,
            "options": dict(plan.options),
            "dtype": context.dtype,
            "calibration": plan.measured.get("calibration"),
            "quantize_seconds": round(seconds, 4),
            "plugin_record": self.records.saved(),
        }
        folder = model_cache.save(
            self.key,
            lambda target: run_save_quantized(
                plan.quantizer, plan.plugin, model, target, plan.options, context
            ),
            meta,
        )
        if folder is not None:
            plan.measured["quantized_cache"]["dir"] = str(folder)


def kept_weights(plan: QuantizationPlan, model: Any) -> dict[str, Any]:
    """The results' bits of a quantizer that states both :meth:`~.Quantizer.effective_bits` and
    :meth:`~.Quantizer.weight_split` (rtn, gptq-sim), over the weights it targets in ``model``:

    * ``effective_bits``: :func:`~qeval_plugins.core.quantizer.bits_per_param` over them, the
      layers ``skip=`` kept at the model dtype's bits (what ``qeval scan`` computes for the same
      skip set; without ``skip=`` the quantizer's own figure);
    * ``quantized_bits``: the quantizer's own figure, bits per quantized weight;
    * ``kept_layers``, ``kept_params``, ``kept_bits``: how many layers and weights stayed
      unquantized, and their bits per weight.

    Empty when the quantizer states either not (its ``effective_bits`` is then recorded as is).
    """
    quantized_bits = plan.quantizer.effective_bits(plan.options)
    split = plan.quantizer.weight_split(model, plan.options)
    if quantized_bits is None or split is None or not split[0]:
        return {}
    params, kept = split
    kept_bits = float(next(model.parameters()).element_size() * 8)
    return {
        "effective_bits": bits_per_param(params, kept, quantized_bits, kept_bits),
        "quantized_bits": quantized_bits,
        "kept_layers": len(kept),
        "kept_params": sum(params[name] for name in kept),
        "kept_bits": kept_bits,
    }


def _local_folder(pretrained: str, revision: str | None) -> str | None:
    """The checkpoint's local folder, or None when it is not on this machine."""
    try:
        return local_folder(pretrained, revision)
    except Exception:  # a hub id not in the local cache: nothing to hash or calibrate from
        return None


def _package_version(module: str) -> str | None:
    """Version of the distribution that provides the importable ``module``."""
    names = metadata.packages_distributions().get(module, [module])
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None
