"""Attention over the paged KV cache, built from matmul and softmax only.

The step's tokens come in groups laid out one after another: one group of single-token
sequences (decodes) batched together, then one group per sequence with several new tokens
(prefill chunks). Each group gathers its keys from the cache by slot and masks them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class AttentionGroup:
    num_seqs: int
    query_len: int
    key_slots: torch.Tensor
    """[num_seqs, num_keys] cache slot of each key a sequence attends to (padding points at
    slot 0 and is masked)."""
    mask: torch.Tensor
    """[num_seqs, 1, 1, query_len, num_keys] additive mask: 0 where allowed, -inf elsewhere."""


@dataclass
class AttentionMetadata:
    """Built once per step by the runner and shared by every layer."""

    slot_mapping: torch.Tensor
    """[num_tokens] cache slot that each new token's key and value are written to."""
    groups: list[AttentionGroup]


class PagedAttention(nn.Module):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scale = scale
        self.k_cache = self.v_cache = torch.empty(0)
        """[num_blocks, block_size, num_kv_heads, head_dim] each, bound by the runner."""

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """q [T, heads, D], k and v [T, kv_heads, D] -> [T, heads * D]; writes k, v to the cache."""
        k_flat = self.k_cache.view(-1, self.num_kv_heads, self.head_dim)  # [slots, kv_heads, D]
        v_flat = self.v_cache.view(-1, self.num_kv_heads, self.head_dim)  # [slots, kv_heads, D]
        k_flat.index_copy_(0, meta.slot_mapping, k)
        v_flat.index_copy_(0, meta.slot_mapping, v)
        outputs, start = [], 0
        for group in meta.groups:
            end = start + group.num_seqs * group.query_len
            outputs.append(self._attend(q[start:end], k_flat, v_flat, group))
            start = end
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _attend(
        self, q: torch.Tensor, k_flat: torch.Tensor, v_flat: torch.Tensor, group: AttentionGroup
    ) -> torch.Tensor:
        b, n_q, kv_heads, d = group.num_seqs, group.query_len, self.num_kv_heads, self.head_dim
        per_kv = self.num_heads // kv_heads
        q = q.view(b, n_q, kv_heads, per_kv, d)  # [B, Q, kv_heads, G, D]
        q = q.permute(0, 2, 3, 1, 4).reshape(b, kv_heads, per_kv * n_q, d)  # [B, kv, G*Q, D]
        keys = k_flat[group.key_slots].permute(0, 2, 3, 1)  # [B, kv_heads, D, L]
        values = v_flat[group.key_slots].transpose(1, 2)  # [B, kv_heads, L, D]
        scores = torch.matmul(q * self.scale, keys)  # [B, kv_heads, G*Q, L]
        scores = scores.view(b, kv_heads, per_kv, n_q, -1) + group.mask  # [B, kv, G, Q, L]
        probs = torch.softmax(scores.float(), dim=-1).to(values.dtype)
        probs = probs.view(b, kv_heads, per_kv * n_q, -1)  # [B, kv_heads, G*Q, L]
        out = torch.matmul(probs, values)  # [B, kv_heads, G*Q, D]
        out = out.view(b, kv_heads, per_kv, n_q, d).permute(0, 3, 1, 2, 4)  # [B, Q, kv, G, D]
        return out.reshape(b * n_q, self.num_heads * d)  # [B*Q, num_heads * D]
