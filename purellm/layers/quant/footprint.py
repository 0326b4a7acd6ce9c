"""The bytes purellm's runner keeps for a model's weights and KV cache, from shapes only (no
torch: `purellm doctor` sizes a model before anything is loaded).

The rules mirror the method objects the runner builds (layers/quant/builder.py):
- `none`: every matrix dense in the model dtype; `int8`: every linear int8 per output row (a
  tied embedding as Q8_0 blocks);
- `gguf` without kernels (GPUs; an explicit float32 on the CPU): quantized matrices keep the
  file's bytes, and one shared scratch buffer holds the largest dequantized decoder linear
  (the LM head is dequantized in chunks of that size);
- `gguf` with kernels (the CPU): Q4 linears in torch's int4 layout, other quantized ones int8
  per row, plus dense copies of the decoder linears where `dense_copies`;
- AWQ/GPTQ/compressed-tensors: packed values with a float32 scale and a uint8 zero per group.
Vectors (norms, biases) and float matrices are always dense in the model dtype."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from purellm.layers.quant.config import (
    EMBEDDING,
    GGUF_FLOAT_TYPES,
    GROUP,
    LM_HEAD,
    QuantConfig,
    checkpoint_quant,
    int4_form,
)

SCALE_BYTES = 2
"""bf16 scales (and zeros) of the CPU kernels."""
Q8_0_BLOCK, Q8_0_BYTES = 32, 34
FUSED = {
    "q_proj": "qkv_proj",
    "k_proj": "qkv_proj",
    "v_proj": "qkv_proj",
    "gate_proj": "gate_up_proj",
    "up_proj": "gate_up_proj",
}
"""Checkpoint projections the models fuse into one linear."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    """Hugging Face name, e.g. model.layers.0.self_attn.q_proj.weight."""
    kind: str
    """GGUF type name ('Q4_K', 'F32', ...), or 'dense' outside GGUF."""
    shape: tuple[int, ...]
    """Hugging Face order: [out, in] for a matrix."""
    nbytes: int
    """Bytes in the file."""

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def quantized(self) -> bool:
        return self.kind not in (*GGUF_FLOAT_TYPES, "dense")


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Keys and values of every layer for one token."""
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes


def int8_bytes(out: int, inputs: int) -> int:
    """int8 values and one bf16 scale per output row."""
    return out * inputs + out * SCALE_BYTES


def int4_bytes(out: int, inputs: int) -> int:
    """torch's CPU int4 pack: half a byte a weight, a bf16 (scale, zero) per 32 inputs."""
    return out * inputs // 2 + (inputs // GROUP) * out * 2 * SCALE_BYTES


def q8_0_bytes(out: int, inputs: int) -> int:
    return out * inputs // Q8_0_BLOCK * Q8_0_BYTES


@dataclass(frozen=True)
class _Group:
    """One linear of the model: its checkpoint shards, fused or alone."""

    shards: tuple[TensorInfo, ...]
    head: bool = False

    @property
    def out(self) -> int:
        return sum(t.shape[0] for t in self.shards)

    @property
    def inputs(self) -> int:
        return self.shards[0].shape[1]

    @property
    def quantized(self) -> bool:
        return any(t.quantized for t in self.shards)

    @property
    def q4(self) -> bool:
        return int4_form([t.kind for t in self.shards], self.out, self.inputs)


def linear_groups(matrices: list[TensorInfo], tied: bool) -> list[_Group]:
    """The model's linears: q/k/v and gate/up fused; the LM head last (a tied one over the
    embedding's tensor)."""
    groups: dict[str, list[TensorInfo]] = {}
    head: TensorInfo | None = None
    for tensor in matrices:
        if tensor.name == EMBEDDING:
            head = tensor if tied else head
        elif tensor.name == LM_HEAD:
            head = head if tied else tensor
        else:
            parent, _, rest = tensor.name.rpartition(".")[0].rpartition(".")
            groups.setdefault(f"{parent}.{FUSED.get(rest, rest)}", []).append(tensor)
    found = [_Group(tuple(shards)) for shards in groups.values()]
    return found + ([_Group((head,), head=True)] if head is not None else [])


