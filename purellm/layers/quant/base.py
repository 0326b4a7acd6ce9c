"""What every quantization method shares: the parameter helper that attaches a weight loader,
the dense method, and the one scratch buffer that dequantizing methods fill before a matmul."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

WeightLoader = Callable[..., None]


def parameter(data: torch.Tensor, loader: WeightLoader) -> nn.Parameter:
    """A frozen parameter that carries its `weight_loader(param, tensor, shard=None)`."""
    param = nn.Parameter(data, requires_grad=False)
    param.weight_loader = loader
    return param


def as_float(tensor) -> torch.Tensor:
    """A checkpoint tensor as floats: packed checkpoint blocks (GGUFRaw) dequantized."""
    return tensor.dequantize() if hasattr(tensor, "dequantize") else tensor


def check_shape(name: str, got: tuple, wanted: tuple) -> None:
    if tuple(got) != tuple(wanted):
        raise ValueError(f"{name}: checkpoint shape {tuple(got)}, model {tuple(wanted)}")


@torch.no_grad()
def default_loader(param: nn.Parameter, tensor, shard: int | None = None) -> None:
    """For parameters without their own loader (norms): a checked copy."""
    tensor = as_float(tensor)
    check_shape("weight", tensor.shape, param.shape)
    param.copy_(tensor)


def rows_loader(layer: nn.Module) -> WeightLoader:
    """Copies a dense tensor, or one shard's rows of a fused one, checking the shape."""

    @torch.no_grad()
    def load(param: nn.Parameter, tensor, shard: int | None = None) -> None:
        tensor = as_float(tensor)
        destination = param if shard is None else param[layer.shard_rows(shard)]
        check_shape("weight", tensor.shape, destination.shape)
        destination.copy_(tensor)

    return load


class Scratch:
    """One buffer, grown on demand, that the dequantize-then-matmul methods of a model share:
    a linear's weight exists in dense form only while its matmul runs."""

    def __init__(self):
        self.buffer: torch.Tensor | None = None

    def get(self, rows: int, columns: int, dtype: torch.dtype, device) -> torch.Tensor:
        needed = rows * columns * dtype.itemsize
        if self.buffer is None or self.buffer.numel() < needed or self.buffer.device != device:
            self.buffer = torch.empty(needed, dtype=torch.uint8, device=device)
        return self.buffer[:needed].view(dtype).view(rows, columns)  # [rows, columns]


class LinearMethod:
    """Creates a linear's tensors, loads them, prepares them once loaded, and applies them."""

    def create_weights(self, layer: nn.Module) -> None:
        raise NotImplementedError

    def process_after_loading(self, layer: nn.Module) -> None:
        """Called once every tensor of `layer` is loaded (and tied)."""

    def apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def tie(self, layer: nn.Module, embedding: nn.Module) -> None:
        """An LM head that shares the input embedding's weight."""
        layer.weight = embedding.weight

    def dense_weight(self, layer: nn.Module) -> torch.Tensor:
        """float32 [out, in]: the weight as it acts (for tests and conversions)."""
        raise NotImplementedError


class DenseMethod(LinearMethod):
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    def create_weights(self, layer: nn.Module) -> None:
        shape = (layer.out_features, layer.in_features)
        layer.weight = parameter(torch.empty(shape, dtype=self.dtype), rows_loader(layer))

    def apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, layer.weight, layer.bias)

    def dense_weight(self, layer: nn.Module) -> torch.Tensor:
        return layer.weight.float()
