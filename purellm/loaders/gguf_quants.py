"""GGUF block formats decoded with torch (vectorised and threaded, unlike gguf-py's numpy):
Q4_0 and Q4_1 into their 4-bit values with a scale and zero per 32 weights, Q8_0 to floats.

Block layouts (ggml-common.h): Q4_0 is an fp16 scale `d` and 16 bytes holding 32 4-bit values
(weight = d * (q - 8)); Q4_1 adds an fp16 minimum `m` after `d` (weight = d * q + m); Q8_0 is
an fp16 scale and 32 int8 values (weight = d * q). In each 4-bit block the low nibbles of the 16
bytes are values 0-15 and the high nibbles values 16-31.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

GROUP = 32
"""Weights per block, in every format here."""
_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}


@dataclass
class Q4Weight:
    """A 4-bit weight: weight = q * scales + mins, one scale and minimum per GROUP consecutive
    inputs of a row (Q4_0 is the case mins = -8 * scales)."""

    q: torch.Tensor
    """[out, in] uint8 values 0-15."""
    scales: torch.Tensor
    """[out, in / GROUP] float32."""
    mins: torch.Tensor
    """[out, in / GROUP] float32."""

    def dequantize(self) -> torch.Tensor:
        """float32 [out, in], computed as ggml does (d * q + m), so exactly its values."""
        out, n_in = self.q.shape
        grouped = self.q.view(out, -1, GROUP).float()  # [out, in / GROUP, GROUP]
        return grouped.mul_(self.scales[..., None]).add_(self.mins[..., None]).view(out, n_in)

    def rows(self, order: torch.Tensor) -> Q4Weight:
        """The same weight with its rows (outputs) reordered."""
        return Q4Weight(self.q[order], self.scales[order], self.mins[order])


def _blocks(data: np.ndarray, kind: str, shape: tuple[int, int]) -> torch.Tensor:
    """Raw bytes -> [rows, blocks per row, block bytes] uint8."""
    rows, cols = shape
    with warnings.catch_warnings():  # a view of the read-only memory map; it is only read
        warnings.simplefilter("ignore", UserWarning)
        raw = torch.from_numpy(np.ascontiguousarray(data).reshape(-1))
    return raw.view(rows, cols // GROUP, _BLOCK_BYTES[kind])


def _half(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The fp16 field at byte `start` of every block, as float32 [rows, blocks]."""
    pair = blocks[..., start : start + 2].contiguous()  # [rows, blocks, 2]
    return pair.view(torch.float16).squeeze(-1).float()


def read_q4(data: np.ndarray, kind: str, shape: tuple[int, int]) -> Q4Weight:
    """A Q4_0 or Q4_1 tensor of HF shape [out, in] as a Q4Weight (exact)."""
    blocks = _blocks(data, kind, shape)
    d = _half(blocks, 0)
    packed = blocks[..., -16:]  # [rows, blocks, 16]
    q = torch.cat((packed & 15, packed >> 4), dim=-1)  # [rows, blocks, 32]
    mins = _half(blocks, 2) if kind == "Q4_1" else -8 * d
    return Q4Weight(q.view(shape), d, mins)


def read_q8_0(data: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """A Q8_0 tensor of HF shape [out, in] as float32."""
    blocks = _blocks(data, "Q8_0", shape)
    d = _half(blocks, 0)
    q = blocks[..., 2:].contiguous().view(torch.int8).float()  # [rows, blocks, 32]
    return q.mul_(d[..., None]).view(shape)
