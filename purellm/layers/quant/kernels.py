"""torch's CPU weight-only kernels, for the steps where reading the weights is the cost.

- `Int4Kernel`: a GGUF's own Q4_0/Q4_1/Q4_K values (exact 4-bit values, a scale and zero per 32
  inputs) through `_weight_int4pack_mm_for_cpu`, for every step, or up to SMALL_BATCH rows when a
  dense copy is kept beside it.
- `Int8Kernel`: per-output-channel int8 through `_weight_int8pack_mm` up to SMALL_BATCH rows;
  above, the dense copy if kept, else the int8 weight converted QUANTIZE_ROWS rows at a time.
  For a GGUF's other quantized types (Q8_0, Q5/Q6/Q2/Q3 K-quants, re-quantized per row), its LM
  head, and every linear under `quantization="int8"`.
The kernels vectorise bf16 activations only (a 3072x576 int8 GEMV: 61 us in bf16, 842 us in
float32), so float32 models cast the rows of a small step to KERNEL_DTYPE and back."""

from __future__ import annotations

import functools

import torch
from torch import nn

from purellm.layers.quant.base import DenseMethod, LinearMethod
from purellm.layers.quant.config import GROUP, int4_form
from purellm.layers.quant.gguf_blocks import dequantize_rows

KERNEL_DTYPE = torch.bfloat16
SMALL_BATCH = 4
"""Up to this many rows the weight-only kernels beat a dense matmul on a CPU (BENCHMARKS.md)."""
INT4_GROUPS = (32, 64, 128, 256)
"""The group sizes torch's CPU int4 kernel takes."""
QUANTIZE_ROWS = 4096
"""Rows quantized, or converted for a large step, at a time (a few MB stay in cache)."""
CONVERT_VALUES = 1 << 20
"""Weights turned into a kernel form at a time: temporaries of a few MB, not of a layer."""


def to_kernel_form(layer: nn.Module, gguf) -> None:
    """Give a loaded GGUF linear (its GGUFLinearMethod `gguf`) a CPU kernel method, dropping
    the raw blocks: int4 when every shard is a Q4 type, else int8 per channel. Converted a
    few rows at a time (convert_rows), so no whole-layer temporaries."""
    shards = [(kind, gguf.shard_raw(layer, i)) for i, kind in enumerate(gguf.types)]
    q4 = int4_form(gguf.types, layer.out_features, layer.in_features)
    method = Int4Kernel() if q4 else Int8Kernel()
    method.create(layer, functools.partial(block_rows, shards, layer.in_features, q4=q4))
    dense = gguf.dense_weight(layer).to(gguf.dtype) if gguf.dense_copy else None
    del layer.weight
    layer.register_buffer("dense", dense)
    layer.method = method


