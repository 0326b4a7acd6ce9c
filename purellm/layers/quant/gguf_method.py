"""A GGUF's quantized matrices kept in the file's own blocks (memory = the file's bytes).

`GGUFLinearMethod` holds each shard's raw blocks (a fused q/k/v may mix types: Q4_K_M stores
v in Q6_K) in one flat uint8 parameter and, on every device, dequantizes the linear into the
model's shared scratch buffer right before its matmul: plain torch ops, gfx906's path. With
`kernels` (the CPU in bf16, or float32 chosen by `auto`) it hands the layer, once loaded, to a
CPU kernel form instead (layers/quant/kernels.py). `GGUFEmbeddingMethod` dequantizes only the
rows a step looks up."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from purellm.layers.quant.base import LinearMethod, Scratch, check_shape, parameter
from purellm.layers.quant.gguf_blocks import dequantize_rows, row_bytes


@dataclass
class GGUFRaw:
    """One GGUF matrix as the file stores it, rows in Hugging Face order."""

    data: torch.Tensor
    """uint8 [rows, row_bytes], or [experts, rows, row_bytes] for stacked experts."""
    type_name: str
    columns: int

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.data.shape[:-1], self.columns)

    def dequantize(self) -> torch.Tensor:
        rows = self.data.reshape(-1, self.data.shape[-1])  # [all rows, row_bytes]
        return dequantize_rows(rows, self.type_name, self.columns).view(self.shape)  # float32


class GGUFLinearMethod(LinearMethod):
    def __init__(
        self,
        types: list[str],
        scratch: Scratch,
        dtype: torch.dtype,
        kernels: bool = False,
        dense_copy: bool = False,
        chunk_values: int | None = None,
    ):
        """`dtype`: the model's; `dense_copy` (with kernels): keep the weight in it too;
        `chunk_values` (one shard only: the LM head): dequantize and multiply at most this
        many weights at a time, so the head needs no more scratch than a decoder linear."""
        if chunk_values is not None and len(types) != 1:
            raise ValueError("chunk_values needs a single-shard linear")
        self.types, self.scratch, self.dtype = list(types), scratch, dtype
        self.kernels, self.dense_copy, self.chunk_values = kernels, dense_copy, chunk_values

    def create_weights(self, layer: nn.Module) -> None:
        if len(self.types) != len(layer.output_sizes):
            raise ValueError(f"{len(self.types)} GGUF types for {len(layer.output_sizes)} shards")
        self.row_bytes = [row_bytes(t, layer.in_features) for t in self.types]
        shards = zip(layer.output_sizes, self.row_bytes, strict=True)
        sizes = [rows * width for rows, width in shards]
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        flat = torch.empty(self.offsets[-1], dtype=torch.uint8)
        layer.weight = parameter(flat, self._loader(layer))

    def _loader(self, layer: nn.Module):
        @torch.no_grad()
        def load(param: nn.Parameter, tensor, shard: int | None = None) -> None:
            index = shard or 0
            if not isinstance(tensor, GGUFRaw) or tensor.type_name != self.types[index]:
                kind = getattr(tensor, "type_name", "dense")
                raise ValueError(f"weight: stored as {kind}, expected {self.types[index]}")
            check_shape("weight", tensor.shape, (layer.output_sizes[index], layer.in_features))
            self.shard_raw(layer, index).copy_(tensor.data)

        return load

    def shard_raw(self, layer: nn.Module, shard: int) -> torch.Tensor:
        start, end = self.offsets[shard], self.offsets[shard + 1]
        return layer.weight[start:end].view(-1, self.row_bytes[shard])  # [rows, row_bytes]

    def dequantize_into(self, layer: nn.Module, out: torch.Tensor) -> torch.Tensor:
        """The whole weight [out, in] written into `out` (any float dtype)."""
        for shard, kind in enumerate(self.types):
            rows = out[layer.shard_rows(shard)]
            dequantize_rows(self.shard_raw(layer, shard), kind, layer.in_features, out=rows)
        return out

    def dense_weight(self, layer: nn.Module) -> torch.Tensor:
        out = torch.empty(layer.out_features, layer.in_features, device=layer.weight.device)
        return self.dequantize_into(layer, out)

    def apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        rows, columns = layer.out_features, layer.in_features
        step = chunk_rows(rows, columns, self.chunk_values)
        if step == rows:
            weight = self.scratch.get(rows, columns, x.dtype, x.device)  # [out, in]
            return nn.functional.linear(x, self.dequantize_into(layer, weight), layer.bias)
        out = x.new_empty(x.shape[0], rows)  # [M, out]
        raw = self.shard_raw(layer, 0)
        for start in range(0, rows, step):
            end = min(start + step, rows)
            weight = self.scratch.get(end - start, columns, x.dtype, x.device)  # [chunk, in]
            dequantize_rows(raw[start:end], self.types[0], columns, out=weight)
            torch.matmul(x, weight.t(), out=out[:, start:end])
        return out if layer.bias is None else out + layer.bias

    def process_after_loading(self, layer: nn.Module) -> None:
        if self.kernels:
            from purellm.layers.quant.kernels import to_kernel_form

            to_kernel_form(layer, self)


def chunk_rows(rows: int, columns: int, chunk_values: int | None) -> int:
    """Rows of a linear dequantized at a time: all, or as many as `chunk_values` holds."""
    return rows if chunk_values is None else min(rows, max(1, chunk_values // columns))


class GGUFEmbeddingMethod(LinearMethod):
    def __init__(self, type_name: str, dtype: torch.dtype):
        self.types, self.dtype = [type_name], dtype

    def create_weights(self, layer: nn.Module) -> None:
        self.row_bytes = row_bytes(self.types[0], layer.embedding_dim)
        flat = torch.empty(layer.num_embeddings * self.row_bytes, dtype=torch.uint8)
        layer.weight = parameter(flat, self._loader(layer))

    def _loader(self, layer: nn.Module):
        @torch.no_grad()
        def load(param: nn.Parameter, tensor, shard: int | None = None) -> None:
            if not isinstance(tensor, GGUFRaw) or tensor.type_name != self.types[0]:
                kind = getattr(tensor, "type_name", "dense")
                raise ValueError(f"weight: stored as {kind}, expected {self.types[0]}")
            check_shape("weight", tensor.shape, (layer.num_embeddings, layer.embedding_dim))
            param.view(-1, self.row_bytes).copy_(tensor.data)  # [vocab, row_bytes]

        return load

    def embed(self, layer: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        table = layer.weight.view(layer.num_embeddings, self.row_bytes)  # [vocab, row_bytes]
        rows = dequantize_rows(table[input_ids], self.types[0], layer.embedding_dim)
        return rows.to(self.dtype)  # [T, hidden]
