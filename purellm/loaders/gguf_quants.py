"""GGUF block formats decoded with torch (vectorised and threaded, unlike gguf-py's numpy):
Q4_0, Q4_1 and Q4_K into their 4-bit values with a scale and zero per 32 weights, Q8_0 to
floats.

Block layouts (ggml-common.h): Q4_0 is an fp16 scale `d` and 16 bytes holding 32 4-bit values
(weight = d * (q - 8)); Q4_1 adds an fp16 minimum `m` after `d` (weight = d * q + m); Q8_0 is
an fp16 scale and 32 int8 values (weight = d * q). In each 4-bit block the low nibbles of the 16
bytes are values 0-15 and the high nibbles values 16-31.

Q4_K is a super-block of 256 weights: fp16 `d` and `dmin`, 12 bytes packing a 6-bit scale and
a 6-bit minimum for each of its 8 groups of 32, then 128 bytes of 4-bit values; each 32 bytes
hold two groups (low nibbles, then high). Group g: weight = d * sc[g] * q - dmin * m[g], which
is the Q4_1 form with scale d * sc[g] and minimum -dmin * m[g].
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

GROUP = 32
"""Weights per scale (and per block, but for Q4_K's super-blocks of SUPER_BLOCK)."""
SUPER_BLOCK = 256
_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34, "Q4_K": 144}
_BLOCK_SIZE = {"Q4_K": SUPER_BLOCK}
Q4_KINDS = ("Q4_0", "Q4_1", "Q4_K")


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
    return raw.view(rows, cols // _BLOCK_SIZE.get(kind, GROUP), _BLOCK_BYTES[kind])


def _half(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The fp16 field at byte `start` of every block, as float32 [rows, blocks]."""
    pair = blocks[..., start : start + 2].contiguous()  # [rows, blocks, 2]
    return pair.view(torch.float16).squeeze(-1).float()


def read_q4(data: np.ndarray, kind: str, shape: tuple[int, int]) -> Q4Weight:
    """A Q4_0, Q4_1 or Q4_K tensor of HF shape [out, in] as a Q4Weight (exact)."""
    if kind == "Q4_K":
        return _read_q4_k(data, shape)
    blocks = _blocks(data, kind, shape)
    d = _half(blocks, 0)
    packed = blocks[..., -16:]  # [rows, blocks, 16]
    q = torch.cat((packed & 15, packed >> 4), dim=-1)  # [rows, blocks, 32]
    mins = _half(blocks, 2) if kind == "Q4_1" else -8 * d
    return Q4Weight(q.view(shape), d, mins)


def _read_q4_k(data: np.ndarray, shape: tuple[int, int]) -> Q4Weight:
    rows, cols = shape
    blocks = _blocks(data, "Q4_K", shape)  # [rows, super-blocks, 144]
    d, dmin = _half(blocks, 0), _half(blocks, 2)  # [rows, super-blocks]
    low, mid, high = blocks[..., 4:8], blocks[..., 8:12], blocks[..., 12:16]
    sc = torch.cat((low & 63, (high & 15) | ((low >> 2) & 48)), dim=-1)  # [rows, sb, 8]
    m = torch.cat((mid & 63, (high >> 4) | ((mid >> 2) & 48)), dim=-1)  # [rows, sb, 8]
    packed = blocks[..., 16:].reshape(rows, -1, 4, 1, GROUP)  # [rows, sb, pairs, 1, 32]
    q = torch.cat((packed & 15, packed >> 4), dim=3)  # [rows, sb, pairs, 2, 32]
    scales = (d[..., None] * sc.float()).view(rows, -1)  # [rows, in / GROUP]
    mins = -(dmin[..., None] * m.float()).view(rows, -1)
    return Q4Weight(q.reshape(shape), scales, mins)


def read_q8_0(data: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """A Q8_0 tensor of HF shape [out, in] as float32."""
    blocks = _blocks(data, "Q8_0", shape)
    d = _half(blocks, 0)
    q = blocks[..., 2:].contiguous().view(torch.int8).float()  # [rows, blocks, 32]
    return q.mul_(d[..., None]).view(shape)
