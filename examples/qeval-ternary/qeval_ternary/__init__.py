"""qeval plugin: ternary weights, w ≈ scale · t with t ∈ {-1, 0, +1} per output row.

scale = mean(|w|) over the row (BitNet b1.58's absmean), t = clamp(round(w / scale), -1, 1).
Linear layers (not the LM head) are replaced by ``layer.TernaryLinear``, which keeps the codes as
int8 and one float32 scale per row: about 8 bits of storage per weight here (a packed format
would need log2(3) ≈ 1.58).
"""

from __future__ import annotations

from qeval_plugins import Option, Quantizer, Scheme, hookimpl


class TernaryQuantizer(Quantizer):
    """Replaces every linear layer except the LM head by a ``layer.TernaryLinear``."""

    name = "ternary"
    description = "ternary weights {-1,0,+1} × absmean row scale (example plugin)"
    aliases = ("bitnet",)
    options = (
        Option(
            "threshold",
            float,
            1.0,
            "multiplies the scale before rounding; larger gives more zeros",
            minimum=0.1,
            maximum=4.0,
        ),
    )

    def quantize(self, model, options, context):
        import torch

        from qeval_ternary.layer import TernaryLinear

        output = model.get_output_embeddings()
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear) and child is not output:
                    setattr(parent, child_name, TernaryLinear(child, options["threshold"]))
        return model

    def effective_bits(self, options):
        return 8.0  # int8 codes; the per-row scale is negligible

    def scheme(self, options):
        return Scheme(weights="ternary per-row", kept=("lm_head", "embeddings"))


@hookimpl
def qeval_register_quantizers(register):
    register(TernaryQuantizer())


@hookimpl
def qeval_dequantize_weight(module):
    """The dense weight of a TernaryLinear: scale[:, None] * codes."""
    if type(module).__name__ != "TernaryLinear":
        return None
    return module.dense_weight()
