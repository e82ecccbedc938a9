"""Tests for the sampled-generation metrics (qeval_plugins.metrics.text).

The pure-Python metrics are checked against small tables computed by hand (the derivation is in the
comments); ROUGE-L, chrF and self-BLEU against the libraries they wrap, called directly here, plus
cases small enough to work out by hand.
"""

from __future__ import annotations

import math

import pytest
from rouge_score.rouge_scorer import RougeScorer
from sacrebleu.metrics import BLEU, CHRF

from qeval_plugins.metrics.text import (
    band_gap,
    chrf,
    distinct_n,
    rouge_l,
    self_bleu,
    slope,
    spread,
    token_agreement,
    tokens,
)

NAN, INF = math.nan, math.inf

PAIRS = [
    ("the cat on the mat", "the cat sat on the mat"),
    ("A quiet harbour at dawn, gulls circling.", "The harbour was quiet and gulls circled."),
    ("Bake the bread for forty minutes.", "Let the dough rise, then bake it for forty minutes."),
    ("completely unrelated words", "the train left the station late"),
]


def test_tokens_are_lower_cased_word_runs():
    assert tokens("Don't STOP, now!  x_1 42") == ["don", "t", "stop", "now", "x_1", "42"]
    assert tokens("  ...  ") == []


@pytest.mark.parametrize(
    ("samples", "n", "expected"),
    [
        # [the cat sat] [the dog sat]: 6 unigrams, unique {the, cat, sat, dog} = 4 -> 4/6
        (["the cat sat", "the dog sat"], 1, 4 / 6),
        # bigrams (the cat) (cat sat) (the dog) (dog sat): 4 of 4 unique
        (["the cat sat", "the dog sat"], 2, 1.0),
        # case and punctuation are not part of a token: [the cat] twice -> 2 unique / 4
        (["The cat.", "the CAT!"], 1, 2 / 4),
        # n-grams stay inside one sample: (a b) (a b) -> 1/2 (across the join "a b a b" gives 2/3)
        (["a b", "a b"], 2, 1 / 2),
        # repetition inside one sample: (go) x3 -> 1/3; (go go) x2 -> 1/2
        (["go go go"], 1, 1 / 3),
        (["go go go"], 2, 1 / 2),
        # 3 identical samples of 4 tokens: 4/12 unigrams, 3/9 bigrams: the minimum 1/k = 1/3
        (["one two three four"] * 3, 1, 1 / 3),
        (["one two three four"] * 3, 2, 1 / 3),
        # no n-gram at all -> 0.0
        (["a", "b"], 2, 0.0),
        ([], 1, 0.0),
        ([""], 1, 0.0),
    ],
)
def test_distinct_n_table(samples, n, expected):
    assert distinct_n(samples, n) == pytest.approx(expected, abs=1e-12)


def test_distinct_n_rejects_n_below_one():
    with pytest.raises(ValueError, match="n must be >= 1"):
        distinct_n(["a b"], 0)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1, 2, 3], [1, 2, 3], 1.0),
        # positions 0..3: match, 2 != 9, match, only `a` reaches 3 -> 2/4
        ([1, 2, 3, 4], [1, 9, 3], 0.5),
        ([1, 9, 3], [1, 2, 3, 4], 0.5),
        # same multiset, different order: no position agrees
        ([7, 8], [8, 7], 0.0),
        ([], [], 1.0),
        ([], [5], 0.0),
        # 3 of 5 positions agree
        ([4, 4, 4, 4, 4], [4, 0, 4, 0, 4], 3 / 5),
    ],
)
def test_token_agreement_table(a, b, expected):
    assert token_agreement(a, b) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("xs", "ys", "expected"),
    [
        ([0, 1, 2], [1, 3, 5], 2.0),
        # x̄ = ȳ = 2.5; dx = (-1.5, -0.5, 0.5, 1.5), dy = (-0.5, -1.5, 1.5, 0.5)
        # Σ dx·dy = 0.75 · 4 = 3, Σ dx² = 2.25 + 0.25 + 0.25 + 2.25 = 5 -> 0.6
        ([1, 2, 3, 4], [2, 1, 4, 3], 0.6),
        # repeated xs: group means 1 at x=0 and 5 at x=1 -> 4
        ([0, 0, 1, 1], [0, 2, 4, 6], 4.0),
        ([0.2, 0.5, 0.8], [0.9, 0.9, 0.9], 0.0),
        # non-finite ys dropped: (0, 1), (2, 5) remain -> 2
        ([0, 1, 2, 3], [1, NAN, 5, INF], 2.0),
        ([0, NAN, 2], [1, 100, 5], 2.0),
        # fewer than two distinct xs
        ([1, 1, 1], [1, 2, 3], 0.0),
        ([0, 1], [NAN, 1], 0.0),
        ([], [], 0.0),
    ],
)
def test_slope_table(xs, ys, expected):
    assert slope(xs, ys) == pytest.approx(expected, abs=1e-12)


