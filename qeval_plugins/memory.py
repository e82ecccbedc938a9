"""How many bytes a loaded model's weights occupy, quantization metadata included."""

from __future__ import annotations

from typing import Any


def _quant_state_tensors(weight: Any) -> list[Any]:
    """Tensors that bitsandbytes keeps beside a quantized weight, outside parameters/buffers.

    4-bit (``Params4bit.quant_state``): per-block ``absmax`` and the code table, and for double
    quantization the nested state's ``absmax`` and code; 8-bit (``Int8Params.SCB``): one float
    scale per output row.
    """
    tensors = []
    state = getattr(weight, "quant_state", None)
    while state is not None:
        tensors += [
            t
            for t in (getattr(state, "absmax", None), getattr(state, "code", None))
            if t is not None
        ]
        state = getattr(state, "state2", None)
    scb = getattr(weight, "SCB", None)
    if scb is not None:
        tensors.append(scb)
    return tensors


def model_storage_bytes(model: Any) -> int:
    """Bytes of all parameters and buffers as stored, plus quantization scales kept beside them.

    Packed formats count their packed bytes (a 4-bit weight is half a byte per value); tensors
    shared between modules (tied embeddings, shared code tables) count once.
    """
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        for part in [tensor, *_quant_state_tensors(tensor)]:
            if part.data_ptr() in seen:
                continue
            seen.add(part.data_ptr())
            total += part.numel() * part.element_size()
    return total
