"""The seed study's verdict rule: an effect counts only where it exceeds the seed-to-seed spread.

A group's value is the mean over its seeds; its *spread* is its range over the seeds
(max − min; with one seed the spread is unknown and nothing can be shown). For a claim that
group A is above (or below) group B:

* effect = mean(A) − mean(B); threshold = range(A) + range(B);
* |effect| > threshold, same direction as the claim → **reproduced**;
* |effect| > threshold, opposite direction → **contradicted**;
* otherwise (the effect is within the spread, or a spread is unknown) → **not shown at this scale**.

A claim that a choice "matters" (no direction) is reproduced when |effect| > threshold in either
direction and is never contradicted by a small effect (that is "not shown").

An **equality** claim (A ≈ B) is reproduced only if |effect| ≤ threshold *and* the threshold is
small against the size of the effect being compared: threshold ≤ :data:`EQUALITY_FRACTION` × the
scale (for nf4 ≈ fp4: the mean ΔNLL of 4-bit quantization itself, the mean of both groups).
It is contradicted when |effect| > threshold, and not shown when the spread is too wide to tell.

A **rank-agreement** claim (an early checkpoint ranks the variants as the final one does) is
tested per seed with Spearman's ρ over the variants and its exact one-sided permutation p-value;
reproduced when every seed's p < :data:`ALPHA` and mean(ρ) − range(ρ) > 0; contradicted when
every seed's opposite one-sided p (ρ this low or lower) < :data:`ALPHA` and mean(ρ) + range(ρ) < 0;
otherwise not shown.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
NOT_SHOWN = "not shown at this scale"
NOT_MEASURED = "not measured"
EQUALITY_FRACTION = 0.25
ALPHA = 0.05


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def spread(values: Sequence[float]) -> float | None:
    """Range over seeds, max − min; None with fewer than two seeds (unknown)."""
    return max(values) - min(values) if len(values) >= 2 else None


@dataclass(frozen=True)
class Comparison:
    """mean(A) − mean(B) against the sum of both seed ranges."""

    effect: float
    threshold: float | None

    @property
    def beyond_spread(self) -> bool:
        return self.threshold is not None and abs(self.effect) > self.threshold


def compare(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """The effect mean(a) − mean(b) and its threshold range(a) + range(b)."""
    ra, rb = spread(a), spread(b)
    threshold = None if ra is None or rb is None else ra + rb
    return Comparison(mean(a) - mean(b), threshold)


def directional_verdict(a: Sequence[float], b: Sequence[float], claimed_sign: int) -> str:
    """Verdict of "A − B has sign ``claimed_sign``" (+1: A above B; −1: A below B; 0: A
    differs from B in either direction)."""
    if not a or not b:
        return NOT_MEASURED
    comparison = compare(a, b)
    if not comparison.beyond_spread:
        return NOT_SHOWN
    if claimed_sign == 0 or math.copysign(1, comparison.effect) == claimed_sign:
        return REPRODUCED
    return CONTRADICTED


def equality_verdict(a: Sequence[float], b: Sequence[float], scale: float) -> str:
    """Verdict of "A ≈ B" against ``scale``, the size of the effect A and B measure."""
    if not a or not b:
        return NOT_MEASURED
    comparison = compare(a, b)
    if comparison.threshold is None:
        return NOT_SHOWN
    if comparison.beyond_spread:
        return CONTRADICTED
    if comparison.threshold <= EQUALITY_FRACTION * abs(scale):
        return REPRODUCED
    return NOT_SHOWN


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            result[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return result


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    mx, my = mean(x), mean(y)
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = math.fsum((a - mx) ** 2 for a in x)
    syy = math.fsum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ: Pearson's correlation of the ranks (ties: mean ranks)."""
    return pearson(ranks(x), ranks(y))


def spearman_p_greater(x: Sequence[float], y: Sequence[float]) -> float:
    """Exact one-sided p of ρ ≥ observed under random order: the share of the n! orderings of
    ``y`` whose ρ with ``x`` is at least the observed one (n ≤ 8)."""
    if len(x) > 8:
        raise ValueError("the exact permutation test enumerates n! orders; n must be <= 8")
    observed = spearman(x, y)
    orders = list(itertools.permutations(y))
    hits = sum(1 for order in orders if spearman(x, order) >= observed - 1e-12)
    return hits / len(orders)


def rank_agreement_verdict(
    rhos: Sequence[float], p_values: Sequence[float], p_values_less: Sequence[float]
) -> str:
    """Verdict of "the early ranking agrees with the final one" from per-seed ρ and the exact
    one-sided p of ρ this high (``p_values``) and this low (``p_values_less``)."""
    if not rhos:
        return NOT_MEASURED
    width = spread(rhos)
    if width is None:
        return NOT_SHOWN
    if mean(rhos) - width > 0 and all(p < ALPHA for p in p_values):
        return REPRODUCED
    if mean(rhos) + width < 0 and all(p < ALPHA for p in p_values_less):
        return CONTRADICTED
    return NOT_SHOWN


def non_monotonic_verdict(series: Sequence[Sequence[float]]) -> str:
    """Verdict of "the value is non-monotonic along the series" (e.g. GPTQ's gain by size).

    ``series[i]`` holds point i's per-seed values. A step i → i+1 counts when
    |mean(i+1) − mean(i)| > range(i) + range(i+1). Reproduced when counting steps of both
    signs exist; contradicted when every step counts and all have one sign (clearly monotonic);
    otherwise not shown."""
    points = [values for values in series if values]
    if len(points) < 3:
        return NOT_MEASURED if len(points) < 2 else NOT_SHOWN
    steps = [compare(b, a) for a, b in itertools.pairwise(points)]
    signs = {math.copysign(1, s.effect) for s in steps if s.beyond_spread}
    if len(signs) == 2:
        return REPRODUCED
    if len(signs) == 1 and all(s.beyond_spread for s in steps):
        return CONTRADICTED
    return NOT_SHOWN
