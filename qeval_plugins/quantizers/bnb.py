"""Built-in plugin: bitsandbytes LLM.int8(), NF4 and FP4 (with and without double quantization).

Quantization happens while loading, through transformers' ``BitsAndBytesConfig``: linear layers
become ``bitsandbytes.nn.Linear8bitLt`` / ``Linear4bit``. Runs on CPU (bitsandbytes >= 0.50) and
CUDA. The LM head stays unquantized, as transformers does by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qeval_plugins import LoadContext, Option, QevalError, Quantizer, Scheme, hookimpl
from qeval_plugins.core.logs import quiet
from qeval_plugins.quantizers.skip import SKIP_OPTION, kept_parts, skip_patterns, skipped_names

COMPUTE_DTYPES = ("auto", "float32", "float16", "bfloat16")
STORAGE_DTYPES = ("uint8", "float16", "bfloat16", "float32")


def _compute_dtype(choice: str, context: LoadContext):
    """``auto``: the model's dtype (``dtype=``, else the checkpoint's), else float32 on CPU and
    bfloat16 on CUDA."""
    import torch

    if choice == "auto":
        choice = (
            context.dtype
            if context.dtype != "auto"
            else ("bfloat16" if context.on_cuda else "float32")
        )
    return getattr(torch, choice)


# bitsandbytes log lines a qeval user cannot act on, by logger: (message prefix, times shown)
_NOISE = {
    # once per int8 matmul (1,000+ lines per run): the first one says it all
    "bitsandbytes.autograd._functions": ("MatMul8bitLt: inputs will be cast", 1),
}


def quiet_bitsandbytes() -> None:
    """Install the :data:`_NOISE` filters once per process; every other warning still shows."""
    quiet(_NOISE)


class BnbQuantizer(Quantizer):
    requires = ("bitsandbytes",)
    extra = None  # bitsandbytes is a core dependency of qeval

    def config_kwargs(self, options: Mapping[str, Any], context: LoadContext) -> dict[str, Any]:
        raise NotImplementedError

    def finalize_options(self, options: dict[str, Any]) -> dict[str, Any]:
        skip_patterns(options, self.name)  # a malformed pattern fails before loading
        return options

    def skip_kwargs(self, options: Mapping[str, Any], context: LoadContext) -> dict[str, Any]:
        """``llm_int8_skip_modules`` for ``skip=``: the matched linears' exact names (as anchored
        regular expressions, the form transformers matches them in) plus the output projection,
        which transformers keeps by default only when no list is given. Names are read from
        the checkpoint's config on the meta device (no weights are loaded)."""
        if not skip_patterns(options, self.name):
            return {}
        import re

        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        if context.checkpoint is None:
            raise QevalError(f"{self.name}: skip= needs the checkpoint's local folder.")
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(
                AutoConfig.from_pretrained(context.checkpoint)
            )
        output = skeleton.get_output_embeddings()
        linears = {n: m for n, m in skeleton.named_modules() if isinstance(m, torch.nn.Linear)}
        names = [name for name, module in linears.items() if module is not output]
        kept = skipped_names(names, options, self.name)
        kept |= {name for name, module in linears.items() if module is output}
        return {"llm_int8_skip_modules": [re.escape(name) + "$" for name in sorted(kept)]}

    def load_kwargs(self, options: Mapping[str, Any], context: LoadContext) -> dict[str, Any]:
        try:
            from transformers import BitsAndBytesConfig
        except ImportError as error:  # pragma: no cover - transformers is a hard dependency
            raise QevalError(f"transformers cannot import BitsAndBytesConfig: {error}") from error
        quiet_bitsandbytes()
        config = {**self.config_kwargs(options, context), **self.skip_kwargs(options, context)}
        return {"quantization_config": BitsAndBytesConfig(**config)}


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
        SKIP_OPTION,
    )

    def config_kwargs(self, options, context):
        return {"load_in_8bit": True, "llm_int8_threshold": options["threshold"]}

    def scheme(self, options):
        """Per-row int8 weights; activations int8 per row, columns above the threshold in fp16."""
        threshold = options["threshold"]
        outliers = f", |x| > {threshold:g} in fp16" if threshold > 0 else ""
        return Scheme(
            weights="int8 per-row",
            activations=f"int8 per-row{outliers}",
            kept=("lm_head", "embeddings", *kept_parts(options)),
        )


