"""Qwen2 / Qwen2.5 (including Coder): Llama with biases on q, k and v."""

from __future__ import annotations

from purellm.layers.quant.builder import LayerBuilder
from purellm.models.llama import LayerOptions, LlamaForCausalLM


class Qwen2ForCausalLM(LlamaForCausalLM):
    def __init__(self, config, max_position: int, layers: LayerBuilder):
        super().__init__(config, max_position, layers, LayerOptions(qkv_bias=True))
        if not getattr(config, "use_sliding_window", False):
            self.sliding_window = None
