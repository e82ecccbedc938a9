"""Built-in plugin: GPTQ's error-compensating rounding over every ``rtn`` number format.

Simulated ("fake") quantization like ``rtn``, with the same formats, groups and options, so the
two compare at equal number format: each decoder block's linear weights are rounded column by
column with GPTQ (:mod:`~qeval_plugins.quantizers.gptq_solver`) on Hessians of the layers' own
inputs over qeval's calibration windows (:mod:`~qeval_plugins.quantizers.layer_inputs`), and
kept in the model's dtype. ``lm_head`` and the embeddings are left unquantized.

Activation options (``act_format``, ``smooth``, ... as on ``rtn``): SmoothQuant is folded in
before GPTQ (which then calibrates on the smoothed model), activations are quantized only after
every weight is done, so GPTQ's Hessians see unquantized activations. The cached model holds the
weights; its activation hooks (and static scales, measured again on the same windows) are put
back when it is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qeval_plugins import LoadContext, Option, QevalError, Scheme, hookimpl
from qeval_plugins.core.calibration import CALIBRATION_OPTIONS
from qeval_plugins.quantizers.activations import ACT_OPTIONS
from qeval_plugins.quantizers.rtn import FORMAT_OPTIONS, RtnQuantizer
from qeval_plugins.quantizers.skip import SKIP_OPTION, skipped_names

UNQUANTIZED = {"include_lm_head": False, "include_embeddings": False}


class GptqSimQuantizer(RtnQuantizer):
    """GPTQ on the decoder blocks' linear layers; rtn's formats, option rules and scheme."""

    name = "gptq-sim"
    description = "GPTQ error-compensating rounding over every rtn format, calibrated (simulated)"
    aliases = ()
    simulated = True
    calibrated = True
    cache_quantized = True
    options = (
        *FORMAT_OPTIONS,
        Option(
            "damp_percent",
            float,
            0.01,
            "dampening added to the Hessian's diagonal, as a fraction of its mean",
            minimum=0.0,
            maximum=1.0,
        ),
        Option("act_order", bool, False, "quantize columns by descending Hessian diagonal"),
        SKIP_OPTION,
        *ACT_OPTIONS,
        *CALIBRATION_OPTIONS,
    )

    def quantize(self, model: Any, options: Mapping[str, Any], context: LoadContext) -> Any:
        from tqdm.auto import tqdm

        from qeval_plugins.formats.groups import group_length
        from qeval_plugins.quantizers.activations import attach_activation_hooks
        from qeval_plugins.quantizers.layer_inputs import decoder_linears, quantize_blocks
        from qeval_plugins.quantizers.smoothquant import smooth_model

        if context.calibration is None:
            raise QevalError(
                f"{self.name}: no calibration windows were given (context.calibration is None); "
                f"run it through qeval, which builds them from the calibration_* options."
            )
        linears = decoder_linears(model)
        if not linears:
            raise QevalError(
                f"{self.name}: cannot find this model's decoder blocks (a ModuleList of "
                f"config.num_hidden_layers modules); use quantizer=rtn for it."
            )
        skipped = skipped_names([name for name, _ in linears], options, self.name)
        for name, module in linears:  # groups that do not fit fail before any calibration pass
            try:
                group_length(options["format"], options["group_size"], module.in_features)
            except ValueError as error:
                raise QevalError(f"{self.name}: layer '{name}': {error}") from error
        if options["smooth"]:
            smooth_model(model, dict(linears), context.calibration.input_ids, options["smooth"])
        quantize_blocks(
            model,
            context.calibration.input_ids,
            self._solver(options, skipped),
            progress=lambda blocks: tqdm(
                blocks,
                desc=f"{self.name} {options['format']}",
                unit="block",
                disable=len(linears) < 64,
            ),
        )
        kept = dict(item for item in linears if item[0] not in skipped)
        attach_activation_hooks(model, kept, options, context.calibration.input_ids)
        return model

    def load_quantized(self, folder: Path, options: Mapping[str, Any], context: LoadContext) -> Any:
        """None (qeval loads the cached weights) without activation quantization; with it, the
        cached model loaded here with its activation hooks put back (static scales measured
        again on ``context.calibration``)."""
        if options["act_format"] == "none":
            return None
        import torch
        from transformers import AutoModelForCausalLM

        from qeval_plugins.quantizers.activations import attach_activation_hooks
        from qeval_plugins.quantizers.layer_inputs import decoder_linears

        dtype = getattr(torch, context.dtype) if context.dtype != "auto" else "auto"
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(context.device).eval()
        ids = context.calibration.input_ids if context.calibration is not None else None
        linears = decoder_linears(model)
        skipped = skipped_names([name for name, _ in linears], options, self.name)
        kept = dict(item for item in linears if item[0] not in skipped)
        attach_activation_hooks(model, kept, options, ids)
        return model

    def _solver(self, options: Mapping[str, Any], skipped: set[str]):
        """``solve(name, linear, H)``: the linear's GPTQ-quantized weight under ``options``
        (its own weight, unchanged, for the ``skipped`` layers)."""
        from qeval_plugins.quantizers.gptq_solver import gptq_quantize

        def solve(name, module, hessian):
            if name in skipped:
                return module.weight.data
            try:
                return gptq_quantize(
                    module.weight.data,
                    hessian,
                    options["format"],
                    bits=options["bits"],
                    group_size=options["group_size"],
                    symmetric=options["symmetric"],
                    damp_percent=options["damp_percent"],
                    act_order=options["act_order"],
                    layer=name,
                )
            except ValueError as error:
                raise QevalError(f"{self.name}: layer '{name}': {error}") from error

        return solve

    def scheme(self, options: Mapping[str, Any]) -> Scheme:
        """rtn's scheme at the same format options (``int4 g128``, ``mxfp4``, ...)."""
        return super().scheme({**options, **UNQUANTIZED})

    def weight_split(self, model: Any, options: Mapping[str, Any]) -> tuple[dict, list[str]]:
        """The decoder blocks' linears and which of them ``skip`` kept."""
        from qeval_plugins.quantizers.layer_inputs import decoder_linears

        params = {name: module.weight.numel() for name, module in decoder_linears(model)}
        return params, sorted(skipped_names(params, options, self.name))


@hookimpl
def qeval_register_quantizers(register):
    register(GptqSimQuantizer())
