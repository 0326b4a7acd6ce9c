"""RMSNorm, normalized in float32 and cast back before the weight, as Hugging Face's
LlamaRMSNorm does (one fused torch op for the normalization)."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        normed = nn.functional.rms_norm(
            hidden_states.float(), self.weight.shape, eps=self.variance_epsilon
        )
        return self.weight * normed.to(hidden_states.dtype)
