"""Weight-only quantized linears: fewer bytes to read per decode step, where decoding a few
sequences is bound by reading the weights.

- `Int4Linear`: a GGUF's own Q4_0/Q4_1/Q4_K blocks (exact 4-bit values, a scale and zero per
  32 inputs) through torch's CPU int4 GEMV for up to SMALL_BATCH rows; the dense weight, kept
  beside it, for larger steps, where the dense matmul is faster.
- `Int8Linear`: per-output-channel int8, quantized at load. With `keep_dense` (the other
  quantized matrices of a GGUF, and an LM head it stores in float) it is used up to
  SMALL_BATCH rows like the above; without (a GGUF's LM head stored quantized, and every
  linear under `quantization="int8"`) it replaces the dense weight, converted QUANTIZE_ROWS
  rows at a time for larger steps.
- `Int8Embedding`: an embedding in int8 with Q8_0's scales per 32 values, for a GGUF's
  embedding stored quantized (and a tied one under "int8"), so that no dense vocabulary matrix
  is kept beside the int8 LM head (SmolLM2: 30 MB instead of 57 MB in bf16).
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
"""Values per scale: GGUF's block of 32, for the int4 linears and the int8 embedding."""
QUANTIZE_ROWS = 4096
"""Rows quantized, or converted for a large step, at a time: the float copy stays a few MB and
in cache for its matmul (the 49152x576 LM head in bf16 at 64 rows: 13.2 ms this way, 12.0 ms
from a dense weight; at 8 rows 6.4 and 5.8 ms)."""


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
        width = linear.weight.shape[1]
        quantized, scales = _quantize_int8(linear.weight, width, _kernel_dtype(linear.weight))
        dense = linear.weight if keep_dense else None
        layer = cls(quantized, scales.view(-1), linear.bias, dense)  # scales [out]
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
            out = self._dequantized_matmul(x)
        return out if self.bias is None else out + self.bias

    def _dequantized_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x @ (int8 weight).T a chunk of rows at a time, each chunk converted into one small
        buffer, then the per-channel scales (a float copy of the whole weight is never made)."""
        rows = self.weight.shape[0]
        part = x.new_empty(min(rows, QUANTIZE_ROWS), self.weight.shape[1])  # [chunk, in]
        out = x.new_empty(x.shape[0], rows)  # [M, out]
        for start in range(0, rows, QUANTIZE_ROWS):
            end = min(start + QUANTIZE_ROWS, rows)
            chunk = part[: end - start]
            chunk.copy_(self.weight[start:end])
            out[:, start:end] = x @ chunk.t()
        return out.mul_(self.scales.to(x.dtype))


class Int8Embedding(nn.Module):
    """An embedding kept as int8 with a float16 scale per GROUP values, the layout of
    GGUF's Q8_0: an embedding stored in Q8_0 (SmolLM2's) reads back bit-exact in float32 and
    within one bf16 step in bf16 (exact for SmolLM2's); others get a scale per 32 values
    rather than the LM head's one per row. 1.06 bytes per weight against 2 in bf16."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.dtype = weight.dtype
        q, scales = _quantize_int8(weight, GROUP, torch.float16)
        self.register_buffer("q", q)  # [vocab, hidden]
        self.register_buffer("scales", scales[..., None])  # [vocab, hidden / GROUP, 1]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        groups = self.q[input_ids].view(len(input_ids), -1, GROUP)  # [T, hidden / G, G]
        rows = groups.float() * self.scales[input_ids].float()
        return rows.view(len(input_ids), -1).to(self.dtype)  # [T, hidden]


@torch.no_grad()
def _quantize_int8(
    weight: torch.Tensor, group: int, scale_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 [rows, width], scales [rows, width / group] in `scale_dtype`): symmetric, one scale
    per `group` values of a row (a Q8_0 matrix with float16 scales comes back exactly).
    QUANTIZE_ROWS rows at a time: a float32 copy of a whole LM head would be hundreds of MB of
    peak memory."""
    rows, width = weight.shape
    q = torch.empty(rows, width, dtype=torch.int8, device=weight.device)
    scales = torch.empty(rows, width // group, dtype=scale_dtype, device=weight.device)
    for start in range(0, rows, QUANTIZE_ROWS):
        part = weight[start : start + QUANTIZE_ROWS].to(torch.float32, copy=True)
        groups = part.view(len(part), -1, group)  # [rows, width / group, group]
        part_scales = groups.abs().amax(-1) / 127  # [rows, width / group]
        groups.div_(part_scales.clamp(min=1e-12)[..., None]).round_().clamp_(-127, 127)
        q[start : start + QUANTIZE_ROWS] = part
        scales[start : start + QUANTIZE_ROWS] = part_scales
    return q, scales


def _kernel_dtype(weight: torch.Tensor) -> torch.dtype:
    return KERNEL_DTYPE if weight.device.type == "cpu" else weight.dtype


def quantize_linears(model: nn.Module) -> int:
    """Replace every nn.Linear in `model` (LM head included) by an Int8Linear; returns how many."""
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in targets:
        replace_module(model, name, Int8Linear.from_linear(linear))
    if getattr(model, "tie_word_embeddings", False):
        quantize_embedding(model)
    return len(targets)


def quantize_vocabulary(
    model: nn.Module, head_stored_quantized: bool, embedding_stored_quantized: bool
) -> None:
    """A GGUF's vocabulary matrices: the LM head gets an Int8Linear, int8 only where the file
    stored it quantized (a tied one: the embedding), else beside its dense weight; an input
    embedding the file stored quantized becomes an Int8Embedding, tied or not."""
    head = Int8Linear.from_linear(model.lm_head, keep_dense=not head_stored_quantized)
    replace_module(model, "lm_head", head)
    if embedding_stored_quantized:
        quantize_embedding(model)


def quantize_embedding(model: nn.Module) -> None:
    """The input embedding as an Int8Embedding; one whose width is not a multiple of GROUP
    stays dense."""
    weight = model.model.embed_tokens.weight
    if weight.shape[1] % GROUP == 0:
        model.model.embed_tokens = Int8Embedding(weight)


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
