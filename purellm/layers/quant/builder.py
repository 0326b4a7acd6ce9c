"""Builds a model's linears and embedding with the method its QuantConfig picks for each: the
one place where quantization meets the model code (models call `linear` and `embedding`)."""

from __future__ import annotations

import torch
from torch import nn

from purellm.layers.linear import DenseEmbedding, Linear, VocabEmbedding
from purellm.layers.moe import FusedMoE, MoEOptions
from purellm.layers.quant.base import DenseMethod, LinearMethod, Scratch
from purellm.layers.quant.config import EMBEDDING, GROUP_METHODS, QuantConfig
from purellm.layers.quant.gguf_method import GGUFEmbeddingMethod, GGUFLinearMethod
from purellm.layers.quant.kernels import Int8Kernel, to_q8_0


class LayerBuilder:
    def __init__(self, quant: QuantConfig, dtype: torch.dtype, tied: bool = False):
        self.quant, self.dtype, self.tied = quant, dtype, tied
        self.scratch = Scratch()
        self.largest = 0
        """Weights of the largest decoder linear built so far: the LM head (built last)
        dequantizes at most this many at a time, so it adds no scratch of its own."""

    def linear(
        self,
        prefix: str,
        in_features: int,
        output_sizes: list[int],
        bias: bool = False,
        parts: tuple[str, ...] | None = None,
    ) -> Linear:
        """`prefix`: the module's name here ('model.layers.0.self_attn.qkv_proj'); `parts`: the
        checkpoint's names of its shards ('q_proj', 'k_proj', 'v_proj'), if fused."""
        parent = prefix.rpartition(".")[0]
        names = [f"{parent}.{p}.weight" for p in parts] if parts else [f"{prefix}.weight"]
        if prefix != "lm_head":
            self.largest = max(self.largest, in_features * sum(output_sizes))
        return Linear(in_features, output_sizes, bias, self._linear_method(prefix, names))

    def _linear_method(self, prefix: str, names: list[str]) -> LinearMethod:
        method = self.quant.method
        head = prefix == "lm_head"
        if method == "gguf":
            return self._gguf_linear(names, head)
        checkpoint = self.quant.checkpoint
        if checkpoint is not None and checkpoint.method in GROUP_METHODS and not head:
            from purellm.layers.quant.group_method import GroupQuantMethod

            dense = method == "none"  # dequantized once loaded
            return GroupQuantMethod(checkpoint, self.scratch, self.dtype, dense, self.quant.kernels)
        if method == "int8":
            return Int8Kernel(self.dtype)
        return DenseMethod(self.dtype)

    def _gguf_linear(self, names: list[str], head: bool) -> LinearMethod:
        if head and self.tied:
            names = [EMBEDDING]
        types = self.quant.checkpoint.tensor_types
        if all(self.quant.gguf_type(name) is None for name in names):
            return DenseMethod(self.dtype)
        dense_copy = self.quant.dense_copies and not head
        kinds = [types[name] for name in names]
        chunk = self.largest if head and self.largest else None
        return GGUFLinearMethod(
            kinds, self.scratch, self.dtype, self.quant.kernels, dense_copy, chunk
        )

    def moe(self, prefix: str, hidden_size: int, options: MoEOptions) -> FusedMoE:
        """Experts dense in the model's dtype, or a GGUF's quantized stacks in their blocks."""
        checkpoint = self.quant.checkpoint
        if self.quant.method == "gguf":
            names = [f"{prefix}.experts.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")]
            kinds = [self.quant.gguf_type(name) for name in names]
            if all(kinds):
                from purellm.layers.quant.gguf_experts import GGUFExperts

                experts = GGUFExperts(options, hidden_size, kinds, self.scratch, self.quant.kernels)
                return FusedMoE(options, hidden_size, self.dtype, experts)
            if any(kinds):
                raise ValueError(f"{prefix}: experts stored partly quantized, partly in float")
        elif checkpoint is not None and self.quant.method != "none":
            raise ValueError(
                f"{prefix}: experts stored {checkpoint.method}-quantized are not supported "
                "yet; use a float or GGUF checkpoint"
            )
        return FusedMoE(options, hidden_size, self.dtype)

    def embedding(self, vocab_size: int, hidden_size: int) -> VocabEmbedding:
        kind = self.quant.gguf_type(EMBEDDING)
        if kind is not None:
            method = GGUFEmbeddingMethod(kind, self.dtype)
        elif self.quant.method == "int8" and self.tied and hidden_size % 32 == 0:
            method = Int8Embedding(self.dtype)
        else:
            method = DenseEmbedding(self.dtype)
        return VocabEmbedding(vocab_size, hidden_size, method)


class Int8Embedding(DenseEmbedding):
    """`quantization="int8"` with a tied LM head: the embedding, once loaded (and the head
    quantized from it), kept as Q8_0 blocks (1.06 bytes a weight) rather than dense."""

    @torch.no_grad()
    def process_after_loading(self, layer: nn.Module) -> None:
        rows = to_q8_0(layer.weight)  # [vocab, row_bytes]
        method = GGUFEmbeddingMethod("Q8_0", self.dtype)
        del layer.weight
        method.create_weights(layer)
        layer.weight.view(rows.shape).copy_(rows)
        layer.method = method
