"""How many bytes a loaded model's weights occupy, quantization metadata included."""

from __future__ import annotations

from typing import Any


def model_storage_bytes(model: Any) -> int:
    """Bytes of every tensor in ``model.state_dict()``: what a checkpoint of it would store.

    Library-agnostic: packed weights count their packed bytes (a 4-bit weight is half a byte per
    value), and the quantization metadata a library saves beside them counts too (bitsandbytes'
    per-block ``absmax``, nested double-quantization state, int8 row scales ``SCB``; a plugin's own
    buffers). Tensors shared between entries (tied embeddings) count once. Non-persistent buffers
    (rotary tables) are not in a state dict and not counted.
    """
    import torch

    seen: set[int] = set()
    total = 0
    for tensor in model.state_dict().values():
        if not torch.is_tensor(tensor) or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total
