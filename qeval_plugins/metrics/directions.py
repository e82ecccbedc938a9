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


def direction(metric: str) -> bool | None:
    """Whether higher is better for ``metric``: :data:`HIGHER_IS_BETTER`, else True for a name
    ending in ``_db`` (an SQNR), else None (unknown)."""
    known = HIGHER_IS_BETTER.get(metric)
    if known is None and metric.endswith(DECIBEL_SUFFIX):
        return True
    return known


def directions(metrics: Iterable[str]) -> dict[str, bool]:
    """``metrics`` -> their :data:`HIGHER_IS_BETTER` entries, as a task's ``higher_is_better()``;
    a metric missing from the table is a KeyError (every metric a task reports belongs in it)."""
    return {metric: HIGHER_IS_BETTER[metric] for metric in metrics}
