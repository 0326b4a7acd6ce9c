"""Llama (Llama 2, Llama 3.x, SmolLM2) and Mistral, with Hugging Face's parameter names.

Qwen2 and Qwen3 reuse these classes with a different `LayerOptions` (qkv bias, q/k norms).
q/k/v and gate/up are each one matmul (`qkv_proj`, `gate_up_proj`); the loader fills their
shards from the checkpoint's separate tensors through `packed_modules_mapping`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from purellm.layers.attention import AttentionMetadata, PagedAttention
from purellm.layers.norm import RMSNorm
from purellm.layers.quant.builder import LayerBuilder
from purellm.layers.rotary import RotaryEmbedding, apply_rotary


@dataclass(frozen=True)
class LayerOptions:
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False
    mlp: Callable[[Any, LayerBuilder, str, int], nn.Module] | None = None
    """(config, layers, prefix, layer index) -> the layer's feed-forward; None: LlamaMLP."""

    @classmethod
    def llama(cls, config) -> LayerOptions:
        bias = bool(getattr(config, "attention_bias", False))
        return cls(qkv_bias=bias, o_bias=bias)


def head_dim_of(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


class LlamaAttention(nn.Module):
    def __init__(self, config, options: LayerOptions, layers: LayerBuilder, prefix: str):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = head_dim_of(config)
        hidden, q_size = config.hidden_size, self.num_heads * self.head_dim
        kv_size = self.num_kv_heads * self.head_dim
        self.qkv_proj = layers.linear(
            f"{prefix}.qkv_proj",
            hidden,
            [q_size, kv_size, kv_size],
            options.qkv_bias,
            parts=("q_proj", "k_proj", "v_proj"),
        )
        self.o_proj = layers.linear(f"{prefix}.o_proj", q_size, [hidden], options.o_bias)
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
        num_tokens, heads, kv_heads = hidden_states.shape[0], self.num_heads, self.num_kv_heads
        qkv = self.qkv_proj(hidden_states)  # [T, (heads + 2 * kv_heads) * D]
        v = qkv[:, (heads + kv_heads) * self.head_dim :].view(num_tokens, kv_heads, -1)
        if self.qk_norm:
            q, k, _ = qkv.split(self.qkv_proj.output_sizes, dim=-1)
            q = self.q_norm(q.view(num_tokens, heads, -1))  # [T, heads, D]
            k = self.k_norm(k.view(num_tokens, kv_heads, -1))  # [T, kv_heads, D]
            qk = torch.cat((q, k), dim=1)  # [T, heads + kv_heads, D]
        else:
            qk = qkv[:, : (heads + kv_heads) * self.head_dim]
            qk = qk.view(num_tokens, heads + kv_heads, self.head_dim)  # [T, heads + kv, D]
        q, k = apply_rotary(qk, *rotary).split((heads, kv_heads), dim=1)  # one rotation
        return self.o_proj(self.attn(q, k, v, meta))


class LlamaMLP(nn.Module):
    def __init__(self, config, layers: LayerBuilder, prefix: str):
        super().__init__()
        bias = bool(getattr(config, "mlp_bias", False))
        inter = config.intermediate_size
        self.gate_up_proj = layers.linear(
            f"{prefix}.gate_up_proj",
            config.hidden_size,
            [inter, inter],
            bias,
            parts=("gate_proj", "up_proj"),
        )
        self.down_proj = layers.linear(f"{prefix}.down_proj", inter, [config.hidden_size], bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(nn.functional.silu(gate) * up)


class LlamaDecoderLayer(nn.Module):
    def __init__(
        self, config, options: LayerOptions, layers: LayerBuilder, prefix: str, index: int
    ):
        super().__init__()
        self.self_attn = LlamaAttention(config, options, layers, f"{prefix}.self_attn")
        if options.mlp is None:
            self.mlp = LlamaMLP(config, layers, f"{prefix}.mlp")
        else:
            self.mlp = options.mlp(config, layers, f"{prefix}.mlp", index)
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
    def __init__(self, config, options: LayerOptions, max_position: int, layers: LayerBuilder):
        super().__init__()
        self.embed_tokens = layers.embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config, options, layers, f"model.layers.{i}", i)
            for i in range(config.num_hidden_layers)
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
    packed_modules_mapping = {
        "q_proj": ("qkv_proj", 0),
        "k_proj": ("qkv_proj", 1),
        "v_proj": ("qkv_proj", 2),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }
    """Checkpoint projection -> (fused module here, its shard), applied by the loader."""

    def __init__(
        self,
        config,
        max_position: int,
        layers: LayerBuilder,
        options: LayerOptions | None = None,
    ):
        super().__init__()
        self.config = config
        options = options or LayerOptions.llama(config)
        self.model = LlamaModel(config, options, max_position, layers)
        self.lm_head = layers.linear("lm_head", config.hidden_size, [config.vocab_size])
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        self.sliding_window = getattr(config, "sliding_window", None)

    def forward(self, input_ids, positions, meta: AttentionMetadata) -> torch.Tensor:
        """input_ids, positions [T] -> hidden states [T, hidden_size]."""
        return self.model(input_ids, positions, meta)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden_states)

    def tie_weights(self) -> None:
        if self.tie_word_embeddings:
            self.lm_head.method.tie(self.lm_head, self.model.embed_tokens)

    def attention_layers(self) -> list[PagedAttention]:
        return [layer.self_attn.attn for layer in self.model.layers]


MistralForCausalLM = LlamaForCausalLM