class Bnb4bit(BnbQuantizer):
    """4-bit NormalFloat / FloatingPoint weights (QLoRA), blocks of 64 with an absmax scale."""

    quant_type: str = "nf4"
    double_quant: bool = False
    options = (
        Option("compute_dtype", str, "auto", "dtype of the matmuls", COMPUTE_DTYPES),
        Option(
            "storage", str, "uint8", "dtype the packed 4-bit weights are stored in", STORAGE_DTYPES
        ),
        SKIP_OPTION,
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

    def scheme(self, options):
        """``nf4 b64`` (blocks of 64 with an absmax scale), ``dq`` with double-quantized scales."""
        weights = f"{self.quant_type} b64" + (" dq" if self.double_quant else "")
        return Scheme(weights=weights, kept=("lm_head", "embeddings", *kept_parts(options)))


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
    """``Linear4bit``: 4-bit codes × block absmax; ``Linear8bitLt``: int8 weight × row scale / 127.

    Reads the live module without changing it, in either layout bitsandbytes keeps 4-bit weights in
    (see :func:`dequantize_4bit_weight`), so the answer is the same before and after a forward pass
    and on every CPU.
    """
    if not type(module).__module__.startswith("bitsandbytes"):
        return None
    import bitsandbytes
    import torch

    weight = module.weight
    if isinstance(module, bitsandbytes.nn.Linear4bit):
        return dequantize_4bit_weight(weight.data, weight.quant_state)
    if isinstance(module, bitsandbytes.nn.Linear8bitLt):
        scale = weight.SCB if getattr(weight, "SCB", None) is not None else module.state.SCB
        return weight.data.to(torch.float32) * (scale.to(torch.float32).unsqueeze(1) / 127.0)
    return None


def dequantize_4bit_weight(data, quant_state):
    """The dense ``[N, K]`` weight of a bitsandbytes 4-bit layer, in either storage layout.

    Standard layout: ``bitsandbytes.functional.dequantize_4bit``. The CPU layout: on CPUs with
    AVX512-BF16, bitsandbytes >= 0.50 repacks the weight in place at the first forward pass
    (``quant_state.packing_format_for_cpu``; ``_convert_weight_packed_for_cpu``) into ``[N, K/2]``
    bytes interleaved in tiles of 32 output rows, with the block absmax (double quantization
    undone) stored transposed, ``[K/blocksize, N]``, in bfloat16. Decoding those bytes as the
    standard layout gives noise. Here the tiles are undone on copies (bitsandbytes' own inverse
    rewrites the quant state, so the live module is never touched) and
    ``W[n, k] = code[c(n, k)] · absmax[n, k // blocksize]`` with the bfloat16 absmax the CPU
    kernel multiplies by, so the result is the weight the model computes with.
    """
    import bitsandbytes
    import torch

    if not getattr(quant_state, "packing_format_for_cpu", False):
        return bitsandbytes.functional.dequantize_4bit(data, quant_state)
    codes = _cpu_packed_codes(data.view(torch.uint8))
    rows, columns = codes.shape
    blocks = quant_state.absmax.t().to(torch.float32)  # [N, K / blocksize]
    values = quant_state.code.to(torch.float32)[codes.long()]
    values = values.reshape(rows, columns // quant_state.blocksize, quant_state.blocksize)
    dense = (values * blocks.unsqueeze(-1)).reshape(rows, columns)
    return dense.to(getattr(quant_state, "original_dtype", torch.float32))


def _cpu_packed_codes(packed, tile_rows: int = 32):
    """4-bit codes ``[N, K]`` from the AVX512-BF16 layout ``[N, K/2]`` (tiles of ``tile_rows``).

    Each byte row of 32 holds the low nibbles of one column pair's 32 rows and its high nibbles
    the next 32 values: the inverse of ``_convert_weight_packed_for_cpu``'s interleave.
    """
    import torch

    rows, half = packed.shape
    pairs = packed.reshape(-1, tile_rows)
    codes = torch.cat([pairs & 0xF, pairs >> 4], dim=-1)  # [-1, 2 * tile_rows]
    codes = codes.reshape(rows // tile_rows, half, tile_rows, 2).transpose(1, 2)
    return codes.reshape(rows, 2 * half)
