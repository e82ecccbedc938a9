"""Built-in plugin: ``prequantized`` (alias ``checkpoint``), a checkpoint evaluated as saved.

GPTQ, AWQ, bitsandbytes and compressed-tensors checkpoints carry a ``quantization_config``;
transformers loads them with the library installed for it, and this quantizer changes nothing.
qeval records the config's method, bits and group size (the results' ``prequantized`` block and
``scheme``) and labels the run by them; ``reference=`` names the unquantized model that
``qeval_sqnr`` and the sampling tasks compare it with.
"""

from __future__ import annotations

from qeval_plugins import Quantizer, hookimpl


class PrequantizedQuantizer(Quantizer):
    """Loads the checkpoint with the quantization it was saved with; quantizes nothing itself."""

    name = "prequantized"
    description = "a checkpoint saved already quantized (GPTQ, AWQ, bitsandbytes, ...), as it is"
    aliases = ("checkpoint",)


@hookimpl
def qeval_register_quantizers(register):
    register(PrequantizedQuantizer())
