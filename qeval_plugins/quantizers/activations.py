"""Simulated ("fake") quantization of the activations entering linear layers.

A forward pre-hook (:class:`ActivationHook`) on each quantized ``nn.Linear`` replaces its input
``x`` ``[..., in_features]`` by its quantized-then-dequantized value, in ``x``'s dtype, with the
number formats of :mod:`qeval_plugins.formats` (no second copy of any format):

* ``token`` (dynamic): one scale per token, ``absmax(x_t) / qmax`` over its ``in_features``
  values (``qmax = 2**(bits-1) - 1`` for int, the format's largest value for fp8), computed at
  run time for every input;
* ``tensor`` (static): one scale per layer, ``absmax / qmax`` where ``absmax`` is the largest
  ``|x|`` the layer saw over the calibration windows; larger inputs saturate;
* ``mx``: the MX formats' own E8M0 scale per block of 32 consecutive input channels.

The options and their rules live here too, without importing torch, so registering the
quantizers that declare them stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.options import Option, Requires
from qeval_plugins.formats.table import FORMATS, MX_BLOCK_SIZE

# the formats of the table that activations may take, and their bits per element (None for
# int: set by act_bits); act_format=none leaves the activations unquantized
ACT_FORMATS = ("int", "fp8_e4m3", "fp8_e5m2", "mxint8", "mxfp8", "mxfp6", "mxfp4")
ACT_FORMAT_BITS = {fmt: FORMATS[fmt].element_bits for fmt in ACT_FORMATS}
DEFAULT_ACT_BITS = 8
MX_ACT_FORMATS = tuple(fmt for fmt in ACT_FORMATS if FORMATS[fmt].is_mx)
QUANTIZED = Requires("act_format", ("none",), other_than=True)
ACT_OPTIONS = (
    Option(
        "act_format",
        str,
        "none",
        "number format of the linear layers' inputs (none: unquantized)",
        ("none", *ACT_FORMATS),
    ),
    Option(
        "act_bits",
        int,
        DEFAULT_ACT_BITS,
        "bits per activation for act_format=int",
        minimum=2,
        maximum=8,
        requires=(
            Requires(
                "act_format",
                ("int",),
                implies=tuple((fmt, bits) for fmt, bits in ACT_FORMAT_BITS.items() if bits),
            ),
        ),
    ),
    Option(
        "act_granularity",
        str,
        "token",
        "activation scales: per token (dynamic), per tensor (static, from calibration); "
        "MX formats: blocks of 32",
        ("token", "tensor", "mx"),
        requires=(
            Requires(
                "act_format",
                tuple(fmt for fmt in ACT_FORMATS if fmt not in MX_ACT_FORMATS),
                implies=tuple((fmt, "mx") for fmt in MX_ACT_FORMATS),
            ),
        ),
    ),
    Option(
        "smooth",
        float,
        0.0,
        "SmoothQuant migration strength alpha (0 = off): inputs / s, weights * s, "
        "s_j = max|X_j|^alpha / max|W_j|^(1-alpha), folded into the preceding norm",
        minimum=0.0,
        maximum=1.0,
        requires=(QUANTIZED,),
    ),
)


def finalize_activation_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with the activation options checked and completed (one-line QevalErrors).

    Fixed formats imply their bits (``act_bits``), MX formats imply ``act_granularity=mx``.
    Options that ``act_format`` leaves without effect were refused when given (``requires``).
    """
    fmt, granularity = options["act_format"], options["act_granularity"]
    mx = fmt in MX_ACT_FORMATS
    if not mx and granularity == "mx":
        raise QevalError(f"{name}: act_granularity=mx belongs to the MX act_formats, not {fmt}.")
    final = dict(options)
    if fmt not in ("none", "int"):
        final["act_bits"] = ACT_FORMAT_BITS[fmt]
    if mx:
        final["act_granularity"] = "mx"
    return final


def needs_calibration(options: Mapping[str, Any]) -> bool:
    """True when static scales or smoothing read calibration activations."""
    return options["act_granularity"] == "tensor" or options["smooth"] > 0


