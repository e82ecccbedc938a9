"""Finding the parts of a transformers causal LM that quantizers and evaluations both need.

Public as ``qeval_plugins.decoder_layers``: a calibrating plugin walks the decoder blocks the same
way qeval's ``qeval_sqnr`` task does.
"""

from __future__ import annotations

from typing import Any


def decoder_layers(model: Any) -> list[Any]:
    """The decoder blocks, in order: the ``ModuleList`` as long as ``config.num_hidden_layers``
    (``model.model.layers`` of Llama, Mistral, Qwen, ...); [] when there is none."""
    import torch

    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return list(module)
    return []
