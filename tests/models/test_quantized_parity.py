"""Quantized checkpoints kept quantized decode exactly like the same file dequantized at load
(`quantization="none"`), float32, alone, batched, chunked and from the prefix cache; `none`
equals transformers on the dequantized weights. Bad quantized files fail before serving."""

import json

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize
from safetensors.torch import load_file, save_file

from purellm import LLM, SamplingParams
from purellm.layers.quant.gguf_method import GGUFLinearMethod
from purellm.layers.quant.group_method import GroupQuantMethod
from tests.checkpoints import hf_greedy, tokenizer, write_checkpoint
from tests.loaders.test_gguf import LLAMA_META, f32, hf_to_gguf, tiny_hf_model, write_gguf
from tests.quant_checkpoints import (
    write_awq_folder,
    write_compressed_folder,
    write_dequantized_folder,
    write_gptq_folder,
)
from tests.server.test_cli import _run

PROMPTS = ["The quick brown fox", "def fib(n):\n    return", "What is the capital of France?"]
NEW_TOKENS = 10
GGUF_TYPES = (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0)
FOLDERS = {
    "awq": lambda dense, out: write_awq_folder(dense, out, group_size=32),
    "gptq-sym": lambda dense, out: write_gptq_folder(dense, out, bits=4, group_size=32),
    "gptq-asym-act-order": lambda dense, out: write_gptq_folder(
        dense, out, bits=4, group_size=32, sym=False, desc_act=True
    ),
    "gptq_v2-8bit": lambda dense, out: write_gptq_folder(dense, out, bits=8, v2=True),
    "ct-w4a16": lambda dense, out: write_compressed_folder(dense, out, bits=4, group_size=32),
    "ct-w8a16": lambda dense, out: write_compressed_folder(dense, out, bits=8, group_size=None),
}


def _llm(model, **kwargs) -> LLM:
    options = dict(dtype="float32", device="cpu", kv_cache_memory=4 << 20)
    return LLM(str(model), **(options | kwargs))


def _greedy(llm: LLM, ids: list[list[int]]) -> list[list[int]]:
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": i} for i in ids], params)
    return [o.outputs[0].token_ids for o in outs]


@pytest.fixture(scope="module")
def dense_folder(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("dense"), "llama-untied-gqa")


