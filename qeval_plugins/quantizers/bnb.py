"""Built-in plugin: bitsandbytes LLM.int8(), NF4 and FP4 (with and without double quantization).

Quantization happens while loading, through transformers' ``BitsAndBytesConfig``: linear layers
become ``bitsandbytes.nn.Linear8bitLt`` / ``Linear4bit``. Runs on CPU (bitsandbytes >= 0.50) and
CUDA. The LM head stays unquantized, as transformers does by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qeval_plugins import LoadContext, Option, QevalError, Quantizer, hookimpl

COMPUTE_DTYPES = ("auto", "float32", "float16", "bfloat16")
STORAGE_DTYPES = ("uint8", "float16", "bfloat16", "float32")


def _compute_dtype(choice: str, context: LoadContext):
    """``auto``: the requested model dtype, else float32 on CPU and bfloat16 on CUDA."""
    import torch

    if choice == "auto":
        choice = (
            context.dtype
            if context.dtype != "auto"
            else ("bfloat16" if context.on_cuda else "float32")
        )
    return getattr(torch, choice)


class BnbQuantizer(Quantizer):
    requires = ("bitsandbytes",)
    extra = None  # bitsandbytes is a core dependency of qeval

    def config_kwargs(self, options: Mapping[str, Any], context: LoadContext) -> dict[str, Any]:
        raise NotImplementedError

    def load_kwargs(self, options: Mapping[str, Any], context: LoadContext) -> dict[str, Any]:
        try:
            from transformers import BitsAndBytesConfig
        except ImportError as error:  # pragma: no cover - transformers is a hard dependency
            raise QevalError(f"transformers cannot import BitsAndBytesConfig: {error}") from error
        return {"quantization_config": BitsAndBytesConfig(**self.config_kwargs(options, context))}


class BnbInt8(BnbQuantizer):
    """LLM.int8() (Dettmers et al. 2022): int8 weights, outlier features kept in 16 bit."""

    name = "bnb-int8"
    description = "bitsandbytes LLM.int8(): int8 weights, fp16 outlier decomposition"
    aliases = ("int8", "llm.int8")
    options = (
        Option(
            "threshold",
            float,
            6.0,
            "outlier threshold: activations above it run in 16 bit (0 disables)",
            minimum=0.0,
        ),
    )

    def config_kwargs(self, options, context):
        return {"load_in_8bit": True, "llm_int8_threshold": options["threshold"]}


class Bnb4bit(BnbQuantizer):
    """4-bit NormalFloat / FloatingPoint weights (QLoRA), blocks of 64 with an absmax scale."""

    quant_type: str = "nf4"
    double_quant: bool = False
    options = (
        Option("compute_dtype", str, "auto", "dtype of the matmuls", COMPUTE_DTYPES),
        Option(
            "storage", str, "uint8", "dtype the packed 4-bit weights are stored in", STORAGE_DTYPES
        ),
    )

    def config_kwargs(self, options, context):
        import torch

        return {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": self.quant_type,
            "bnb_4bit_use_double_quant": self.double_quant,
            "bnb_4bit_compute_dtype": _compute_dtype(options["compute_dtype"], context),
            "bnb_4bit_quant_storage": getattr(torch, options["storage"]),
        }


class BnbNf4(Bnb4bit):
    name, aliases = "bnb-nf4", ("nf4",)
    description = "bitsandbytes 4-bit NormalFloat (QLoRA), blocks of 64"
    quant_type = "nf4"


class BnbFp4(Bnb4bit):
    name, aliases = "bnb-fp4", ("fp4",)
    description = "bitsandbytes 4-bit float (E2M1), blocks of 64"
    quant_type = "fp4"


class BnbNf4Dq(Bnb4bit):
    name, aliases = "bnb-nf4-dq", ("nf4-dq",)
    description = "bitsandbytes NF4 with double quantization of the scales"
    quant_type, double_quant = "nf4", True


class BnbFp4Dq(Bnb4bit):
    name, aliases = "bnb-fp4-dq", ("fp4-dq",)
    description = "bitsandbytes FP4 with double quantization of the scales"
    quant_type, double_quant = "fp4", True


@hookimpl
def qeval_register_quantizers(register):
    for quantizer in (BnbInt8(), BnbNf4(), BnbFp4(), BnbNf4Dq(), BnbFp4Dq()):
        register(quantizer)


@hookimpl
def qeval_dequantize_weight(module):
    """``Linear4bit``: ``dequantize_4bit``; ``Linear8bitLt``: int8 weight × row scale / 127."""
    if not type(module).__module__.startswith("bitsandbytes"):
        return None
    import bitsandbytes
    import torch

    weight = module.weight
    if isinstance(module, bitsandbytes.nn.Linear4bit):
        return bitsandbytes.functional.dequantize_4bit(weight.data, weight.quant_state)
    if isinstance(module, bitsandbytes.nn.Linear8bitLt):
        scale = weight.SCB if getattr(weight, "SCB", None) is not None else module.state.SCB
        return weight.data.to(torch.float32) * (scale.to(torch.float32).unsqueeze(1) / 127.0)
    return None
