"""Weight-only quantized linears: fewer bytes to read per decode step, where decoding a few
sequences is bound by reading the weights.

- `Int4Linear`: a GGUF's own Q4_0/Q4_1/Q4_K blocks (exact 4-bit values, a scale and zero per
  32 inputs) through torch's CPU int4 GEMV for up to SMALL_BATCH rows; the dense weight, kept
  beside it, for larger steps, where the dense matmul is faster.
- `Int8Linear`: per-output-channel int8, quantized at load. With `keep_dense` (the LM head and
  the other quantized matrices of a GGUF) it is used up to SMALL_BATCH rows like the above;
  without (`quantization="int8"`, opt-in) it replaces the dense weight, which is dequantized
  for larger steps.
"""

from __future__ import annotations

import torch
from torch import nn

KERNEL_DTYPE = torch.bfloat16
"""The activation dtype the CPU int4/int8 GEMVs run in: torch vectorises them for bf16 only
(a 3072x576 int8 GEMV: 61 us in bf16, 842 us in float32). float32 models cast the few rows
of a small step to it and back."""
SMALL_BATCH = 4
"""Up to this many rows the weight-only kernels beat the bf16 matmul on a CPU (BENCHMARKS.md:
3072x576 at 4 rows: int4 100 us, int8 108 us, bf16 160 us; at 16 rows bf16 wins)."""
GROUP = 32
QUANTIZE_ROWS = 4096


class Int4Linear(nn.Module):
    def __init__(
        self, linear: nn.Linear, q: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor
    ):
        """q [out, in] values 0-15, scales and mins [out, in / GROUP]: w = q * scale + min."""
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        if hasattr(linear, "output_sizes"):
            self.output_sizes = linear.output_sizes
        packed = torch._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(), 1)
        self.register_buffer("packed", packed)
        zeros = mins + 8 * scales  # torch's convention: w = (q - 8) * scale + zero
        scales_zeros = torch.stack((scales, zeros), dim=-1)  # [out, in / GROUP, 2]
        self.register_buffer(
            "scales_zeros", scales_zeros.transpose(0, 1).contiguous().to(KERNEL_DTYPE)
        )  # [in / GROUP, out, 2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > SMALL_BATCH:
            return nn.functional.linear(x, self.weight, self.bias)
        small = x.to(KERNEL_DTYPE)
        out = torch._weight_int4pack_mm_for_cpu(small, self.packed, GROUP, self.scales_zeros)
        out = out.to(x.dtype)
        return out if self.bias is None else out + self.bias


class Int8Linear(nn.Module):
    def __init__(
        self,
        weight: torch.Tensor,
        scales: torch.Tensor,
        bias: torch.Tensor | None,
        dense: torch.Tensor | None = None,
    ):
        super().__init__()
        self.register_buffer("weight", weight)  # [out, in] int8
        self.register_buffer("scales", scales)  # [out], in the kernel's activation dtype
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.dense = dense
        """[out, in] the float weight for large steps, or None to dequantize the int8 one."""

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, keep_dense: bool = False) -> Int8Linear:
        """Quantized QUANTIZE_ROWS rows at a time: a float32 copy of a whole LM head would be
        hundreds of MB of peak memory."""
        rows = linear.weight.shape[0]
        device = linear.weight.device
        quantized = torch.empty(linear.weight.shape, dtype=torch.int8, device=device)
        scales = torch.empty(rows, dtype=torch.float32, device=device)
        for start in range(0, rows, QUANTIZE_ROWS):
            part = linear.weight[start : start + QUANTIZE_ROWS].to(torch.float32, copy=True)
            part_scales = part.abs().amax(dim=1).clamp(min=1e-8) / 127
            part.div_(part_scales[:, None]).round_().clamp_(-127, 127)
            quantized[start : start + QUANTIZE_ROWS] = part
            scales[start : start + QUANTIZE_ROWS] = part_scales
        dense = linear.weight if keep_dense else None
        layer = cls(quantized, scales.to(_kernel_dtype(linear.weight)), linear.bias, dense)
        if hasattr(linear, "output_sizes"):
            layer.output_sizes = linear.output_sizes
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= SMALL_BATCH:
            small = x.to(self.scales.dtype)
            out = torch._weight_int8pack_mm(small, self.weight, self.scales).to(x.dtype)
        elif self.dense is not None:
            out = nn.functional.linear(x, self.dense)
        else:
            out = nn.functional.linear(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)
        return out if self.bias is None else out + self.bias


def _kernel_dtype(weight: torch.Tensor) -> torch.dtype:
    return KERNEL_DTYPE if weight.device.type == "cpu" else weight.dtype


def quantize_linears(model: nn.Module) -> int:
    """Replace every nn.Linear in `model` (LM head included) by an Int8Linear; returns how many."""
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in targets:
        replace_module(model, name, Int8Linear.from_linear(linear))
    return len(targets)


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