@pytest.fixture(scope="module", params=sorted(FOLDERS))
def quantized_folder(request, dense_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    state = FOLDERS[request.param](dense_folder, out)
    return request.param, out, state


def test_group_quantized_folders_decode_like_their_dequantized_weights(
    quantized_folder, dense_folder, tmp_path
):
    name, folder, state = quantized_folder
    ids = [tokenizer().encode(p) for p in PROMPTS]
    quantized = _llm(folder)
    method = name.split("-")[0].removesuffix("_v2").replace("ct", "compressed-tensors")
    assert quantized.engine.runner.quantization == method
    layer = quantized.engine.runner.model.model.layers[0].self_attn.qkv_proj
    assert isinstance(layer.method, GroupQuantMethod) and not hasattr(layer, "weight")
    reference = _greedy(_llm(folder, quantization="none"), ids)
    alone = [_greedy(quantized, [i])[0] for i in ids]
    assert alone == reference
    assert _greedy(quantized, ids) == reference
    assert _greedy(_llm(folder, max_num_batched_tokens=5), ids) == reference
    cached = _llm(folder, block_size=4)
    assert _greedy(cached, ids[2:]) == _greedy(cached, ids[2:]) == reference[2:]
    plain = write_dequantized_folder(dense_folder, tmp_path / "plain", state)
    assert [hf_greedy(plain, i, NEW_TOKENS) for i in ids] == reference


def _mixed_gguf(path, tied: bool):
    """The tiny Llama with its matrices in every 32-wide GGUF type, the embedding in Q8_0."""
    tensors = hf_to_gguf(tiny_hf_model("llama", tied=tied), "llama")
    for i, (name, (array, _)) in enumerate(sorted(tensors.items())):
        qtype = Q.Q8_0 if "token_embd" in name else GGUF_TYPES[i % len(GGUF_TYPES)]
        if array.ndim == 2:
            tensors[name] = (quantize(array, qtype), qtype)
    tensors["output_norm.weight"] = f32(np.ones(64))
    return write_gguf(path, "llama", LLAMA_META, tensors)


@pytest.mark.parametrize("tied", [True, False])
def test_a_gguf_kept_in_its_blocks_decodes_like_it_dequantized(tmp_path, tied):
    path = _mixed_gguf(tmp_path / "mixed.gguf", tied)
    ids = [[5, 70, 200, 9, 31, 8], [1, 2, 3], [40, 41, 42, 43, 44, 45, 46, 47, 48]]
    kept = _llm(path)  # an explicit float32: the exact dequantize-then-matmul path
    runner = kept.engine.runner
    assert runner.quantization == "gguf" and not runner.quant.kernels
    model = runner.model
    assert isinstance(model.model.layers[1].mlp.down_proj.method, GGUFLinearMethod)
    assert model.model.embed_tokens.weight.dtype == torch.uint8
    assert model.lm_head.weight.dtype == torch.uint8
    assert model.lm_head.method.chunk_values == 256 * 64  # gate/up's size: the head in 2 chunks
    reference = _greedy(_llm(path, quantization="none"), ids)
    assert [_greedy(kept, [i])[0] for i in ids] == reference
    assert _greedy(kept, ids) == reference
    assert _greedy(_llm(path, max_num_batched_tokens=4), ids) == reference
    cached = _llm(path, block_size=4)
    assert _greedy(cached, ids[2:]) == _greedy(cached, ids[2:]) == reference[2:]


def test_the_cpu_kernels_stay_close(tmp_path):
    """bf16 on the CPU: Q4 linears on the int4 kernel, others int8, the Q8_0 embedding in its
    blocks and the tied head int8 only; the first tokens agree with the dequantized model."""
    path = _mixed_gguf(tmp_path / "mixed.gguf", tied=True)
    llm = _llm(path, dtype="bfloat16", dense_copies=False)
    model = llm.engine.runner.model
    kinds = {type(m.method).__name__ for m in model.modules() if hasattr(m, "method")}
    assert kinds == {"Int4Kernel", "Int8Kernel", "GGUFEmbeddingMethod"}
    assert model.lm_head.dense is None and model.lm_head.qweight.dtype == torch.int8
    vocab = model.config.vocab_size
    assert not [t for t in model.state_dict().values() if t.shape[0] == vocab and t.dim() == 2
                and t.is_floating_point()]  # fmt: skip
    ids = [[5, 70, 200, 9], [1, 2, 3]]
    first = [t[0] for t in _greedy(llm, ids)]
    assert first == [t[0] for t in _greedy(_llm(path, quantization="none"), ids)]


def _missing(folder, suffix: str):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    name = f"model.layers.1.mlp.up_proj.{suffix}"
    del tensors[name]
    save_file(tensors, path, metadata={"format": "pt"})
    return name


def test_bad_quantized_folders_fail_clearly(dense_folder, tmp_path):
    missing = tmp_path / "missing"
    write_awq_folder(dense_folder, missing, group_size=32)
    _missing(missing, "qzeros")
    with pytest.raises(ValueError, match=r"model\.safetensors|missing.*up_proj\.qzeros"):
        _llm(missing)
    result = _run(["serve", str(missing), "--port", "0"], timeout=120)
    assert result.returncode == 1 and "up_proj.qzeros" in result.stderr

    bits = tmp_path / "bits"
    write_gptq_folder(dense_folder, bits, bits=4, group_size=32)
    config = json.loads((bits / "config.json").read_text())
    config["quantization_config"]["bits"] = 3
    (bits / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json.*3-bit"):
        _llm(bits)

    shape = tmp_path / "shape"
    write_compressed_folder(dense_folder, shape, bits=4, group_size=32)
    config = json.loads((shape / "config.json").read_text())
    config["intermediate_size"] = 96
    (shape / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"mlp\.\w+_proj\.weight_\w+.*the model needs \["):
        _llm(shape)


def test_a_truncated_gguf_names_the_tensor(tmp_path):
    path = _mixed_gguf(tmp_path / "whole.gguf", tied=True)
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 3000])
    with pytest.raises(ValueError, match=r"cut\.gguf.*blk\.1\..*truncated"):
        _llm(cut)


def _held_bytes(llm: LLM) -> int:
    return llm.engine.runner.weight_bytes()


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("dtype", ["auto", "float32", "bfloat16"])
def test_doctor_counts_the_bytes_the_runner_holds(tmp_path, tied, dtype):
    """The fit plan's weight bytes equal the runner's tensors after a step: kernel forms with
    dense copies (auto, bfloat16 on this CPU) and the file's blocks plus one scratch (float32)."""
    from purellm.platform.memory import uses_kernels, weight_bytes
    from purellm.platform.modelinfo import read_model_facts

    path = _mixed_gguf(tmp_path / "mixed.gguf", tied)
    llm = _llm(path, dtype=dtype)
    _greedy(llm, [[5, 70, 200]])
    runner = llm.engine.runner
    kernels = uses_kernels("cpu", str(runner.dtype).removeprefix("torch."), dtype)
    assert runner.quant.kernels == kernels
    facts = read_model_facts(str(path))
    expected = weight_bytes(facts, str(runner.dtype).removeprefix("torch."), "cpu", kernels)
    assert _held_bytes(llm) == expected
