"""GPTQ's error-compensating rounding over every ``rtn`` number format: the math of one layer.

GPTQ (Frantar et al., 2022, arXiv:2210.17323) quantizes a linear weight ``W`` ``[out, in]``
column by column so that the layer's output on calibration inputs changes least. With the
layer's inputs ``x_t`` (``t = 1..n``) the objective is ``||W X − Q X||²_F`` and its Hessian is
``H = (2/n) Σ_t x_t x_tᵀ`` ``[in, in]``. After column ``j`` is rounded to ``q_j``, the remaining
columns absorb its error:

    err_j = (w_j − q_j) / [H⁻¹]_jj,        W[:, k] −= err_j · [H⁻¹]_jk   for every k > j,

where ``H⁻¹`` is the inverse Hessian of the columns not yet quantized. Instead of updating
``H⁻¹`` after every column (Gaussian elimination, the OBQ recursion), GPTQ uses ``U``, the upper
Cholesky factor of ``H⁻¹`` (``H⁻¹ = Uᵀ U``): row ``j`` of ``U`` is row ``j`` of the eliminated
inverse scaled by ``1/sqrt([H⁻¹]_jj)``, so ``err_j = (w_j − q_j) / U_jj`` and the update is
``W[:, j+1:] −= err_j ⊗ U[j, j+1:]``. Updates are applied lazily: within a block of
``block_size`` columns at once per column, to the columns after the block once per block
(``W[:, i2:] −= Err_block · U[i1:i2, i2:]``), which gives the same numbers up to float rounding.

Rounding uses :mod:`~qeval_plugins.formats.rounding` in two steps: a group's parameters
(scale, zero point, MX shared exponent) are fixed by
:func:`~qeval_plugins.formats.rounding.group_params` when the group's first column is
reached, from the group's *current* (error-updated) weights, and each column is then rounded
with them by :func:`~qeval_plugins.formats.rounding.quantize_with_params`. For a group that
starts inside a lazy-batch block (``group_size`` below ``block_size``, e.g. 32 or 64), the GPTQ
reference and GPTQModel read the group's weights *without* the updates still pending inside the
block; here they are included, so such groups can get other scales than GPTQModel's (84 % equal
codes at group 64 on the embedded model), while at group 128 and per channel the two give the
same codes (``tests/quantizers/test_gptq_agreement.py``). Groups are
always the format's contiguous groups along ``in`` (``group_size`` columns; all of a row for
``group_size=0``; blocks of 32 for MX formats), so the result is exactly representable in the
same format and storage as RTN's.

``act_order`` processes columns by descending ``H_jj`` (the most salient first) and permutes
back at the end. Unlike the GPTQ reference (``static_groups=False``, which forms groups of
consecutive *permuted* columns and must then store a column-to-group index ``g_idx``), groups
stay the contiguous groups of the original order; a group's parameters are fixed when the first
of its columns is reached in the permuted order, from all of its columns' current weights (the
pending in-block updates included). The result is then still plain ``int4 g128`` / ``mxfp4``
and so on, comparable with RTN at equal number format.

Other steps as in the reference: a dead input (``H_jj = 0``, never active in calibration) gets
``W[:, j] = 0`` and ``H_jj = 1``; ``damp_percent · mean(diag H)`` is added to the diagonal. When
the Cholesky factorisation fails (H not positive definite after dampening) it is retried with
ten times the dampening (at least 0.01), up to three times, then a QevalError names the layer.
The scale of ``H`` does not matter (``U`` and the dampening scale with it).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from qeval_plugins import QevalError
from qeval_plugins.formats.groups import group_length
from qeval_plugins.formats.rounding import GroupParams, group_params, quantize_with_params

logger = logging.getLogger("qeval")
BLOCK_SIZE = 128
DAMP_RETRIES = 3  # times the dampening is raised tenfold before a Cholesky failure is an error
RETRY_DAMP = 0.01  # the least dampening a retry uses (when damp_percent is 0)


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    fmt: str,
    *,
    bits: int = 4,
    group_size: int = 0,
    symmetric: bool = True,
    damp_percent: float = 0.01,
    act_order: bool = False,
    block_size: int = BLOCK_SIZE,
    layer: str = "",
) -> torch.Tensor:
    """GPTQ-quantize ``weight`` ``[out, in]`` against ``hessian`` ``[in, in]``; dequantized.

    ``fmt``, ``bits``, ``group_size``, ``symmetric`` are those of
    :func:`~qeval_plugins.formats.rounding.quantize_dequantize`. Works in float64 when
    ``weight`` is float64, else in float32 (the result is cast back to ``weight``'s dtype). A
    diagonal ``hessian`` gives exactly RTN (no error to feed forward). ``layer`` names the layer
    in errors. Raises ValueError for shapes or format options that do not fit.
    """
    cols = _check_shapes(weight, hessian)[1]
    glen = group_length(fmt, group_size, cols)
    work = torch.float64 if weight.dtype == torch.float64 else torch.float32
    w = weight.detach().to(work).clone()
    h = hessian.detach().to(device=w.device, dtype=work).clone()
    _drop_dead_columns(w, h)
    diag = torch.diag(h)
    order = (
        torch.argsort(diag, descending=True) if act_order else torch.arange(cols).to(diag.device)
    )
    w, h = w[:, order], h[order][:, order]
    upper = inverse_cholesky(h, damp_percent, layer)
    groups = (order // glen).tolist()  # each processed column's group (original contiguous)
    members = _group_positions(groups, w.device)
    rounding = dict(fmt=fmt, bits=bits, symmetric=symmetric)
    q = _quantize_columns(w, upper, groups, members, rounding, block_size)
    return q[:, torch.argsort(order)].to(weight.dtype).contiguous()


def _check_shapes(weight: torch.Tensor, hessian: torch.Tensor) -> tuple[int, int]:
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"weight must be a 2-D float tensor, got {tuple(weight.shape)}")
    cols = weight.shape[1]
    if tuple(hessian.shape) != (cols, cols):
        raise ValueError(
            f"hessian must be [{cols}, {cols}] for a weight of {cols} inputs, "
            f"got {tuple(hessian.shape)}"
        )
    return weight.shape[0], cols


def _drop_dead_columns(w: torch.Tensor, h: torch.Tensor) -> None:
    """In place: inputs never active (``H_jj == 0``) get ``W[:, j] = 0`` and ``H_jj = 1``."""
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0


def inverse_cholesky(h: torch.Tensor, damp_percent: float, layer: str = "") -> torch.Tensor:
    """``U``, upper triangular with ``Uᵀ U = (H + λI)⁻¹``, ``λ = damp_percent · mean(diag H)``.

    While ``H + λI`` is not positive definite, ``damp_percent`` grows tenfold (to at least
    :data:`RETRY_DAMP`), at most :data:`DAMP_RETRIES` times; then, or for a non-finite ``H``, a
    QevalError names ``layer``.
    """
    where = f"layer '{layer}'" if layer else "a layer"
    if not bool(torch.isfinite(h).all()):
        raise QevalError(
            f"gptq-sim: {where}: its calibration inputs are not finite (inf or NaN); check the "
            f"model in this dtype, or use another calibration_file."
        )
    mean_diag = float(torch.diag(h).mean())
    damp = damp_percent
    for attempt in range(DAMP_RETRIES + 1):
        damped = h + damp * mean_diag * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
        lower, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
        if int(info) == 0 and bool(torch.isfinite(upper).all()):
            if attempt:
                logger.warning("gptq-sim: %s: dampening raised to %g", where, damp)
            return upper
        tried = damp
        damp = max(10 * damp, RETRY_DAMP)
    raise QevalError(
        f"gptq-sim: {where}: its Hessian is not positive definite even with damp_percent="
        f"{tried:g}; calibrate on more or other text (calibration_samples, calibration_file)."
    )


def _group_positions(groups: list[int], device: torch.device) -> dict[int, torch.Tensor]:
    """Group -> the processing positions of its columns (ascending)."""
    positions: dict[int, list[int]] = {}
    for position, group in enumerate(groups):
        positions.setdefault(group, []).append(position)
    return {group: torch.tensor(found, device=device) for group, found in positions.items()}


def _quantize_columns(
    w: torch.Tensor,
    upper: torch.Tensor,
    groups: list[int],
    members: dict[int, torch.Tensor],
    rounding: dict[str, Any],
    block_size: int,
) -> torch.Tensor:
    """The lazy-batch GPTQ loop over columns in processing order; returns Q (permuted order).

    ``w`` is updated in place with the error of each finished block; inside a block the
    pending columns live in ``w1`` and get every column's error at once.
    """
    cols = w.shape[1]
    q = torch.zeros_like(w)
    params: dict[int, GroupParams] = {}
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        w1, u1 = w[:, i1:i2].clone(), upper[i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        for i in range(i2 - i1):
            group = groups[i1 + i]
            if group not in params:
                current = _current_weights(w, w1, err1[:, :i], upper, i1, members[group])
                params[group] = group_params(current, **rounding)
            column = w1[:, i : i + 1]
            quantized = quantize_with_params(column, params[group], **rounding)
            q[:, i1 + i] = quantized[:, 0]
            err = (column[:, 0] - quantized[:, 0]) / u1[i, i]
            w1[:, i + 1 :] -= torch.outer(err, u1[i, i + 1 :])
            err1[:, i] = err
        w[:, i2:] -= err1 @ upper[i1:i2, i2:]
    return q


def _current_weights(
    w: torch.Tensor,
    w1: torch.Tensor,
    err: torch.Tensor,
    upper: torch.Tensor,
    i1: int,
    positions: torch.Tensor,
) -> torch.Tensor:
    """The error-updated weights ``[rows, len(positions)]`` at the processing ``positions``
    (all at or after the current column): in-block ones from ``w1``; later ones are ``w`` minus
    the block's pending update ``err · U[i1:i1+i, positions]``."""
    i2 = i1 + w1.shape[1]
    current = w[:, positions].clone()
    inside = positions < i2
    current[:, inside] = w1[:, positions[inside] - i1]
    later = positions[~inside]
    if len(later) and err.shape[1]:
        current[:, ~inside] -= err @ upper[i1 : i1 + err.shape[1], later]
    return current
