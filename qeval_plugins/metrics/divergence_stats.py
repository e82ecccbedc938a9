"""Run-level output-divergence statistics, as llama.cpp's ``llama-perplexity --kl-divergence``.

Inputs are per-token values pooled over all texts (float64 ``[n]``): KL(P_ref‖P_quant) and the
reverse KL(P_quant‖P_ref) in nats, the NLL ``−ln p(correct token)`` under each model, the
top-1 agreement, and each token's position in its text. Every uncertainty is one standard error
of the mean, ``sqrt(Σ (x − x̄)² / (n (n − 1)))`` (llama.cpp's ``mean_and_uncertainty``, which
equals this, but which llama.cpp sets to 0 below 11 tokens; here it is None below 2 tokens).
Percentiles interpolate linearly (numpy's default, llama.cpp's ``percentile``; the median is
the 50th percentile). A statistic with no tokens, or an undefined one, is None.
"""

from __future__ import annotations

import math

import torch

from qeval_plugins.metrics.divergence import percentile

# name suffix -> percentile (kl_p999 is the 99.9th, kl_p01 the 0.1th)
KL_PERCENTILES = {
    "max": 100.0,
    "p999": 99.9,
    "p99": 99.0,
    "p95": 95.0,
    "p90": 90.0,
    "median": 50.0,
    "p10": 10.0,
    "p5": 5.0,
    "p1": 1.0,
    "p01": 0.1,
    "min": 0.0,
}
DP_PERCENTILES = {**KL_PERCENTILES, "p75": 75.0, "p25": 25.0}
EARLY_POSITIONS = 32  # kl_mean_pos_early: tokens predicted from at most 32 tokens of context


