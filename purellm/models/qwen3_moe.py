"""Qwen3-MoE (Qwen3-Coder-30B-A3B, Qwen3-30B-A3B): Qwen3's attention with q/k norms, and a
mixture of experts in place of the MLP in every `decoder_sparse_step`-th layer not listed in
`mlp_only_layers`. Routing as transformers: softmax in float32 over all experts, top-k,
renormalised when `norm_topk_prob`, weights cast to the activations' dtype."""

from __future__ import annotations

from torch import nn

from purellm.layers.moe import MoEOptions
from purellm.layers.quant.builder import LayerBuilder
from purellm.models.llama import LayerOptions, LlamaForCausalLM, LlamaMLP


def moe_options(config) -> MoEOptions:
    return MoEOptions(
        num_experts=config.num_experts,
        top_k=config.num_experts_per_tok,
        intermediate_size=config.moe_intermediate_size,
        renormalize=bool(getattr(config, "norm_topk_prob", False)),
    )


def _feed_forward(config, layers: LayerBuilder, prefix: str, index: int) -> nn.Module:
    step = getattr(config, "decoder_sparse_step", 1) or 1
    dense_only = index in (getattr(config, "mlp_only_layers", None) or [])
    if dense_only or config.num_experts == 0 or (index + 1) % step:
        return LlamaMLP(config, layers, prefix)
    return layers.moe(prefix, config.hidden_size, moe_options(config))


class Qwen3MoeForCausalLM(LlamaForCausalLM):
    expert_mapping = {"gate_proj": ("w13", 0), "up_proj": ("w13", 1), "down_proj": ("w2", None)}
    """Checkpoint expert projection -> (stacked parameter of `experts`, its shard)."""

    def __init__(self, config, max_position: int, layers: LayerBuilder):
        bias = bool(getattr(config, "attention_bias", False))
        options = LayerOptions(qkv_bias=bias, o_bias=bias, qk_norm=True, mlp=_feed_forward)
        super().__init__(config, max_position, layers, options)
        if not getattr(config, "use_sliding_window", False):
            self.sliding_window = None
