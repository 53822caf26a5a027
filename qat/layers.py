"""Small layers shared by the zoo's topologies (no quantisation of their own)."""
from __future__ import annotations

import torch
from torch import nn


class PositiveScale(nn.Module):
    """y = exp(log_scale) * x: a learned scalar that keeps the argmax of x."""

    def __init__(self, init: float = 0.1):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(float(init)).log())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.log_scale.exp()