def mean_and_error(values: torch.Tensor) -> tuple[float | None, float | None]:
    """``(x̄, sqrt(Σ (x − x̄)² / (n (n − 1))))``: the mean and its standard error, float64.

    (None, None) for no values; the error is None for one value. An infinite value makes the
    mean ``inf`` and the error None (undefined)."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = x.numel()
    if n == 0:
        return None, None
    mean = float(x.mean())
    if n < 2 or not math.isfinite(mean):
        return mean, None
    return mean, math.sqrt(float(((x - mean) ** 2).sum()) / (n * (n - 1)))


def binomial_error(share: float, count: int) -> float | None:
    """``sqrt(a (1 − a) / (n − 1))``: the standard error of a share ``a`` of ``n`` tokens
    (llama.cpp's "same top p" uncertainty); None below 2 tokens."""
    return math.sqrt(share * (1.0 - share) / (count - 1)) if count >= 2 else None


def correlation(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Pearson correlation ``cov(a, b) / (σ_a σ_b)`` in float64; None when either is constant,
    infinite or has fewer than 2 values."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    if a.numel() < 2 or not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return None
    da, db = a - a.mean(), b - b.mean()
    norm = math.sqrt(float((da * da).sum()) * float((db * db).sum()))
    return float((da * db).sum()) / norm if norm > 0 else None


def _percentiles(prefix: str, values: torch.Tensor, table: dict[str, float]) -> dict:
    if values.numel() == 0:
        return {f"{prefix}_{name}": None for name in table}
    return {f"{prefix}_{name}": percentile(values, q) for name, q in table.items()}


def _with_error(name: str, values: torch.Tensor) -> dict:
    mean, error = mean_and_error(values)
    return {name: mean, f"{name}_err": error}


def kl_statistics(kl: torch.Tensor, kl_reverse: torch.Tensor, positions: torch.Tensor) -> dict:
    """KL statistics: ``kl_mean(_err)``, ``kl_max`` … ``kl_min`` (:data:`KL_PERCENTILES`),
    ``kl_reverse_mean(_err)``, ``kl_symmetric_mean(_err)`` (per token ``KL(P‖Q) + KL(Q‖P)``, the
    Jeffreys divergence), ``kl_mean_pos_early`` / ``kl_mean_pos_late`` (mean KL of the tokens
    at position t < / >= :data:`EARLY_POSITIONS` of their text, where position t is predicted
    from the t + 1 tokens before it, the prefix token included)."""
    early = positions < EARLY_POSITIONS
    return {
        **_with_error("kl_mean", kl),
        **_percentiles("kl", kl, KL_PERCENTILES),
        **_with_error("kl_reverse_mean", kl_reverse),
        **_with_error("kl_symmetric_mean", kl + kl_reverse),
        "kl_mean_pos_early": mean_and_error(kl[early])[0],
        "kl_mean_pos_late": mean_and_error(kl[~early])[0],
    }


def probability_statistics(nll_reference: torch.Tensor, nll_quantized: torch.Tensor) -> dict:
    """Δp and perplexity statistics from per-token NLLs (nats) of the correct tokens.

    ``Δp = e^(−nll_quantized) − e^(−nll_reference)`` = p_Q(correct) − p_ref(correct), a
    probability in [−1, 1] (llama.cpp prints it ×100 as %): ``dp_mean(_err)``, ``dp_max`` …
    ``dp_min`` (:data:`DP_PERCENTILES`), ``rms_dp = sqrt(mean Δp²)`` and ``rms_dp_err =
    se(Δp²) / (2 rms_dp)`` (delta method, as llama.cpp; 0 when every Δp is 0).
    ``ln_ppl_ratio = mean(nll_Q − nll_ref) = ln(PPL_Q / PPL_ref)`` with the standard error of
    the paired per-token difference (= llama.cpp's ``sqrt(se_Q² + se_ref² − 2 cov)``);
    ``ppl_ratio = e^ln_ppl_ratio``, ``ppl_ratio_err = ppl_ratio · ln_ppl_ratio_err``;
    ``ppl_quantized_err`` / ``ppl_reference_err = PPL · se(nll)``; ``ln_ppl_corr``: the Pearson
    correlation of the per-token NLLs of the two models (llama.cpp's "Cor(ln(PPL(Q)),
    ln(PPL(base)))", which is this per-token correlation)."""
    dp = torch.exp(-nll_quantized) - torch.exp(-nll_reference)
    mse, mse_error = mean_and_error(dp * dp)
    rms = math.sqrt(mse) if mse is not None else None
    rms_error = None
    if rms is not None and mse_error is not None:
        rms_error = 0.5 * mse_error / rms if rms > 0 else 0.0
    ln_ratio, ln_error = mean_and_error(nll_quantized - nll_reference)
    ratio = _exp(ln_ratio)
    return {
        **_with_error("dp_mean", dp),
        **_percentiles("dp", dp, DP_PERCENTILES),
        "rms_dp": rms,
        "rms_dp_err": rms_error,
        "ln_ppl_ratio": ln_ratio,
        "ln_ppl_ratio_err": ln_error,
        "ppl_ratio": ratio,
        "ppl_ratio_err": _product(ratio, ln_error),
        "ppl_quantized_err": _ppl_error(nll_quantized),
        "ppl_reference_err": _ppl_error(nll_reference),
        "ln_ppl_corr": correlation(nll_quantized, nll_reference),
    }


def _exp(value: float | None) -> float | None:
    if value is None:
        return None
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def _product(a: float | None, b: float | None) -> float | None:
    return a * b if a is not None and b is not None and math.isfinite(a * b) else None


def _ppl_error(nll: torch.Tensor) -> float | None:
    """``PPL · se(nll)``: the standard error of ``exp(mean nll)`` by the delta method."""
    mean, error = mean_and_error(nll)
    return _product(_exp(mean), error)


def agreement_statistics(agree: torch.Tensor) -> dict:
    """``top1_agreement_err``: the binomial standard error of the top-1 agreement share."""
    count = agree.numel()
    share = float(agree.to(torch.float64).mean()) if count else 0.0
    return {"top1_agreement_err": binomial_error(share, count)}


def json_safe(value: float | None) -> float | str | None:
    """A statistic for strict JSON: ``"inf"`` / ``"-inf"`` for infinities, None for NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value
