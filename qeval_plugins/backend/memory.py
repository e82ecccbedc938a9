"""How many bytes a loaded model's weights occupy, quantization metadata included."""

from __future__ import annotations

import copy
from typing import Any


def model_storage_bytes(model: Any) -> int:
    """Bytes of every tensor a ``model.state_dict()`` would hold: what a checkpoint of it stores.

    Library-agnostic: packed weights count their packed bytes (a 4-bit weight is half a byte per
    value), and the quantization metadata a library saves beside them counts too (bitsandbytes'
    per-block ``absmax``, nested double-quantization state, int8 row scales ``SCB``; a plugin's own
    buffers). Tensors shared between entries (tied embeddings) count once. Non-persistent buffers
    (rotary tables) are not in a state dict and not counted.

    Read-only: a module whose class serializes itself (overrides ``_save_to_state_dict``) is asked
    on a copy, because such code may rewrite the live module — bitsandbytes >= 0.50 converts a
    4-bit weight its AVX512-BF16 CPU kernel repacked back in place, which changes the model's
    outputs afterwards. Copies are made one module at a time; a module that cannot be copied
    (optimum-quanto's quantized tensors refuse ``deepcopy``) is read as it is.
    """
    import torch

    seen: set[int] = set()
    total = 0
    for module in model.modules():
        serializes_itself = _serializes_itself(module)
        source = _copy_or_self(module) if serializes_itself else module
        state: dict[str, Any] = {}
        source._save_to_state_dict(state, "", keep_vars=False)
        for tensor in state.values():
            if not torch.is_tensor(tensor):
                continue
            if not serializes_itself:  # a copy's storage is freed and its address reused
                if tensor.data_ptr() in seen:
                    continue
                seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total


def _serializes_itself(module: Any) -> bool:
    import torch

    return type(module)._save_to_state_dict is not torch.nn.Module._save_to_state_dict


def _copy_or_self(module: Any) -> Any:
    try:
        return copy.deepcopy(module)
    except (RuntimeError, TypeError):  # not copyable; its own serialization must be read-only
        return module
