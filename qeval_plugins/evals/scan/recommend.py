"""Which scanned units to keep unquantized: the recommendation rule and its bits per parameter.

Bits per parameter are counted over the scanned (quantized) weight matrices only — embeddings
and ``lm_head`` that the quantizer leaves alone are out of both numerator and denominator — by
:func:`qeval_plugins.core.quantizer.bits_per_param`, the formula a run's recorded
``effective_bits`` uses too::

    bits/param = (Σ_kept n_u · b_kept + Σ_quantized n_u · b_q) / Σ n_u

with ``n_u`` a unit's weight count, ``b_q`` the quantizer's ``effective_bits`` (codes plus
scales) and ``b_kept`` the model dtype's bits (16 for bfloat16, 32 for float32).

The rule, over the units ranked by single-unit KL (most sensitive first):

* with a target ``B`` (``--target-bits``): walk the ranking and keep each unit whose keeping
  still leaves bits/param ≤ ``B`` (a unit too large for what is left is passed over, a smaller
  one further down may still fit);
* without one: keep the smallest number ``k`` of top units whose single-unit KLs add up to at
  least half the sum over all units (``HALF``) — an additive estimate of "half the KL that
  quantizing costs"; the verification run measures the real effect. A unit whose KL is not
  finite is always kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.quantizer import bits_per_param

HALF = 0.5


def recommend(
    ranking: Sequence[dict[str, Any]],
    quantized_bits: float | None,
    kept_bits: float,
    target_bits: float | None = None,
) -> dict[str, Any]:
    """The recommendation over ``ranking`` (dicts with ``name``, ``params``, ``kl_mean``, most
    sensitive first): the rule used, the units to keep and the resulting bits/param."""
    params = {unit["name"]: unit["params"] for unit in ranking}
    if target_bits is not None:
        check_target_bits(quantized_bits, target_bits)
        kept = _within_budget(ranking, params, quantized_bits, kept_bits, target_bits)
        rule = f"most sensitive units first while bits/param <= {target_bits:g}"
    else:
        kept = _half_of_kl(ranking)
        rule = f"fewest most-sensitive units whose single-unit KLs sum to >= {HALF:g} of the total"
    bits = (
        bits_per_param(params, kept, quantized_bits, kept_bits)
        if quantized_bits is not None and params
        else None
    )
    return {
        "rule": rule,
        "target_bits": target_bits,
        "units": kept,
        "quantized_bits": quantized_bits,
        "kept_bits": kept_bits,
        "bits_per_param": bits,
        "all_quantized_bits_per_param": quantized_bits if params else None,
    }


def check_target_bits(quantized_bits: float | None, target_bits: float | None) -> None:
    """One QevalError line when ``--target-bits`` cannot be met by keeping units: the quantizer
    states no bits per weight, or its own are above the target. ``qeval scan`` calls it before
    its first pass, :func:`recommend` again."""
    if target_bits is None:
        return
    if quantized_bits is None:
        raise QevalError(
            "--target-bits needs the quantizer's bits per weight, and this quantizer does not "
            "state them (effective_bits); leave --target-bits out."
        )
    if quantized_bits > target_bits:
        raise QevalError(
            f"--target-bits {target_bits:g} is below the quantizer's own {quantized_bits:g} "
            f"bits per weight; give at least {quantized_bits:g}."
        )


def _within_budget(ranking, params, quantized_bits, kept_bits, target_bits) -> list[str]:
    kept: list[str] = []
    for unit in ranking:
        trial = [*kept, unit["name"]]
        if bits_per_param(params, trial, quantized_bits, kept_bits) <= target_bits:
            kept = trial
    return kept


def _half_of_kl(ranking) -> list[str]:
    """The default rule; a unit whose KL is not finite (it broke the model's numbers) is
    always kept, and the half is taken of the finite KLs."""
    kept = [unit["name"] for unit in ranking if not math.isfinite(unit["kl_mean"])]
    finite = [unit for unit in ranking if math.isfinite(unit["kl_mean"])]
    total = sum(max(unit["kl_mean"], 0.0) for unit in finite)
    reached = 0.0
    for unit in finite:
        if total <= 0 or reached >= HALF * total:
            break
        kept.append(unit["name"])
        reached += max(unit["kl_mean"], 0.0)
    return kept
