"""Attention over the paged KV cache, built from matmul and softmax only.

The step's tokens come in groups laid out one after another: single-token sequences (decodes)
batched in groups of similar context length (runner/inputs.py: a group reads every sequence's
keys up to its longest), then one group per sequence with several new tokens (prefill chunks).
Each group gathers its keys from the cache by slot and masks them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

SCORES_BUDGET = 256 << 20
"""Bytes of float32 attention scores the matmul path may hold at once."""


@dataclass
class AttentionGroup:
    num_seqs: int
    query_len: int
    block_tables: torch.Tensor
    """[num_seqs, width] cache blocks each sequence reads, padded with block 0 (masked)."""
    mask: torch.Tensor
    """[num_seqs, 1, query_len, width * block_size] additive: 0 where allowed, -inf elsewhere."""
    from_start: bool = False
    """One sequence whose chunk starts at position 0 (no earlier context) and no sliding
    window: plain causal attention, which SDPA computes without a mask in about half the time
    (it skips the upper triangle)."""
    cache_rows: torch.Tensor | None = None
    """[kv_heads * num_seqs * width] the blocks' rows in a cache viewed as [kv_heads * blocks,
    block_size, D]; made by the first layer that gathers, reused by the others."""


@dataclass
class AttentionMetadata:
    """Built once per step by the runner and shared by every layer."""

    slot_mapping: torch.Tensor
    """[num_tokens] cache slot that each new token's key and value are written to."""
    groups: list[AttentionGroup]


