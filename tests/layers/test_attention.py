"""The attention backends agree with each other, and the matmul path's query slicing (which
bounds the memory of long prompt chunks) changes nothing."""

import pytest
import torch

from purellm.layers import attention
from purellm.layers.attention import AttentionGroup, AttentionMetadata, PagedAttention


def _setup(query_len: int, context: int, block_size: int = 4):
    torch.manual_seed(0)
    layer = PagedAttention(num_heads=6, num_kv_heads=2, head_dim=8, scale=8**-0.5)
    num_blocks = -(-context // block_size)
    layer.k_cache = torch.randn(2, num_blocks + 1, block_size, 8)  # [kv_heads, blocks, size, D]
    layer.v_cache = torch.randn(2, num_blocks + 1, block_size, 8)
    tables = torch.arange(1, num_blocks + 1)[None]  # [1, width]
    positions = torch.arange(context - query_len, context)  # [Q]
    keys = torch.arange(num_blocks * block_size)  # [L]
    mask = torch.zeros(1, 1, query_len, len(keys))
    mask.masked_fill_(keys[None, None, None] > positions[None, None, :, None], float("-inf"))
    slots = (tables[0, positions // block_size] * block_size + positions % block_size).long()
    meta = AttentionMetadata(slots, [AttentionGroup(1, query_len, tables, mask)])
    q = torch.randn(query_len, 6, 8)
    k, v = torch.randn(query_len, 2, 8), torch.randn(query_len, 2, 8)
    return layer, q, k, v, meta


@pytest.mark.parametrize("backend", ["sdpa", "hybrid"])
def test_backends_agree_with_matmul(backend):
    layer, q, k, v, meta = _setup(query_len=7, context=13)
    layer.backend = "matmul"
    reference = layer(q, k, v, meta)
    layer.backend = backend
    torch.testing.assert_close(layer(q, k, v, meta), reference, rtol=1e-5, atol=1e-5)


def test_matmul_query_slicing_changes_nothing(monkeypatch):
    layer, q, k, v, meta = _setup(query_len=9, context=20)
    layer.backend = "matmul"
    whole = layer(q, k, v, meta)
    monkeypatch.setattr(attention, "SCORES_BUDGET", 4 * 6 * 20 * 2)  # two query rows a pass
    torch.testing.assert_close(layer(q, k, v, meta), whole, rtol=1e-6, atol=1e-6)


def test_a_chunk_from_position_zero_takes_the_causal_path():
    """Plain causal SDPA (no mask, upper triangle skipped) equals the masked computation."""
    layer, q, k, v, meta = _setup(query_len=13, context=13)
    layer.backend = "sdpa"
    masked = layer(q, k, v, meta)
    meta.groups[0].from_start = True
    torch.testing.assert_close(layer(q, k, v, meta), masked, rtol=1e-5, atol=1e-5)
