"""A GGUF's stacked experts (`ffn_gate_exps`, `ffn_up_exps`, `ffn_down_exps`) kept in the
file's own blocks: each expert a step hits is dequantized into the model's shared scratch
buffer right before its matmul (plain torch ops on every device, like GGUFLinearMethod)."""

from __future__ import annotations

import torch
from torch import nn

from purellm.layers.moe import Experts, MoEOptions
from purellm.layers.quant.base import Scratch, check_shape, parameter
from purellm.layers.quant.gguf_blocks import dequantize_rows, row_bytes
from purellm.layers.quant.gguf_method import GGUFRaw


class GGUFExperts(Experts):
    def __init__(self, options: MoEOptions, hidden_size: int, types: list[str], scratch: Scratch):
        """`types`: the GGUF types of the gate, up and down stacks."""
        nn.Module.__init__(self)
        experts, inter = options.num_experts, options.intermediate_size
        self.num_experts, self.intermediate_size = experts, inter
        self.hidden_size, self.types, self.scratch = hidden_size, list(types), scratch
        widths = (hidden_size, hidden_size, inter)
        gate, up, down = (row_bytes(t, n) for t, n in zip(types, widths, strict=True))
        self.row_bytes = [gate, up, down]
        self.w13 = parameter(
            torch.empty(experts, inter * (gate + up), dtype=torch.uint8), self.load
        )
        self.w2 = parameter(torch.empty(experts, hidden_size * down, dtype=torch.uint8), self.load)

    def _blocks(self, param: nn.Parameter, shard: int | None) -> tuple[torch.Tensor, int]:
        """The byte columns [experts, bytes] of one stack, and its index in `types`."""
        if param is self.w2:
            return param, 2
        width = self.intermediate_size * self.row_bytes[0]
        return (param[:, :width], 0) if shard == 0 else (param[:, width:], 1)

    @torch.no_grad()
    def load(self, param: nn.Parameter, tensor, shard: int | None = None, expert=None) -> None:
        blocks, index = self._blocks(param, shard)
        kind = self.types[index]
        if expert is not None or not isinstance(tensor, GGUFRaw) or tensor.type_name != kind:
            got = getattr(tensor, "type_name", "dense")
            raise ValueError(f"experts: stored as {got} one by one or stacked, expected {kind}")
        rows = self.hidden_size if index == 2 else self.intermediate_size
        columns = self.intermediate_size if index == 2 else self.hidden_size
        check_shape("experts", tensor.shape, (self.num_experts, rows, columns))
        blocks.copy_(tensor.data.reshape(self.num_experts, -1))  # [experts, rows * row_bytes]

    def _dequantized(self, expert: int, index: int, x: torch.Tensor, out: torch.Tensor):
        param = self.w2 if index == 2 else self.w13
        blocks = self._blocks(param, None if index == 2 else index)[0][expert]
        columns = self.intermediate_size if index == 2 else self.hidden_size
        raw = blocks.view(-1, self.row_bytes[index])  # [rows, row_bytes]
        return dequantize_rows(raw, self.types[index], columns, out=out)

    def gate_up(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        inter = self.intermediate_size
        out = self.scratch.get(2 * inter, self.hidden_size, x.dtype, x.device)  # [2I, hidden]
        self._dequantized(expert, 0, x, out[:inter])
        self._dequantized(expert, 1, x, out[inter:])
        return out

    def down(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        out = self.scratch.get(self.hidden_size, self.intermediate_size, x.dtype, x.device)
        return self._dequantized(expert, 2, x, out)