def convert_rows(inputs: int) -> int:
    """Rows per conversion step: about CONVERT_VALUES weights, a multiple of 64 rows."""
    return max(64, CONVERT_VALUES // inputs // 64 * 64)


def block_rows(
    shards: list[tuple[str, torch.Tensor]], columns: int, start: int, end: int, *, q4: bool
):
    """Rows start..end of a matrix stored as GGUF-block shards one after another, each (type,
    raw uint8 [rows, row_bytes]): Q4 (values, scales, mins) when `q4`, else float32 rows."""
    parts, offset = [], 0
    for kind, raw in shards:
        low, high = max(start, offset), min(end, offset + raw.shape[0])
        if low < high:
            rows = raw[low - offset : high - offset]
            parts.append(q4_values(rows, kind) if q4 else dequantize_rows(rows, kind, columns))
        offset += raw.shape[0]
    if q4:
        return tuple(torch.cat(field) for field in zip(*parts, strict=True))
    return torch.cat(parts)  # [end - start, columns]


def q4_values(raw: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_0/Q4_1/Q4_K rows uint8 [rows, row_bytes] -> (q uint8 [rows, in] values 0-15, scales
    and mins float32 [rows, in / GROUP]) with weight = q * scale + min, exactly."""
    rows = raw.shape[0]
    if kind == "Q4_K":
        return _q4_k_values(raw)
    blocks = raw.view(rows, -1, 18 if kind == "Q4_0" else 20)  # [rows, blocks, bytes]
    d = _half(blocks, 0)
    packed = blocks[..., -16:]  # [rows, blocks, 16]
    q = torch.cat((packed & 15, packed >> 4), dim=-1)  # [rows, blocks, 32]
    mins = _half(blocks, 2) if kind == "Q4_1" else -8 * d
    return q.reshape(rows, -1), d, mins  # q [rows, in]


def _q4_k_values(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_K super-blocks of 256: fp16 d, dmin, 12 bytes of 6-bit scales and mins for 8 groups
    of 32, then 128 bytes of nibbles (each 32 bytes: a group in low nibbles, the next in high).
    Group g: weight = d * sc[g] * q - dmin * m[g]."""
    rows = raw.shape[0]
    blocks = raw.view(rows, -1, 144)  # [rows, super-blocks, 144]
    d, dmin = _half(blocks, 0), _half(blocks, 2)  # [rows, sb]
    low, mid, high = blocks[..., 4:8], blocks[..., 8:12], blocks[..., 12:16]
    sc = torch.cat((low & 63, (high & 15) | ((low >> 2) & 48)), dim=-1)  # [rows, sb, 8]
    m = torch.cat((mid & 63, (high >> 4) | ((mid >> 2) & 48)), dim=-1)  # [rows, sb, 8]
    packed = blocks[..., 16:].reshape(rows, -1, 4, 1, GROUP)  # [rows, sb, pairs, 1, 32]
    q = torch.cat((packed & 15, packed >> 4), dim=3)  # [rows, sb, pairs, 2, 32]
    scales = (d[..., None] * sc.float()).view(rows, -1)  # [rows, in / GROUP]
    mins = -(dmin[..., None] * m.float()).view(rows, -1)  # [rows, in / GROUP]
    return q.reshape(rows, -1), scales, mins  # q [rows, in]


def _half(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The fp16 field at byte `start` of every block, as float32 [rows, blocks]."""
    pair = blocks[..., start : start + 2].contiguous()  # [rows, blocks, 2]
    return pair.view(torch.float16).squeeze(-1).float()


@torch.no_grad()
def fill_int4(packed: torch.Tensor, pairs: torch.Tensor, rows) -> None:
    """Fill torch's CPU int4 form, `packed` uint8 [out, in / 2] and `pairs` [groups, out, 2]
    (scale, zero), from `rows(start, end)` -> (q, scales, mins) as Int4Kernel.create takes."""
    out, inputs = packed.shape[0], packed.shape[1] * 2
    step = convert_rows(inputs)
    for start in range(0, out, step):
        end = min(start + step, out)
        q, scales, mins = rows(start, end)
        q32 = q.to(torch.int32).contiguous()
        packed[start:end] = torch._convert_weight_to_int4pack_for_cpu(q32, 1)
        zeros = mins + 8 * scales  # torch's convention: w = (q - 8) * scale + zero
        pairs[:, start:end] = torch.stack((scales, zeros), dim=-1).transpose(0, 1)
        # [rows, groups, 2] -> [groups, rows, 2]


@torch.no_grad()
def fill_int8(qweight: torch.Tensor, scales: torch.Tensor, rows) -> None:
    """Fill per-row int8 `qweight` [out, in] and `scales` [out] from `rows(start, end)` -> the
    float weight's rows, a few at a time."""
    out, inputs = qweight.shape
    step = convert_rows(inputs)
    for start in range(0, out, step):
        end = min(start + step, out)
        q, part = quantize_int8(rows(start, end), inputs, scales.dtype)
        qweight[start:end], scales[start:end] = q, part.view(-1)


class Int4Kernel(LinearMethod):
    def __init__(self, group_size: int = GROUP):
        self.group_size = group_size

    @torch.no_grad()
    def create(self, layer: nn.Module, rows) -> None:
        """`rows(start, end)` -> (q uint8 [end - start, in] values 0-15, scales and mins
        float32 [end - start, in / group_size]) with w = q * scale + min, asked for
        convert_rows(in) rows at a time (torch packs each block of 64 rows on its own)."""
        out, inputs = layer.out_features, layer.in_features
        packed = torch.empty(out, inputs // 2, dtype=torch.uint8)
        pairs = torch.empty(inputs // self.group_size, out, 2, dtype=KERNEL_DTYPE)
        fill_int4(packed, pairs, rows)
        layer.register_buffer("packed", packed)
        layer.register_buffer("scales_zeros", pairs)  # [groups, out, 2]

    def apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if layer.dense is not None and x.shape[0] > SMALL_BATCH:
            return nn.functional.linear(x, layer.dense, layer.bias)
        small = x.to(KERNEL_DTYPE)
        packed, pairs = layer.packed, layer.scales_zeros
        out = torch._weight_int4pack_mm_for_cpu(small, packed, self.group_size, pairs)
        out = out.to(x.dtype)
        return out if layer.bias is None else out + layer.bias


class Int8Kernel(LinearMethod):
    """int8 [out, in] `qweight` with per-row `scales` [out] in the kernel's activation dtype;
    `dense`, where kept, is the float weight for large steps. Under `quantization="int8"` the
    layer is built dense (`dtype`) and converted once loaded."""

    def __init__(self, dtype: torch.dtype | None = None):
        self.dtype = dtype

    def create_weights(self, layer: nn.Module) -> None:
        DenseMethod(self.dtype).create_weights(layer)

    @torch.no_grad()
    def create(self, layer: nn.Module, rows, device: torch.device | None = None) -> None:
        """`rows(start, end)` -> the float weight's rows [end - start, in], asked for
        convert_rows(in) rows at a time; scales in bf16 on the CPU, else the model's dtype."""
        out, inputs = layer.out_features, layer.in_features
        device = device or torch.device("cpu")
        dtype = KERNEL_DTYPE if device.type == "cpu" else self.dtype
        qweight = torch.empty(out, inputs, dtype=torch.int8, device=device)
        scales = torch.empty(out, dtype=dtype, device=device)
        fill_int8(qweight, scales, rows)
        layer.register_buffer("qweight", qweight)
        layer.register_buffer("scales", scales)  # [out]

    def process_after_loading(self, layer: nn.Module) -> None:
        """`quantization="int8"`: the loaded dense weight becomes int8."""
        weight = layer.weight
        del layer.weight
        self.create(layer, lambda start, end: weight[start:end], weight.device)
        layer.register_buffer("dense", None)

    def apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= SMALL_BATCH:
            small = x.to(layer.scales.dtype)
            out = torch._weight_int8pack_mm(small, layer.qweight, layer.scales).to(x.dtype)
        elif layer.dense is not None:
            out = nn.functional.linear(x, layer.dense)
        else:
            out = self._dequantized_matmul(layer, x)
        return out if layer.bias is None else out + layer.bias

    def _dequantized_matmul(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """x @ (int8 weight).T a chunk of rows at a time, each chunk converted into one small
        buffer, then the per-channel scales (a float copy of the whole weight is never made)."""
        rows, width = layer.qweight.shape
        part = x.new_empty(min(rows, QUANTIZE_ROWS), width)  # [chunk, in]
        out = x.new_empty(x.shape[0], rows)  # [M, out]
        for start in range(0, rows, QUANTIZE_ROWS):
            end = min(start + QUANTIZE_ROWS, rows)
            chunk = part[: end - start]
            chunk.copy_(layer.qweight[start:end])
            out[:, start:end] = x @ chunk.t()
        return out.mul_(layer.scales.to(x.dtype))

    def dense_weight(self, layer: nn.Module) -> torch.Tensor:
        return layer.qweight.float() * layer.scales.float()[:, None]


@torch.no_grad()
def quantize_int8(
    weight: torch.Tensor, group: int, scale_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 [rows, width], scales [rows, width / group] in `scale_dtype`): symmetric, one scale
    per `group` values of a row, QUANTIZE_ROWS rows at a time (no float32 copy of a whole LM
    head)."""
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


def to_q8_0(weight: torch.Tensor) -> torch.Tensor:
    """A float [rows, width] matrix as GGUF Q8_0 rows, uint8 [rows, width / 32 * 34]: per block
    of 32 an fp16 scale then 32 int8 values (`quantization="int8"`'s tied embedding)."""
    rows = weight.shape[0]
    q, scales = quantize_int8(weight, GROUP, torch.float16)
    d = scales.view(torch.uint8).view(rows, -1, 2)  # [rows, blocks, 2]
    values = q.view(torch.uint8).view(rows, -1, GROUP)  # [rows, blocks, 32]
    return torch.cat((d, values), dim=-1).view(rows, -1)  # [rows, blocks * 34]
