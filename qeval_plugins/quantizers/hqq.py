"""Built-in plugin: HQQ, Half-Quadratic Quantization (Badri & Shaji, Mobius Labs, 2023).

Calibration-free: per group of ``group_size`` weights, HQQ starts from the min/max affine grid
(``scale = (max - min) / (2**nbits - 1)``) and refines the zero point by a half-quadratic
proximal solver that minimises the ``l_p`` norm (``p = 0.7``) of the weight error, 20 steps with
early stopping. Each decoder ``nn.Linear`` becomes ``hqq.core.quantize.HQQLinear`` (the native
API; transformers 5 has no ``HqqConfig`` loader), which stores bit-packed codes ``W_q`` and one
scale and one zero per group in the compute dtype, and computes ``x · dequantize()ᵀ`` with
``dequantize() = (W_q - zero) · scale``. Runs on CPU in float32 and bfloat16 (the PyTorch
backend) and on CUDA. The LM head and the embeddings stay unquantized.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qeval_plugins import LoadContext, Option, QevalError, Quantizer, Scheme, hookimpl
from qeval_plugins.quantizers.skip import SKIP_OPTION, kept_parts, skip_patterns, skipped_names

NBITS = (1, 2, 3, 4, 8)
# bits one code occupies once packed: HQQ packs 3-bit codes ten to an int32 ("3bit_32")
PACKED_BITS = {8: 8.0, 4: 4.0, 3: 32 / 10, 2: 2.0, 1: 1.0}
META_BITS = 16  # scale and zero of a group, each counted as a 16-bit value (fp16/bf16 runs)


class HqqQuantizer(Quantizer):
    """HQQ weights: nbits codes per weight, a scale and an optimised zero per group."""

    name = "hqq"
    description = "HQQ: 1-8 bit weights, zero point optimised without calibration data"
    requires = ("hqq",)
    extra = "hqq"
    options = (
        Option("nbits", int, 4, "bits per weight", NBITS),
        Option(
            "group_size",
            int,
            64,
            "weights sharing one scale and zero (a multiple of 8)",
            minimum=8,
        ),
        Option(
            "axis",
            int,
            1,
            "1: groups run along the input dimension (HQQ's recommended setting, needed by its "
            "fast kernels); 0: along the output dimension",
            (0, 1),
        ),
        SKIP_OPTION,
    )

    def finalize_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """HQQ accepts group sizes that are multiples of 8 only."""
        if options["group_size"] % 8:
            raise QevalError(
                f"hqq: group_size must be a multiple of 8, got {options['group_size']}; "
                "try group_size=64."
            )
        skip_patterns(options, self.name)  # a malformed pattern fails before loading
        return options

    def quantize(self, model: Any, options: Mapping[str, Any], context: LoadContext) -> Any:
        import torch
        from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

        config = BaseQuantizeConfig(
            nbits=options["nbits"], group_size=options["group_size"], axis=options["axis"]
        )
        targets = _target_linears(model)
        skipped = skipped_names([name for name, _ in targets], options, self.name)
        with torch.no_grad():
            for name, linear in [item for item in targets if item[0] not in skipped]:
                _check_groups(name, linear, options["group_size"], options["axis"])
                weight = linear.weight
                layer = HQQLinear(
                    linear,
                    quant_config=config,
                    compute_dtype=weight.dtype,
                    device=str(weight.device),
                )
                model.set_submodule(name, layer)
        return model

    def scheme(self, options: Mapping[str, Any]) -> Scheme:
        """``int4 g64 asym axis1 hqq``: integer codes, per-group scale and optimised zero."""
        weights = f"int{options['nbits']} g{options['group_size']} asym axis{options['axis']} hqq"
        return Scheme(weights=weights, kept=("lm_head", "embeddings", *kept_parts(options)))

    def effective_bits(self, options: Mapping[str, Any]) -> float:
        """``packed bits + 2 · 16 / group_size``: the codes as HQQ packs them (3-bit: ten codes per
        int32, 3.2 bits) plus a scale and a zero per group, counted as 16-bit values (HQQ keeps
        them in the compute dtype: 16 bits in fp16/bf16 runs, 32 in float32 ones). 4.5 at the
        default nbits=4, group_size=64."""
        return PACKED_BITS[options["nbits"]] + 2 * META_BITS / options["group_size"]


def _target_linears(model: Any) -> list[tuple[str, Any]]:
    """(name, module) of every ``nn.Linear`` but the output projection."""
    import torch

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not output
    ]


def _check_groups(name: str, linear: Any, group_size: int, axis: int) -> None:
    """Groups must tile the dimension they run along: in_features (axis 1), out_features (0)."""
    size = linear.in_features if axis == 1 else linear.out_features
    if size % group_size:
        dimension = "in_features" if axis == 1 else "out_features"
        raise QevalError(
            f"hqq: layer '{name}' has {dimension}={size}, not a multiple of "
            f"group_size={group_size}; choose a group_size that divides it."
        )


@hookimpl
def qeval_register_quantizers(register):
    register(HqqQuantizer())


@hookimpl
def qeval_dequantize_weight(module):
    """``HQQLinear``: its own ``dequantize()``, ``(W_q - zero) · scale`` as ``[out, in]``."""
    if type(module).__name__ != "HQQLinear" or not type(module).__module__.startswith("hqq."):
        return None
    return module.dequantize()