def test_slope_rejects_ragged_input():
    with pytest.raises(ValueError):
        slope([0, 1, 2], [1, 2])


@pytest.mark.parametrize(
    ("ys", "expected"),
    [
        ([0.3, 0.9, 0.5], 0.6),
        ([NAN, 2.0, -INF, 5.0], 3.0),
        ([4.0], 0.0),
        ([NAN], 0.0),
        ([], 0.0),
    ],
)
def test_spread_table(ys, expected):
    assert spread(ys) == pytest.approx(expected, abs=1e-12)


TEMPERATURES = [0.2, 0.5, 0.6, 0.8, 1.0]
QUANTIZED = [0.50, 0.40, 0.30, 0.20, 0.10]
REFERENCE = [0.55, 0.50, 0.45, 0.40, 0.30]


def test_band_gap_table():
    # in [0.5, 0.8]: gaps 0.10, 0.15, 0.20 at 0.5, 0.6, 0.8 -> mean 0.15 (0.2 and 1.0 are out)
    assert band_gap(TEMPERATURES, QUANTIZED, REFERENCE) == pytest.approx(0.15, abs=1e-12)
    # [0.9, 1.0]: only 1.0 -> 0.30 - 0.10
    assert band_gap(TEMPERATURES, QUANTIZED, REFERENCE, low=0.9, high=1.0) == pytest.approx(0.2)
    # quantized better than reference gives a negative gap
    assert band_gap([0.5], [0.7], [0.4]) == pytest.approx(-0.3)
    # nothing in the band -> 0.0, never NaN
    assert band_gap([0.1, 0.9], [0.0, 0.0], [1.0, 1.0]) == 0.0
    assert band_gap([], [], []) == 0.0


def test_band_gap_skips_non_finite_points_and_keeps_rounded_edges():
    # the NaN point at 0.6 is dropped: gaps 0.10 and 0.20 -> 0.15
    with_nan = [0.50, 0.40, NAN, 0.20, 0.10]
    assert band_gap(TEMPERATURES, with_nan, REFERENCE) == pytest.approx(0.15, abs=1e-12)
    assert band_gap([0.6], [0.3], [INF]) == 0.0
    # 0.7 - 0.2 = 0.49999999999999994 still counts as the low edge 0.5
    assert 0.7 - 0.2 < 0.5
    assert band_gap([0.7 - 0.2], [0.25], [0.5]) == pytest.approx(0.25)


def test_band_gap_rejects_ragged_input():
    with pytest.raises(ValueError):
        band_gap([0.5, 0.6], [0.1, 0.2], [0.3])


def test_rouge_l_by_hand():
    # LCS(the cat on the mat, the cat sat on the mat) = 5 tokens: P = 5/5, R = 5/6
    # F = 2PR / (P + R) = (10/6) / (11/6) = 10/11
    assert rouge_l("the cat on the mat", "the cat sat on the mat") == pytest.approx(10 / 11)
    assert rouge_l("The Cat, on the mat!", "the cat on the mat") == pytest.approx(1.0)
    assert rouge_l("red green", "blue yellow") == 0.0
    assert rouge_l("", "anything") == 0.0


