"""Weight-only int8 linears (per-output-channel symmetric scales), opt-in with
`quantization="int8"`: half the bytes of bf16 weights to read per decode step."""

from __future__ import annotations

import torch
from torch import nn

SMALL_BATCH = 4
"""Up to this many rows `torch._weight_int8pack_mm` is fastest (a GEMV on int8 weights); above
it, dequantizing the weight and running a plain matmul is (measured in BENCHMARKS.md)."""


class Int8Linear(nn.Module):
    def __init__(self, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.register_buffer("weight", weight)  # [out, in] int8
        self.register_buffer("scales", scales)  # [out], in the activation dtype
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        weight = linear.weight.float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127
        quantized = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
        layer = cls(quantized, scales.to(linear.weight.dtype), linear.bias)
        if hasattr(linear, "output_sizes"):
            layer.output_sizes = linear.output_sizes
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= SMALL_BATCH:
            out = torch._weight_int8pack_mm(x, self.weight, self.scales)
        else:
            out = nn.functional.linear(x, self.weight.to(x.dtype)) * self.scales
        return out if self.bias is None else out + self.bias


def quantize_linears(model: nn.Module) -> int:
    """Replace every nn.Linear in `model` (LM head included) by an Int8Linear; returns how many."""
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8Linear.from_linear(linear))
    return len(targets)
