"""The ternary linear layer (imported only when the quantizer runs: torch stays lazy)."""

from __future__ import annotations

import torch


class TernaryLinear(torch.nn.Module):
    """A linear layer whose weight is ``scale[:, None] * codes`` (codes int8 in {-1, 0, 1})."""

    def __init__(self, linear: torch.nn.Linear, threshold: float):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().mean(dim=1).clamp_min(1e-12)
        codes = torch.clamp(torch.round(weight / (scale[:, None] * threshold)), -1, 1)
        self.register_buffer("codes", codes.to(torch.int8))
        self.register_buffer("scale", scale)
        self.bias = linear.bias
        self.dtype = linear.weight.dtype

    def dense_weight(self) -> torch.Tensor:
        return (self.codes.float() * self.scale[:, None]).to(self.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.dense_weight(), self.bias)
