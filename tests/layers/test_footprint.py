"""layers/quant/footprint.py: the runner's weight bytes from shapes, checked on a tiny model
whose numbers are worked out by hand here (no torch: doctor's arithmetic)."""

import subprocess
import sys

from purellm.layers.quant.config import CheckpointQuant, QuantConfig
from purellm.layers.quant.footprint import (
    TensorInfo,
    gguf_weight_bytes,
    group_quant_weight_bytes,
    hf_quantized_weight_bytes,
    kv_bytes_per_token,
)

BLOCKS = {"Q4_K": (256, 144), "Q6_K": (256, 210), "Q8_0": (32, 34), "F32": (1, 4), "F16": (1, 2)}
HIDDEN, VOCAB = 256, 2048
SHAPES = {  # one layer: 2 heads of 128, 1 kv head, intermediate 512
    "self_attn.q_proj": (256, 256),
    "self_attn.k_proj": (128, 256),
    "self_attn.v_proj": (128, 256),
    "self_attn.o_proj": (256, 256),
    "mlp.gate_proj": (512, 256),
    "mlp.up_proj": (512, 256),
    "mlp.down_proj": (256, 512),
}
Q4_K_M = {"self_attn.v_proj": "Q6_K", "mlp.down_proj": "Q6_K"}  # the rest Q4_K