def gguf_weight_bytes(
    tensors: list[TensorInfo], quant: QuantConfig, dtype_bytes: int, tied: bool
) -> int:
    """The weight bytes the runner keeps for a GGUF's tensors under `quant`."""
    vectors = sum(t.numel * dtype_bytes for t in tensors if len(t.shape) < 2)
    matrices = [t for t in tensors if len(t.shape) == 2]
    stacks = [t for t in tensors if len(t.shape) == 3]  # a mixture of experts' [E, out, in]
    embedding = next((t for t in matrices if t.name == EMBEDDING), None)
    groups = linear_groups(matrices, tied)
    if quant.method == "int8":
        return (
            vectors
            + _int8_bytes(embedding, groups, dtype_bytes, tied)
            + _dense(stacks, dtype_bytes)
        )
    if quant.method != "gguf":
        return (
            vectors
            + _dense_bytes(embedding, groups, dtype_bytes, tied)
            + _dense(stacks, dtype_bytes)
        )
    table = _embedding_bytes(embedding, dtype_bytes, quantized_kept=True)
    if quant.kernels:
        linears = sum(_kernel_bytes(g, quant.dense_copies, dtype_bytes, tied) for g in groups)
        return vectors + table + linears + _kernel_expert_bytes(stacks, dtype_bytes)
    experts = sum(t.nbytes if t.quantized else t.numel * dtype_bytes for t in stacks)
    linears = sum(_kept_bytes(g, dtype_bytes, tied) for g in groups)
    scratch = max(_scratch_values(groups), _expert_scratch_values(stacks))
    return vectors + table + linears + experts + scratch * dtype_bytes


def _dense(stacks: list[TensorInfo], dtype_bytes: int) -> int:
    return sum(t.numel * dtype_bytes for t in stacks)


def _kernel_expert_bytes(stacks: list[TensorInfo], dtype_bytes: int) -> int:
    """With the CPU kernels each expert's gate/up and down matrices are int4 (int4_form) or
    int8 per row; float ones dense."""
    by_name = {t.name: t for t in stacks}
    total = 0
    for name, gate in by_name.items():
        if name.endswith(".gate_proj.weight"):
            up = by_name[name.replace(".gate_proj.", ".up_proj.")]
            down = by_name[name.replace(".gate_proj.", ".down_proj.")]
            total += _expert_stack_bytes([gate, up], dtype_bytes)
            total += _expert_stack_bytes([down], dtype_bytes)
    return total


def _expert_stack_bytes(shards: list[TensorInfo], dtype_bytes: int) -> int:
    """Stacks [experts, rows, columns] fused as one matrix per expert, as the runner holds it."""
    experts, columns = shards[0].shape[0], shards[0].shape[2]
    rows = sum(t.shape[1] for t in shards)
    if not shards[0].quantized:
        return experts * rows * columns * dtype_bytes
    q4 = int4_form([t.kind for t in shards], rows, columns)
    return experts * (int4_bytes if q4 else int8_bytes)(rows, columns)


def _expert_scratch_values(stacks: list[TensorInfo]) -> int:
    """Quantized experts are dequantized one at a time into the scratch: gate and up
    together, then down."""
    sizes = [
        t.shape[1]
        * t.shape[2]
        * (2 if t.name.endswith(("gate_proj.weight", "up_proj.weight")) else 1)
        for t in stacks
        if t.quantized
    ]
    return max(sizes, default=0)


