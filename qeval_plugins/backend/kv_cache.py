"""KV-cache quantization for generation, combinable with any weight quantizer.

``kv_cache=sim|quanto|hqq`` (model_args) makes every ``generate`` of the quantized model store its
keys and values quantized, as transformers' ``QuantizedCache`` does (KIVI-style): the prompt's
keys and values and every ``kv_residual_length`` new tokens are quantized when stored, the newest
tokens (fewer than ``kv_residual_length``) stay in full precision, and attention reads the
dequantized values. Loglikelihood scoring does not use a cache and is unchanged; the unquantized
reference of ``qeval_sqnr`` and the sampling tasks never uses it.

Backends: ``sim`` simulates any ``rtn`` number format (``kv_format``, ``kv_bits`` for int) with
groups of ``kv_group_size`` values along the head dimension (at most the head dimension), per
token, through :func:`~qeval_plugins.quantizers.rtn_formats.quantize_dequantize`; ``quanto`` and
``hqq`` are transformers' own layers (``optimum-quanto``: 2 or 4 bits; ``hqq``: 1–8 bits).
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from dataclasses import asdict, dataclass
from typing import Any

from qeval_plugins.core.errors import QevalError, did_you_mean
from qeval_plugins.core.plan import KV_CACHE_ARGS

BACKENDS = ("sim", "quanto", "hqq")
PACKAGES = {"quanto": "optimum.quanto", "hqq": "hqq"}  # backend -> module (and qeval extra)
DEFAULTS = {"kv_bits": 4, "kv_format": "int", "kv_group_size": 64, "kv_residual_length": 128}


@dataclass(frozen=True)
class KvCache:
    """The KV-cache quantization of a run (see the module docstring)."""

    backend: str
    bits: int
    format: str
    group_size: int
    residual_length: int

    def describe(self) -> str:
        """``int4 g64 r128 (sim)``: what the report shows next to the run's label."""
        fmt = f"int{self.bits}" if self.format == "int" else self.format
        return f"{fmt} g{self.group_size} r{self.residual_length} ({self.backend})"

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "describe": self.describe()}


def take_kv_cache(model_args: dict[str, Any]) -> KvCache | None:
    """The ``kv_*`` model_args, removed from ``model_args`` and checked (one-line QevalError)."""
    given = {name: model_args.pop(name) for name in KV_CACHE_ARGS if name in model_args}
    backend = str(given.pop("kv_cache", "none")).strip().lower()
    if backend in ("none", "", "false"):
        if given:
            raise QevalError(
                f"model_arg {sorted(given)[0]} needs kv_cache=sim, quanto or hqq to take effect."
            )
        return None
    if backend not in BACKENDS:
        raise QevalError(
            f"kv_cache={backend} is not a KV-cache backend.{did_you_mean(backend, BACKENDS)} "
            f"Use sim, quanto or hqq."
        )
    values = {**DEFAULTS, **given}
    settings = KvCache(
        backend=backend,
        bits=_integer(values["kv_bits"], "kv_bits", 1, 8),
        format=str(values["kv_format"]),
        group_size=_integer(values["kv_group_size"], "kv_group_size", 1, 1 << 16),
        residual_length=_integer(values["kv_residual_length"], "kv_residual_length", 0, 1 << 20),
    )
    _check(settings, given)
    return settings


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise QevalError(f"{name} must be a whole number from {low} to {high}, got {value!r}.")
    return value


def _check(settings: KvCache, given: dict[str, Any]) -> None:
    from qeval_plugins import FORMATS

    if settings.backend != "sim" and "kv_format" in given:
        raise QevalError(f"kv_format applies to kv_cache=sim; {settings.backend} stores integers.")
    if settings.format not in FORMATS:
        raise QevalError(
            f"kv_format={settings.format} is not an rtn format."
            f"{did_you_mean(settings.format, FORMATS)} ('qeval quantizers' lists them)"
        )
    if settings.format != "int" and "kv_bits" in given:
        raise QevalError(f"kv_format={settings.format} has fixed bits; drop kv_bits.")
    if settings.backend == "sim" and settings.format == "int" and settings.bits < 2:
        raise QevalError("kv_cache=sim needs kv_bits of 2 or more (rtn's int formats).")
    if settings.backend == "quanto" and settings.bits not in (2, 4):
        raise QevalError(f"kv_cache=quanto stores 2 or 4 bits, not kv_bits={settings.bits}.")
    module = PACKAGES.get(settings.backend)
    if module and not _installed(module):
        raise QevalError(
            f"kv_cache={settings.backend} needs {module}, which is not installed; run: "
            f"pip install 'qeval[{settings.backend}]'"
        )


def _installed(module: str) -> bool:
    """Whether ``module`` imports (``optimum`` may be there without ``optimum.quanto``)."""
    parent = module.split(".")[0]
    return (
        importlib.util.find_spec(parent) is not None
        and importlib.util.find_spec(module) is not None
    )


def new_cache(settings: KvCache, config: Any) -> Any:
    """A fresh cache of ``settings`` for one ``generate`` call of a model with ``config``."""
    from transformers.cache_utils import Cache, QuantizedCache

    if settings.backend != "sim":
        return QuantizedCache(
            settings.backend,
            config,
            nbits=settings.bits,
            q_group_size=settings.group_size,
            residual_length=settings.residual_length,
        )
    layers = config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[_sim_layer(settings) for _ in range(layers)])


def _sim_layer(settings: KvCache) -> Any:
    from transformers.cache_utils import QuantizedLayer

    from qeval_plugins import quantize_dequantize

    class SimulatedLayer(QuantizedLayer):
        """Stores keys and values fake-quantized in ``settings.format``: ``_quantize`` returns the
        dequantized tensor itself, in the cache's dtype."""

        def _quantize(self, tensor: Any, axis: int) -> Any:
            head_dim = tensor.shape[-1]  # attach() checked that the group divides it
            group = min(settings.group_size, head_dim)
            flat = tensor.reshape(-1, head_dim)
            quantized = quantize_dequantize(
                flat, settings.format, bits=settings.bits, group_size=group
            )
            return quantized.reshape(tensor.shape)

        def _dequantize(self, tensor: Any) -> Any:
            return tensor

    return SimulatedLayer(
        nbits=settings.bits,
        q_group_size=settings.group_size,
        residual_length=settings.residual_length,
    )


@contextlib.contextmanager
def detached(model: Any):
    """``model`` with its own ``generate`` (no quantized cache) for the ``with`` body: the
    unquantized reference of a ``quantizer=none`` run is the model itself, minus the cache."""
    patched = vars(model).pop("generate", None)
    try:
        yield model
    finally:
        if patched is not None:
            model.generate = patched


def attach(model: Any, settings: KvCache | None) -> None:
    """Make ``model.generate`` use a fresh quantized cache per call (unless the caller passes
    ``past_key_values``); a no-op without ``settings``. Only this model instance changes."""
    if settings is None:
        return
    config = model.config.get_text_config(decoder=True)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    group = min(settings.group_size, head_dim)
    if settings.backend == "sim" and head_dim % group:
        raise QevalError(
            f"kv_group_size={settings.group_size} does not divide the model's head dimension "
            f"{head_dim}; give a divisor of {head_dim}."
        )
    generate = model.generate

    def generate_with_quantized_cache(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("past_key_values") is not None or kwargs.get("cache") is not None:
            return generate(*args, **kwargs)
        # every transformers 5.x takes past_key_values (5.2x renames it `cache`, with a warning)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`past_key_values` is deprecated")
            return generate(*args, past_key_values=new_cache(settings, model.config), **kwargs)

    model.generate = generate_with_quantized_cache
