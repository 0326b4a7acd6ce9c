import json
import struct

from purellm.platform.gpu import GIB
from purellm.platform.memory import DeviceMemory, fit_model, gpu_memory, kv_bytes_per_token
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


def _folder(tmp_path, config, tensors=None):
    (tmp_path / "config.json").write_text(json.dumps(config))
    if tensors is not None:
        header = json.dumps({"__metadata__": {}, **tensors}).encode()
        (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    return tmp_path


def test_qwen_coder_32b_does_not_fit_a_32gb_mi50(tmp_path):
    model = hf_facts(_folder(tmp_path, QWEN25_CODER_32B), "Qwen2.5-Coder-32B-Instruct")
    assert 32.5e9 < model.params < 33.0e9  # estimated from the config (no weights here)
    assert model.checkpoint_dtype == "bfloat16"
    fit = fit_model(model, "float16", MI50_MEMORY)
    assert not fit.fits
    assert 65e9 < fit.weight_bytes < 66e9
    assert "does not fit cuda:0" in fit.message and "65.5 GB in float16" in fit.message
    assert "4-bit GGUF" in fit.message


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
    assert model.stored_as.startswith("GGUF ")


def test_a_quantized_gguf_on_the_cpu_counts_its_quantized_twins():
    model = read_model_facts(None)  # Q4_1: dense weights plus the 4-bit ones for small steps
    assert model.head_params == 49152 * 576  # tied: token_embd.weight, kept in int8 only
    ram = DeviceMemory("cpu", "RAM", 64 * GIB, 48 * GIB)
    fit = fit_model(model, "bfloat16", ram)
    assert fit.weight_bytes == (model.params - model.head_params) * 2 + model.file_bytes
    assert fit_model(model, "float16", MI50_MEMORY).weight_bytes == model.params * 2
