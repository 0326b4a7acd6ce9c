"""Qwen3 (dense): Llama with RMSNorm on each head's query and key."""

from __future__ import annotations

from purellm.layers.quant.builder import LayerBuilder
from purellm.models.llama import LayerOptions, LlamaForCausalLM


class Qwen3ForCausalLM(LlamaForCausalLM):
    def __init__(self, config, max_position: int, layers: LayerBuilder):
        bias = bool(getattr(config, "attention_bias", False))
        options = LayerOptions(qkv_bias=bias, o_bias=bias, qk_norm=True)
        super().__init__(config, max_position, layers, options)
        if not getattr(config, "use_sliding_window", False):
            self.sliding_window = None
