"""Built-in plugin: the unquantized baseline ``none`` and the plain-layer dequantize answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qeval_plugins import LoadContext, Option, Quantizer, Scheme, hookimpl

DTYPES = ("auto", "float32", "float16", "bfloat16")


class NoQuantizer(Quantizer):
    """Loads the model as it is, in the chosen dtype: the reference every other run is compared to.

    ``dtype`` is the same setting as lm-eval's ``hf`` ``dtype`` model_arg, so ``quantizer=none``
    loads exactly what ``--model hf`` loads.
    """

    name = "none"
    description = "unquantized baseline in float32, float16 or bfloat16"
    aliases = ("baseline", "fp", "unquantized")
    identity = True
    options = (
        Option("dtype", str, "auto", "dtype of all weights (auto: the checkpoint's)", DTYPES),
    )

    def load_kwargs(self, options: Mapping[str, Any], context: LoadContext) -> dict[str, Any]:
        return {"dtype": options["dtype"]}

    def scheme(self, options: Mapping[str, Any]) -> Scheme:
        return Scheme(weights="unquantized")


@hookimpl
def qeval_register_quantizers(register):
    register(NoQuantizer())


@hookimpl(trylast=True)
def qeval_dequantize_weight(module):
    """Plain ``torch.nn.Linear``/``Embedding`` (also RTN's simulated layers): the weight itself."""
    import torch

    if type(module) in (torch.nn.Linear, torch.nn.Embedding):
        return module.weight.detach()
    return None
