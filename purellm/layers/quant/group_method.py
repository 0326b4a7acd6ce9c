"""AWQ, GPTQ and compressed-tensors (pack-quantized) linears: each checkpoint's packing turned,
as it loads, into one form (layers/quant/packed.py: 4- or 8-bit values along the inputs, a
scale and integer zero per group, GPTQ's act-order `g_idx`), dequantized into the model's
shared scratch buffer right before each matmul, with plain torch ops on every device."""

from __future__ import annotations

import torch
from torch import nn

from purellm.layers.quant.base import DenseMethod, LinearMethod, Scratch, parameter
from purellm.layers.quant.config import CheckpointQuant
from purellm.layers.quant.kernels import INT4_GROUPS, Int4Kernel
from purellm.layers.quant.packed import GroupQuantWeight, from_awq, from_compressed, from_gptq

ROWS = 1024
"""Rows dequantized at a time: the float32 temporaries stay a few tens of MB."""
PIECES = {
    "awq": ("qweight", "qzeros", "scales"),
    "gptq": ("qweight", "qzeros", "scales"),
    "compressed-tensors": ("weight_packed", "weight_scale", "weight_shape"),
}


class GroupQuantMethod(LinearMethod):
    def __init__(
        self,
        quant: CheckpointQuant,
        scratch: Scratch,
        dtype: torch.dtype,
        dense: bool = False,
        kernels: bool = False,
    ):
        """`dense` (`quantization="none"`): dequantize into a dense weight once loaded;
        `kernels` (the CPU in bf16): 4-bit weights in groups of 32-256 on torch's int4 kernel."""
        self.quant, self.scratch, self.dtype = quant, scratch, dtype
        self.dense, self.kernels = dense, kernels
        self.required = PIECES[quant.method] + self._extra_pieces()
        self.pending: dict[int, dict[str, torch.Tensor]] = {}

    def _extra_pieces(self) -> tuple[str, ...]:
        if self.quant.method == "gptq" and self.quant.desc_act:
            return ("g_idx",)
        if self.quant.method == "compressed-tensors" and not self.quant.symmetric:
            return ("weight_zero_point",)
        return ()

    def create_weights(self, layer: nn.Module) -> None:
        """One empty slot per checkpoint tensor (each with its loader), and the packed form."""
        bits, inputs = self.quant.bits, layer.in_features
        self.group_size = self.quant.group_size if self.quant.group_size > 0 else inputs
        groups = -(-inputs // self.group_size)
        for piece in self.required:
            layer.register_parameter(piece, parameter(torch.empty(0), self._loader(layer, piece)))
        if self.quant.method == "gptq" and "g_idx" not in self.required:
            ignored = parameter(torch.empty(0), lambda *args: None)
            ignored.optional = True  # written by most GPTQ tools, meaningless without desc_act
            layer.register_parameter("g_idx", ignored)
        out = layer.out_features
        layer.register_buffer("q_packed", torch.empty(out, inputs * bits // 8, dtype=torch.uint8))
        layer.register_buffer("q_scales", torch.empty(out, groups, dtype=torch.float32))
        layer.register_buffer("q_zeros", torch.empty(out, groups, dtype=torch.uint8))
        shards = len(layer.output_sizes)
        wanted = "g_idx" in self.required
        order = torch.empty(shards, inputs, dtype=torch.int32) if wanted else None
        layer.register_buffer("group_order", order)  # [shards, in]: each input's group

    def _loader(self, layer: nn.Module, piece: str):
        def load(param: nn.Parameter, tensor: torch.Tensor, shard: int | None = None) -> None:
            index = shard or 0
            pieces = self.pending.setdefault(index, {})
            pieces[piece] = tensor
            if all(name in pieces for name in self.required):
                self._place(layer, index, self._convert(self.pending.pop(index)))

        return load

    def _convert(self, pieces: dict[str, torch.Tensor]) -> GroupQuantWeight:
        q = self.quant
        if q.method == "awq":
            return from_awq(pieces["qweight"], pieces["qzeros"], pieces["scales"], q.group_size)
        if q.method == "gptq":
            return from_gptq(
                pieces["qweight"],
                pieces["qzeros"],
                pieces["scales"],
                pieces.get("g_idx"),
                q.bits,
                q.group_size,
                q.symmetric,
                q.gptq_v2,
            )
        return from_compressed(
            pieces["weight_packed"],
            pieces["weight_scale"],
            pieces.get("weight_zero_point"),
            pieces["weight_shape"],
            q.bits,
            q.group_size,
            q.symmetric,
        )

    @torch.no_grad()
    def _place(self, layer: nn.Module, shard: int, weight: GroupQuantWeight) -> None:
        wanted = (layer.output_sizes[shard], layer.in_features)
        got = (weight.out_features, weight.in_features)
        if got != wanted:
            raise ValueError(f"quantized weight holds {list(got)}, the model needs {list(wanted)}")
        if weight.group_size != self.group_size and weight.g_idx is None:
            raise ValueError(f"group size {weight.group_size}, config says {self.group_size}")
        rows = layer.shard_rows(shard)
        layer.q_packed[rows] = weight.packed
        layer.q_scales[rows] = weight.scales.float()
        layer.q_zeros[rows] = weight.zeros
        if layer.group_order is not None:
            layer.group_order[shard] = weight.group_index()

    def _int4_kernel_fits(self, layer: nn.Module) -> bool:
        return (
            self.quant.bits == 4
            and layer.group_order is None
            and self.group_size in INT4_GROUPS
            and layer.in_features % self.group_size == 0
        )

    @torch.no_grad()
    def _to_int4_kernel(self, layer: nn.Module) -> None:
        """The CPU in bf16: torch's int4 kernel, w = q * s - z * s (scale and zero in bf16)."""
        weight = self.weight_of(layer)

        def rows(start: int, end: int):
            scales = weight.scales[start:end].float()
            mins = -weight.zeros[start:end].float() * scales  # w = q * scale + min
            return weight.unpack(start, end), scales, mins

        method = Int4Kernel(self.group_size)
        method.create(layer, rows)
        self._drop_packed(layer)
        layer.register_buffer("dense", None)
        layer.method = method

    def _drop_packed(self, layer: nn.Module) -> None:
        for name in (*self.required, "g_idx", "q_packed", "q_scales", "q_zeros", "group_order"):
            if hasattr(layer, name):
                delattr(layer, name)

    def weight_of(self, layer: nn.Module, shard: int | None = None) -> GroupQuantWeight:
        """The whole weight (no act-order), or one shard's rows with its own g_idx."""
        rows = slice(None) if shard is None else layer.shard_rows(shard)
        order = None if layer.group_order is None else layer.group_order[shard]
        return GroupQuantWeight(
            layer.q_packed[rows],
            layer.q_scales[rows],
            layer.q_zeros[rows],
            self.quant.bits,
            self.group_size,
            order,
        )

    def dense_weight(self, layer: nn.Module) -> torch.Tensor:
        out = torch.empty(layer.out_features, layer.in_features, device=layer.q_packed.device)
        return self._dequantize(layer, out)

    def _dequantize(self, layer: nn.Module, out: torch.Tensor) -> torch.Tensor:
        if layer.group_order is None and layer.in_features % self.group_size == 0:
            return self._dequantize_groups(layer, out)
        for shard in range(len(layer.output_sizes)):  # act-order: each input's group looked up
            self.weight_of(layer, shard).dequantize(out=out[layer.shard_rows(shard)])
        return out

    def apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        weight = self.scratch.get(layer.out_features, layer.in_features, x.dtype, x.device)
        return nn.functional.linear(x, self._dequantize(layer, weight), layer.bias)

    def _dequantize_groups(self, layer: nn.Module, out: torch.Tensor) -> torch.Tensor:
        """(q - zero) * scale over whole groups, in float32 (exact), ROWS rows at a time."""
        rows, inputs = out.shape
        unpacked = self.weight_of(layer)
        for start in range(0, rows, ROWS):
            end = min(start + ROWS, rows)
            q = unpacked.unpack(start, end).view(end - start, -1, self.group_size).float()
            # q [rows, groups, group_size]
            q.sub_(layer.q_zeros[start:end, :, None]).mul_(layer.q_scales[start:end, :, None])
            out[start:end] = q.view(end - start, inputs)  # [rows, in]
        return out

    def process_after_loading(self, layer: nn.Module) -> None:
        if self.kernels and self._int4_kernel_fits(layer):
            self._to_int4_kernel(layer)
        if not self.dense:
            return
        weight = self.dense_weight(layer).to(self.dtype)
        self._drop_packed(layer)
        method = DenseMethod(self.dtype)
        method.create_weights(layer)
        layer.weight.copy_(weight)
        layer.method = method
