"""Linear layers and the input embedding, whose weights a quantization method object creates,
loads and applies (chosen when the model is built, see layers/quant/builder.py)."""

from __future__ import annotations

import torch
from torch import nn

from purellm.layers.quant.base import DenseMethod, LinearMethod, parameter, rows_loader


class Linear(nn.Module):
    """y = x W^T + b for one projection, or several fused into one matmul (`output_sizes`: q,
    k, v or gate, up, one after another); the loader fills each shard's rows."""

    def __init__(self, in_features: int, output_sizes: list[int], bias: bool, method: LinearMethod):
        super().__init__()
        self.in_features = in_features
        self.output_sizes = list(output_sizes)
        self.out_features = sum(output_sizes)
        self.method = method
        method.create_weights(self)
        self.bias = None
        if bias:
            self.bias = parameter(torch.empty(self.out_features), rows_loader(self))

    def shard_rows(self, shard: int) -> slice:
        start = sum(self.output_sizes[:shard])
        return slice(start, start + self.output_sizes[shard])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.apply(self, x)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.output_sizes}, {type(self.method).__name__}"


class VocabEmbedding(nn.Module):
    """Token ids -> rows of the embedding matrix, which its method keeps (dense, or a GGUF's
    own blocks, or int8) and looks up."""

    def __init__(self, num_embeddings: int, embedding_dim: int, method):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.in_features, self.out_features = embedding_dim, num_embeddings
        self.output_sizes = [num_embeddings]
        self.method = method
        method.create_weights(self)

    def shard_rows(self, shard: int) -> slice:
        return slice(0, self.num_embeddings)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.method.embed(self, input_ids)


class DenseEmbedding(DenseMethod):
    """A dense [vocab, hidden] table (DenseMethod's weight, as VocabEmbedding's out and in)."""

    def embed(self, layer: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        return layer.weight[input_ids]
