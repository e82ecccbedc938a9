"""The hooks a qeval plugin can implement.

A plugin is a module (or object) with functions decorated by ``qeval_plugins.hookimpl`` whose names
match the specs below. qeval always calls hooks with keyword arguments, so an implementation may
accept any subset of a spec's arguments, and specs can grow new arguments without breaking plugins.
A decorated function whose name matches no spec (a misspelt hook), or a spec-named function left
undecorated, is a load error of that plugin.
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
            :class:`qeval_plugins.Quantizer` subclass. qeval records which plugin registered it
            and resolves its aliases. A quantizer that breaks the contract (names, description,
            option declarations) or whose name or alias is already taken is disabled, named with
            the rule or both plugins; the plugin's other quantizers still work.

    Returns:
        Nothing. Called once per process, when the quantizer registry is first needed. If it
        raises, none of the plugin's quantizers is registered.
    """


@hookspec(firstresult=True)
def qeval_dequantize_weight(module: Any) -> Any:
    """Return the effective dense weight of a (possibly quantized) layer.

    Args:
        module: a ``torch.nn.Module`` from a quantized model, e.g. a ``torch.nn.Linear`` or a
            ``bitsandbytes.nn.Linear4bit``.

    Returns:
        A floating-point ``torch.Tensor`` holding the weight the layer actually computes with,
        in the shape of the layer's ``weight`` tensor in the checkpoint (``[out_features,
        in_features]`` for a linear layer), with only finite values, or ``None`` if this plugin
        does not know the module type. Called by error metrics (weight SQNR, outliers, scan) for
        every module whose 2-D ``<name>.weight`` is in the checkpoint, whatever attributes it
        has (e.g. a layer holding only packed codes).

    Order: the plugin whose quantizer made the model is asked first, then the built-ins (the
    plain ``torch.nn.Linear``/``Embedding`` answer last), then the other plugins, but those
    only for layer types no built-in claims (a type from ``torch`` or from a library a built-in
    quantizer requires: bitsandbytes, hqq, optimum.quanto, torchao, gptqmodel, auto_round). The
    first non-None answer that passes the check wins, and the results record which plugin
    answered for each layer type (``weights.dequantized_by`` of qeval_sqnr). An answer that
    raises or fails the check (not a floating-point tensor, another shape, NaN or ±inf) is
    refused for that layer type, with one warning naming the plugin, and the next plugin is
    asked; a layer no hook reads is left out with a warning (``missing_layers``).
    ``qeval_plugins.testing.check_quantizer`` turns a refused answer into an error instead.
    """
