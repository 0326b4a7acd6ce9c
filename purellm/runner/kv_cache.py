"""KV-cache sizing and allocation: one key and one value tensor per layer."""

from __future__ import annotations

import math

import numpy as np
import torch

from purellm.layers.attention import GatherBuffers, PagedAttention


def bytes_per_block(layers: list[PagedAttention], block_size: int, dtype: torch.dtype) -> int:
    elem = torch.empty(0, dtype=dtype).element_size()
    return sum(2 * block_size * a.num_kv_heads * a.head_dim * elem for a in layers)


def allocate_kv_cache(
    layers: list[PagedAttention],
    num_blocks: int,
    block_size: int,
    dtype: torch.dtype,
    device: torch.device,
) -> None:
    buffers = GatherBuffers()
    for attn in layers:
        attn.buffers = buffers
        shape = (attn.num_kv_heads, num_blocks, block_size, attn.head_dim)
        attn.k_cache = _zeros(shape, dtype, device)
        attn.v_cache = _zeros(shape, dtype, device)


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Zeros (masked attention reads never-written slots, which must be finite). On the CPU the
    memory comes from calloc: the OS maps zero pages as they are first written, so start-up does
    not write the whole cache and the resident size grows with what is used."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    elem = torch.empty(0, dtype=dtype).element_size()
    raw = torch.from_numpy(np.zeros(math.prod(shape) * elem, dtype=np.uint8))
    return raw.view(dtype).view(shape)
