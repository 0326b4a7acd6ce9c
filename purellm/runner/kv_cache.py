"""KV-cache sizing and allocation: one key and one value tensor per layer."""

from __future__ import annotations

import torch

from purellm.layers.attention import PagedAttention


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
    for attn in layers:
        shape = (num_blocks, block_size, attn.num_kv_heads, attn.head_dim)
        attn.k_cache = torch.zeros(shape, dtype=dtype, device=device)
        attn.v_cache = torch.zeros(shape, dtype=dtype, device=device)
