"""Llama (Llama 2, Llama 3.x, SmolLM2) and Mistral, with Hugging Face's parameter names.

Qwen2 and Qwen3 reuse these classes with a different `LayerOptions` (qkv bias, q/k norms).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from purellm.layers.attention import AttentionMetadata, PagedAttention
from purellm.layers.norm import RMSNorm
from purellm.layers.rotary import RotaryEmbedding, apply_rotary


@dataclass(frozen=True)
class LayerOptions:
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False

    @classmethod
    def llama(cls, config) -> LayerOptions:
        bias = bool(getattr(config, "attention_bias", False))
        return cls(qkv_bias=bias, o_bias=bias)


def head_dim_of(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


class LlamaAttention(nn.Module):
    def __init__(self, config, options: LayerOptions):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = head_dim_of(config)
        hidden, q_size = config.hidden_size, self.num_heads * self.head_dim
        kv_size = self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(hidden, q_size, bias=options.qkv_bias)
        self.k_proj = nn.Linear(hidden, kv_size, bias=options.qkv_bias)
        self.v_proj = nn.Linear(hidden, kv_size, bias=options.qkv_bias)
        self.o_proj = nn.Linear(q_size, hidden, bias=options.o_bias)
        if options.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.qk_norm = options.qk_norm
        scale = self.head_dim**-0.5
        self.attn = PagedAttention(self.num_heads, self.num_kv_heads, self.head_dim, scale)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        num_tokens = hidden_states.shape[0]
        q = self.q_proj(hidden_states).view(num_tokens, self.num_heads, self.head_dim)  # [T, H, D]
        k = self.k_proj(hidden_states).view(num_tokens, self.num_kv_heads, self.head_dim)
        v = self.v_proj(hidden_states).view(num_tokens, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        return self.o_proj(self.attn(q, k, v, meta))


class LlamaMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        bias = bool(getattr(config, "mlp_bias", False))
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config, options: LayerOptions):
        super().__init__()
        self.self_attn = LlamaAttention(config, options)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, rotary, meta):
        residual = hidden_states
        hidden_states = self.self_attn(self.input_layernorm(hidden_states), rotary, meta)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + hidden_states


class LlamaModel(nn.Module):
    def __init__(self, config, options: LayerOptions, max_position: int):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config, options) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config, head_dim_of(config), max_position)

    def forward(self, input_ids, positions, meta: AttentionMetadata) -> torch.Tensor:
        hidden_states = self.embed_tokens(input_ids)
        rotary = self.rotary_emb(positions)
        for layer in self.layers:
            hidden_states = layer(hidden_states, rotary, meta)
        return self.norm(hidden_states)


class LlamaForCausalLM(nn.Module):
    def __init__(self, config, max_position: int, options: LayerOptions | None = None):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config, options or LayerOptions.llama(config), max_position)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        self.sliding_window = getattr(config, "sliding_window", None)

    def forward(self, input_ids, positions, meta: AttentionMetadata) -> torch.Tensor:
        """input_ids, positions [T] -> hidden states [T, hidden_size]."""
        return self.model(input_ids, positions, meta)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden_states)

    def tie_weights(self) -> None:
        if self.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def attention_layers(self) -> list[PagedAttention]:
        return [layer.self_attn.attn for layer in self.model.layers]


MistralForCausalLM = LlamaForCausalLM
