"""The statistics of ``qeval_outliers``: moments and excess kurtosis, and LLM.int8() outliers.

Moments are kept as ``(n, mean, M2, M3, M4)`` with ``Mk = Σ(x − mean)^k`` (central sums, in
float64), so that the moments of several tensors combine exactly (Pébay 2008, eq. 2.1 and 3.1)
without the cancellation of raw power sums.
"""

from __future__ import annotations

import math

import torch

MOMENTS = 5  # n, mean, M2, M3, M4


def moments(values: torch.Tensor) -> torch.Tensor:
    """``(n, mean, M2, M3, M4)`` of every element of ``values``, float64 on the CPU."""
    x = values.detach().reshape(-1).double()
    if x.numel() == 0:
        return torch.zeros(MOMENTS, dtype=torch.float64)
    mean = x.mean()
    d = x - mean
    d2 = d * d
    sums = torch.stack([d2.sum(), (d2 * d).sum(), (d2 * d2).sum()])
    return torch.cat(
        [torch.tensor([float(x.numel())], dtype=torch.float64, device=x.device), mean[None], sums]
    ).cpu()


def combine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The moments of the union of two sets of values, from theirs (:func:`moments` layout).

    With δ = mean_b − mean_a and n = n_a + n_b:
    M2 = M2a + M2b + δ²·n_a·n_b/n;
    M3 = M3a + M3b + δ³·n_a·n_b·(n_a − n_b)/n² + 3δ·(n_a·M2b − n_b·M2a)/n;
    M4 = M4a + M4b + δ⁴·n_a·n_b·(n_a² − n_a·n_b + n_b²)/n³ + 6δ²·(n_a²·M2b + n_b²·M2a)/n²
         + 4δ·(n_a·M3b − n_b·M3a)/n.
    """
    na, ma, m2a, m3a, m4a = a.tolist()
    nb, mb, m2b, m3b, m4b = b.tolist()
    if na == 0 or nb == 0:
        return (b if na == 0 else a).clone()
    n = na + nb
    delta = mb - ma
    m2 = m2a + m2b + delta**2 * na * nb / n
    m3 = m3a + m3b + delta**3 * na * nb * (na - nb) / n**2 + 3 * delta * (na * m2b - nb * m2a) / n
    m4 = (
        m4a
        + m4b
        + delta**4 * na * nb * (na * na - na * nb + nb * nb) / n**3
        + 6 * delta**2 * (na * na * m2b + nb * nb * m2a) / n**2
        + 4 * delta * (na * m3b - nb * m3a) / n
    )
    return torch.tensor([n, ma + delta * nb / n, m2, m3, m4], dtype=torch.float64)


def excess_kurtosis(stats: torch.Tensor) -> float | None:
    """Fisher's excess kurtosis n·M4/M2² − 3 of the values ``stats`` describes (a normal
    distribution: 0; population moments, as ``scipy.stats.kurtosis(x)``); None when the values
    are constant or there are none (M2 = 0)."""
    n, _, m2, _, m4 = stats.tolist()
    if n == 0 or m2 <= 0 or not math.isfinite(m2) or not math.isfinite(m4):
        return None
    return n * m4 / (m2 * m2) - 3.0


def outlier_features(
    layer_hits: torch.Tensor,
    position_hits: torch.Tensor,
    positions: int,
    layer_share: float,
    position_share: float,
) -> list[int]:
    """The hidden dimensions that are outlier features by the LLM.int8() criteria (Dettmers et
    al. 2022, §4.1): ≥ ``layer_share`` of the layers and ≥ ``position_share`` of the positions.

    ``layer_hits[l, i]``: whether dimension i reached the magnitude threshold at some position in
    layer l; ``position_hits[i]``: at how many of the ``positions`` token positions it reached it
    in some layer. Returns the dimensions, ascending.
    """
    layers = layer_hits.shape[0]
    if layers == 0 or positions == 0:
        return []
    in_layers = layer_hits.sum(0).double() >= layer_share * layers
    at_positions = position_hits.double() >= position_share * positions
    return torch.nonzero(in_layers & at_positions).flatten().tolist()
