"""The one multiply-add rotation against transformers' rotate-half formula."""

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from purellm.layers.rotary import RotaryEmbedding, apply_rotary, inverse_frequencies


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotation_is_transformers_rotate_half_bit_for_bit(dtype):
    torch.manual_seed(0)
    config = LlamaConfig(head_dim=64, rope_theta=10000.0)
    rotary = RotaryEmbedding(config, head_dim=64, max_position=512)
    rotary.init_buffers(torch.device("cpu"))
    positions = torch.tensor([0, 1, 7, 300, 511])
    q = torch.randn(5, 9, 64).to(dtype)  # [T, heads, D]
    k = torch.randn(5, 3, 64).to(dtype)  # [T, kv_heads, D]
    cos, sin = rotary(positions)  # [T, 1, D] each
    freqs = torch.outer(positions.float(), inverse_frequencies(config, 64)[0])  # [T, D / 2]
    angles = torch.cat((freqs, freqs), dim=-1)  # [T, D]
    want_q, want_k = apply_rotary_pos_emb(q.float(), k.float(), angles.cos(), angles.sin())
    torch.testing.assert_close(cos.squeeze(1), angles.cos(), rtol=0, atol=0)
    assert torch.equal(apply_rotary(q, cos, sin), want_q.to(dtype))
    assert torch.equal(apply_rotary(k, cos, sin), want_k.to(dtype))
