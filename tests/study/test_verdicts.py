"""The seed study's verdict rule on synthetic numbers: an effect counts only beyond the spread."""

from __future__ import annotations

import itertools

import pytest

from qeval_plugins.study import verdicts as V


def test_an_effect_beyond_the_spread_in_the_claimed_direction_is_reproduced():
    # mean(A) = 0.10, mean(B) = 0.20; ranges 0.02 + 0.02 = 0.04 < |−0.10|
    assert V.directional_verdict([0.09, 0.11], [0.19, 0.21], -1) == V.REPRODUCED


def test_an_effect_beyond_the_spread_against_the_claim_is_contradicted():
    assert V.directional_verdict([0.29, 0.31], [0.19, 0.21], -1) == V.CONTRADICTED


def test_an_effect_inside_the_spread_is_not_shown_even_in_the_claimed_direction():
    # effect −0.05, spread 0.04 + 0.04 = 0.08: the seeds disagree more than the groups do
    assert V.directional_verdict([0.11, 0.15], [0.16, 0.20], -1) == V.NOT_SHOWN
    # exactly at the spread is not beyond it
    assert V.directional_verdict([1.0, 2.0], [3.0, 4.0], -1) == V.NOT_SHOWN


def test_one_seed_has_no_spread_and_shows_nothing():
    assert V.directional_verdict([0.1], [0.9], -1) == V.NOT_SHOWN
    assert V.directional_verdict([], [0.9, 1.0], -1) == V.NOT_MEASURED


def test_matters_is_either_direction_and_never_contradicted():
    assert V.directional_verdict([0.5, 0.51], [0.1, 0.11], 0) == V.REPRODUCED
    assert V.directional_verdict([0.1, 0.11], [0.5, 0.51], 0) == V.REPRODUCED
    assert V.directional_verdict([0.1, 0.2], [0.15, 0.25], 0) == V.NOT_SHOWN


def test_equality_needs_a_small_difference_and_a_spread_small_against_the_effect():
    # nf4 0.100/0.102, fp4 0.101/0.103: difference 0.001 within spread 0.004 <= 0.25 * 0.1015
    assert V.equality_verdict([0.100, 0.102], [0.101, 0.103], 0.1015) == V.REPRODUCED
    # same difference, but a spread (0.08) as large as the 4-bit effect itself: cannot tell
    assert V.equality_verdict([0.06, 0.10], [0.065, 0.105], 0.08) == V.NOT_SHOWN
    # a difference beyond the spread: not equal
    assert V.equality_verdict([0.10, 0.101], [0.20, 0.201], 0.15) == V.CONTRADICTED


def test_spearman_matches_hand_computed_values_and_ties():
    assert V.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert V.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d = (0, 0, 1, -1): rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert V.spearman([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    assert V.ranks([5.0, 1.0, 5.0]) == [2.5, 1.0, 2.5]


def test_exact_spearman_p_counts_the_orderings_at_least_as_concordant():
    # n = 4, perfect agreement: only the identity ordering reaches rho = 1 -> p = 1/24
    assert V.spearman_p_greater([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1 / 24)
    x = [1, 2, 3, 4, 5]
    y = [2, 1, 3, 5, 4]
    observed = V.spearman(x, y)
    count = sum(V.spearman(x, p) >= observed - 1e-12 for p in itertools.permutations(y))
    assert V.spearman_p_greater(x, y) == pytest.approx(count / 120)


def test_rank_agreement_needs_every_seed_significant_and_a_tight_spread():
    assert V.rank_agreement_verdict([0.95, 0.9], [0.01, 0.02], [0.99, 0.98]) == V.REPRODUCED
    assert V.rank_agreement_verdict([0.95, 0.9], [0.01, 0.2], [0.99, 0.8]) == V.NOT_SHOWN
    assert V.rank_agreement_verdict([0.9, -0.5], [0.01, 0.9], [0.99, 0.1]) == V.NOT_SHOWN
    assert V.rank_agreement_verdict([-0.9, -0.8], [0.99, 0.99], [0.01, 0.02]) == V.CONTRADICTED
    # negative but not significantly so (the study's first run: ρ −0.14 and −0.37 over six
    # recipes): not shown, never contradicted
    assert V.rank_agreement_verdict([-0.14, -0.37], [0.64, 0.79], [0.42, 0.26]) == V.NOT_SHOWN


def test_the_lower_tail_p_counts_the_orderings_at_most_as_concordant():
    x, y = [1, 2, 3, 4, 5], [2, 1, 3, 5, 4]
    from qeval_plugins.study.ledger import OPS

    observed = V.spearman(x, y)
    count = sum(V.spearman(x, p) <= observed + 1e-12 for p in itertools.permutations(y))
    assert OPS["spearman_p_less"]([*x, *y]) == pytest.approx(count / 120)


def test_non_monotonic_needs_counting_steps_both_ways():
    up_down = [[0.10, 0.11], [0.30, 0.31], [0.05, 0.06]]
    assert V.non_monotonic_verdict(up_down) == V.REPRODUCED
    rising = [[0.10, 0.11], [0.30, 0.31], [0.50, 0.51]]
    assert V.non_monotonic_verdict(rising) == V.CONTRADICTED
    noisy = [[0.10, 0.40], [0.30, 0.31], [0.05, 0.35]]  # the dip is inside the spread
    assert V.non_monotonic_verdict(noisy) == V.NOT_SHOWN