@pytest.mark.parametrize(("prediction", "reference"), PAIRS)
def test_rouge_l_matches_rouge_score(prediction, reference):
    scorer = RougeScorer(["rougeL"], use_stemmer=False)
    expected = scorer.score(reference, prediction)["rougeL"].fmeasure
    assert rouge_l(prediction, reference) == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= rouge_l(prediction, reference) <= 1.0


@pytest.mark.parametrize(("prediction", "reference"), PAIRS)
def test_chrf_matches_sacrebleu(prediction, reference):
    expected = CHRF().sentence_score(prediction, [reference]).score
    assert chrf(prediction, reference) == pytest.approx(expected, abs=1e-9)
    assert 0.0 <= chrf(prediction, reference) <= 100.0


def test_chrf_keeps_prediction_and_reference_apart():
    # chrF weighs recall β = 2 times as much as precision, so swapping the arguments changes it;
    # a short prediction inside a long reference has precision 1 and low recall
    short, long = "bake the bread", "let the dough rise, then bake the bread for an hour"
    assert chrf(short, long) == pytest.approx(CHRF().sentence_score(short, [long]).score)
    assert chrf(short, long) < chrf(long, short)
    assert chrf("same words here", "same words here") == pytest.approx(100.0)


def test_self_bleu_by_hand():
    # hypothesis "a b c d" vs reference "a b c e" (and the other way round): equal lengths, BP = 1
    # matches: 1-grams 3/4, 2-grams 2/3, 3-grams 1/2, 4-grams 0/1 -> 'exp' smoothing: 1/(2·1)
    # BLEU = 100 · (3/4 · 2/3 · 1/2 · 1/2)^(1/4) = 100 · 8^(-1/4) ≈ 59.46 for both samples
    assert self_bleu(["a b c d", "a b c e"]) == pytest.approx(100 * 8 ** (-1 / 4))
    # disjoint vocabularies: no match at any order -> 0
    assert self_bleu(["red green blue", "one two three"]) == 0.0


def test_self_bleu_matches_sacrebleu_against_the_other_samples():
    samples = [
        "the river ran fast under the old bridge",
        "the river ran slowly under the new bridge",
        "a small boat drifted under the old bridge at noon",
    ]
    bleu = BLEU(effective_order=True)  # what sacrebleu.sentence_bleu uses, with 'exp' smoothing
    per_sample = [
        bleu.sentence_score(samples[0], [samples[1], samples[2]]).score,
        bleu.sentence_score(samples[1], [samples[0], samples[2]]).score,
        bleu.sentence_score(samples[2], [samples[0], samples[1]]).score,
    ]
    assert self_bleu(samples) == pytest.approx(sum(per_sample) / 3, abs=1e-9)
    assert 0.0 < self_bleu(samples) < 100.0


def test_identical_samples_are_least_diverse():
    samples = ["the lamp flickered twice and went out"] * 4
    assert self_bleu(samples) == pytest.approx(100.0)
    assert distinct_n(samples, 1) == pytest.approx(1 / 4)
    assert distinct_n(samples, 2) == pytest.approx(1 / 4)


def test_self_bleu_needs_two_samples():
    assert self_bleu([]) == 0.0
    assert self_bleu(["only one sample here"]) == 0.0


def test_rouge_l_scores_non_latin_text():
    """rouge_score's own tokenizer drops every non-ASCII letter: these would all score 0."""
    assert rouge_l("кошка сидит на ковре", "кошка сидела на ковре") == pytest.approx(3 / 4)
    assert rouge_l("Ο γάτος κάθεται", "ο γάτος κάθεται") == pytest.approx(1.0)
    assert rouge_l("café crème", "un café crème") == pytest.approx(0.8)
    assert rouge_l("snake_case", "snake case") == pytest.approx(1.0)  # "_" separates, as there


def test_distinct_n_goes_below_one_over_k_with_repetition_inside_a_sample():
    assert distinct_n(["a b c d"] * 2, 1) == pytest.approx(1 / 2)  # k identical samples: 1/k
    assert distinct_n(["a a a a"] * 2, 1) == pytest.approx(1 / 8)  # one n-gram: 1/|all|