def activation_scheme(options: Mapping[str, Any]) -> str:
    """``unquantized``, ``int8 per-token``, ``fp8_e4m3 per-tensor static``, ``mxfp4``, with
    ``, smooth 0.5`` when SmoothQuant is on."""
    fmt = options["act_format"]
    if fmt == "none":
        return "unquantized"
    text = f"int{options['act_bits']}" if fmt == "int" else fmt
    granularity = options["act_granularity"]
    if granularity == "token":
        text += " per-token"
    elif granularity == "tensor":
        text += " per-tensor static"
    if options["smooth"]:
        text += f", smooth {options['smooth']:g}"
    return text


class ActivationHook:
    """Forward pre-hook: the linear's first input, quantized and dequantized.

    ``static_absmax``: the calibration absmax of a per-tensor static scale, None for dynamic
    (per-token or MX) scales.
    """

    def __init__(self, fmt: str, bits: int, static_absmax: float | None = None) -> None:
        self.fmt, self.bits = fmt, bits
        self.params = None
        if static_absmax is not None:
            import torch

            from qeval_plugins.formats.rounding import group_params

            self.params = group_params(torch.tensor([[static_absmax]]), fmt, bits=bits)

    def __call__(self, module: Any, args: tuple) -> tuple:
        return (self.quantize(args[0]), *args[1:])

    def quantize(self, x: Any) -> Any:
        """``x`` ``[..., in_features]`` quantized-dequantized (same shape and dtype)."""
        from qeval_plugins.formats import rounding

        if self.params is not None:
            params = rounding.GroupParams(self.params.scale.to(x.device))
            return rounding.quantize_with_params(x, params, self.fmt, bits=self.bits)
        group = MX_BLOCK_SIZE if FORMATS[self.fmt].is_mx else 0
        rows = x.reshape(-1, x.shape[-1])
        out = rounding.quantize_dequantize(rows, self.fmt, bits=self.bits, group_size=group)
        return out.reshape(x.shape)


def channel_absmax(model: Any, linears: Mapping[str, Any], input_ids: Any) -> dict[str, Any]:
    """Name -> ``max_t |x_{t,j}|`` per input channel ``j`` of each linear (float32 ``[in]``),
    over every token of the calibration windows ``input_ids`` [samples, seqlen] (batch 1)."""
    import torch

    found = {
        name: torch.zeros(module.in_features, device=module.weight.device)
        for name, module in linears.items()
    }

    def record(name):
        def hook(module, args):
            x = args[0].detach().reshape(-1, module.in_features).abs().amax(dim=0)
            torch.maximum(found[name], x.to(torch.float32), out=found[name])

        return hook

    handles = [module.register_forward_pre_hook(record(n)) for n, module in linears.items()]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for row in input_ids:
                model(row[None].to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return found


def attach_activation_hooks(
    model: Any, linears: Mapping[str, Any], options: Mapping[str, Any], input_ids: Any = None
) -> None:
    """Quantize the inputs of ``linears`` (name -> nn.Linear) from now on, as ``options`` say.

    Static (per-tensor) scales are measured first, on ``input_ids``, in one pass of the model
    as it is (weights already quantized, activations not yet).
    """
    if options["act_format"] == "none":
        return
    absmax = {}
    if options["act_granularity"] == "tensor":
        absmax = {n: float(a.max()) for n, a in channel_absmax(model, linears, input_ids).items()}
    for name, module in linears.items():
        hook = ActivationHook(options["act_format"], options["act_bits"], absmax.get(name))
        module.register_forward_pre_hook(hook)


def calibration_ids(model: Any, context: Any, options: Mapping[str, Any], who: str) -> Any:
    """The calibration windows: ``context.calibration``'s, else built from the run's tokenizer
    with the calibration options (the same windows qeval builds for a calibrated quantizer)."""
    if context.calibration is not None:
        return context.calibration.input_ids
    if context.tokenizer is None:
        raise QevalError(
            f"{who}: act_granularity=tensor and smooth= need calibration windows, and no "
            f"tokenizer was given to build them; run it through qeval."
        )
    from qeval_plugins.core.calibration import build_calibration

    seqlen = options["calibration_seqlen"]
    context_length = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(context_length, int) and seqlen > context_length:
        raise QevalError(
            f"{who}: calibration_seqlen={seqlen} is longer than the model's context "
            f"({context_length} tokens); give calibration_seqlen={context_length} or less."
        )
    return build_calibration(context.tokenizer, dict(options)).input_ids


def linear_map(named: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Name -> module of the ``nn.Linear`` modules among ``named`` (embeddings dropped)."""
    import torch

    return {name: module for name, module in named if isinstance(module, torch.nn.Linear)}