def _scratch_values(groups: list[_Group]) -> int:
    """The scratch the dequantize-then-matmul path fills: the largest quantized linear, the
    LM head at most as many of its rows as the largest decoder linear holds (it goes in
    chunks)."""
    largest = max((g.out * g.inputs for g in groups if not g.head), default=0)
    sizes = [
        (min(g.out, max(1, largest // g.inputs)) if g.head and largest else g.out) * g.inputs
        for g in groups
        if g.quantized
    ]
    return max(sizes, default=0)


def _embedding_bytes(embedding: TensorInfo | None, dtype_bytes: int, quantized_kept: bool) -> int:
    if embedding is None:
        return 0
    if quantized_kept and embedding.quantized:
        return embedding.nbytes
    return embedding.numel * dtype_bytes


def _dense_bytes(
    embedding: TensorInfo | None, groups: list[_Group], dtype_bytes: int, tied: bool
) -> int:
    linears = sum(g.out * g.inputs * dtype_bytes for g in groups if not (g.head and tied))
    return _embedding_bytes(embedding, dtype_bytes, quantized_kept=False) + linears


def _int8_bytes(
    embedding: TensorInfo | None, groups: list[_Group], dtype_bytes: int, tied: bool
) -> int:
    """`quantization="int8"`: every linear int8; a tied embedding as Q8_0 blocks."""
    table = _embedding_bytes(embedding, dtype_bytes, quantized_kept=False)
    if embedding is not None and tied and embedding.shape[1] % Q8_0_BLOCK == 0:
        table = q8_0_bytes(*embedding.shape)
    return table + sum(int8_bytes(g.out, g.inputs) for g in groups)


def _kept_bytes(group: _Group, dtype_bytes: int, tied: bool) -> int:
    """Without kernels: a quantized shard keeps its file bytes; a tied head shares the table."""
    if group.head and tied:
        return 0
    return sum(t.nbytes if t.quantized else t.numel * dtype_bytes for t in group.shards)


def _kernel_bytes(group: _Group, dense_copies: bool, dtype_bytes: int, tied: bool) -> int:
    """With the CPU kernels: int4 where every shard is a Q4 type, else int8 per row (the LM
    head too, tied or not, without a dense copy)."""
    dense = group.out * group.inputs * dtype_bytes
    if not group.quantized:
        return 0 if group.head and tied else dense
    form = int4_bytes if group.q4 else int8_bytes
    copy = dense if dense_copies and not group.head else 0
    return form(group.out, group.inputs) + copy


def group_quant_weight_bytes(
    out: int, inputs: int, bits: int, group_size: int, act_order: bool = False
) -> int:
    """An AWQ/GPTQ/compressed-tensors linear as purellm holds it: packed values, a float32
    scale and a uint8 zero per (output, group), and GPTQ act-order's int32 group per input."""
    groups = -(-inputs // group_size) if group_size > 0 else 1
    order = inputs * 4 if act_order else 0
    return out * inputs * bits // 8 + groups * out * 4 + groups * out + order


def hf_quantized_weight_bytes(config: Mapping[str, Any], dtype_bytes: int) -> int:
    """An AWQ/GPTQ/compressed-tensors Hugging Face model (its config.json): decoder linears in
    group form, the embedding and LM head (once if tied), norms and biases dense, and the
    scratch buffer for the largest dequantized linear."""
    text = config.get("text_config", config)
    quant = checkpoint_quant(config.get("quantization_config") or text.get("quantization_config"))
    hidden, inter = int(text["hidden_size"]), int(text["intermediate_size"])
    heads = int(text.get("num_attention_heads", 1))
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or hidden // heads)
    q_size, kv_size = heads * head_dim, kv_heads * head_dim
    linears = {  # fused linear -> (out, in)
        "qkv": (q_size + 2 * kv_size, hidden),
        "o": (hidden, q_size),
        "gate_up": (2 * inter, hidden),
        "down": (hidden, inter),
    }
    act_order = quant.method == "gptq" and quant.desc_act
    layer = sum(
        group_quant_weight_bytes(o, i, quant.bits, quant.group_size, act_order)
        for o, i in linears.values()
    )
    layer += _layer_vectors(text, hidden, q_size, kv_size, head_dim) * dtype_bytes
    vocab = int(text.get("vocab_size", 0)) * hidden
    tables = vocab * (
        1 if text.get("tie_word_embeddings", config.get("tie_word_embeddings")) else 2
    )
    scratch = max(o * i for o, i in linears.values()) * dtype_bytes
    layers = int(text.get("num_hidden_layers", 0))
    return layers * layer + (tables + hidden) * dtype_bytes + scratch


def _layer_vectors(
    text: Mapping[str, Any], hidden: int, q_size: int, kv_size: int, head_dim: int
) -> int:
    """A decoder layer's norms, q/k norms (qwen3) and q/k/v biases (qwen2) in weights."""
    kind = text.get("model_type")
    count = 2 * hidden + (2 * head_dim if kind == "qwen3" else 0)
    if text.get("attention_bias", kind == "qwen2"):
        count += q_size + 2 * kv_size
    return count
