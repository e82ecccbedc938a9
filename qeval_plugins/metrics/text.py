"""Quality, diversity and agreement of sampled generations, and how they move with a setting.

Pure functions, no model code. Per sampling setting (temperature, top_k, max_new_tokens) every
prompt gets several samples, which are scored three ways:

* quality against a reference continuation: :func:`rouge_l` (F-measure in [0, 1]) and
  :func:`chrf` (chrF in [0, 100]);
* diversity across the samples of one prompt: :func:`distinct_n` (a ratio in [0, 1]) and
  :func:`self_bleu` (BLEU in [0, 100]; higher means *less* diverse);
* agreement with the unquantized model's generation: :func:`token_agreement` (a fraction in
  [0, 1] of token-id positions).

:func:`slope`, :func:`spread` and :func:`band_gap` then summarise a metric as a function of the
setting (Roy, arXiv 2309.05210: 4-bit models are most temperature-sensitive for temperatures in
0.5–0.8). Their results are in the units of the metric they summarise (per unit of the setting for
the slope). ``rouge_score`` and ``sacrebleu`` are imported lazily, on first use.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence

_WORD = re.compile(r"\w+")
BAND_EDGE_TOLERANCE = 1e-9


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens of ``text``: the maximal runs of ``\\w`` (letters, digits, ``_``).

    Punctuation and whitespace only separate tokens: ``"Don't stop!"`` gives
    ``["don", "t", "stop"]``. Used by :func:`distinct_n`; ROUGE-L, chrF and BLEU keep the
    tokenizers of the libraries they come from.
    """
    return _WORD.findall(text.lower())


_LETTERS_AND_DIGITS = re.compile(r"[^\W_]+")


class _UnicodeWords:
    """ROUGE tokens: lower-cased maximal runs of letters and digits of any script.

    On ASCII text exactly ``rouge_score``'s default tokens (which keep only ``[a-z0-9]`` runs, so
    Cyrillic, Greek, accented or CJK text would score 0); ``_`` separates, as there.
    """

    def tokenize(self, text: str) -> list[str]:
        return _LETTERS_AND_DIGITS.findall(text.lower())


