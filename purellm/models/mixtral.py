"""Mixtral: Mistral's attention and, in every layer, a mixture of experts stored under
`block_sparse_moe` with projections w1 (gate), w3 (up) and w2 (down). Routing as
transformers: softmax in float32, top-k, always renormalised, outputs scaled in float32."""

from __future__ import annotations

from torch import nn

from purellm.layers.moe import MoEOptions
from purellm.layers.quant.builder import LayerBuilder
from purellm.models.llama import LayerOptions, LlamaForCausalLM


def _experts(config, layers: LayerBuilder, prefix: str, index: int) -> nn.Module:
    options = MoEOptions(
        num_experts=config.num_local_experts,
        top_k=config.num_experts_per_tok,
        intermediate_size=config.intermediate_size,
        renormalize=True,
        float32_scores=True,
    )
    return layers.moe(prefix, config.hidden_size, options)


class MixtralForCausalLM(LlamaForCausalLM):
    checkpoint_renames = {"block_sparse_moe": "mlp"}
    """Checkpoint module name -> the module here."""
    expert_mapping = {
        "w1": ("w13", 0),
        "w3": ("w13", 1),
        "w2": ("w2", None),
        "gate_proj": ("w13", 0),  # a GGUF's stacked experts, named as Qwen3-MoE's
        "up_proj": ("w13", 1),
        "down_proj": ("w2", None),
    }

    def __init__(self, config, max_position: int, layers: LayerBuilder):
        bias = bool(getattr(config, "attention_bias", False))
        options = LayerOptions(qkv_bias=bias, o_bias=bias, mlp=_experts)
        super().__init__(config, max_position, layers, options)
