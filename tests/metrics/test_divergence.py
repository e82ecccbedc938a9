"""Tests for the output-divergence math (qeval_plugins.metrics.divergence): SQNR, top-k KL, NLL."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.ao.ns.fx.utils import compute_sqnr

from qeval_plugins.metrics.divergence import (
    decode_logprobs,
    encode_logprobs,
    energies,
    exact_kl,
    kl_from_codes,
    kl_from_topk,
    percentile,
    perplexity,
    reverse_kl_from_topk,
    sqnr_db,
    tensor_sqnr_db,
    token_nll,
    top1_agreement,
    topk_reference,
)


def reference64(logits: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """A full-precision top-k cache built independently (log_softmax + boolean tail mask).

    The same keys as ``topk_reference`` but nothing rounded to float16, so the KL math can be
    checked to float64 precision.
    """
    log_p = torch.log_softmax(logits.double(), dim=-1)
    indices = torch.topk(log_p, k, dim=-1).indices
    in_tail = torch.ones_like(log_p, dtype=torch.bool).scatter(-1, indices, False)
    tail = torch.logsumexp(log_p.masked_fill(~in_tail, -math.inf), dim=-1)
    return {
        "topk_logprobs": log_p.gather(-1, indices),
        "topk_indices": indices.int(),
        "tail_logprob": tail,
    }


def random_pair(seed: int, t: int, v: int, scale: float, noise: float):
    """Reference logits and a perturbed ("quantized") copy, float64 [t, v]."""
    gen = torch.Generator().manual_seed(seed)
    ref = torch.randn(t, v, generator=gen, dtype=torch.float64) * scale
    return ref, ref + noise * torch.randn(t, v, generator=gen, dtype=torch.float64)


# ---------------------------------------------------------------- SQNR


@pytest.mark.parametrize(
    ("signal", "noise", "expected"),
    [
        (100.0, 1.0, 20.0),
        (1.0, 1.0, 0.0),
        (1e6, 1.0, 60.0),
        (1.0, 10.0, -10.0),
        (2.0, 1.0, 10 * math.log10(2)),  # 3.0103 dB
        (3e-300, 3e-310, 100.0),  # ratio fine, energies tiny: no underflow
        (2.0, 0.0, math.inf),
        (0.0, 0.0, math.inf),
        (0.0, 5.0, -math.inf),
        (math.inf, 1.0, math.inf),
    ],
)
def test_sqnr_db_table(signal, noise, expected):
    assert sqnr_db(signal, noise) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("signal", "noise"), [(-1.0, 1.0), (1.0, -1e-9), (math.nan, 1.0), (math.inf, math.inf)]
)
def test_sqnr_db_rejects_invalid_energies(signal, noise):
    with pytest.raises(ValueError):
        sqnr_db(signal, noise)


def test_energies_hand_values():
    x = torch.tensor([[3.0, 4.0], [0.0, -1.0]])
    x_hat = torch.tensor([[3.0, 3.5], [0.5, -1.0]])
    assert energies(x, x_hat) == (26.0, 0.5)  # 9+16+0+1, 0.25+0.25
    assert tensor_sqnr_db(x, x_hat) == pytest.approx(10 * math.log10(52))


def test_energies_accumulate_in_float64_against_numpy():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1_000_003, generator=gen)
    x_hat = x + 1e-3 * torch.randn(1_000_003, generator=gen)
    x_np, x_hat_np = x.numpy().astype(np.float64), x_hat.numpy().astype(np.float64)
    signal, noise = energies(x, x_hat)
    assert signal == pytest.approx(float(np.sum(x_np**2)), rel=1e-12)
    assert noise == pytest.approx(float(np.sum((x_np - x_hat_np) ** 2)), rel=1e-12)


def test_energies_of_half_inputs_do_not_overflow():
    # 1000 * 300² = 9e7: far beyond float16's max (65504); must be exact in float64.
    x = torch.full((1000,), 300.0, dtype=torch.float16)
    assert energies(x, torch.zeros_like(x)) == (9e7, 9e7)
    assert tensor_sqnr_db(x, torch.zeros_like(x)) == 0.0


def test_energies_shape_mismatch():
    with pytest.raises(ValueError):
        energies(torch.zeros(4, 3), torch.zeros(3, 4))
    with pytest.raises(ValueError):
        energies(torch.zeros(4, 3), torch.zeros(3))  # would broadcast


def test_identical_and_empty_tensors_are_infinite_sqnr():
    x = torch.randn(5, 7)
    assert tensor_sqnr_db(x, x.clone()) == math.inf
    assert tensor_sqnr_db(torch.empty(0), torch.empty(0)) == math.inf


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("noise", [1e-3, 3e-2, 0.5])
def test_tensor_sqnr_matches_torch_ao_compute_sqnr(dtype, noise):
    gen = torch.Generator().manual_seed(int(noise * 1e4))
    x = torch.randn(64, 257, generator=gen)
    y = x + noise * torch.randn(64, 257, generator=gen)
    x, y = x.to(dtype), y.to(dtype)
    independent = float(compute_sqnr(x.float(), y.float()))  # 20·log10(‖x‖ / ‖x − y‖)
    assert tensor_sqnr_db(x, y) == pytest.approx(independent, abs=0.01)


# ---------------------------------------------------------------- top-k cache and KL


def test_kl_hand_computed_three_token_vocab():
    # P = (0.7, 0.2, 0.1), Q = (0.5, 0.3, 0.2); k = 1 keeps token 0, tail = {1, 2}.
    # Coarsened: P = (0.7, 0.3), Q = (0.5, 0.5):
    #   0.7·ln(0.7/0.5) + 0.3·ln(0.3/0.5) = 0.23553057 − 0.15324769 = 0.08228288 nats.
    # Exact: 0.7·ln(1.4) + 0.2·ln(2/3) + 0.1·ln(0.5) = 0.23553057 − 0.08109302 − 0.06931472
    #   = 0.08512283 nats (>= the coarsened value).
    ref = torch.tensor([[0.7, 0.2, 0.1]]).log()
    quant = torch.tensor([[0.5, 0.3, 0.2]]).log()
    expected_k1 = 0.7 * math.log(0.7 / 0.5) + 0.3 * math.log(0.3 / 0.5)
    expected_exact = 0.7 * math.log(1.4) + 0.2 * math.log(2 / 3) + 0.1 * math.log(0.5)
    assert expected_k1 == pytest.approx(0.08228288, abs=1e-8)
    assert expected_exact == pytest.approx(0.08512283, abs=1e-8)
    assert kl_from_topk(reference64(ref, 1), quant).item() == pytest.approx(expected_k1, abs=1e-7)
    assert exact_kl(ref, quant).item() == pytest.approx(expected_exact, abs=1e-7)
    # Through the stored (float32) cache: the renormalized cache stays within storage rounding.
    cached = kl_from_topk(topk_reference(ref, 1), quant).item()
    assert cached == pytest.approx(expected_k1, rel=1e-3)


def test_topk_reference_values_dtypes_and_tail():
    ref = torch.tensor([[0.1, 0.6, 0.3], [0.25, 0.25, 0.5]]).log()
    cache = topk_reference(ref, 2)
    assert cache["topk_logprobs"].dtype == torch.float32
    assert cache["topk_indices"].dtype == torch.int32
    assert cache["tail_logprob"].dtype == torch.float32
    assert cache["topk_indices"][0].tolist() == [1, 2]
    assert cache["topk_indices"][1, 0].item() == 2
    expected = torch.tensor([[0.6, 0.3], [0.5, 0.25]]).log()
    assert torch.allclose(cache["topk_logprobs"].float(), expected, rtol=1e-3)
    assert torch.allclose(cache["tail_logprob"], torch.tensor([0.1, 0.25]).log(), rtol=1e-6)
    assert torch.isneginf(topk_reference(ref, 3)["tail_logprob"]).all()  # k == V: empty tail


def test_topk_reference_tail_is_stable_when_tiny():
    # Tail mass e^-60 ≈ 8.8e-27: 1 − Σ top-k would round to exactly 0 in float64.
    logits = torch.tensor([[60.0, 0.0, -1000.0]])
    tail = topk_reference(logits, 1)["tail_logprob"].item()
    assert tail == pytest.approx(-60.0, abs=1e-5)


def test_topk_reference_rejects_bad_k():
    with pytest.raises(ValueError):
        topk_reference(torch.zeros(2, 5), 0)
    with pytest.raises(ValueError):
        topk_reference(torch.zeros(2, 5), 6)


@pytest.mark.parametrize("seed", range(3))
def test_kl_from_topk_equals_exact_when_k_is_vocab(seed):
    ref, quant = random_pair(seed, t=16, v=50, scale=3.0, noise=0.5)
    exact = exact_kl(ref, quant)
    assert torch.allclose(kl_from_topk(reference64(ref, 50), quant), exact, rtol=1e-12, atol=1e-15)
    # A one-token tail is that token: also exact.
    assert torch.allclose(kl_from_topk(reference64(ref, 49), quant), exact, rtol=1e-12, atol=1e-15)
    # Through the stored (float32) cache: exact up to rounding of the cached log-probabilities.
    assert torch.allclose(kl_from_topk(topk_reference(ref, 50), quant), exact, rtol=5e-3)


def test_kl_from_topk_is_a_lower_bound_of_exact_kl():
    checked = 0
    for seed in range(40):
        gen = torch.Generator().manual_seed(seed)
        v = int(torch.randint(2, 300, (1,), generator=gen))
        scale = float(torch.empty(1).uniform_(0.1, 10.0, generator=gen))
        noise = float(torch.empty(1).uniform_(0.0, 2.0, generator=gen))
        ref, quant = random_pair(seed, t=32, v=v, scale=scale, noise=noise)
        exact = exact_kl(ref, quant)
        for k in sorted({1, 2, max(1, v // 4), v - 1}):
            kl_k = kl_from_topk(reference64(ref, k), quant)
            assert (kl_k <= exact + 1e-9).all(), (seed, v, k)
            assert (kl_k >= 0).all()
            checked += kl_k.numel()
    assert checked > 3000


def test_kl_from_topk_grows_to_exact_with_k():
    ref, quant = random_pair(7, t=24, v=200, scale=2.0, noise=0.3)
    exact = exact_kl(ref, quant)
    previous = torch.zeros(24, dtype=torch.float64)
    gaps = []
    for k in (1, 2, 4, 8, 16, 32, 64, 128, 199, 200):
        kl_k = kl_from_topk(reference64(ref, k), quant)
        assert (kl_k >= previous - 1e-12).all()  # the k-partition refines the (k−1)-partition
        previous = kl_k
        gaps.append(float((exact - kl_k).mean()))
    assert gaps[0] > 0.01  # k = 1 misses a real share of the divergence
    assert gaps[-2] < 1e-12 and gaps[-1] < 1e-12
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(gaps))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_kl_from_topk_is_zero_for_identical_logits(dtype):
    ref, _ = random_pair(3, t=64, v=500, scale=4.0, noise=0.0)
    ref = ref.to(dtype)
    for k in (1, 8, 500):
        assert kl_from_topk(reference64(ref, k), ref).abs().max() < 1e-12
        # The stored cache leaves only a second-order floor (renormalized, not a bias).
        assert kl_from_topk(topk_reference(ref, k), ref).max() < 1e-6
    assert exact_kl(ref, ref).abs().max() < 1e-12


def test_kl_from_topk_float16_cache_tracks_full_precision():
    ref, quant = random_pair(11, t=128, v=4000, scale=3.0, noise=0.2)
    cached = kl_from_topk(topk_reference(ref, 32), quant)
    full = kl_from_topk(reference64(ref, 32), quant)
    assert float(cached.sum()) == pytest.approx(float(full.sum()), rel=1e-3)


def test_kl_handles_impossible_tokens_without_nan():
    ref = torch.tensor([[0.0, 0.0, -math.inf, 1.0], [2.0, -math.inf, -math.inf, -math.inf]])
    quant = torch.tensor([[0.0, -math.inf, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    # Row 0: the reference gives token 1 mass the quantized model rules out: KL = inf.
    # Row 1: the reference is certain of token 0, quantized gives it e/(e+3).
    expected_row1 = -math.log(math.e / (math.e + 3))
    for kl in (exact_kl(ref, quant), kl_from_topk(reference64(ref, 2), quant)):
        assert not kl.isnan().any()
        assert kl[0].item() == math.inf
        assert kl[1].item() == pytest.approx(expected_row1, rel=1e-12)
    same = kl_from_topk(topk_reference(ref, 1), ref)  # p_tail == 0 in row 1
    assert not same.isnan().any() and same[1].item() == 0.0


def test_kl_from_topk_ignores_extra_keys_and_checks_positions():
    ref, quant = random_pair(5, t=6, v=20, scale=1.0, noise=0.1)
    cache = topk_reference(ref, 4)
    extended = {**cache, "nll": torch.zeros(6), "logits": ref[:2]}
    assert torch.equal(kl_from_topk(extended, quant), kl_from_topk(cache, quant))
    with pytest.raises(ValueError):
        kl_from_topk(cache, quant[:5])


@pytest.mark.parametrize("seed", range(3))
def test_exact_kl_matches_torch_kl_div(seed):
    ref, quant = random_pair(seed, t=32, v=300, scale=2.5, noise=0.4)
    log_p, log_q = ref.log_softmax(-1), quant.log_softmax(-1)
    independent = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)
    assert torch.allclose(exact_kl(ref, quant), independent, rtol=1e-12, atol=1e-15)
    # float32 inputs are upcast: same answer as the float64 computation on the float32 values.
    ref32, quant32 = ref.float(), quant.float()
    independent32 = F.kl_div(
        quant32.double().log_softmax(-1),
        ref32.double().log_softmax(-1),
        reduction="none",
        log_target=True,
    ).sum(-1)
    assert exact_kl(ref32, quant32).dtype == torch.float64
    assert torch.allclose(exact_kl(ref32, quant32), independent32, rtol=1e-12, atol=1e-15)


def test_exact_kl_shape_mismatch():
    with pytest.raises(ValueError):
        exact_kl(torch.zeros(3, 5), torch.zeros(3, 6))


# ---------------------------------------------------------------- agreement, NLL, perplexity


def test_top1_agreement():
    ref = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 2.0], [0.0, 0.0, 9.0]])
    quant = torch.tensor([[0.0, 4.0, 3.9], [1.0, 0.0, 2.0], [0.0, 1.0, 8.0]])
    agree = top1_agreement(topk_reference(ref, 2), quant)
    assert agree.dtype == torch.bool
    assert agree.tolist() == [True, False, True]


def test_top1_agreement_random_against_argmax():
    ref, quant = random_pair(9, t=200, v=50, scale=1.0, noise=0.5)
    agree = top1_agreement(topk_reference(ref, 5), quant)
    expected = ref.argmax(-1) == quant.argmax(-1)
    assert torch.equal(agree, expected)
    assert 0 < int(agree.sum()) < 200  # the noise flips some, not all


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_token_nll_matches_cross_entropy(dtype):
    logits, _ = random_pair(2, t=40, v=97, scale=3.0, noise=0.0)
    logits = logits.to(dtype)
    targets = torch.randint(0, 97, (40,), generator=torch.Generator().manual_seed(2))
    nll = token_nll(logits, targets)
    assert nll.dtype == torch.float64
    independent = F.cross_entropy(logits.double(), targets, reduction="none")
    assert torch.allclose(nll, independent, rtol=1e-12, atol=1e-15)


def test_token_nll_hand_value_and_shape_check():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    assert token_nll(logits, torch.tensor([0])).item() == pytest.approx(math.log(4))
    assert token_nll(logits, torch.tensor([1])).item() == pytest.approx(math.log(4 / 3))
    with pytest.raises(ValueError):
        token_nll(logits, torch.tensor([0, 1]))


def test_perplexity_hand_values():
    assert perplexity(0.0, 5) == 1.0
    assert perplexity(4 * math.log(2), 4) == pytest.approx(2.0)
    assert perplexity(10 * math.log(7), 10) == pytest.approx(7.0)
    assert perplexity(math.log(50257) * 3, 3) == pytest.approx(50257.0)  # uniform over GPT-2 vocab
    assert perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError):
        perplexity(1.0, 0)
    with pytest.raises(ValueError):
        perplexity(1.0, -3)


# ---------------------------------------------------------------- percentile


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
def test_percentile_matches_numpy(n):
    values = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64) ** 3
    for q in (0, 0.5, 1, 10, 25, 29, 50, 90, 95, 99, 99.9, 100):
        expected = float(np.percentile(values.numpy(), q))
        assert percentile(values, q) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert percentile(values.tolist(), q) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_percentile_hand_values_and_errors():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([10.0, 0.0], 25) == 2.5
    assert percentile(torch.tensor([[4.0, 1.0], [3.0, 2.0]]), 100) == 4.0  # flattened
    assert percentile([1.0, math.inf, math.inf], 90) == math.inf  # no inf − inf NaN
    for q in (-1, 100.5):
        with pytest.raises(ValueError):
            percentile([1.0], q)
    with pytest.raises(ValueError):
        percentile([], 50)


# ---------------------------------------------------------------- cache size


def test_topk_cache_is_small_for_a_real_vocabulary():
    # V = 128000 (Llama-3), k = 32: measured on T = 64 rows, scaled to 1000 tokens.
    t, v, k = 64, 128_000, 32
    logits = torch.randn(t, v, generator=torch.Generator().manual_seed(0))
    cache = topk_reference(logits, k)
    assert cache["topk_logprobs"].shape == (t, k) and cache["topk_indices"].shape == (t, k)
    assert cache["tail_logprob"].shape == (t,)
    total = sum(x.numel() * x.element_size() for x in cache.values())
    per_1000_tokens = total / t * 1000
    assert per_1000_tokens == (k * (4 + 4) + 4) * 1000  # 260 kB
    assert per_1000_tokens < 1.2e6
    assert per_1000_tokens < 0.01 * v * 4 * 1000  # < 1% of the float32 logits it replaces


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_from_topk_gap_is_tail_mass_times_tail_kl(seed):
    """KL − KL_k = p_tail · KL(P|tail ‖ Q|tail), computed independently over the full vocabulary."""
    generator = torch.Generator().manual_seed(seed)
    reference = torch.randn(6, 50, generator=generator, dtype=torch.float64) * 2
    quantized = reference + 0.7 * torch.randn(6, 50, generator=generator, dtype=torch.float64)
    k = 8
    bound = kl_from_topk(topk_reference(reference, k), quantized)
    exact = exact_kl(reference, quantized)
    tail = torch.ones_like(reference, dtype=torch.bool)
    tail.scatter_(-1, torch.topk(reference, k, dim=-1).indices, False)
    p, q = reference.softmax(-1), quantized.softmax(-1)
    p_tail = (p * tail).sum(-1)
    p_cond = p * tail / p_tail[:, None]
    q_cond = q * tail / (q * tail).sum(-1, keepdim=True)
    tail_kl = torch.where(tail, p_cond * (p_cond.log() - q_cond.log()), 0.0).sum(-1)
    torch.testing.assert_close(exact - bound, p_tail * tail_kl, rtol=1e-4, atol=1e-6)


def test_kl_from_topk_bound_is_loose_for_flat_distributions():
    """First order in the tail mass: for near-uniform outputs the bound misses most of the KL."""
    generator = torch.Generator().manual_seed(0)
    reference = 0.05 * torch.randn(32, 1000, generator=generator, dtype=torch.float64)
    quantized = reference + 0.3 * torch.randn(32, 1000, generator=generator, dtype=torch.float64)
    bound = kl_from_topk(topk_reference(reference, 32), quantized)
    ratio = float(bound.sum() / exact_kl(reference, quantized).sum())
    assert ratio < 0.2


# ---------------------------------------------------------------- exact mode: uint16 log-probs


def numpy_divergences(reference_logits, quantized_logits):
    """Forward and reverse KL per row, float64 numpy, written without torch."""
    z, y = reference_logits.double().numpy(), quantized_logits.double().numpy()
    log_p = z - z.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    log_q = y - y.max(1, keepdims=True)
    log_q -= np.log(np.exp(log_q).sum(1, keepdims=True))
    p, q = np.exp(log_p), np.exp(log_q)
    return (p * (log_p - log_q)).sum(1), (q * (log_q - log_p)).sum(1)


@pytest.mark.parametrize("scale", [0.5, 3.0, 12.0])
def test_encoded_logprobs_decode_within_half_a_step_of_their_segment(scale):
    """Independent decoder: codes 8193 … 65535 step over [hi − 12, hi], 1 … 8192 below."""
    logits, _ = random_pair(0, 40, 300, scale, 0.1)
    entry = encode_logprobs(logits)
    codes = entry["logprob_codes"]
    assert codes.dtype == torch.int16 and codes.shape == (40, 300)
    log_p = torch.log_softmax(logits.double(), dim=-1)
    hi, lo = log_p.amax(1, keepdim=True), log_p.amin(1, keepdim=True)
    split = torch.maximum(lo, hi - 12)
    high_step, low_step = (hi - split) / 57342, (split - lo) / 8191
    assert torch.equal(entry["logprob_split"], split[:, 0])
    assert torch.allclose(entry["logprob_high_step"], high_step[:, 0], rtol=1e-15, atol=0)
    assert (entry["logprob_high_step"] <= 12 / 57342).all()
    code = codes.double() + 32768
    upper = code >= 8193
    assert torch.equal(upper, log_p >= split)
    raw = torch.where(upper, split + (code - 8193) * high_step, lo + (code - 1) * low_step)
    half = torch.where(upper, high_step, low_step) / 2
    assert ((raw - log_p).abs() <= half + 1e-12).all()
    decoded = decode_logprobs(entry)
    assert torch.allclose(decoded.exp().sum(1), torch.ones(40, dtype=torch.float64))
    assert ((decoded - log_p).abs() <= half.amax(1, keepdim=True) * 2 + 1e-12).all()


@pytest.mark.parametrize(("seed", "scale", "noise"), [(0, 1.0, 0.05), (1, 4.0, 0.5), (2, 8.0, 2.0)])
def test_kl_from_codes_is_within_its_stated_bound_of_the_float64_truth(seed, scale, noise):
    reference_logits, quantized_logits = random_pair(seed, 64, 500, scale, noise)
    result = kl_from_codes(encode_logprobs(reference_logits), quantized_logits)
    forward, reverse = numpy_divergences(reference_logits, quantized_logits)
    forward_error = np.abs(result["kl"].numpy() - forward)
    reverse_error = np.abs(result["kl_reverse"].numpy() - reverse)
    assert (forward_error <= result["kl_bound"].numpy()).all()
    assert (reverse_error <= result["kl_reverse_bound"].numpy()).all()
    # a worst case over roundings: 15-50x the typical error, a few % of the KL at most
    assert result["kl_bound"].mean() < 100 * forward_error.mean()
    assert (result["kl_bound"].numpy() < 0.05 * forward).all()


def test_topk_kl_both_ways_are_lower_bounds_of_the_exact_values():
    reference_logits, quantized_logits = random_pair(3, 50, 400, 1.0, 0.4)  # flat: a loose bound
    forward, reverse = numpy_divergences(reference_logits, quantized_logits)
    cache = topk_reference(reference_logits, 8)
    assert (kl_from_topk(cache, quantized_logits).numpy() <= forward + 1e-12).all()
    assert (reverse_kl_from_topk(cache, quantized_logits).numpy() <= reverse + 1e-12).all()
    assert reverse_kl_from_topk(cache, quantized_logits).mean() < 0.9 * reverse.mean()
    full = topk_reference(reference_logits, 400)
    assert np.allclose(reverse_kl_from_topk(full, quantized_logits).numpy(), reverse, atol=1e-6)


def test_codes_keep_impossible_tokens_exactly_and_constant_rows():
    logits = torch.tensor([[0.0, 1.0, -math.inf], [2.0, 2.0, 2.0]])
    entry = encode_logprobs(logits)
    assert int(entry["logprob_codes"][0, 2]) + 32768 == 0  # probability exactly 0: code 0
    assert entry["logprob_high_step"][1] == entry["logprob_low_step"][1] == 0.0  # a flat row
    assert torch.allclose(decode_logprobs(entry)[1].exp(), torch.full((3,), 1 / 3).double())
    result = kl_from_codes(entry, torch.tensor([[0.0, 1.0, 0.5], [2.0, 2.0, 2.0]]))
    assert math.isfinite(result["kl"][0]) and result["kl_reverse"][0] == math.inf
    assert result["kl"][1] == 0.0 and result["kl_reverse"][1] == 0.0
    with pytest.raises(ValueError, match="reference codes"):
        kl_from_codes(entry, torch.zeros(2, 4))