@functools.cache
def _rouge_scorer():
    """The process's one ``RougeScorer(["rougeL"])`` with Unicode word tokens, no stemming."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=_UnicodeWords())


@functools.cache
def _chrf_metric():
    """The process's one ``sacrebleu.metrics.CHRF()`` (default chrF: char 6-grams, β = 2)."""
    from sacrebleu.metrics import CHRF

    return CHRF()


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure of ``prediction`` against ``reference``, in [0, 1].

    With ``L = |LCS|`` the longest common token subsequence, ``P = L / |prediction|`` and
    ``R = L / |reference|``: ``F = 2·P·R / (P + R)`` (0 when ``L = 0``). Tokens are lower-cased
    runs of letters and digits of any script (``rouge_score``'s own on ASCII text, which drops
    every non-ASCII letter), no stemming. Scripts written without spaces (Chinese, Japanese, Thai)
    get one token per run, so ROUGE-L is coarse there; :func:`chrf` is not. Needs no network.
    """
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


def chrf(prediction: str, reference: str) -> float:
    """Sentence-level chrF of ``prediction`` against ``reference``, in [0, 100].

    ``sacrebleu``'s default chrF (Popović 2015): whitespace is removed; for n = 1..6 the character
    n-gram precision P_n and recall R_n (matches clipped) are computed; P and R are their means
    over the orders both texts are long enough for; then ``F_β = (1 + β²)·P·R / (β²·P + R)`` with
    β = 2 (recall weighs β² = 4 times precision), ×100. No word n-grams (chrF, not chrF++); any
    script works.
    """
    return float(_chrf_metric().sentence_score(prediction, [reference]).score)


def distinct_n(samples: Sequence[str], n: int) -> float:
    """Distinct-n of the samples of one prompt: ``|unique n-grams| / |all n-grams|``, in [0, 1].

    n-grams are runs of ``n`` consecutive :func:`tokens` inside one sample (never across two
    samples); uniqueness is over all samples together, so k identical samples whose own n-grams
    are all different give ``1 / k``; repetition inside a sample lowers it further, down to
    ``1 / |all n-grams|`` when every n-gram is the same one. 0.0 when there is no n-gram at all.
    ``n >= 1``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = []
    for sample in samples:
        words = tokens(sample)
        grams.extend(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(samples: Sequence[str]) -> float:
    """Self-BLEU of the samples of one prompt, in [0, 100]: higher means less diverse.

    ``(1/k) · Σ_i BLEU(sample_i; references = all other samples)``, each term the sentence BLEU of
    ``sacrebleu.sentence_bleu`` with its defaults: 13a tokenization, case-sensitive, n = 1..4,
    effective order (orders the hypothesis is too short for are left out), n-gram counts clipped
    by their maximum count in any one reference, brevity penalty from the closest reference length.

    Smoothing is sacrebleu's default ``'exp'`` (Chen & Cherry 2014 method 3, the NIST mteval one):
    the j-th order with no match gets precision ``1 / (2^j · total_n)`` instead of 0. Samples of
    20–45 words often share no 4-gram, and unsmoothed BLEU would then be 0 however much else they
    share; ``'exp'`` keeps that resolution without a tunable constant (``'floor'`` needs an ε, and
    results would depend on it), and any bare ``sentence_bleu`` call reproduces the number.
    Identical samples give 100 (up to float rounding). 0.0 when there are fewer than 2 samples.
    """
    if len(samples) < 2:
        return 0.0
    from sacrebleu import sentence_bleu

    scores = [
        sentence_bleu(sample, [*samples[:i], *samples[i + 1 :]]).score
        for i, sample in enumerate(samples)
    ]
    return math.fsum(scores) / len(scores)


def token_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Fraction of positions ``i < max(len(a), len(b))`` with ``a[i] == b[i]``, in [0, 1].

    Token ids of two generations of one prompt (quantized vs unquantized); a position that only
    the longer one reaches counts as a disagreement. 1.0 when both are empty.
    """
    length = max(len(a), len(b))
    if length == 0:
        return 1.0
    return sum(x == y for x, y in zip(a, b, strict=False)) / length


def _finite_rows(*columns: Sequence[float]) -> list[tuple[float, ...]]:
    """The zipped rows of ``columns`` whose values are all finite; ``ValueError`` if ragged."""
    return [row for row in zip(*columns, strict=True) if all(map(math.isfinite, row))]


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` on ``xs``: ``Σ(x − x̄)(y − ȳ) / Σ(x − x̄)²``.

    In units of y per unit of x (e.g. ROUGE-L per unit of temperature). Pairs with a non-finite x
    or y are ignored; 0.0 when fewer than 2 distinct xs remain. ``ValueError`` on a length mismatch.
    """
    pairs = _finite_rows(xs, ys)
    if len({x for x, _ in pairs}) < 2:
        return 0.0
    x_mean = math.fsum(x for x, _ in pairs) / len(pairs)
    y_mean = math.fsum(y for _, y in pairs) / len(pairs)
    covariance = math.fsum((x - x_mean) * (y - y_mean) for x, y in pairs)
    variance = math.fsum((x - x_mean) ** 2 for x, _ in pairs)
    return covariance / variance


def spread(ys: Sequence[float]) -> float:
    """``max(ys) − min(ys)`` over the finite ys, in the units of y; 0.0 when none is finite."""
    finite = [y for y in ys if math.isfinite(y)]
    return max(finite) - min(finite) if finite else 0.0


def band_gap(
    xs: Sequence[float],
    quantized: Sequence[float],
    reference: Sequence[float],
    low: float = 0.5,
    high: float = 0.8,
) -> float:
    """Mean of ``reference[i] − quantized[i]`` over the i with ``low <= xs[i] <= high``.

    The quality gap to the unquantized model inside the setting band (by default temperatures
    0.5–0.8), in the units of the metric; positive when the quantized model is worse. The edges
    are inclusive, widened by ``BAND_EDGE_TOLERANCE`` so that ``0.7 - 0.2`` (0.49999999999999994)
    still counts as 0.5.
    Points with a non-finite x, quantized or reference value are ignored; 0.0 when no point is
    left in the band. ``ValueError`` when the three sequences differ in length.
    """
    gaps = [
        r - q
        for x, q, r in _finite_rows(xs, quantized, reference)
        if low - BAND_EDGE_TOLERANCE <= x <= high + BAND_EDGE_TOLERANCE
    ]
    return math.fsum(gaps) / len(gaps) if gaps else 0.0
