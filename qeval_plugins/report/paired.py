"""Paired statistics of two runs scored on the same documents: the report's significance test.

With b_i and q_i the baseline's and the run's score on document i (i = 1..n, matched by lm-eval's
``doc_id`` and ``doc_hash``, or by ``doc_id`` alone when neither run has hashes: :mod:`.samples`),
d_i = q_i − b_i and Δ = mean(q) − mean(b) = mean(d):

* the paired bootstrap percentile interval of Δ (Efron): draw :data:`RESAMPLES` resamples of
  the n documents with replacement from numpy's generator seeded :data:`SEED`, take each
  resample's mean of d, and report the (1 − c)/2 and (1 + c)/2 quantiles of those means (linear
  interpolation, as ``numpy.percentile`` and ``scipy.stats.bootstrap(method="percentile")``) for
  the confidence level c = :data:`CONFIDENCE`. The same seed gives the same interval every time;
* for 0/1 metrics (accuracy-type: every b_i and q_i is 0 or 1), McNemar's exact test: with
  B = #(b_i = 1, q_i = 0) and C = #(b_i = 0, q_i = 1) the discordant documents,
  p = min(1, 2·P(X ≤ min(B, C))), X ~ Binomial(B + C, 1/2) (two-sided; 1 when B + C = 0).

**The rule:** Δ is significant when its interval excludes 0 (lower end > 0 or upper end < 0).
McNemar's p is shown beside it for 0/1 metrics but does not decide (the two agree except near
the boundary). numpy is imported only when an interval is computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 0
FEW_VALUES = 16  # at most this many distinct differences: resample their counts
BATCH_VALUES = 1 << 22  # document indices drawn per batch (32 MiB of int64)
# What the JSON export states about the test (each score's significance_method says which ran).
SETTINGS = {
    "rule": "paired: the bootstrap percentile interval of delta excludes 0; screen (no "
    "samples): |delta| > sqrt(se_base^2 + se_run^2)",
    "confidence": CONFIDENCE,
    "resamples": RESAMPLES,
    "seed": SEED,
}


@dataclass(frozen=True)
class Paired:
    """The paired comparison of one metric on ``docs`` documents: Δ = mean(q) − mean(b), its
    bootstrap interval [low, high] at ``confidence``, McNemar's exact p (None unless every
    value is 0 or 1), and ``pairing``: how the documents were matched (:mod:`.samples`:
    ``"doc_hash"``, both runs' hashes agree, or ``"position"``, neither run has hashes)."""

    docs: int
    delta: float
    low: float
    high: float
    confidence: float
    mcnemar_p: float | None
    pairing: str = "doc_hash"  # how the documents were matched: "doc_hash" or "position"

    @property
    def significant(self) -> bool:
        """The report's rule: the interval excludes 0."""
        return self.low > 0 or self.high < 0


def paired(
    base: Sequence[float],
    run: Sequence[float],
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Paired:
    """:class:`Paired` statistics of per-document scores ``run`` against ``base`` (same length
    n ≥ 1, same document order; finite numbers)."""
    if len(base) != len(run) or not base:
        raise ValueError("paired() needs two equally long, non-empty score lists")
    diffs = [q - b for b, q in zip(base, run, strict=True)]
    low, high = bootstrap_interval(diffs, confidence, resamples, seed)
    binary = all(value in (0, 1) for value in (*base, *run))
    worse = sum(1 for b, q in zip(base, run, strict=True) if b > q) if binary else 0
    better = sum(1 for b, q in zip(base, run, strict=True) if q > b) if binary else 0
    return Paired(
        docs=len(diffs),
        delta=math.fsum(run) / len(run) - math.fsum(base) / len(base),
        low=low,
        high=high,
        confidence=confidence,
        mcnemar_p=mcnemar_exact(worse, better) if binary else None,
    )


def bootstrap_interval(
    diffs: Sequence[float], confidence: float, resamples: int, seed: int
) -> tuple[float, float]:
    """The percentile bootstrap interval of mean(``diffs``) at ``confidence`` (0 < c < 1) from
    ``resamples`` resamples of the n values with replacement, drawn by
    ``numpy.random.default_rng(seed)``; quantiles (1 − c)/2 and (1 + c)/2 by linear
    interpolation.

    With at most :data:`FEW_VALUES` distinct differences (−1, 0, 1 of accuracies), a resample is
    drawn as the counts of each distinct value, Multinomial(n, count/n): the same distribution
    as n values drawn with replacement, at a cost that does not grow with n. Otherwise each
    resample is n indices ``rng.integers(0, n)``, drawn as ``scipy.stats.bootstrap`` draws them
    (the same seed gives scipy's resamples exactly)."""
    import numpy as np

    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError("confidence must lie in (0, 1) and resamples be at least 1")
    values = np.asarray(diffs, dtype=np.float64)
    count = len(values)
    rng = np.random.default_rng(seed)
    distinct, counts = np.unique(values, return_counts=True)
    if len(distinct) <= FEW_VALUES:
        means = rng.multinomial(count, counts / count, size=resamples) @ distinct / count
    else:
        rows = max(1, BATCH_VALUES // count)
        means = np.concatenate(
            [
                values[rng.integers(0, count, (min(rows, resamples - start), count))].mean(axis=1)
                for start in range(0, resamples, rows)
            ]
        )
    low, high = np.percentile(means, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high)


def mcnemar_exact(worse: int, better: int) -> float:
    """McNemar's exact two-sided p for ``worse`` documents right only in the baseline and
    ``better`` right only in the run: with n = worse + better and k = min(worse, better),
    p = min(1, 2·Σ_{i ≤ k} C(n, i)/2ⁿ) (= ``scipy.stats.binomtest(k, n, 0.5).pvalue``); 1 when
    n = 0. The tail is summed from i = k down (each term i/(n − i + 1) times the one before)
    until the terms no longer change it, relative to C(n, k)/2ⁿ, so it neither overflows nor
    underflows."""
    if worse < 0 or better < 0:
        raise ValueError("counts of discordant documents cannot be negative")
    total = worse + better
    least = min(worse, better)
    if 2 * least >= total:
        return 1.0
    log_first = math.log(math.comb(total, least)) - total * math.log(2)
    relative, term = 1.0, 1.0
    for i in range(least, 0, -1):
        term *= i / (total - i + 1)
        relative += term
        if term < relative * 1e-17:
            break
    return min(1.0, 2 * math.exp(log_first + math.log(relative)))
