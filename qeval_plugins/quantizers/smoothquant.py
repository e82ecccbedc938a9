"""SmoothQuant: move activation outliers into the weights before quantizing either.

Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
Models" (ICML 2023, arXiv:2211.10438). For the linears that read one normalisation layer's
output (Llama: ``input_layernorm`` -> q/k/v, ``post_attention_layernorm`` -> gate/up), with
``X`` that output over the calibration windows and ``W`` the linears' weights stacked by rows,
each input channel ``j`` gets

    ``s_j = max_t |X_{t,j}|^alpha / max_i |W_{i,j}|^(1-alpha)``  (both floored at 1e-5)

and ``X / s`` is folded into the norm (its weight and bias divided by ``s``), ``W · s`` into
every linear reading it (column ``j`` multiplied by ``s_j``), so the float model computes the
same function while ``X``'s outlier channels shrink. Linears that no norm feeds directly
(o_proj, down_proj) are left unsmoothed, as in the paper's Llama recipe: there ``X / s`` could
not be folded anywhere and would cost a division at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from qeval_plugins.core.errors import QevalError
from qeval_plugins.quantizers.activations import channel_absmax

FLOOR = 1e-5


def norm_consumers(model: Any, input_ids: torch.Tensor) -> list[tuple[Any, torch.Tensor, list]]:
    """(norm module, one input it got, names of every nn.Linear reading its output) for each
    normalisation layer whose output tensor is some linear's input, from one window's pass.

    A norm is a module without children, with a 1-D ``weight`` and ``Norm`` in its class name.
    """
    norms = {
        name: module
        for name, module in model.named_modules()
        if "Norm" in type(module).__name__
        and not list(module.children())
        and getattr(module, "weight", None) is not None
        and module.weight.dim() == 1
    }
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    inputs: dict[str, torch.Tensor] = {}

    def norm_hook(name):
        def hook(module, args, output):
            outputs.setdefault(name, (args[0], output))

        return hook

    def linear_hook(name):
        def hook(module, args):
            inputs.setdefault(name, args[0])

        return hook

    handles = [module.register_forward_hook(norm_hook(n)) for n, module in norms.items()]
    handles += [module.register_forward_pre_hook(linear_hook(n)) for n, module in linears.items()]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model(input_ids[:1].to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    found = []
    for name, (norm_input, output) in outputs.items():
        readers = [n for n, x in inputs.items() if x is output]
        if readers:
            found.append((norms[name], norm_input, readers))
    return found


def smoothing_scales(act_absmax: torch.Tensor, weights: list[torch.Tensor], alpha: float):
    """``s_j = max|X_j|^alpha / max_i |W_ij|^(1-alpha)`` (float32 ``[in]``, see module doc)."""
    w_absmax = torch.stack([w.detach().abs().amax(dim=0).float() for w in weights]).amax(dim=0)
    act = act_absmax.float().clamp(min=FLOOR)
    return (act.pow(alpha) / w_absmax.clamp(min=FLOOR).pow(1 - alpha)).clamp(min=FLOOR)


def fold(norm: Any, linears: list[Any], scales: torch.Tensor, sample: torch.Tensor) -> None:
    """Divide ``norm``'s output by ``scales`` and multiply the ``linears``' input columns by
    them. ``sample`` (an input of the norm) checks the norm is ``weight * f(x) (+ bias)``: a
    norm of another form (Gemma's ``(1 + weight)``) is restored and a QevalError raised."""
    params = [p for p in (norm.weight, getattr(norm, "bias", None)) if p is not None]
    with torch.no_grad():
        before = norm(sample).float()
        saved = [param.detach().clone() for param in params]
        for param in params:
            param.div_(scales.to(param))
        after = norm(sample).float() * scales.to(sample.device)
        if not torch.allclose(after, before, rtol=1e-3, atol=1e-5 * float(before.abs().max())):
            for param, value in zip(params, saved, strict=True):
                param.copy_(value)
            raise QevalError(
                f"smooth: cannot fold the scales into {type(norm).__name__} (its output is not "
                f"weight * f(x)); drop smooth= for this model."
            )
        for linear in linears:
            linear.weight.mul_(scales.to(linear.weight))


def smooth_model(
    model: Any, targets: Mapping[str, Any], input_ids: torch.Tensor, alpha: float
) -> int:
    """Apply SmoothQuant with strength ``alpha`` to every norm feeding one of ``targets``
    (name -> nn.Linear) over the calibration windows ``input_ids``; returns how many norms.

    All linears reading a smoothed norm are compensated (``W · s``), targets or not, so the
    float model's outputs are unchanged.
    """
    groups = [g for g in norm_consumers(model, input_ids) if any(n in targets for n in g[2])]
    linears = dict(model.named_modules())
    readers = {name: linears[name] for _, _, names in groups for name in names}
    absmax = channel_absmax(model, readers, input_ids)
    for norm, sample, names in groups:
        scales = smoothing_scales(absmax[names[0]], [linears[n].weight for n in names], alpha)
        fold(norm, [linears[n] for n in names], scales, sample)
    return len(groups)
