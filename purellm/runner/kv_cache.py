"""KV-cache sizing and allocation: one key and one value tensor per layer."""

from __future__ import annotations

import math
import mmap

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
    memory is an anonymous memory map: the OS maps zero pages as they are first written, so
    start-up does not write the whole cache and the resident size grows with what is used. (Not
    numpy's calloc: numpy asks for transparent huge pages, which made every touched 2 KiB block
    row resident as 2 MiB: +460 MB after 64 short requests.)"""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    elem = torch.empty(0, dtype=dtype).element_size()
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS  # zero-filled, this process's own
    memory = mmap.mmap(-1, math.prod(shape) * elem, flags=flags)
    return torch.frombuffer(memory, dtype=dtype).view(shape)  # the tensor keeps the map alive
