"""Built-in plugin: optimum-quanto weights (int8, int4, int2, float8) and optional int8 activations.

``optimum.quanto.quantize(model, weights=..., activations=...)`` turns every decoder
``nn.Linear`` into a ``QLinear``; ``freeze(model)`` then replaces its float weight by a
quantized tensor (``QTensor``). Formats, as quanto 0.2.7 builds them:

* ``qint8`` / ``qfloat8`` (E4M3): symmetric, one absmax scale per output row;
* ``qint4`` / ``qint2``: asymmetric, a scale and a float shift per group of 128 input weights
  (quanto's fixed choice; 96, 64 or 32 when 128 does not divide ``in_features``, one group per
  row when ``in_features`` <= 128), ``w = (q - shift) · scale`` with min/max range.

``activations=int8`` also quantizes the inputs and outputs of those layers to int8 with one
static scale per tensor; quanto sets the scales from the absmax it sees in a ``Calibration``
pass, here over qeval's calibration windows (read only with ``activations=int8``). Everything
runs on CPU, float32 and bfloat16. Scales are kept in the model's dtype. The LM head and the
embeddings stay unquantized.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from qeval_plugins import LoadContext, Option, Quantizer, Requires, Scheme, hookimpl
from qeval_plugins.core.calibration import CALIBRATION_OPTIONS
from qeval_plugins.quantizers.skip import SKIP_OPTION, kept_parts, skip_patterns, skipped_linears

GROUP_SIZE = 128  # quanto's group size for qint4/qint2 weights (QModuleMixin)
SCALE_BITS = 16  # a scale or shift counted as a 16-bit value, as in rtn's cost model


INT8_ACTIVATIONS = Requires("activations", ("int8",))  # when the calibration options act


class QuantoQuantizer(Quantizer):
    """One quanto weight type; ``activations=int8`` adds calibrated static int8 activations."""

    qtype: str = ""  # the optimum.quanto qtype's attribute name
    bits: int = 8
    grouped: bool = False  # qint4/qint2: groups with a shift; otherwise per-row symmetric
    weights: str = ""  # the scheme's weight format
    requires = ("optimum.quanto",)
    extra = "quanto"
    calibrated = True
    options = (
        Option(
            "activations",
            str,
            "none",
            "int8: also quantize the layers' inputs and outputs to int8 (one static scale per "
            "tensor, from the calibration windows)",
            ("none", "int8"),
        ),
        SKIP_OPTION,
        *(replace(option, requires=(INT8_ACTIVATIONS,)) for option in CALIBRATION_OPTIONS),
    )

    def needs_calibration(self, options: Mapping[str, Any]) -> bool:
        """Only the int8 activations' static scales read calibration windows."""
        return options["activations"] == "int8"

    def finalize_options(self, options: dict[str, Any]) -> dict[str, Any]:
        skip_patterns(options, self.name)  # a malformed pattern fails before loading
        return options

    def quantize(self, model: Any, options: Mapping[str, Any], context: LoadContext) -> Any:
        import optimum.quanto as quanto
        import torch

        int8_activations = options["activations"] == "int8"
        quanto.quantize(
            model,
            weights=getattr(quanto, self.qtype),
            activations=quanto.qint8 if int8_activations else None,
            exclude=_output_names(model) + sorted(skipped_linears(model, options, self.name)),
        )
        if int8_activations:
            device = next(model.parameters()).device
            with torch.no_grad(), quanto.Calibration():
                for window in context.calibration.input_ids:
                    model(window.unsqueeze(0).to(device))
        quanto.freeze(model)
        return model

    def scheme(self, options: Mapping[str, Any]) -> Scheme:
        activations = "unquantized"
        if options["activations"] == "int8":
            activations = "int8 per-tensor static (calibrated), inputs and outputs"
        kept = ("lm_head", "embeddings", *kept_parts(options))
        return Scheme(weights=self.weights, activations=activations, kept=kept)

    def effective_bits(self, options: Mapping[str, Any]) -> float:
        """int4/int2: ``bits + 2 · 16 / 128`` (a scale and a shift per group of 128); int8/fp8:
        ``8`` (one scale per output row, negligible per weight)."""
        return self.bits + (2 * SCALE_BITS / GROUP_SIZE if self.grouped else 0.0)


class QuantoInt8(QuantoQuantizer):
    name, qtype, bits = "quanto-int8", "qint8", 8
    description = "optimum-quanto int8 weights, per-row absmax; optional int8 activations"
    weights = "int8 per-channel"


class QuantoFp8(QuantoQuantizer):
    name, qtype, bits = "quanto-fp8", "qfloat8", 8
    description = "optimum-quanto float8 E4M3 weights, per-row absmax; optional int8 activations"
    weights = "fp8_e4m3 per-channel"


class QuantoInt4(QuantoQuantizer):
    name, qtype, bits, grouped = "quanto-int4", "qint4", 4, True
    description = "optimum-quanto int4 weights, groups of 128 with scale and shift"
    weights = f"int4 g{GROUP_SIZE} asym"


class QuantoInt2(QuantoQuantizer):
    name, qtype, bits, grouped = "quanto-int2", "qint2", 2, True
    description = "optimum-quanto int2 weights, groups of 128 with scale and shift"
    weights = f"int2 g{GROUP_SIZE} asym"


def _output_names(model: Any) -> list[str]:
    """The module name of the output projection (kept unquantized), if the model has one."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [name for name, module in model.named_modules() if module is output and name]


@hookimpl
def qeval_register_quantizers(register):
    for quantizer in (QuantoInt8(), QuantoInt4(), QuantoInt2(), QuantoFp8()):
        register(quantizer)


@hookimpl
def qeval_dequantize_weight(module):
    """quanto ``QLinear``: its quantized weight's ``dequantize()`` (codes × scale, minus shift)."""
    if not type(module).__module__.startswith("optimum.quanto"):
        return None
    weight = getattr(module, "qweight", None)
    return weight.dequantize() if hasattr(weight, "dequantize") else None
