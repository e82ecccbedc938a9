"""Built-in plugin: torchao 0.18 quantizers — real quantized weights through ``quantize_``.

Each quantizer applies ``torchao.quantization.quantize_(model, config, filter_fn)`` to the
decoder's ``torch.nn.Linear`` layers (the LM head only with ``include_lm_head``; embeddings
never). torchao swaps each weight for a tensor subclass holding the integer codes and scales and
runs the matmul on them; the layer stays a ``torch.nn.Linear``. The configs, as torchao 0.18
implements them:

* ``torchao-int8``: ``Int8WeightOnlyConfig`` → ``Int8Tensor``: int8 codes, one float32 scale
  per output row (symmetric, ``scale = absmax / 127.5``); CPU and CUDA.
* ``torchao-int4``: ``IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(g))``
  → ``IntxUnpackedToInt8Tensor`` on CPU *and* CUDA: int4 codes kept unpacked in int8, a scale in
  the model's dtype and an int8 zero point per group (asymmetric by default, as torchao's CUDA
  int4 kernel). ``Int4WeightOnlyConfig`` is not used on either device: its default (plain)
  format needs the ``mslk`` kernels (ImportError on an H200 with torch 2.11), its tinygemm
  format (``tile_packed_to_4d``) runs only on CUDA sm80+ in bfloat16 — the Intx path gives one
  format everywhere, so a CPU and a GPU run of the same spec compare (weight SQNR on N(0,1)
  weights, g128 asymmetric: 19.88 dB on CUDA bfloat16, equal to ``rtn``'s).
* ``torchao-w8a8``: ``Int8DynamicActivationInt8WeightConfig`` → ``Int8Tensor`` with activation
  quantization: per-channel symmetric int8 weights; at every call the layer's input is
  quantized to int8 per token (symmetric, dynamic) and the matmul runs in int8 with int32
  accumulation (``int_scaled_matmul``); CPU and CUDA.
* ``torchao-fp8``: ``Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())`` →
  ``Float8Tensor``: float8 e4m3 weights with a float32 scale per row, activations cast to e4m3
  per token at every call; torchao refuses devices below CUDA compute capability 8.9 (Ada,
  Hopper) and per-row scales of other weights than bfloat16, so the quantizer needs CUDA and a
  bfloat16 model and refuses a lesser GPU or another dtype before loading. (torchao's
  ``Float8WeightOnlyConfig`` would run on CPU too; it is not offered here.)

torchao refuses float64 models (``Unsupported input dtype``); every quantizer here refuses them
before loading, in one line. Registering imports neither torch nor torchao.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qeval_plugins import LoadContext, Option, QevalError, Quantizer, Scheme, hookimpl
from qeval_plugins.quantizers.skip import SKIP_OPTION, kept_parts, skip_patterns, skipped_names

GROUP_SIZES = (32, 64, 128, 256)
SUPPORTED_DTYPES = ("auto", "float32", "bfloat16", "float16")
# torchao's weight subclasses (torchao.quantization) that have a dequantize() to the dense weight
DEQUANTIZABLE = ("Int8Tensor", "IntxUnpackedToInt8Tensor", "Float8Tensor")


class TorchaoQuantizer(Quantizer):
    """Common part: the filter, the dtype check and the call of ``quantize_``."""

    requires = ("torchao",)
    extra = "torchao"
    version = "1"
    options: tuple[Option, ...] = (
        Option("include_lm_head", bool, False, "also quantize the output projection (lm_head)"),
        SKIP_OPTION,
    )

    def config(self, options: Mapping[str, Any]) -> Any:
        """The torchao config object these options select."""
        raise NotImplementedError

    def check_context(self, context: LoadContext) -> None:
        """Refuse, before loading, a dtype (or device) torchao cannot quantize."""
        if context.dtype not in SUPPORTED_DTYPES:
            raise QevalError(
                f"quantizer '{self.name}': torchao quantizes float32, bfloat16 and float16 "
                f"models, not {context.dtype}; pass dtype=float32 or dtype=bfloat16."
            )

    def finalize_options(self, options: dict[str, Any]) -> dict[str, Any]:
        skip_patterns(options, self.name)  # a malformed pattern fails before loading
        return options

    def load_kwargs(self, options: Mapping[str, Any], context: LoadContext) -> dict[str, Any]:
        self.check_context(context)
        return {}

    def quantize(self, model: Any, options: Mapping[str, Any], context: LoadContext) -> Any:
        self.check_context(context)
        import_torchao()
        from torchao.quantization import quantize_

        chosen = linear_filter(model, options)
        names = [name for name, module in model.named_modules() if chosen(module, name)]
        skipped = skipped_names(names, options, self.name)
        quantize_(
            model,
            self.config(options),
            filter_fn=lambda module, fqn: chosen(module, fqn) and fqn not in skipped,
        )
        return model

    def kept(self, options: Mapping[str, Any]) -> tuple[str, ...]:
        parts = ("embeddings",) if options["include_lm_head"] else ("lm_head", "embeddings")
        return parts + kept_parts(options)


def import_torchao() -> None:
    """Import torchao with its load-time notes quieted (CUDA extensions it cannot load here)."""
    from qeval_plugins.core.logs import MODEL_LOADING_NOISE, quiet

    quiet(MODEL_LOADING_NOISE)
    import torchao  # noqa: F401


def linear_filter(model: Any, options: Mapping[str, Any]):
    """``filter_fn(module, fqn)`` for ``quantize_``: every ``nn.Linear`` but the LM head (unless
    ``include_lm_head``)."""
    import torch

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    with_head = options["include_lm_head"]

    def chosen(module: Any, fqn: str) -> bool:
        return isinstance(module, torch.nn.Linear) and (with_head or module is not output)

    return chosen


class TorchaoInt8(TorchaoQuantizer):
    name = "torchao-int8"
    description = "torchao int8 weight-only (Int8WeightOnlyConfig): per-channel int8 weights"

    def config(self, options):
        from torchao.quantization import Int8WeightOnlyConfig, PerRow

        return Int8WeightOnlyConfig(granularity=PerRow(), set_inductor_config=False)

    def scheme(self, options):
        return Scheme(weights="int8 per-channel", kept=self.kept(options))

    def effective_bits(self, options):
        """8: the int8 code; the float32 scale per row (32 / in_features bits) is left out."""
        return 8.0


class TorchaoInt4(TorchaoQuantizer):
    name = "torchao-int4"
    description = "torchao int4 weight-only (IntxWeightOnlyConfig int4), per group of 32-256"
    options = (
        Option(
            "group_size",
            int,
            128,
            "weights sharing one scale and zero point along the input dimension",
            choices=GROUP_SIZES,
        ),
        Option("symmetric", bool, False, "symmetric scale, no zero point (false: asymmetric)"),
        *TorchaoQuantizer.options,
    )

    def config(self, options):
        import torch
        from torchao.quantization import IntxWeightOnlyConfig, MappingType, PerGroup

        mapping = MappingType.SYMMETRIC if options["symmetric"] else MappingType.ASYMMETRIC
        return IntxWeightOnlyConfig(
            weight_dtype=torch.int4,
            granularity=PerGroup(options["group_size"]),
            mapping_type=mapping,
        )

    def scheme(self, options):
        mode = "sym" if options["symmetric"] else "asym"
        return Scheme(weights=f"int4 g{options['group_size']} {mode}", kept=self.kept(options))

    def effective_bits(self, options):
        """``4 + (16 + 8) / G``: the int4 code, one 16-bit scale and one int8 zero point per group
        of ``G`` (torchao stores the zero point for symmetric groups too).

        The format's cost, for a bfloat16/float16 model. torchao keeps the scale in the model's
        dtype (32 bits for a float32 model: ``4 + 40 / G``) and, in this CPU/CUDA-portable
        layout, each 4-bit code unpacked in one int8 (8 bits of memory per weight).
        """
        return 4.0 + 24.0 / options["group_size"]


class TorchaoW8A8(TorchaoQuantizer):
    name = "torchao-w8a8"
    description = "torchao int8 dynamic activations + int8 weights (real W8A8 int8 matmul)"

    def config(self, options):
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, PerRow

        return Int8DynamicActivationInt8WeightConfig(
            granularity=PerRow(), set_inductor_config=False
        )

    def scheme(self, options):
        return Scheme(
            weights="int8 per-channel",
            activations="int8 per-token dynamic",
            kept=self.kept(options),
        )

    def effective_bits(self, options):
        """8: the int8 weight code; the float32 scale per row is left out."""
        return 8.0


class TorchaoFp8(TorchaoQuantizer):
    name = "torchao-fp8"
    description = "torchao float8 e4m3 dynamic activations + weights, per row (CUDA sm89+)"
    needs_cuda = True
    cuda_capability = (8, 9)  # torchao's minimum for float8 dynamic quantization on CUDA

    def check_context(self, context):
        super().check_context(context)
        import torch

        if not context.on_cuda or not torch.cuda.is_available():
            raise QevalError(
                f"quantizer '{self.name}' needs a CUDA GPU of compute capability 8.9 or newer "
                f"(Ada, Hopper); run with --device cuda on such a GPU."
            )
        if context.dtype not in ("auto", "bfloat16"):
            raise QevalError(
                f"quantizer '{self.name}': torchao's per-row float8 needs a bfloat16 model, not "
                f"{context.dtype}; pass dtype=bfloat16."
            )
        capability = torch.cuda.get_device_capability(context.device)
        if tuple(capability) < self.cuda_capability:
            raise QevalError(
                f"quantizer '{self.name}' needs CUDA compute capability 8.9 or newer (Ada, "
                f"Hopper); {context.device} has {capability[0]}.{capability[1]}. Use "
                f"torchao-int8 or torchao-w8a8 on this GPU."
            )

    def config(self, options):
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

        return Float8DynamicActivationFloat8WeightConfig(
            granularity=PerRow(), set_inductor_config=False
        )

    def scheme(self, options):
        return Scheme(
            weights="fp8 e4m3 per-channel",
            activations="fp8 e4m3 per-token dynamic",
            kept=self.kept(options),
        )

    def effective_bits(self, options):
        """8: the e4m3 code; the float32 scale per row is left out."""
        return 8.0


@hookimpl
def qeval_register_quantizers(register):
    for quantizer in (TorchaoInt8(), TorchaoInt4(), TorchaoW8A8(), TorchaoFp8()):
        register(quantizer)


@hookimpl
def qeval_dequantize_weight(module):
    """The dense ``[out, in]`` weight of a layer holding a torchao weight, else None.

    ``Int8Tensor``, ``IntxUnpackedToInt8Tensor`` and ``Float8Tensor`` each dequantize themselves
    (``scale · (code − zero point)`` per row or group; ``scale · e4m3`` for float8), in the model's
    dtype. Decided by the weight's class and module, so torch and torchao are not imported for
    other layers.
    """
    weight = getattr(module, "weight", None)
    kind = type(weight)
    if not kind.__module__.startswith("torchao.") or kind.__name__ not in DEQUANTIZABLE:
        return None
    return weight.dequantize().detach()
