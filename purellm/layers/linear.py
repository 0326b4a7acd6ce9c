"""Linear layers that fuse several checkpoint projections into one matmul."""

from __future__ import annotations

from torch import nn


class MergedLinear(nn.Linear):
    """One weight of `sum(output_sizes)` rows holding several projections one after another
    (q, k, v or gate, up); the loader fills each shard's rows."""

    def __init__(self, in_features: int, output_sizes: list[int], bias: bool = False):
        super().__init__(in_features, sum(output_sizes), bias=bias)
        self.output_sizes = list(output_sizes)

    def shard_rows(self, shard: int) -> slice:
        start = sum(self.output_sizes[:shard])
        return slice(start, start + self.output_sizes[shard])
