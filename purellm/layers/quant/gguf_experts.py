"""A GGUF's stacked experts (`ffn_gate_exps`, `ffn_up_exps`, `ffn_down_exps`) kept in the
file's own blocks: each expert a step hits is dequantized into the model's shared scratch
buffer right before its matmul (plain torch ops on every device, like GGUFLinearMethod).
With `kernels` (the CPU, as for the linears) each stack becomes torch's CPU int4 form (Q4
types) or per-row int8 once loaded, one expert at a time."""

from __future__ import annotations

import functools

import torch
from torch import nn

from purellm.layers.moe import Experts, MoEOptions
from purellm.layers.quant.base import Scratch, check_shape, parameter
from purellm.layers.quant.config import GROUP, int4_form
from purellm.layers.quant.gguf_blocks import dequantize_rows, row_bytes
from purellm.layers.quant.gguf_method import GGUFRaw
from purellm.layers.quant.kernels import (
    KERNEL_DTYPE,
    SMALL_BATCH,
    block_rows,
    fill_int4,
    fill_int8,
)


class GGUFExperts(Experts):
    def __init__(
        self,
        options: MoEOptions,
        hidden_size: int,
        types: list[str],
        scratch: Scratch,
        kernels: bool = False,
    ):
        """`types`: the GGUF types of the gate, up and down stacks."""
        nn.Module.__init__(self)
        experts, inter = options.num_experts, options.intermediate_size
        self.num_experts, self.intermediate_size = experts, inter
        self.hidden_size, self.types, self.scratch = hidden_size, list(types), scratch
        self.kernels, self.forms = kernels, None
        widths = (hidden_size, hidden_size, inter)
        gate, up, down = (row_bytes(t, n) for t, n in zip(types, widths, strict=True))
        self.row_bytes = [gate, up, down]
        w13 = torch.empty(experts, inter * (gate + up), dtype=torch.uint8)
        self.w13 = parameter(w13, self.load)
        self.w2 = parameter(torch.empty(experts, hidden_size * down, dtype=torch.uint8), self.load)

    def _shape(self, index: int) -> tuple[int, int]:
        """(rows, columns) of one expert's gate (0), up (1) or down (2) matrix."""
        inter, hidden = self.intermediate_size, self.hidden_size
        return (hidden, inter) if index == 2 else (inter, hidden)

    def _raw(self, index: int, expert: int | None = None) -> torch.Tensor:
        """uint8 [experts, bytes] of one stack, or [rows, row_bytes] of one expert's matrix."""
        if index == 2:
            blocks = self.w2
        else:
            width = self.intermediate_size * self.row_bytes[0]
            blocks = self.w13[:, :width] if index == 0 else self.w13[:, width:]
        return blocks if expert is None else blocks[expert].view(-1, self.row_bytes[index])

    @torch.no_grad()
    def load(self, param: nn.Parameter, tensor, shard: int | None = None, expert=None) -> None:
        index = 2 if param is self.w2 else shard
        kind = self.types[index]
        if expert is not None or not isinstance(tensor, GGUFRaw) or tensor.type_name != kind:
            got = getattr(tensor, "type_name", "dense")
            raise ValueError(f"experts: stored as {got} one by one or stacked, expected {kind}")
        check_shape("experts", tensor.shape, (self.num_experts, *self._shape(index)))
        self._raw(index).copy_(tensor.data.reshape(self.num_experts, -1))  # [experts, bytes]

    def _dequantized(self, expert: int, index: int, out: torch.Tensor) -> torch.Tensor:
        columns = self._shape(index)[1]
        return dequantize_rows(self._raw(index, expert), self.types[index], columns, out=out)

    def gate_up(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        if self.forms is not None:
            return self.forms[0].apply(expert, x)
        inter = self.intermediate_size
        weight = self.scratch.get(2 * inter, self.hidden_size, x.dtype, x.device)  # [2I, hidden]
        self._dequantized(expert, 0, weight[:inter])
        self._dequantized(expert, 1, weight[inter:])
        return nn.functional.linear(x, weight)

    def down(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        if self.forms is not None:
            return self.forms[1].apply(expert, x)
        weight = self.scratch.get(self.hidden_size, self.intermediate_size, x.dtype, x.device)
        return nn.functional.linear(x, self._dequantized(expert, 2, weight))

    @torch.no_grad()
    def process_after_loading(self) -> None:
        """With kernels: every expert's matrices in torch's CPU int4 or int8 form."""
        if not self.kernels:
            return
        forms = []
        for indices in ((0, 1), (2,)):
            rows = sum(self._shape(i)[0] for i in indices)
            columns = self._shape(indices[0])[1]
            q4 = int4_form([self.types[i] for i in indices], rows, columns)
            form = (KernelInt4 if q4 else KernelInt8)(self.num_experts, rows, columns)
            for expert in range(self.num_experts):
                shards = [(self.types[i], self._raw(i, expert)) for i in indices]
                form.fill(expert, functools.partial(block_rows, shards, columns, q4=q4))
            forms.append(form)
        del self.w13, self.w2
        self.forms = nn.ModuleList(forms)


class KernelInt4(nn.Module):
    """Every expert's matrix [rows, columns] in torch's CPU int4 form."""

    def __init__(self, experts: int, rows: int, columns: int):
        super().__init__()
        self.register_buffer("packed", torch.empty(experts, rows, columns // 2, dtype=torch.uint8))
        pairs = torch.empty(experts, columns // GROUP, rows, 2, dtype=KERNEL_DTYPE)
        self.register_buffer("scales_zeros", pairs)  # [experts, groups, rows, 2]
        self.views: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def fill(self, expert: int, rows) -> None:
        fill_int4(self.packed[expert], self.scales_zeros[expert], rows)

    def apply(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        if self.views is None:  # each expert's (packed, pairs), indexed once, not every call
            self.views = list(zip(self.packed.unbind(0), self.scales_zeros.unbind(0), strict=True))
        packed, pairs = self.views[expert]
        out = torch._weight_int4pack_mm_for_cpu(x.to(KERNEL_DTYPE), packed, GROUP, pairs)
        return out.to(x.dtype)


class KernelInt8(nn.Module):
    """Every expert's matrix as per-row int8: torch's kernel for a few rows, else the
    expert's weight converted for one matmul."""

    def __init__(self, experts: int, rows: int, columns: int):
        super().__init__()
        self.register_buffer("qweight", torch.empty(experts, rows, columns, dtype=torch.int8))
        self.register_buffer("scales", torch.empty(experts, rows, dtype=KERNEL_DTYPE))
        self.views: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def fill(self, expert: int, rows) -> None:
        fill_int8(self.qweight[expert], self.scales[expert], rows)

    def apply(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        if self.views is None:
            self.views = list(zip(self.qweight.unbind(0), self.scales.unbind(0), strict=True))
        qweight, scales = self.views[expert]
        if x.shape[0] <= SMALL_BATCH:
            return torch._weight_int8pack_mm(x.to(scales.dtype), qweight, scales).to(x.dtype)
        return nn.functional.linear(x, qweight.to(x.dtype)) * scales.to(x.dtype)
