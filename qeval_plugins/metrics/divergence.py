"""How far a quantized model's outputs are from its unquantized reference: SQNR, KL, NLL.

Pure tensor math, no model code. Every sum is accumulated in float64 whatever the input dtype
(float32, float16, bfloat16 inputs are upcast before any subtraction, square or exponential).
Logits are ``[T, V]``: T positions, V vocabulary entries. Log-probabilities and KL are in nats.

The reference model's next-token distributions are cached as :func:`topk_reference` entries (the
k most likely tokens per position plus the log-mass of all other tokens), O(T·k) instead of the
O(T·V) of full logits, and the quantized model's logits are compared with them by
:func:`kl_from_topk` and :func:`top1_agreement`.
"""

from __future__ import annotations

import math

import torch

TOPK_LOGPROBS = "topk_logprobs"
TOPK_INDICES = "topk_indices"
TAIL_LOGPROB = "tail_logprob"

# Elements per float64 working chunk (2 MiB): large tensors are processed a slice at a time, which
# bounds the transient float64 copies and keeps them in cache (3-5x faster than whole tensors).
CHUNK_ELEMENTS = 1 << 18


def _row_chunk(row_length: int) -> int:
    """Rows per chunk so that a float64 chunk of rows of ``row_length`` is ~CHUNK_ELEMENTS."""
    return max(1, CHUNK_ELEMENTS // max(1, row_length))


def sqnr_db(signal_energy: float, noise_energy: float) -> float:
    """Signal-to-quantization-noise ratio ``10·log10(signal_energy / noise_energy)``, in dB.

    Energies are sums of squares (see :func:`energies`). Zero noise gives ``math.inf`` (also when
    the signal is zero too: identical, empty outputs); zero signal with nonzero noise gives
    ``-math.inf``. Never NaN: negative, NaN or both-infinite energies raise ``ValueError``.
    """
    if not (signal_energy >= 0 and noise_energy >= 0):
        raise ValueError(f"energies must be >= 0, got {signal_energy!r}, {noise_energy!r}")
    if noise_energy == 0:
        return math.inf
    if signal_energy == 0:
        return -math.inf
    if math.isinf(signal_energy) and math.isinf(noise_energy):
        raise ValueError("SQNR of an infinite signal with infinite noise is undefined")
    return 10.0 * (math.log10(signal_energy) - math.log10(noise_energy))


def energies(reference: torch.Tensor, quantized: torch.Tensor) -> tuple[float, float]:
    """``(Σ x², Σ (x − x̂)²)`` over all elements: signal and noise energy, float64 sums.

    ``x`` is ``reference``, ``x̂`` is ``quantized``; both are upcast to float64 before subtracting,
    CHUNK_ELEMENTS at a time (transient memory 2 × 8 × CHUNK_ELEMENTS bytes whatever the size).
    Shapes must match exactly (``ValueError`` otherwise): no broadcasting.
    """
    if reference.shape != quantized.shape:
        raise ValueError(f"shape mismatch: {tuple(reference.shape)} vs {tuple(quantized.shape)}")
    flat_reference = reference.detach().reshape(-1)
    flat_quantized = quantized.detach().reshape(-1)
    totals = torch.zeros(2, dtype=torch.float64, device=flat_reference.device)
    for x_part, q_part in zip(
        flat_reference.split(CHUNK_ELEMENTS), flat_quantized.split(CHUNK_ELEMENTS), strict=True
    ):
        x = x_part.to(torch.float64)
        difference = x - q_part.to(device=x.device, dtype=torch.float64)
        totals[0] += torch.dot(x, x)
        totals[1] += torch.dot(difference, difference)
    return float(totals[0]), float(totals[1])


def tensor_sqnr_db(reference: torch.Tensor, quantized: torch.Tensor) -> float:
    """SQNR of ``quantized`` vs ``reference`` in dB: ``sqnr_db(*energies(reference, quantized))``.

    Both tensors are upcast to float64 before subtracting; shapes must match (``ValueError``).
    """
    return sqnr_db(*energies(reference, quantized))


def _check_logits(logits: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``logits`` is ``[T, V]`` with V >= 1."""
    if logits.dim() != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must be [T, V] with V >= 1, got shape {tuple(logits.shape)}")


def _selected_and_rest(
    logits: torch.Tensor, indices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of ``indices`` per row, and the log of the total probability of the rest.

    ``log p_i = z_i − logsumexp(z)``, ``log p_rest = logsumexp(z over the unselected tokens) −
    logsumexp(z)``: the rest is summed directly, never as ``1 − Σ p_i``, so a tiny tail mass keeps
    full relative precision and an empty rest is exactly ``-inf``. Float64 ``[T, k]`` and ``[T]``,
    computed a chunk of rows at a time (one float64 copy of ~CHUNK_ELEMENTS logits at once).
    """
    rows = _row_chunk(logits.shape[-1])
    selected, rest = [], []
    for logit_rows, index_rows in zip(
        logits.detach().split(rows), indices.split(rows), strict=True
    ):
        z = logit_rows.to(torch.float64, copy=True)
        log_norm = torch.logsumexp(z, dim=-1)
        index = index_rows.long()
        selected.append(z.gather(-1, index) - log_norm[:, None])
        z.scatter_(-1, index, -math.inf)
        rest.append(torch.logsumexp(z, dim=-1) - log_norm)
    return torch.cat(selected), torch.cat(rest)


def topk_reference(logits: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """What is cached of the reference model's next-token distributions: O(T·k), not O(T·V).

    For logits ``[T, V]``, per position (computed in float64, then stored compactly):

    - ``"topk_logprobs"``: the k largest log-probabilities ``log p_i``, descending, float32
      ``[T, k]``;
    - ``"topk_indices"``: their token ids, int32 ``[T, k]``;
    - ``"tail_logprob"``: ``log(1 − Σ_{i∈topk} p_i)``, the log-mass of every other token, float32
      ``[T]``, summed directly over those tokens (stable for tiny tails); ``-inf`` when k == V.

    Storage is ``T·(8k + 4)`` bytes (260 kB per 1000 tokens at k = 32). Float32 rounds each
    log-probability by up to 2⁻²⁴ relative (~6e-7 nats at log p = −10); :func:`kl_from_topk`
    renormalizes what it reads, but the rounding errors δ_i enter the KL at first order
    (``Σ p_i δ_i``), so storage adds up to ~1e-7 nats per token (float16, 2⁻¹¹ relative, would add
    ~1e-3, as much as 8-bit quantization's KL, which is why it is not used).
    Transient memory is a float64 copy of a chunk of rows (~CHUNK_ELEMENTS logits), not of all.
    """
    _check_logits(logits)
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k must be in [1, V={logits.shape[1]}], got {k}")
    indices = torch.topk(logits.detach(), k, dim=-1).indices
    selected, tail = _selected_and_rest(logits, indices)
    return {
        TOPK_LOGPROBS: selected.to(torch.float32),
        TOPK_INDICES: indices.to(torch.int32),
        TAIL_LOGPROB: tail.to(torch.float32),
    }


def _kl_terms(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``Σ p (log p − log q)`` over the last dim, float64; terms with ``p == 0`` are 0.

    ``q == 0`` where ``p > 0`` gives ``+inf`` (never NaN). Clamped at 0: KL between two
    distributions is >= 0, and only float64 rounding (~1e-16) can make the sum negative.
    """
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(dim=-1).clamp_min(0.0)


def kl_from_topk(reference: dict, quantized_logits: torch.Tensor) -> torch.Tensor:
    """Per-position ``KL(P_ref ‖ P_quant)`` over the top-k-plus-tail coarsening, nats, float64 [T].

    The categories are the reference's k cached tokens plus ONE lumped tail (all other tokens)::

        KL_k = Σ_{i∈topk} p_i (log p_i − log q_i) + p_tail (log p_tail − log q_tail)

    with ``q = softmax(quantized_logits)`` in float64 and ``q_tail = 1 − Σ_{i∈topk} q_i`` computed
    as the logsumexp of the quantized logits outside the top-k (exact, never negative). The cached
    reference values ``(log p_i, log p_tail)`` are renormalized to sum to 1 (undoing storage
    rounding) before use. Terms with ``p == 0`` (e.g. an empty tail) contribute 0; never NaN.

    Merging the tail is a deterministic map applied to both distributions, so by the
    data-processing inequality ``KL_k <= KL`` (the exact KL over all V tokens), and KL_k grows
    with k. The gap is exactly ``KL − KL_k = p_tail · KL(P|tail ‖ Q|tail)``, the tail's mass times
    the KL between the two distributions renormalized on the tail tokens: first order in the tail
    mass, so the bound is tight for peaked distributions (0.998 of the exact KL at k = 32 on LM
    outputs) and can be loose for flat ones (near-uniform distributions: 0.08 of it). Equality
    holds when the reference's tail mass is 0 (in particular when k == V), or when P and Q are
    proportional on the tail tokens. Extra keys in ``reference`` are ignored.
    """
    log_p, log_q = _coarse_pair(reference, quantized_logits)
    return _kl_terms(log_p, log_q)


def exact_kl(reference_logits: torch.Tensor, quantized_logits: torch.Tensor) -> torch.Tensor:
    """Per-position exact ``KL(P_ref ‖ P_quant) = Σ_v p_v (log p_v − log q_v)``, nats, float64 [T].

    Over all V tokens, from full logits (both ``[T, V]``, same shape): O(T·V), for tests and small
    vocabularies. Terms with ``p_v == 0`` contribute 0; never NaN.
    """
    _check_logits(reference_logits)
    if reference_logits.shape != quantized_logits.shape:
        raise ValueError(
            f"shape mismatch: {tuple(reference_logits.shape)} vs {tuple(quantized_logits.shape)}"
        )
    log_p = torch.log_softmax(reference_logits.detach().to(torch.float64), dim=-1)
    log_q = torch.log_softmax(quantized_logits.detach().to(torch.float64), dim=-1)
    return _kl_terms(log_p, log_q)


def top1_agreement(reference: dict, quantized_logits: torch.Tensor) -> torch.Tensor:
    """Bool ``[T]``: the quantized argmax token equals the reference's most likely token.

    The reference's top-1 is ``reference["topk_indices"][:, 0]``. With exactly tied maxima either
    side may pick any of the tied tokens.
    """
    _check_logits(quantized_logits)
    top1 = reference[TOPK_INDICES][:, 0].long()
    return quantized_logits.detach().argmax(dim=-1) == top1.to(quantized_logits.device)


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position negative log-likelihood ``−log softmax(logits)[t, targets[t]]``: nats, float64.

    ``logits`` is ``[T, V]`` (position t predicts ``targets[t]``), ``targets`` is ``[T]`` token ids;
    the result is ``[T]``: ``logsumexp(z_t) − z_t[targets[t]]``, a chunk of rows at a time.
    """
    _check_logits(logits)
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"targets must be [{logits.shape[0]}], got {tuple(targets.shape)}")
    rows = _row_chunk(logits.shape[-1])
    parts = []
    for logit_rows, target_rows in zip(
        logits.detach().split(rows), targets.long().split(rows), strict=True
    ):
        z = logit_rows.to(torch.float64)
        parts.append(torch.logsumexp(z, dim=-1) - z.gather(-1, target_rows[:, None])[:, 0])
    return torch.cat(parts)


def perplexity(nll_sum: float, count: int) -> float:
    """Perplexity ``exp(nll_sum / count)``: nll_sum in nats over ``count`` tokens (count >= 1).

    ``math.inf`` when the exponential overflows a float; ``ValueError`` when ``count <= 0``.
    """
    if count <= 0:
        raise ValueError(f"count must be >= 1, got {count}")
    try:
        return math.exp(nll_sum / count)
    except OverflowError:
        return math.inf


def percentile(values: torch.Tensor | list[float], q: float) -> float:
    """The q-th percentile (q in [0, 100]) with linear interpolation: numpy's default method.

    Sorted values ``v_0 <= … <= v_{n−1}``, position ``h = q / 100 · (n − 1)``, result
    ``v_⌊h⌋ + (h − ⌊h⌋)·(v_⌈h⌉ − v_⌊h⌋)`` in float64. Equal neighbours are returned as they are,
    so infinite values (an infinite KL) do not turn into NaN.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = torch.as_tensor(values, dtype=torch.float64).flatten().sort().values
    if ordered.numel() == 0:
        raise ValueError("percentile of no values")
    position = q / 100 * (ordered.numel() - 1)
    low, high = float(ordered[math.floor(position)]), float(ordered[math.ceil(position)])
    if low == high:
        return low
    return low + (position - math.floor(position)) * (high - low)


# ---------------------------------------------------------------- full distributions, compactly

LOGPROB_CODES = "logprob_codes"
LOGPROB_MIN = "logprob_min"  # lo: the row's smallest finite log-probability
LOGPROB_LOW_STEP = "logprob_low_step"  # step of the low segment [lo, split)
LOGPROB_SPLIT = "logprob_split"  # split = max(lo, hi − HIGH_SEGMENT_NATS)
LOGPROB_HIGH_STEP = "logprob_high_step"  # step of the high segment [split, hi]
CODE_ROWS = (LOGPROB_MIN, LOGPROB_LOW_STEP, LOGPROB_SPLIT, LOGPROB_HIGH_STEP)
HIGH_SEGMENT_NATS = 12.0  # tokens within 12 nats of the most likely one get the fine step
LOW_LEVELS = 8192  # codes 1 … 8192 for [lo, split)
HIGH_LEVELS = 57343  # codes 8193 … 65535 for [split, hi]: a step of at most 12/57342 nats
_CODE_OFFSET = 32768  # uint16 codes are stored as int16 (code − 32768): torch.save-safe everywhere
BYTES_PER_LOGPROB = 2
BYTES_PER_POSITION = 8 * len(CODE_ROWS)
ROUNDING_MARGIN = 1e-12  # nats: float64 rounding of log-probabilities of magnitude < 1e3


def encode_logprobs(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The full next-token log-probabilities of ``logits`` ``[T, V]`` in 2 bytes per entry.

    Per row, with ``ℓ = log_softmax(z)`` in float64, ``hi`` / ``lo`` the largest and smallest
    finite ``ℓ`` and ``split = max(lo, hi − 12)``, a two-segment uint16 code:

    - ``ℓ_v >= split`` (the tokens within 12 nats of the top, which carry the probability mass):
      ``8193 + round((ℓ_v − split) / s_hi)``, ``s_hi = (hi − split) / 57342 <= 2.1e-4`` nats;
    - ``lo <= ℓ_v < split``: ``1 + round((ℓ_v − lo) / s_lo)``, ``s_lo = (split − lo) / 8191``;
    - ``ℓ_v = −inf`` (probability exactly 0): 0.

    llama.cpp stores ``[hi − 16, hi]`` in 65535 steps (2.4e-4 nats) and drops every lower token;
    here every token is kept, so :func:`kl_from_codes` can bound its error. Returns
    ``"logprob_codes"`` int16 ``[T, V]`` (the code − 32768) and float64 ``[T]`` ``"logprob_min"``
    (lo), ``"logprob_low_step"``, ``"logprob_split"``, ``"logprob_high_step"``:
    ``T·(2V + 32)`` bytes. Each decoded ``ℓ`` is within half its segment's step of the truth.
    """
    _check_logits(logits)
    rows = _row_chunk(logits.shape[-1])
    codes: list[torch.Tensor] = []
    scalars: dict[str, list[torch.Tensor]] = {name: [] for name in CODE_ROWS}
    for logit_rows in logits.detach().split(rows):
        log_p = torch.log_softmax(logit_rows.to(torch.float64), dim=-1)
        finite = torch.isfinite(log_p)
        all_finite = bool(finite.all())
        value = log_p if all_finite else torch.where(finite, log_p, -math.inf)
        high = value.amax(dim=-1, keepdim=True)
        if not all_finite:
            value = torch.where(finite, log_p, high)  # code 0 below; any value in range here
        low = value.amin(dim=-1, keepdim=True)
        split = torch.maximum(low, high - HIGH_SEGMENT_NATS)
        low_step, high_step = (split - low) / (LOW_LEVELS - 1), (high - split) / (HIGH_LEVELS - 1)
        upper = value >= split
        level = torch.round(
            (value - torch.where(upper, split, low))
            * torch.where(upper, _inverse(high_step), _inverse(low_step))
        )
        code = level + 1 + LOW_LEVELS * upper
        if not all_finite:
            code = torch.where(finite, code, 0.0)
        codes.append((code - _CODE_OFFSET).to(torch.int16))
        for name, part in zip(CODE_ROWS, (low, low_step, split, high_step), strict=True):
            scalars[name].append(part[:, 0])
    return {LOGPROB_CODES: torch.cat(codes), **{k: torch.cat(v) for k, v in scalars.items()}}


def _inverse(step: torch.Tensor) -> torch.Tensor:
    """``1 / step``, and 0 where the step is 0 (a segment of one value: every offset is 0)."""
    return torch.where(step > 0, 1 / torch.where(step > 0, step, 1.0), 0.0)


def _decode(entry: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ℓ̃, high, low)``: decoded (renormalized) log-probabilities, float64 ``[T, V]``, and
    the bool masks of the entries in the high and in the low segment (neither: code 0)."""
    code = entry[LOGPROB_CODES].to(torch.float64) + _CODE_OFFSET
    low, low_step, split, high_step = (entry[n].to(torch.float64)[:, None] for n in CODE_ROWS)
    high_segment, finite = code > LOW_LEVELS, code > 0
    log_p = torch.where(
        high_segment, split + (code - LOW_LEVELS - 1) * high_step, low + (code - 1) * low_step
    )
    log_p = torch.where(finite, log_p, -math.inf)
    log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)
    return log_p, high_segment, finite & ~high_segment


def decode_logprobs(entry: dict[str, torch.Tensor]) -> torch.Tensor:
    """Float64 ``[T, V]`` log-probabilities from :func:`encode_logprobs`, renormalized per row.

    ``ℓ̃_v`` is the code's value (``−inf`` for code 0) minus the row's logsumexp, so that the
    decoded distribution sums to 1; :func:`kl_from_codes` bounds ``|ℓ̃_v − ℓ_v|``.
    """
    return _decode(entry)[0]


def kl_from_codes(entry: dict[str, torch.Tensor], quantized_logits: torch.Tensor) -> dict:
    """Exact-mode divergences from :func:`encode_logprobs` codes, per position, float64 ``[T]``.

    With ``p̃`` the decoded reference, ``q = softmax(quantized_logits)``, ``c̃_v = log p̃_v −
    log q_v``, ``e_v`` each entry's rounding bound (half its step) and the renormalization's
    ``L = log Σ_v p̃_v e^(e_v)`` (``1/Z = Σ p̃ e^(−δ)`` bounds ``|log Z| <= L``), every decoded
    log-probability is within ``η_v = e_v + L + 1e-12`` of the truth, and:

    - ``"kl"``: ``KL(P‖Q) ≈ Σ_v p̃_v c̃_v``; ``"kl_reverse"``: ``KL(Q‖P) ≈ Σ_v q_v (−c̃_v)``;
    - ``"kl_bound"`` on ``|KL̃ − KL|``: ``Σ_v p̃_v (e^(η_v) − 1)(|c̃_v| + η_v) + Σ_v p̃_v
      (2 cosh η_v − 2)``. Derivation: ``KL̃ − KL = Σ (p̃ − p) c + KL(P̃‖P)``, ``|p̃_v − p_v| <=
      p̃_v (e^(η_v) − 1)``, ``|c_v| <= |c̃_v| + η_v``, and ``KL(P̃‖P) <= χ²(P̃‖P) = Σ p̃ (2 cosh
      η' − 2)`` (using ``Σ p = 1``), second order in η;
    - ``"kl_reverse_bound"``: ``Σ_v q_v η_v``, since ``KL̃(Q‖P) − KL(Q‖P) = Σ q (log p − log p̃)``.

    A probability of exactly 0 is stored exactly (code 0): where q > 0 there, the reverse KL is
    ``inf``, as it truly is. Computed a chunk of rows at a time.
    """
    _check_logits(quantized_logits)
    codes = entry[LOGPROB_CODES]
    if tuple(codes.shape) != tuple(quantized_logits.shape):
        raise ValueError(
            f"reference codes are {tuple(codes.shape)}, quantized logits "
            f"{tuple(quantized_logits.shape)}"
        )
    rows = _row_chunk(quantized_logits.shape[-1])
    names = ("kl", "kl_reverse", "kl_bound", "kl_reverse_bound")
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    device = quantized_logits.device
    for start in range(0, codes.shape[0], rows):
        chunk = {n: entry[n][start : start + rows].to(device) for n in (LOGPROB_CODES, *CODE_ROWS)}
        log_p, high, low = _decode(chunk)
        log_q = torch.log_softmax(
            quantized_logits[start : start + rows].detach().to(torch.float64), dim=-1
        )
        p, q = log_p.exp(), log_q.exp()
        contrast = torch.where(p > 0, log_p - log_q, torch.zeros_like(p))
        parts["kl"].append((p * contrast).sum(dim=-1).clamp_min(0.0))
        parts["kl_reverse"].append(_kl_terms(log_q, log_p))
        forward, reverse = _segment_bounds(chunk, p, q, (p * contrast).abs(), (high, low))
        parts["kl_bound"].append(forward)
        parts["kl_reverse_bound"].append(reverse)
    return {name: torch.cat(values) for name, values in parts.items()}


def _segment_bounds(chunk: dict, p, q, spread, segments) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`kl_from_codes`'s two bounds per row. Within a segment every entry has the same
    ``e_v`` (half the segment's step), hence the same ``η_v``: the sums over entries are sums
    over the two segments of ``Σ p̃``, ``Σ p̃ |c̃|`` and ``Σ q`` (code-0 entries, decoded
    exactly, are in neither)."""
    halves = (chunk[LOGPROB_HIGH_STEP] / 2, chunk[LOGPROB_LOW_STEP] / 2)
    mass = [(p * mask).sum(dim=-1) for mask in segments]
    renormalization = torch.log(sum(m * h.exp() for m, h in zip(mass, halves, strict=True)))
    forward = torch.zeros_like(mass[0])
    reverse = torch.zeros_like(mass[0])
    for mask, share, half in zip(segments, mass, halves, strict=True):
        eta = half.to(torch.float64) + renormalization + ROUNDING_MARGIN
        first = torch.expm1(eta) * ((spread * mask).sum(dim=-1) + eta * share)
        forward += first + 2 * (torch.cosh(eta) - 1) * share
        reverse += eta * (q * mask).sum(dim=-1)
    return forward, reverse


def reverse_kl_from_topk(reference: dict, quantized_logits: torch.Tensor) -> torch.Tensor:
    """Per-position ``KL(P_quant ‖ P_ref)`` over the top-k-plus-tail coarsening, nats, float64.

    The same k + 1 categories as :func:`kl_from_topk`, with the roles swapped:
    ``Σ_c q_c (log q_c − log p_c)``. By the data-processing inequality it is a lower bound of
    the exact reverse KL over all V tokens, equal to it when the reference's tail is empty.
    """
    log_p, log_q = _coarse_pair(reference, quantized_logits)
    return _kl_terms(log_q, log_p)


def _coarse_pair(reference: dict, quantized_logits: torch.Tensor):
    """``(log p, log q)`` float64 ``[T, k + 1]`` over the reference's top-k plus the tail."""
    _check_logits(quantized_logits)
    indices = reference[TOPK_INDICES]
    if indices.dim() != 2 or indices.shape[0] != quantized_logits.shape[0]:
        raise ValueError(
            f"reference covers {tuple(indices.shape)} positions x k, quantized logits are "
            f"{tuple(quantized_logits.shape)}"
        )
    log_p = torch.cat(
        [
            reference[TOPK_LOGPROBS].to(torch.float64),
            reference[TAIL_LOGPROB].to(torch.float64)[:, None],
        ],
        dim=-1,
    )
    log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)
    selected, tail = _selected_and_rest(quantized_logits, indices)
    return log_p, torch.cat([selected, tail[:, None]], dim=-1)
