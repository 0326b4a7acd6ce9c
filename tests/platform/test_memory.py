"""memory.py: weights as the runner keeps them and the KV cache beside them, from headers
only. Large models are written as header-only sparse files (os.truncate): no disk, no data."""

import json
import os
import struct

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUFWriter
from gguf import GGMLQuantizationType as Q

from purellm.layers.quant.footprint import kv_bytes_per_token as kv_per_token
from purellm.platform.gpu import GIB
from purellm.platform.memory import (
    DeviceMemory,
    fit_model,
    gpu_memory,
    kv_bytes_per_token,
    weight_bytes,
)
from purellm.platform.modelinfo import hf_facts, read_model_facts

QWEN25_CODER_32B = {  # config.json of Qwen/Qwen2.5-Coder-32B-Instruct
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 5120,
    "intermediate_size": 27648,
    "num_hidden_layers": 64,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "max_position_embeddings": 32768,
    "vocab_size": 152064,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
MI50_MEMORY = gpu_memory(0, "AMD Instinct MI50, gfx906, 32.0 GiB", 32 * GIB, 32 * GIB, 0.9)
Q4_K_M_32B_GPU_FP16 = (
    64 * (14745600 + 2949120 + 4300800 + 14745600 + 2 * 79626240 + 116121600)  # file bytes
    + 64 * (2 * 5120 + 5120 + 2 * 1024) * 2  # norms and q/k/v biases in float16
    + 152064 * 20 * 144  # token_embd Q4_K: 20 super-blocks of 144 bytes a row
    + 152064 * 20 * 210  # output Q6_K
    + 5120 * 2  # output_norm
    + 2 * 27648 * 5120 * 2  # the scratch: gate/up, the largest decoder linear (the head
    # is dequantized in chunks of that size)
)
"""Q4_K: q 5120 rows, k 1024, o 5120, gate/up 27648 at 20 * 144 bytes; Q6_K: v 1024 rows at
20 * 210, down 5120 rows at 108 * 210."""


def _folder(tmp_path, config, tensors=None):
    (tmp_path / "config.json").write_text(json.dumps(config))
    if tensors is not None:
        header = json.dumps({"__metadata__": {}, **tensors}).encode()
        (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    return tmp_path


def qwen2_shapes(config):
    """(Hugging Face name, shape [out, in] or [n]) of every tensor of a qwen2 model."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    kv = config["num_key_value_heads"] * hidden // config["num_attention_heads"]
    yield "model.embed_tokens.weight", (config["vocab_size"], hidden)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (hidden,)
        for name, out in (("q_proj", hidden), ("k_proj", kv), ("v_proj", kv)):
            yield p + f"self_attn.{name}.weight", (out, hidden)
            yield p + f"self_attn.{name}.bias", (out,)
        yield p + "self_attn.o_proj.weight", (hidden, hidden)
        yield p + "post_attention_layernorm.weight", (hidden,)
        yield p + "mlp.gate_proj.weight", (inter, hidden)
        yield p + "mlp.up_proj.weight", (inter, hidden)
        yield p + "mlp.down_proj.weight", (hidden, inter)
    yield "model.norm.weight", (hidden,)
    yield "lm_head.weight", (config["vocab_size"], hidden)


def write_sparse_safetensors(folder, config, dtype="F16"):
    """config.json and a model.safetensors with the full header, its data a hole."""
    tensors, offset = {}, 0
    for name, shape in qwen2_shapes(config):
        size = int(np.prod(shape)) * 2
        tensors[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    _folder(folder, config, tensors)
    path = folder / "model.safetensors"
    os.truncate(path, path.stat().st_size + offset)
    return folder


GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
Q6_K_PARTS = ("attn_v", "ffn_down", "output")
"""llama.cpp's Q4_K_M keeps these in Q6_K (v and down in half the layers; here in all)."""


def _gguf_name(name):
    if name in GGUF_NAMES:
        return GGUF_NAMES[name]
    _, _, layer, rest = name.split(".", 3)
    part, _, kind = rest.rpartition(".")
    return f"blk.{layer}.{GGUF_NAMES[part]}.{kind}"


def write_q4_k_m_gguf(path, config):
    """A qwen2 Q4_K_M GGUF's header and tensor table; the data is a hole (os.truncate)."""
    writer = GGUFWriter(str(path), "qwen2")
    meta = {
        "block_count": config["num_hidden_layers"],
        "context_length": config["max_position_embeddings"],
        "embedding_length": config["hidden_size"],
        "feed_forward_length": config["intermediate_size"],
        "attention.head_count": config["num_attention_heads"],
        "attention.head_count_kv": config["num_key_value_heads"],
    }
    for key, value in meta.items():
        writer.add_uint32(f"qwen2.{key}", value)
    data = 0
    for name, shape in qwen2_shapes(config):
        gguf_name = _gguf_name(name)
        kind = Q.F32 if len(shape) == 1 else Q.Q4_K
        if len(shape) == 2 and gguf_name.rpartition(".")[0].split(".")[-1] in Q6_K_PARTS:
            kind = Q.Q6_K
        block, size = GGML_QUANT_SIZES[kind]
        nbytes = int(np.prod(shape)) // block * size
        writer.add_tensor_info(gguf_name, shape, np.dtype(np.float32), nbytes, raw_dtype=kind)
        data += -(-nbytes // 32) * 32  # each tensor's data aligned to 32 bytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    start = -(-path.stat().st_size // 32) * 32
    os.truncate(path, start + data)
    return path


def test_qwen_coder_32b_does_not_fit_a_32gb_mi50(tmp_path):
    model = hf_facts(_folder(tmp_path, QWEN25_CODER_32B), "Qwen2.5-Coder-32B-Instruct")
    assert 32.5e9 < model.params < 33.0e9  # estimated from the config (no weights here)
    assert model.checkpoint_dtype == "bfloat16"
    fit = fit_model(model, "float16", MI50_MEMORY)
    assert not fit.fits
    assert 65e9 < fit.weight_bytes < 66e9
    assert "does not fit cuda:0" in fit.message and "65.5 GB in float16" in fit.message
    assert "a 4-bit file of this model (a Q4_K_M GGUF, AWQ or GPTQ)" in fit.message
    assert "needs about 20.7 GB" in fit.message and "that would fit" in fit.message
    assert "dequantizes" not in fit.message


def test_a_q4_k_m_32b_gguf_fits_a_32gb_mi50_in_its_own_blocks(tmp_path):
    path = write_q4_k_m_gguf(tmp_path / "Qwen2.5-Coder-32B-Q4_K_M.gguf", QWEN25_CODER_32B)
    assert path.stat().st_size > 20e9 and path.stat().st_blocks * 512 < 1e6  # sparse
    model = read_model_facts(str(path))
    assert (model.architecture, model.num_layers, model.context_length) == ("qwen2", 64, 32768)
    assert model.stored_as == "GGUF Q4_K" and not model.tied and len(model.tensors) == 771
    assert model.hidden_size == 5120 and model.vocab_size == 152064
    fit = fit_model(model, "float16", MI50_MEMORY)
    assert fit.weight_bytes == Q4_K_M_32B_GPU_FP16 == 21_620_455_424
    per_token = kv_per_token(64, 8, 128, 2)
    assert fit.kv_bytes_per_token == per_token == 262144
    assert fit.fits and fit.kv_tokens == (MI50_MEMORY.available - fit.weight_bytes) // per_token
    assert "weights 21.62 GB in the GGUF's own blocks" in fit.message
    assert f"KV cache {fit.kv_tokens} tokens" in fit.message
    on_cpu = fit_model(model, "bfloat16", DeviceMemory("cpu", "RAM", 64 * GIB, 48 * GIB))
    assert on_cpu.fits and "CPU int4/int8 kernels" in on_cpu.message
    assert on_cpu.weight_bytes < 26e9  # int4/int8 forms, no dense copies for a 32B


def test_an_awq_folder_is_counted_in_its_groups(tmp_path):
    quant = {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm"}
    config = {**QWEN25_CODER_32B, "quantization_config": quant}
    packed = {"x.qweight": {"dtype": "I32", "shape": [10, 20], "data_offsets": [0, 800]}}
    model = hf_facts(_folder(tmp_path, config, packed), "Qwen2.5-Coder-32B-AWQ")
    assert model.stored_as == "safetensors awq 4-bit"
    assert 32.5e9 < model.params < 33.0e9  # from the config: packed shapes do not count
    fit = fit_model(model, "float16", MI50_MEMORY)
    assert 18e9 < fit.weight_bytes < 22e9 and fit.fits
    assert "in awq groups as stored" in fit.message


def test_small_model_fits_with_kv_capacity(tmp_path):
    config = {**QWEN25_CODER_32B, "hidden_size": 1536, "intermediate_size": 8960}
    config.update(num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2)
    model = hf_facts(_folder(tmp_path, config), "Qwen2.5-Coder-1.5B")
    assert kv_bytes_per_token(model, "float16") == 2 * 28 * 2 * 128 * 2
    fit = fit_model(model, "float16", MI50_MEMORY)
    assert fit.fits
    assert fit.kv_tokens == fit.kv_bytes // (2 * 28 * 2 * 128 * 2)
    assert fit.full_sequences == fit.kv_tokens // 32768 > 10


def test_cpu_kv_cache_is_the_default_budget(tmp_path):
    config = {**QWEN25_CODER_32B, "num_hidden_layers": 2, "vocab_size": 1000}
    model = hf_facts(_folder(tmp_path, config), "tiny")
    ram = DeviceMemory("cpu", "RAM", 64 * GIB, 48 * GIB)
    fit = fit_model(model, "float32", ram)
    assert fit.fits and fit.kv_bytes == 2 << 30
    assert not fit_model(model, "float32", DeviceMemory("cpu", "RAM", GIB, GIB // 2)).fits


def test_parameters_come_from_safetensors_headers(tmp_path):
    tensors = {"a": {"dtype": "BF16", "shape": [10, 20], "data_offsets": [0, 400]}}
    tensors["b"] = {"dtype": "BF16", "shape": [7], "data_offsets": [400, 414]}
    model = hf_facts(_folder(tmp_path, QWEN25_CODER_32B, tensors), "x")
    assert model.params == 207


def test_default_gguf_facts_without_loading_weights():
    model = read_model_facts(None)
    assert model.architecture == "llama" and model.num_layers == 30
    assert 134e6 < model.params < 136e6
    assert model.stored_as == "GGUF Q4_1" and model.tied
    assert (model.hidden_size, model.vocab_size, len(model.tensors)) == (576, 49152, 272)


def test_the_default_gguf_in_kernel_form_on_the_cpu_and_its_own_blocks_on_a_gpu():
    model = read_model_facts(None)  # Q4_1 linears, a tied Q8_0 embedding, 30 layers
    linears = [(960, 576), (576, 576), (3072, 576), (576, 1536)]  # qkv, o, gate_up, down
    norms = 30 * 2 * 576 * 2 + 576 * 2
    embedding = 49152 * 576 // 32 * 34  # Q8_0 as in the file
    int4 = sum(o * i // 2 + i // 32 * o * 4 + o * i * 2 for o, i in linears)  # + dense copy
    head = 49152 * 576 + 49152 * 2  # the tied head in int8
    ram = DeviceMemory("cpu", "RAM", 64 * GIB, 48 * GIB)
    assert fit_model(model, "bfloat16", ram).weight_bytes == 30 * int4 + norms + embedding + head
    q4_1 = sum(o * i // 32 * 20 for o, i in linears)  # the file's blocks
    scratch = 3072 * 576 * 2  # gate/up; the tied head is dequantized in chunks of that size
    gpu = 30 * q4_1 + norms + embedding + scratch
    assert fit_model(model, "float16", MI50_MEMORY).weight_bytes == gpu
    assert weight_bytes(model, "float32", "cpu", kernels=False) == gpu + norms + scratch


QWEN3_CODER_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "model_type": "qwen3_moe",
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "moe_intermediate_size": 768,
    "num_hidden_layers": 48,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "norm_topk_prob": True,
    "vocab_size": 151936,
    "max_position_embeddings": 262144,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def test_a_mixture_of_experts_counts_all_experts_and_shows_the_active_ones(tmp_path):
    model = hf_facts(_folder(tmp_path, QWEN3_CODER_30B_A3B), "coder")
    assert 30.5e9 < model.params < 30.6e9  # all 128 experts of 48 layers stay resident
    assert 3.3e9 < model.active_params < 3.4e9  # 8 of them per token
    fit = fit_model(model, "float16", MI50_MEMORY)
    assert not fit.fits and 61e9 < fit.weight_bytes < 61.1e9


def write_qwen3_moe_q4_k_m_gguf(path, config):
    """A Qwen3-MoE Q4_K_M-style GGUF's header and tensor table (Q6_K for the output and every
    other layer's down experts), the data a hole."""
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    kv, head_dim = config["num_key_value_heads"], config["head_dim"]
    experts, inter = config["num_experts"], config["moe_intermediate_size"]
    writer = GGUFWriter(str(path), "qwen3moe")
    meta = {
        "block_count": config["num_hidden_layers"],
        "context_length": config["max_position_embeddings"],
        "embedding_length": hidden,
        "feed_forward_length": config["intermediate_size"],
        "attention.head_count": heads,
        "attention.head_count_kv": kv,
        "attention.key_length": head_dim,
        "expert_count": experts,
        "expert_used_count": config["num_experts_per_tok"],
        "expert_feed_forward_length": inter,
    }
    for key, value in meta.items():
        writer.add_uint32(f"qwen3moe.{key}", value)
    shapes = [("token_embd.weight", (config["vocab_size"], hidden), Q.Q4_K)]
    for i in range(config["num_hidden_layers"]):
        down = Q.Q6_K if i % 2 == 0 else Q.Q4_K
        shapes += [
            (f"blk.{i}.attn_norm.weight", (hidden,), Q.F32),
            (f"blk.{i}.ffn_norm.weight", (hidden,), Q.F32),
            (f"blk.{i}.attn_q_norm.weight", (head_dim,), Q.F32),
            (f"blk.{i}.attn_k_norm.weight", (head_dim,), Q.F32),
            (f"blk.{i}.attn_q.weight", (heads * head_dim, hidden), Q.Q4_K),
            (f"blk.{i}.attn_k.weight", (kv * head_dim, hidden), Q.Q4_K),
            (f"blk.{i}.attn_v.weight", (kv * head_dim, hidden), Q.Q6_K),
            (f"blk.{i}.attn_output.weight", (hidden, heads * head_dim), Q.Q4_K),
            (f"blk.{i}.ffn_gate_inp.weight", (experts, hidden), Q.F32),
            (f"blk.{i}.ffn_gate_exps.weight", (experts, inter, hidden), Q.Q4_K),
            (f"blk.{i}.ffn_up_exps.weight", (experts, inter, hidden), Q.Q4_K),
            (f"blk.{i}.ffn_down_exps.weight", (experts, hidden, inter), down),
        ]
    shapes += [("output_norm.weight", (hidden,), Q.F32)]
    shapes += [("output.weight", (config["vocab_size"], hidden), Q.Q6_K)]
    data = 0
    for name, shape, kind in shapes:
        block, size = GGML_QUANT_SIZES[kind]
        nbytes = int(np.prod(shape)) // block * size
        writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=kind)
        data += -(-nbytes // 32) * 32
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    os.truncate(path, -(-path.stat().st_size // 32) * 32 + data)
    return path


def test_a_q4_k_m_qwen3_coder_30b_a3b_fits_a_32gb_mi50(tmp_path):
    path = write_qwen3_moe_q4_k_m_gguf(tmp_path / "coder.gguf", QWEN3_CODER_30B_A3B)
    model = read_model_facts(str(path))
    assert 30.5e9 < model.params < 30.6e9 and 3.3e9 < model.active_params < 3.4e9
    fit = fit_model(model, "float16", MI50_MEMORY)
    assert fit.fits and 17e9 < fit.weight_bytes < 19e9
    assert fit.kv_tokens > 100_000  # 96 KiB a token: a long context beside the weights
