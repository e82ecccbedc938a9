"""KV-cache quantization for generation, combinable with any weight quantizer.

The settings (:class:`~qeval_plugins.core.kv_settings.KvCache`, ``kv_backend=sim|quanto|hqq``)
make every ``generate`` of the quantized model store its keys and values quantized, as
transformers' ``QuantizedCache`` does (KIVI-style): the prompt's keys and values and every
``kv_residual_length`` new tokens are quantized when stored, the newest tokens (fewer than
``kv_residual_length``) stay in full precision, and attention reads the dequantized values.
Loglikelihood scoring does not use a cache and is unchanged; the unquantized reference of
``qeval_sqnr`` and the sampling tasks never uses it.

Backends: ``sim`` simulates any ``rtn`` number format (``kv_format``, ``kv_bits`` for int) with
groups of ``kv_group_size`` values along the head dimension (at most the head dimension), per
token, through :func:`~qeval_plugins.formats.rounding.quantize_dequantize`; ``quanto`` and
``hqq`` are transformers' own layers (``optimum-quanto``: 2 or 4 bits; ``hqq``: 1–8 bits).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

from qeval_plugins.core.kv_settings import KvCache, check_head_dim


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

    from qeval_plugins.formats.rounding import quantize_dequantize

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
    check_head_dim(settings, head_dim)
    generate = model.generate

    def generate_with_quantized_cache(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("past_key_values") is not None or kwargs.get("cache") is not None:
            return generate(*args, **kwargs)
        # every transformers 5.x takes past_key_values (5.2x renames it `cache`, with a warning)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`past_key_values` is deprecated")
            return generate(*args, past_key_values=new_cache(settings, model.config), **kwargs)

    model.generate = generate_with_quantized_cache
