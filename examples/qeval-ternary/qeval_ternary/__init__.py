"""qeval plugin: ternary weights, w ≈ scale · t with t ∈ {-1, 0, +1} per output row.

scale = mean(|w|) over the row (BitNet b1.58's absmean), t = clamp(round(w / scale), -1, 1).
Linear layers (not the LM head) are replaced by ``layer.TernaryLinear``, which keeps the codes as
int8 and one float32 scale per row: about 8 bits of storage per weight here (a packed format
would need log2(3) ≈ 1.58).

What the method found goes to the run's results with ``context.record`` (``qeval.plugin_record``:
the share of zero codes per layer and over the model); progress and a summary line go through
``context.progress`` and ``context.logger``.
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
        targets = [
            (parent, child_name, f"{parent_name}.{child_name}".lstrip("."))
            for parent_name, parent in model.named_modules()
            for child_name, child in parent.named_children()
            if isinstance(child, torch.nn.Linear) and child is not output
        ]
        zeros: dict[str, float] = {}
        zero_codes = all_codes = 0
        with context.progress("ternarizing", total=len(targets)) as advance:
            for parent, child_name, name in targets:
                layer = TernaryLinear(getattr(parent, child_name), options["threshold"])
                setattr(parent, child_name, layer)
                zero = int((layer.codes == 0).sum())
                zeros[name] = round(zero / layer.codes.numel(), 6)
                zero_codes, all_codes = zero_codes + zero, all_codes + layer.codes.numel()
                advance(1)
        share = zero_codes / all_codes if all_codes else 0.0
        context.record("zero_share", round(share, 6))  # share of weights rounded to 0
        context.record("zero_share_per_layer", zeros)
        context.logger.info("%d layers ternarized, %.1f %% zero", len(targets), 100 * share)
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
