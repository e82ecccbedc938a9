"""The hooks a qeval plugin can implement.

A plugin is a module (or object) with functions decorated by ``qeval_plugins.hookimpl`` whose names
match the specs below. qeval always calls hooks with keyword arguments, so an implementation may
accept any subset of a spec's arguments, and specs can grow new arguments without breaking plugins.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("qeval")
hookimpl = pluggy.HookimplMarker("qeval")


@hookspec
def qeval_register_quantizers(register: Any) -> None:
    """Register the quantizers this plugin provides.

    Args:
        register: call ``register(quantizer)`` once per quantizer, with an instance of a
            :class:`qeval_plugins.Quantizer` subclass. qeval records which plugin registered it,
            resolves its aliases, and rejects a name or alias another plugin already took
            (naming both plugins).

    Returns:
        Nothing. Called once per process, when the quantizer registry is first needed.
    """


@hookspec(firstresult=True)
def qeval_dequantize_weight(module: Any) -> Any:
    """Return the effective dense weight of a (possibly quantized) layer.

    Args:
        module: a ``torch.nn.Module`` from a quantized model, e.g. a ``torch.nn.Linear`` or a
            ``bitsandbytes.nn.Linear4bit``.

    Returns:
        A floating-point ``torch.Tensor`` of shape ``[out_features, in_features]`` holding the
        weight the layer actually computes with, or ``None`` if this plugin does not know the
        module type. The first non-None answer wins; the built-in plain ``torch.nn.Linear``
        answer runs last. Called by error metrics (weight SQNR) for every linear layer.
    """
