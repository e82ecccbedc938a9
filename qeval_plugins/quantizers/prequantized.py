"""Built-in plugin: ``prequantized`` (alias ``checkpoint``), a checkpoint evaluated as saved.

GPTQ, AWQ, bitsandbytes and compressed-tensors checkpoints carry a ``quantization_config``;
transformers loads them with the library installed for it, and this quantizer changes nothing.
qeval records the config's method, bits and group size (the results' ``prequantized`` block and
``scheme``) and labels the run by them; ``reference=`` names the unquantized model that
``qeval_sqnr`` and the sampling tasks compare it with.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qeval_plugins import LoadContext, Quantizer, hookimpl


class PrequantizedQuantizer(Quantizer):
    """Loads the checkpoint with the quantization it was saved with; quantizes nothing itself."""

    name = "prequantized"
    description = "a checkpoint saved already quantized (GPTQ, AWQ, bitsandbytes, ...), as it is"
    aliases = ("checkpoint",)

    def load_kwargs(self, options: Mapping[str, Any], context: LoadContext) -> dict[str, Any]:
        """Nothing to add; a GPTQ checkpoint's library is imported first, quietly (its banner
        and kernel notes would otherwise fill the console)."""
        if _quant_method(context.checkpoint) == "gptq" and importlib.util.find_spec("gptqmodel"):
            from qeval_plugins.quantizers.gptq import import_gptqmodel_quietly

            import_gptqmodel_quietly()
        return {}


def _quant_method(checkpoint: str | None) -> str | None:
    """``quantization_config.quant_method`` of a local checkpoint's config.json, if readable."""
    try:
        config = json.loads((Path(checkpoint or "") / "config.json").read_text(encoding="utf-8"))
        return config["quantization_config"]["quant_method"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


@hookimpl
def qeval_register_quantizers(register):
    register(PrequantizedQuantizer())