class GatherBuffers:
    """Flat key and value buffers, grown on demand, that the gathers write into. Layers run one
    at a time, so a model shares one: no fresh multi-megabyte tensors per layer and step (on a
    CPU each such allocation is new pages that fault in, measured 3-7x the copy itself)."""

    def __init__(self) -> None:
        self.flat = [torch.empty(0), torch.empty(0)]

    def take(self, which: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        size = math.prod(shape)
        buffer = self.flat[which]
        if buffer.numel() < size or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = torch.empty(size + size // 2, dtype=like.dtype, device=like.device)
            self.flat[which] = buffer
        return buffer[:size].view(shape)


class PagedAttention(nn.Module):
    """`backend` is "sdpa" (torch's scaled_dot_product_attention with an explicit mask),
    "matmul" (matmul + softmax in float32: the reference, and the path for gfx906), or "hybrid":
    sdpa for multi-token chunks, matmul for the batched single-token decodes (on CPUs in bf16,
    torch's flash kernel is ~3.5x slower than matmul for one query per sequence)."""

    def __init__(
        self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float, backend="sdpa"
    ):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scale, self.backend = scale, backend
        self.buffers = GatherBuffers()
        """Replaced by the runner with one shared by every layer."""
        self.k_cache = self.v_cache = torch.empty(0)
        """[num_kv_heads, num_blocks, block_size, head_dim] each, bound by the runner. Heads
        first, so that a gather gives each (head, sequence) its keys as one contiguous matrix
        and the matmuls run on them without copies."""

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """q [T, heads, D], k and v [T, kv_heads, D] -> [T, heads * D]; k, v go into the cache."""
        kv_heads, d = self.num_kv_heads, self.head_dim
        self.k_cache.view(kv_heads, -1, d).index_copy_(1, meta.slot_mapping, k.transpose(0, 1))
        self.v_cache.view(kv_heads, -1, d).index_copy_(1, meta.slot_mapping, v.transpose(0, 1))
        outputs, start = [], 0
        for group in meta.groups:
            end = start + group.num_seqs * group.query_len
            keys, values = self._gather(group)
            outputs.append(self._attend_fn(group)(q[start:end], keys, values, group))
            start = end
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _attend_fn(self, group: AttentionGroup):
        if self.backend == "sdpa" or (self.backend == "hybrid" and group.query_len > 1):
            return self._sdpa
        return self._matmul

    def _gather(self, group: AttentionGroup) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole blocks, which index_select copies fast: each [kv_heads, B, L, D], contiguous."""
        kv_heads, num_blocks, block_size, d = self.k_cache.shape
        if group.cache_rows is None:  # one index_select over the first dim: the fast path
            heads = torch.arange(kv_heads, device=self.k_cache.device)
            rows = heads[:, None] * num_blocks + group.block_tables.view(-1)  # [kv, B * width]
            group.cache_rows = rows.view(-1)
        gathered = (len(group.cache_rows), block_size, d)
        keys = self.buffers.take(0, gathered, self.k_cache)
        values = self.buffers.take(1, gathered, self.v_cache)
        torch.index_select(self.k_cache.view(-1, block_size, d), 0, group.cache_rows, out=keys)
        torch.index_select(self.v_cache.view(-1, block_size, d), 0, group.cache_rows, out=values)
        shape = (kv_heads, group.num_seqs, -1, d)
        return keys.view(shape), values.view(shape)  # [kv_heads, B, L, D] each

    def _sdpa(self, q, keys, values, group: AttentionGroup) -> torch.Tensor:
        b, n_q = group.num_seqs, group.query_len
        q = q.view(b, n_q, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, Q, D]
        keys, values = keys.transpose(0, 1), values.transpose(0, 1)  # [B, kv_heads, L, D]
        if group.from_start:  # the first n_q keys, causally
            keys, values = keys[:, :, :n_q], values[:, :, :n_q]  # [1, kv_heads, Q, D]
            mask, causal = None, True
        else:
            mask, causal = group.mask, False
        out = nn.functional.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, is_causal=causal, scale=self.scale, enable_gqa=True
        )  # [B, H, Q, D]
        return out.transpose(1, 2).reshape(b * n_q, self.num_heads * self.head_dim)

    def _matmul(self, q, keys, values, group: AttentionGroup) -> torch.Tensor:
        """A long prompt chunk is split into query slices so its float32 scores stay within
        SCORES_BUDGET bytes (a 2048-token chunk over 32k keys would need gigabytes)."""
        b, n_q = group.num_seqs, group.query_len
        rows = max(1, SCORES_BUDGET // (4 * b * self.num_heads * keys.shape[2]))
        if b != 1 or rows >= n_q:
            return self._matmul_pass(q, keys, values, group.mask, b, n_q)
        outputs = []
        for start in range(0, n_q, rows):
            q_rows = q[start : start + rows]
            mask_rows = group.mask[:, :, start : start + rows]
            outputs.append(self._matmul_pass(q_rows, keys, values, mask_rows, 1, len(q_rows)))
        return torch.cat(outputs)

    def _matmul_pass(self, q, keys, values, mask, b: int, n_q: int) -> torch.Tensor:
        kv_heads, d = self.num_kv_heads, self.head_dim
        per_kv = self.num_heads // kv_heads
        q = q.view(b, n_q, kv_heads, per_kv, d)  # [B, Q, kv_heads, G, D]
        q = q.permute(2, 0, 3, 1, 4).reshape(kv_heads, b, per_kv * n_q, d)  # [kv, B, G*Q, D]
        scores = torch.matmul(q * self.scale, keys.transpose(2, 3))  # [kv, B, G*Q, L]
        scores = scores.view(kv_heads, b, per_kv, n_q, -1) + mask  # mask [B, 1, Q, L]
        probs = torch.softmax(scores.float(), dim=-1).to(values.dtype)  # [kv, B, G, Q, L]
        probs = probs.view(kv_heads, b, per_kv * n_q, -1)  # [kv, B, G*Q, L]
        out = torch.matmul(probs, values)  # [kv, B, G*Q, D]
        out = out.view(kv_heads, b, per_kv, n_q, d).permute(1, 3, 0, 2, 4)  # [B, Q, kv, G, D]
        return out.reshape(b * n_q, self.num_heads * d)  # [B*Q, num_heads * D]
