"""Built-in plugin: round-to-nearest (RTN) weight quantization over many number formats.

Simulated ("fake") quantization: every selected weight is replaced by its quantized-then-
dequantized value and kept in the model's dtype, so task scores are those of the quantized
weights while memory and speed stay those of the original model. The formats, scales and
rounding rules are in :mod:`qeval_plugins.formats`. The ``act_*`` options
quantize the quantized linears' inputs too (:mod:`~qeval_plugins.quantizers.activations`), with
SmoothQuant (``smooth``, :mod:`~qeval_plugins.quantizers.smoothquant`) folded in first; only
they read the calibration options: rtn is not ``calibrated``, but :meth:`needs_calibration` asks
qeval for the windows (built, recorded and keyed like a calibrated quantizer's) when
``act_granularity=tensor`` or ``smooth`` reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from qeval_plugins import LoadContext, Option, QevalError, Quantizer, Requires, Scheme, hookimpl
from qeval_plugins.core.calibration import CALIBRATION_OPTIONS
from qeval_plugins.formats.groups import effective_bits
from qeval_plugins.formats.table import FORMATS, MX_BLOCK_SIZE
from qeval_plugins.quantizers.activations import (
    ACT_OPTIONS,
    activation_scheme,
    finalize_activation_options,
    needs_calibration,
)
from qeval_plugins.quantizers.skip import SKIP_OPTION, kept_parts, skip_patterns, skipped_names

DEFAULT_GROUP_SIZE = 128
FIXED_FORMATS = tuple(fmt for fmt, spec in FORMATS.items() if spec.element_bits)  # bits implied
SCALED_FORMATS = tuple(fmt for fmt, spec in FORMATS.items() if not spec.is_mx)  # own group_size
FORMAT_OPTIONS = (  # shared by every quantizer over these formats (rtn, gptq-sim)
    Option("format", str, "int", "number format of the weights", tuple(FORMATS)),
    Option(
        "bits",
        int,
        4,
        "bits per weight for format=int",
        minimum=2,
        maximum=8,
        requires=(
            Requires(
                "format",
                ("int",),
                implies=tuple((f, FORMATS[f].element_bits) for f in FIXED_FORMATS),
            ),
        ),
    ),
    Option(
        "group_size",
        int,
        DEFAULT_GROUP_SIZE,
        "weights sharing one scale along the input dimension; 0 = per output channel "
        "(MX formats: always blocks of 32)",
        minimum=0,
        requires=(
            Requires(
                "format",
                SCALED_FORMATS,
                implies=tuple((f, MX_BLOCK_SIZE) for f in FORMATS if f not in SCALED_FORMATS),
            ),
        ),
    ),
    Option(
        "symmetric",
        bool,
        True,
        "symmetric scale (false: scale + zero point; int only)",
        requires=(Requires("format", ("int",), implies=tuple((f, True) for f in FIXED_FORMATS)),),
    ),
)
# rtn reads the calibration windows only for static activation scales and SmoothQuant
CALIBRATION_WHEN = (Requires("act_granularity", ("tensor",)), Requires("smooth", (0.0,), True))


class RtnQuantizer(Quantizer):
    """Round-to-nearest of the linear layers' weights, per output channel or per group."""

    name = "rtn"
    description = "round-to-nearest weights: int2-8, fp8/fp6/fp4, nf4, MX block formats (simulated)"
    aliases = ("round-to-nearest",)
    simulated = True
    options = (
        *FORMAT_OPTIONS,
        Option("include_lm_head", bool, False, "also quantize the output projection"),
        Option("include_embeddings", bool, False, "also quantize the input embeddings"),
        SKIP_OPTION,
        *ACT_OPTIONS,
        *(replace(option, requires=CALIBRATION_WHEN) for option in CALIBRATION_OPTIONS),
    )

    def needs_calibration(self, options: Mapping[str, Any]) -> bool:
        """Static activation scales and SmoothQuant read calibration activations."""
        return self.calibrated or needs_calibration(options)

    def finalize_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Fixed formats imply their bits; MX formats imply blocks of 32 (weights and
        activations alike). Options a format ignores were refused when given (``requires``)."""
        fmt = options["format"]
        skip_patterns(options, self.name)  # a malformed pattern fails before loading
        final = finalize_activation_options(self.name, options)
        if fmt != "int":
            final["bits"] = FORMATS[fmt].element_bits
        if FORMATS[fmt].is_mx:
            final["group_size"] = MX_BLOCK_SIZE
        return final

    def quantize(self, model: Any, options: Mapping[str, Any], context: LoadContext) -> Any:
        import torch
        from tqdm.auto import tqdm

        from qeval_plugins.formats.rounding import quantize_dequantize

        fmt = options["format"]
        every = list(_target_modules(model, options))
        skipped = skipped_names([name for name, _ in every], options, self.name)
        ids = _smooth(model, dict(every), options, context, self.name)
        targets = [(name, module) for name, module in every if name not in skipped]
        with torch.no_grad():
            for name, module in tqdm(
                targets, desc=f"rtn {fmt}: quantizing", unit="layer", disable=len(targets) < 64
            ):
                try:
                    module.weight.data = quantize_dequantize(
                        module.weight.data,
                        fmt,
                        bits=options["bits"],
                        group_size=options["group_size"],
                        symmetric=options["symmetric"],
                    )
                except ValueError as error:
                    raise QevalError(f"rtn: layer '{name}': {error}") from error
        _attach(model, dict(targets), options, ids)
        return model

    def scheme(self, options: Mapping[str, Any]) -> Scheme:
        """``int4 g128``, ``int3 per-channel asym``, ``fp8_e4m3 g128``, ``mxfp4`` (blocks of 32)."""
        fmt = options["format"]
        weights = f"int{options['bits']}" if fmt == "int" else fmt
        if not FORMATS[fmt].is_mx:
            group = options["group_size"]
            weights += f" g{group}" if group else " per-channel"
        if not options["symmetric"]:
            weights += " asym"
        kept = [part for part in ("lm_head", "embeddings") if not options[f"include_{part}"]]
        kept += kept_parts(options)
        return Scheme(weights=weights, activations=activation_scheme(options), kept=tuple(kept))

    def effective_bits(self, options: Mapping[str, Any]) -> float:
        return effective_bits(
            options["format"],
            options["bits"],
            options["group_size"],
            symmetric=options["symmetric"],
        )

    def weight_split(self, model: Any, options: Mapping[str, Any]) -> tuple[dict, list[str]]:
        """The linears (LM head, embeddings when included) and which of them ``skip`` kept."""
        params = {name: module.weight.numel() for name, module in _target_modules(model, options)}
        return params, sorted(skipped_names(params, options, self.name))


def _smooth(model: Any, targets: dict, options: Mapping[str, Any], context, who: str):
    """SmoothQuant on the targets when ``smooth`` > 0 (before any weight is rounded); the
    calibration windows if the activation options read them, else None."""
    from qeval_plugins.quantizers import activations

    if not activations.needs_calibration(options):
        return None
    ids = activations.calibration_ids(model, context, options, who)
    if options["smooth"]:
        from qeval_plugins.quantizers.smoothquant import smooth_model

        smooth_model(model, activations.linear_map(targets.items()), ids, options["smooth"])
    return ids


def _attach(model: Any, targets: dict, options: Mapping[str, Any], ids: Any) -> None:
    """Quantize the target linears' inputs from now on (static scales measured on ``ids``)."""
    from qeval_plugins.quantizers import activations

    linears = activations.linear_map(targets.items())
    activations.attach_activation_hooks(model, linears, options, ids)


def _target_modules(model: Any, options: Mapping[str, Any]):
    """(name, module) of every Linear weight to quantize; LM head/embeddings only if asked."""
    import torch

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            if module is output and not options["include_lm_head"]:
                continue
            yield name, module
        elif isinstance(module, torch.nn.Embedding) and options["include_embeddings"]:
            yield name, module


@hookimpl
def qeval_register_quantizers(register):
    register(RtnQuantizer())
