"""Which way is better for each metric qeval knows: the one table of metric directions.

The task classes give lm-eval their metrics' directions from it (``higher_is_better()`` of
``qeval_sqnr`` and the sampling tasks), and the report reads it for a results file that states
no direction. Pure data; imports nothing of qeval's.
"""

from __future__ import annotations

from collections.abc import Iterable

# metric -> True when a higher value is better, False when a lower one is.
HIGHER_IS_BETTER: dict[str, bool] = {
    # lm-eval's common task metrics
    "acc": True,
    "acc_norm": True,
    "exact_match": True,
    "em": True,
    "f1": True,
    "pass@1": True,
    "mcc": True,
    "bleu": True,
    "rougeL": True,
    "chrf": True,
    "ter": False,
    "wer": False,
    "cer": False,
    "brier_score": False,
    "word_perplexity": False,
    "byte_perplexity": False,
    "perplexity": False,
    "bits_per_byte": False,
    # qeval_sqnr: closeness to the unquantized model (SQNR in dB, KL in nats, perplexities)
    "logit_sqnr_db": True,
    "kl_mean": False,
    "kl_p99": False,
    **dict.fromkeys(
        (
            "kl_max",
            "kl_p999",
            "kl_p95",
            "kl_p90",
            "kl_median",
            "kl_p10",
            "kl_p5",
            "kl_p1",
            "kl_p01",
            "kl_min",
            "kl_reverse_mean",
            "kl_symmetric_mean",
            "kl_mean_pos_early",
            "kl_mean_pos_late",
            "rms_dp",
            "ppl_ratio",
            "ln_ppl_ratio",
        ),
        False,
    ),
    "ln_ppl_corr": True,
    "top1_agreement": True,
    "ppl_reference": False,
    "ppl_quantized": False,
    "ppl_delta": False,
    "weight_sqnr_mean_db": True,
    "weight_sqnr_min_db": True,
    "weight_sqnr_global_db": True,
    "activation_sqnr_last_db": True,
    "activation_sqnr_min_db": True,
    # sampling-sensitivity tasks, per setting (rougeL and chrf above)
    "reference_rougeL": True,
    "distinct_1": True,
    "distinct_2": True,
    "self_bleu": False,
    "agree_tokens": True,
    "agree_rougeL": True,
    "fluency": True,  # mean log-probability per token under the unquantized model
    # sampling-sensitivity summary of a sweep
    "rougeL_slope": True,
    "rougeL_spread": False,
    "rougeL_gap": False,
}
DECIBEL_SUFFIX = "_db"  # a metric in dB is an SQNR: higher is better
# Metrics that describe a model and have no better direction (lm-eval gets None for them).
NEUTRAL: frozenset[str] = frozenset(
    {
        # qeval_sqnr: uncertainties, the KL error bound and signed differences Δp (no better way)
        "kl_mean_err",
        "kl_reverse_mean_err",
        "kl_symmetric_mean_err",
        "kl_error_bound",
        "dp_mean",
        "dp_mean_err",
        *(f"dp_{name}" for name in ("max", "p999", "p99", "p95", "p90", "p75", "median")),
        *(f"dp_{name}" for name in ("p25", "p10", "p5", "p1", "p01", "min")),
        "rms_dp_err",
        "top1_agreement_err",
        "ppl_quantized_err",
        "ppl_reference_err",
        "ppl_ratio_err",
        "ln_ppl_ratio_err",
        # qeval_outliers: outlier features (LLM.int8()), activation and weight statistics
        "outlier_features_quantized",
        "outlier_features_reference",
        "outliers_created",
        "outliers_destroyed",
        "act_absmax_quantized",
        "act_absmax_reference",
        "act_kurtosis_quantized",
        "act_kurtosis_reference",
        "weight_kurtosis_quantized",
        "weight_kurtosis_reference",
    }
)


def direction(metric: str) -> bool | None:
    """Whether higher is better for ``metric``: :data:`HIGHER_IS_BETTER`, else None for a
    :data:`NEUTRAL` one, else True for a name ending in ``_db`` (an SQNR), else None (unknown)."""
    if metric in NEUTRAL:
        return None
    known = HIGHER_IS_BETTER.get(metric)
    if known is None and metric.endswith(DECIBEL_SUFFIX):
        return True
    return known


def directions(metrics: Iterable[str]) -> dict[str, bool | None]:
    """``metrics`` -> their :data:`HIGHER_IS_BETTER` entries (None for :data:`NEUTRAL` ones), as
    a task's ``higher_is_better()``; a metric in neither is a KeyError (every metric a task
    reports belongs in one)."""
    return {metric: None if metric in NEUTRAL else HIGHER_IS_BETTER[metric] for metric in metrics}
