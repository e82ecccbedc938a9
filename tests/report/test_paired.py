"""The paired statistics of ``qeval report`` (:mod:`qeval_plugins.report.paired`) against
``scipy.stats`` and against an exact hand computation of the bootstrap distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from qeval_plugins.report.paired import FEW_VALUES, bootstrap_interval, mcnemar_exact, paired


def scipy_interval(base, run, confidence, resamples, seed, batch=None):
    """scipy's paired percentile bootstrap interval of mean(run) − mean(base)."""
    result = stats.bootstrap(
        (np.asarray(run), np.asarray(base)),
        lambda q, b, axis: q.mean(axis=axis) - b.mean(axis=axis),
        paired=True,
        vectorized=True,
        method="percentile",
        confidence_level=confidence,
        n_resamples=resamples,
        batch=batch,
        rng=np.random.default_rng(seed),
    )
    return result.confidence_interval.low, result.confidence_interval.high


@pytest.mark.parametrize(("docs", "confidence", "seed"), [(37, 0.95, 0), (600, 0.9, 7)])
def test_interval_of_many_distinct_differences_is_scipys_exactly(docs, confidence, seed):
    """Continuous scores (> FEW_VALUES distinct differences): the same resamples as
    scipy.stats.bootstrap(paired=True) draws for the same seed, so the same interval; with 600
    documents the draws come in two batches, as scipy's own batches do."""
    rng = np.random.default_rng(42)
    base = rng.random(docs)
    run = base + rng.normal(-0.02, 0.05, docs)
    assert len(np.unique(run - base)) > FEW_VALUES
    ours = bootstrap_interval(list(run - base), confidence, 10_000, seed)
    theirs = scipy_interval(base, run, confidence, 10_000, seed)
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)
    assert scipy_interval(base, run, confidence, 10_000, seed, batch=777) == pytest.approx(theirs)


def exact_bootstrap_quantile(worse: int, better: int, docs: int, q: float) -> float:
    """The q-quantile of the exact bootstrap distribution of mean(d) for d with ``worse``
    values −1, ``better`` values +1 and the rest 0: Σ multinomial probabilities of
    (i minus ones, j plus ones) among ``docs`` draws, the smallest value whose CDF ≥ q."""
    p_minus, p_plus = worse / docs, better / docs
    mass: dict[int, float] = {}
    for i in range(docs + 1):
        for j in range(docs + 1 - i):
            k = docs - i - j
            log_p = (
                math.lgamma(docs + 1)
                - math.lgamma(i + 1)
                - math.lgamma(j + 1)
                - math.lgamma(k + 1)
                + (i * math.log(p_minus) if i else 0.0)
                + (j * math.log(p_plus) if j else 0.0)
                + (k * math.log(1 - p_minus - p_plus) if k else 0.0)
            )
            mass[j - i] = mass.get(j - i, 0.0) + math.exp(log_p)
    total = 0.0
    for step in sorted(mass):
        total += mass[step]
        if total >= q:
            return step / docs
    return max(mass) / docs


def test_interval_of_accuracies_matches_the_exact_bootstrap_distribution():
    """0/1 scores (differences −1, 0, +1): each end of the interval lies within one step (1/n)
    of the exact bootstrap distribution's 2.5 % and 97.5 % quantiles, computed by hand."""
    docs, worse, better = 40, 6, 1
    diffs = [-1.0] * worse + [1.0] * better + [0.0] * (docs - worse - better)
    low, high = bootstrap_interval(diffs, 0.95, 10_000, 0)
    assert abs(low - exact_bootstrap_quantile(worse, better, docs, 0.025)) <= 1 / docs
    assert abs(high - exact_bootstrap_quantile(worse, better, docs, 0.975)) <= 1 / docs


def test_interval_of_accuracies_agrees_with_scipy_within_its_monte_carlo_error():
    """Accuracies are resampled as counts (Multinomial), a different random stream from scipy's
    index draws: the two intervals agree within two steps of 1/n (Monte Carlo error)."""
    rng = np.random.default_rng(3)
    base = (rng.random(500) < 0.6).astype(float)
    run = np.where(rng.random(500) < 0.08, 1 - base, base)
    ours = bootstrap_interval(list(run - base), 0.95, 10_000, 0)
    theirs = scipy_interval(base, run, 0.95, 10_000, 0)
    assert ours == pytest.approx(theirs, abs=2 / 500)


def test_interval_is_reproducible_and_narrows_with_confidence():
    diffs = [-1.0] * 9 + [1.0] * 2 + [0.0] * 189
    assert bootstrap_interval(diffs, 0.95, 2_000, 5) == bootstrap_interval(diffs, 0.95, 2_000, 5)
    low95, high95 = bootstrap_interval(diffs, 0.95, 2_000, 5)
    low80, high80 = bootstrap_interval(diffs, 0.80, 2_000, 5)
    assert low95 <= low80 < -0.035 < high80 <= high95
    with pytest.raises(ValueError):
        bootstrap_interval(diffs, 1.0, 100, 0)


@pytest.mark.parametrize(
    ("worse", "better"),
    [(0, 0), (5, 0), (0, 5), (3, 7), (10, 10), (11, 10), (1, 30), (200, 260), (4000, 4300)],
)
def test_mcnemar_exact_is_scipys_binomial_test(worse, better):
    total = worse + better
    expected = 1.0 if total == 0 else stats.binomtest(worse, total, 0.5).pvalue
    assert mcnemar_exact(worse, better) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_exact_by_hand_and_in_the_far_tail():
    """p for 10 discordant documents all one way: 2·C(10,0)/2¹⁰ = 1/512; 1 against 9:
    2·(C(10,0) + C(10,1))/2¹⁰; for 2,000 one way it is
    2/2²⁰⁰⁰, below the smallest float: 0, not an error."""
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 2**10, rel=1e-12)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 2**10, rel=1e-12)  # C(10,1)=10
    assert mcnemar_exact(2000, 0) == 0.0
    assert mcnemar_exact(300, 0) == pytest.approx(2 / 2**300, rel=1e-9)


def test_paired_statistics_and_the_significance_rule():
    """Δ is mean(q) − mean(b); McNemar only for 0/1 scores; significant iff the interval
    excludes 0."""
    base = [1.0] * 200 + [0.0] * 200
    run = [0.0] * 10 + [1.0] * 190 + [0.0] * 200
    result = paired(base, run)
    assert result.docs == 400 and result.delta == pytest.approx(-0.025)
    assert result.mcnemar_p == pytest.approx(2 / 2**10)
    assert result.high < 0 and result.significant and result.confidence == 0.95
    same = paired(base, base)
    assert (same.low, same.high, same.mcnemar_p, same.significant) == (0.0, 0.0, 1.0, False)
    continuous = paired([0.5, 0.25, 0.75], [0.5, 0.5, 0.75])
    assert continuous.mcnemar_p is None and continuous.delta == pytest.approx(0.25 / 3)
    with pytest.raises(ValueError):
        paired([1.0], [1.0, 0.0])
