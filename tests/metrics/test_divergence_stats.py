"""Run-level divergence statistics (qeval_plugins.metrics.divergence_stats) against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qeval_plugins.metrics.divergence_stats import (
    agreement_statistics,
    binomial_error,
    correlation,
    json_safe,
    kl_statistics,
    mean_and_error,
    probability_statistics,
)


def test_mean_and_error_is_the_standard_error_of_the_mean():
    values = np.random.default_rng(0).exponential(0.1, 500)
    mean, error = mean_and_error(torch.tensor(values))
    assert mean == pytest.approx(values.mean(), rel=1e-12)
    assert error == pytest.approx(values.std(ddof=1) / math.sqrt(500), rel=1e-10)
    # llama.cpp's form: sqrt((Σx²/n − x̄²) / (n − 1))
    llama = math.sqrt(((values**2).mean() - values.mean() ** 2) / 499)
    assert error == pytest.approx(llama, rel=1e-9)
    assert mean_and_error(torch.tensor([2.0])) == (2.0, None)
    assert mean_and_error(torch.tensor([])) == (None, None)
    assert mean_and_error(torch.tensor([1.0, math.inf])) == (math.inf, None)


def test_binomial_error_and_correlation_hand_values():
    assert binomial_error(0.75, 5) == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    assert binomial_error(1.0, 10) == 0.0 and binomial_error(0.5, 1) is None
    a = np.random.default_rng(1).normal(size=200)
    b = a + np.random.default_rng(2).normal(size=200)
    assert correlation(torch.tensor(a), torch.tensor(b)) == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert correlation(torch.ones(5), torch.arange(5.0)) is None  # constant: undefined
    assert agreement_statistics(torch.tensor([True, False, True, True]))[
        "top1_agreement_err"
    ] == pytest.approx(math.sqrt(0.75 * 0.25 / 3))


def test_kl_statistics_percentiles_buckets_and_reverse():
    rng = np.random.default_rng(3)
    kl, reverse = rng.exponential(0.2, 300), rng.exponential(0.1, 300)
    positions = np.arange(300) % 100
    stats = kl_statistics(torch.tensor(kl), torch.tensor(reverse), torch.tensor(positions))
    for name, q in [("max", 100), ("p999", 99.9), ("median", 50), ("p01", 0.1), ("min", 0)]:
        assert stats[f"kl_{name}"] == pytest.approx(np.percentile(kl, q), rel=1e-12)
    assert stats["kl_symmetric_mean"] == pytest.approx((kl + reverse).mean())
    assert stats["kl_symmetric_mean_err"] == pytest.approx((kl + reverse).std(ddof=1) / 300**0.5)
    assert stats["kl_mean_pos_early"] == pytest.approx(kl[positions < 32].mean())
    assert stats["kl_mean_pos_late"] == pytest.approx(kl[positions >= 32].mean())
    empty = kl_statistics(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert empty["kl_median"] is None and empty["kl_mean"] is None


def test_probability_statistics_follow_llama_cpp_definitions():
    rng = np.random.default_rng(4)
    nll_base = rng.exponential(2.0, 400)
    nll_q = nll_base + rng.normal(0.05, 0.2, 400)
    stats = probability_statistics(torch.tensor(nll_base), torch.tensor(nll_q))
    dp = np.exp(-nll_q) - np.exp(-nll_base)
    assert stats["dp_mean"] == pytest.approx(dp.mean())
    assert stats["dp_p75"] == pytest.approx(np.percentile(dp, 75))
    assert stats["rms_dp"] == pytest.approx(np.sqrt((dp**2).mean()))
    se_mse = (dp**2).std(ddof=1) / 20
    assert stats["rms_dp_err"] == pytest.approx(0.5 * se_mse / np.sqrt((dp**2).mean()))
    # ln ratio ± sqrt(se_Q² + se_base² − 2 cov), llama.cpp's form
    se_q, se_b = nll_q.std(ddof=1) / 20, nll_base.std(ddof=1) / 20
    cov = np.cov(nll_q, nll_base)[0, 1] / 400
    assert stats["ln_ppl_ratio"] == pytest.approx(nll_q.mean() - nll_base.mean())
    assert stats["ln_ppl_ratio_err"] == pytest.approx(math.sqrt(se_q**2 + se_b**2 - 2 * cov))
    ratio = math.exp(nll_q.mean()) / math.exp(nll_base.mean())
    assert stats["ppl_ratio"] == pytest.approx(ratio)
    assert stats["ppl_ratio_err"] == pytest.approx(ratio * stats["ln_ppl_ratio_err"])
    assert stats["ppl_quantized_err"] == pytest.approx(math.exp(nll_q.mean()) * se_q)
    assert stats["ln_ppl_corr"] == pytest.approx(np.corrcoef(nll_q, nll_base)[0, 1])
    same = probability_statistics(torch.tensor(nll_base), torch.tensor(nll_base))
    assert same["rms_dp"] == 0.0 and same["rms_dp_err"] == 0.0 and same["ppl_ratio"] == 1.0


def test_json_safe():
    assert json_safe(math.inf) == "inf" and json_safe(-math.inf) == "-inf"
    assert json_safe(math.nan) is None and json_safe(None) is None and json_safe(0.5) == 0.5