def info(name: str, kind: str, *shape: int) -> TensorInfo:
    block, size = BLOCKS[kind]
    count = 1
    for dim in shape:
        count *= dim
    return TensorInfo(name, kind, shape, count // block * size)


def model(kinds: dict[str, str] | None = None, embedding="Q4_K", head="Q6_K") -> list[TensorInfo]:
    """Norms F32; linears Q4_K unless `kinds` says; `head` None: tied (no lm_head.weight)."""
    kinds = Q4_K_M if kinds is None else kinds
    tensors = [info("model.embed_tokens.weight", embedding, VOCAB, HIDDEN)]
    for norm in ("input_layernorm", "post_attention_layernorm"):
        tensors.append(info(f"model.layers.0.{norm}.weight", "F32", HIDDEN))
    for part, shape in SHAPES.items():
        tensors.append(info(f"model.layers.0.{part}.weight", kinds.get(part, "Q4_K"), *shape))
    tensors.append(info("model.norm.weight", "F32", HIDDEN))
    if head is not None:
        tensors.append(info("lm_head.weight", head, VOCAB, HIDDEN))
    return tensors


def gguf(kernels=False, dense_copies=False) -> QuantConfig:
    return QuantConfig("gguf", CheckpointQuant("gguf"), kernels, kernels and dense_copies)


VECTORS = 3 * HIDDEN * 2  # two layer norms and the final one, in bf16
FILE = {  # bytes in the file: rows * (inputs / block) * block bytes
    "q": 256 * 1 * 144,
    "k": 128 * 1 * 144,
    "v": 128 * 1 * 210,
    "o": 256 * 1 * 144,
    "gate": 512 * 1 * 144,
    "up": 512 * 1 * 144,
    "down": 256 * 2 * 210,
}
EMBEDDING_Q4_K = VOCAB * 144
HEAD_Q6_K = VOCAB * 210
DENSE_LINEARS = (512 * 256 + 256 * 256 + 1024 * 256 + 256 * 512) * 2  # qkv, o, gate_up, down


def test_kv_bytes_per_token():
    assert kv_bytes_per_token(64, 8, 128, 2) == 2 * 64 * 8 * 128 * 2 == 262144


def test_gguf_without_kernels_keeps_the_file_bytes_and_one_scratch():
    scratch = 1024 * 256 * 2  # gate/up; the larger LM head goes in chunks of that size
    expected = VECTORS + sum(FILE.values()) + EMBEDDING_Q4_K + HEAD_Q6_K + scratch
    assert gguf_weight_bytes(model(), gguf(), 2, tied=False) == expected
    assert gguf_weight_bytes(model(), gguf(), 4, tied=False) == expected + VECTORS + scratch


def test_gguf_tied_head_shares_the_embedding_but_needs_its_scratch():
    tensors = model(head=None)
    expected = VECTORS + sum(FILE.values()) + EMBEDDING_Q4_K + 1024 * 256 * 2  # head chunks
    assert gguf_weight_bytes(tensors, gguf(), 2, tied=True) == expected
    # a dense-embedding GGUF: the head shares it; the scratch is the largest quantized linear
    dense = model(head=None, embedding="F16")
    largest = 1024 * 256 * 2  # gate/up fused
    expected = VECTORS + sum(FILE.values()) + VOCAB * HIDDEN * 2 + largest
    assert gguf_weight_bytes(dense, gguf(), 2, tied=True) == expected


def test_float_gguf_matrices_are_dense_and_need_no_scratch():
    floats = dict.fromkeys(SHAPES, "F32")
    tensors = model(floats, embedding="F16", head="F16")
    dense = VECTORS + DENSE_LINEARS + 2 * VOCAB * HIDDEN * 2
    assert gguf_weight_bytes(tensors, gguf(), 2, tied=False) == dense
    assert gguf_weight_bytes(tensors, gguf(kernels=True), 2, tied=False) == dense
    # one quantized o_proj: file bytes, and a scratch of its own size only
    mixed = model({**floats, "self_attn.o_proj": "Q4_K"}, embedding="F16", head="F16")
    o_dense, o_file = 256 * 256 * 2, FILE["o"]
    assert gguf_weight_bytes(mixed, gguf(), 2, False) == dense - o_dense + o_file + o_dense


def test_gguf_kernels_int4_for_q4_groups_int8_for_the_rest():
    int8 = lambda out, inputs: out * inputs + out * 2  # noqa: E731
    int4 = lambda out, inputs: out * inputs // 2 + inputs // 32 * out * 4  # noqa: E731
    assert int4(256, 256) == 32768 + 8192
    linears = (
        int8(512, 256)  # q/k/v fused: v is Q6_K
        + int4(256, 256)  # o
        + int4(1024, 256)  # gate/up
        + int8(256, 512)  # down: Q6_K
    )
    head = int8(VOCAB, HIDDEN)  # Q6_K: int8, never a dense copy
    expected = VECTORS + EMBEDDING_Q4_K + linears + head
    assert gguf_weight_bytes(model(), gguf(kernels=True), 2, False) == expected
    copies = gguf(kernels=True, dense_copies=True)
    assert gguf_weight_bytes(model(), copies, 2, False) == expected + DENSE_LINEARS
    all_q4 = model({}, head="Q4_K")  # every linear Q4_K: int4, the head too
    q4_linears = int4(512, 256) + int4(256, 256) + int4(1024, 256) + int4(256, 512)
    expected = VECTORS + EMBEDDING_Q4_K + q4_linears + int4(VOCAB, HIDDEN)
    assert gguf_weight_bytes(all_q4, gguf(kernels=True), 2, False) == expected


def test_gguf_kernels_tied_head():
    # over the Q4_K embedding: int4, as an untied Q4 head (exact values, half the bytes)
    head = VOCAB * HIDDEN // 2 + HIDDEN // 32 * VOCAB * 4
    untied = gguf_weight_bytes(model(), gguf(kernels=True), 2, False)
    untied_head = VOCAB * HIDDEN + VOCAB * 2  # the Q6_K head: int8 too
    tied = gguf_weight_bytes(model(head=None), gguf(kernels=True), 2, True)
    assert tied == untied - untied_head + head
    # a dense embedding: the head shares it
    dense = gguf_weight_bytes(model(head=None, embedding="F16"), gguf(kernels=True), 2, True)
    assert dense == tied - head - EMBEDDING_Q4_K + VOCAB * HIDDEN * 2


def test_none_and_int8_modes():
    none = QuantConfig("none")
    dense = VECTORS + DENSE_LINEARS + VOCAB * HIDDEN * 2
    assert gguf_weight_bytes(model(head=None), none, 2, True) == dense
    assert gguf_weight_bytes(model(), none, 2, False) == dense + VOCAB * HIDDEN * 2
    int8 = QuantConfig("int8")
    linears = sum(o * i + o * 2 for o, i in ((512, 256), (256, 256), (1024, 256), (256, 512)))
    head = VOCAB * HIDDEN + VOCAB * 2
    q8_0 = VOCAB * HIDDEN // 32 * 34  # the tied embedding as Q8_0 blocks
    assert gguf_weight_bytes(model(head=None), int8, 2, True) == VECTORS + linears + head + q8_0
    untied = VECTORS + linears + head + VOCAB * HIDDEN * 2  # embedding dense
    assert gguf_weight_bytes(model(), int8, 2, False) == untied


def test_group_quant_weight_bytes():
    packed, scales, zeros = 4096 * 4096 // 2, 32 * 4096 * 4, 32 * 4096
    assert group_quant_weight_bytes(4096, 4096, 4, 128) == packed + scales + zeros
    with_order = group_quant_weight_bytes(4096, 4096, 4, 128, act_order=True)
    assert with_order == packed + scales + zeros + 4096 * 4
    assert group_quant_weight_bytes(4096, 4096, 8, -1) == 4096 * 4096 + 4096 * 4 + 4096


def test_hf_quantized_weight_bytes():
    config = {
        "model_type": "llama",
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 128,
        "num_hidden_layers": 2,
        "vocab_size": 1000,
        "tie_word_embeddings": False,
        "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128},
    }
    qkv = 512 * 256 // 2 + 2 * 512 * 5  # packed, then a float32 scale and uint8 zero per group
    o = 256 * 256 // 2 + 2 * 256 * 5
    gate_up = 1024 * 256 // 2 + 2 * 1024 * 5
    down = 256 * 512 // 2 + 4 * 256 * 5
    layer = qkv + o + gate_up + down + 2 * 256 * 2  # and two norms
    tables, final_norm, scratch = 2 * 1000 * 256 * 2, 256 * 2, 1024 * 256 * 2
    expected = 2 * layer + tables + final_norm + scratch
    assert hf_quantized_weight_bytes(config, 2) == expected == 2186752
    tied = hf_quantized_weight_bytes({**config, "tie_word_embeddings": True}, 2)
    assert tied == expected - 1000 * 256 * 2
    qwen2 = hf_quantized_weight_bytes({**config, "model_type": "qwen2"}, 2)
    assert qwen2 == expected + 2 * (256 + 2 * 128) * 2  # q/k/v biases


def test_footprint_imports_no_torch():
    code = (
        "import sys, purellm.layers.quant.footprint, purellm.platform.memory\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
