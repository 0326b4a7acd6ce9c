"""A Q4 GGUF's own 4-bit weights as int4 linears (`quantization="gguf"`): exact 4-bit values,
close to the dense layer on the int4 kernel, the dense weight above SMALL_BATCH rows, and the
engine picks it on its own for a Q4 GGUF on the CPU in bfloat16 or an automatic float32
(whose small steps run the kernel in bf16)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize
from torch import nn

from purellm import LLM, SamplingParams
from purellm.layers.quantization import SMALL_BATCH, Int4Linear, Int8Embedding, Int8Linear
from purellm.loaders.gguf_quants import read_q4
from purellm.runner.model_runner import _quantization
from tests.loaders.test_gguf import LLAMA_META, f32, hf_to_gguf, tiny_hf_model, write_gguf


def _q4_linear(
    qtype: Q, rows=96, cols=128, bias=False, dtype=torch.bfloat16
) -> tuple[Int4Linear, torch.Tensor]:
    rng = np.random.default_rng(0)
    raw = quantize(rng.standard_normal((rows, cols)).astype(np.float32), qtype)
    weight = read_q4(raw, qtype.name, (rows, cols))
    linear = nn.Linear(cols, rows, bias=bias).to(dtype)
    with torch.no_grad():
        linear.weight.copy_(weight.dequantize())
    return Int4Linear(linear, weight.q, weight.scales, weight.mins), weight.dequantize()


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1])
@pytest.mark.parametrize("rows", [1, SMALL_BATCH, SMALL_BATCH + 1])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_int4_linear_matches_the_dequantized_weight(qtype, rows, dtype):
    layer, dense = _q4_linear(qtype, bias=True, dtype=dtype)
    x = torch.randn(rows, dense.shape[1], dtype=dtype)
    expected = x.float() @ dense.T + layer.bias.float()
    got = layer(x)
    assert got.dtype == dtype
    assert (got.float() - expected).norm() / expected.norm() < 0.01


@pytest.mark.parametrize(
    ("dtype", "dtype_auto", "expected"),
    [
        (torch.bfloat16, False, "gguf"),
        (torch.bfloat16, True, "gguf"),
        (torch.float32, True, "gguf"),  # auto chose float32: a CPU without native bf16
        (torch.float32, False, "none"),  # an explicit float32 stays the exact reference
        (torch.float16, False, "none"),
    ],
)
def test_auto_quantization(dtype, dtype_auto, expected):
    quantized = SimpleNamespace(quantized=frozenset({"model.layers.0.mlp.down_proj.weight"}))
    dense = SimpleNamespace(quantized=frozenset())
    cpu = torch.device("cpu")
    assert _quantization(None, cpu, dtype, quantized, dtype_auto) == expected
    assert _quantization(None, cpu, dtype, dense, dtype_auto) == "none"
    assert _quantization("gguf", cpu, dtype, quantized, dtype_auto) == "gguf"
    with pytest.raises(ValueError, match="quantized weights"):
        _quantization("gguf", cpu, dtype, dense, dtype_auto)


def _quantized_gguf(path, qtype_of, tied=True, embedding: Q | None = None) -> str:
    """The tiny Llama with each matrix stored as `qtype_of(gguf_name)`, the embedding as
    `embedding` (default: float)."""
    tensors = hf_to_gguf(tiny_hf_model("llama", tied=tied), "llama")
    for name, (array, _) in tensors.items():
        qtype = embedding if "token_embd" in name else qtype_of(name)
        if array.ndim == 2 and qtype is not None:
            tensors[name] = (quantize(array, qtype), qtype)
    tensors["output_norm.weight"] = f32(np.ones(64))
    return str(write_gguf(path, "llama", LLAMA_META, tensors))


def test_gguf_is_the_default_for_a_q4_gguf_in_bfloat16(tmp_path):
    path = _quantized_gguf(tmp_path / "q4.gguf", lambda name: Q.Q4_1)

    options = dict(device="cpu", kv_cache_memory=1 << 20)
    prompts = [{"prompt_token_ids": [5, 70, 200, 9]}, {"prompt_token_ids": [1, 2, 3]}]
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    auto = LLM(str(path), dtype="bfloat16", **options)
    runner = auto.engine.runner
    assert runner.quantization == "gguf"
    int4 = [m for m in runner.model.modules() if isinstance(m, Int4Linear)]
    assert len(int4) == 2 * 4  # qkv, o, gate_up, down in each layer
    for layer in int4:  # the 4-bit rows are in the dense weight's order (q/k unpermuted, fused)
        x = torch.randn(1, layer.weight.shape[1], dtype=torch.bfloat16)
        expected = nn.functional.linear(x, layer.weight).float()
        assert (layer(x).float() - expected).norm() / expected.norm() < 0.02
    assert isinstance(runner.model.lm_head, Int8Linear)
    assert runner.model.lm_head.dense is not None  # the file keeps the tied matrix in float
    alone = [auto.generate(p, params)[0].outputs[0].token_ids for p in prompts]  # int4 kernel
    assert all(len(ids) == 6 for ids in alone)
    dense = LLM(str(path), dtype="bfloat16", quantization="none", **options)
    assert dense.engine.runner.quantization == "none"
    assert not any(isinstance(m, Int4Linear) for m in dense.engine.runner.model.modules())
    assert LLM(str(path), dtype="float32", **options).engine.runner.quantization == "none"
    fp32 = LLM(str(path), dtype="float32", quantization="gguf", **options)
    assert fp32.engine.runner.model.lm_head.scales.dtype == torch.bfloat16  # the kernel's dtype
    assert all(len(o.outputs[0].token_ids) == 6 for o in fp32.generate(prompts, params))


@pytest.mark.parametrize("tied", [True, False])
def test_a_quantized_vocabulary_is_kept_in_int8_only(tmp_path, tied):
    """A Q8_0 embedding (and LM head) keeps no dense copy; the first token still matches."""
    path = _quantized_gguf(tmp_path / "v.gguf", lambda name: Q.Q8_0, tied, embedding=Q.Q8_0)
    options = dict(device="cpu", kv_cache_memory=1 << 20, dtype="bfloat16")
    llm = LLM(path, **options)
    model = llm.engine.runner.model
    assert isinstance(model.model.embed_tokens, Int8Embedding)
    assert isinstance(model.lm_head, Int8Linear) and model.lm_head.dense is None
    vocab = model.config.vocab_size
    assert not [p for p in model.parameters() if p.shape[0] == vocab]  # no dense vocabulary
    prompts = [{"prompt_token_ids": [5, 70, 200, 9]}, {"prompt_token_ids": [1, 2, 3]}] * 3
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    dense = LLM(path, quantization="none", **options).generate(prompts, params)  # large steps
    got = llm.generate(prompts, params)
    assert [o.outputs[0].token_ids[0] for o in got] == [o.outputs[0].token_ids[0] for o in dense]


def test_other_quantized_matrices_get_int8_twins(tmp_path):
    """Q8_0 matrices, and fused ones with a shard that is not Q4 (v in Q8_0 beside Q4_1 q, k),
    get an int8 twin with the dense weight kept; whole-Q4 ones the int4 kernel."""
    path = _quantized_gguf(
        tmp_path / "mixed.gguf",
        lambda name: (
            Q.Q4_1
            if name.endswith(("attn_q.weight", "attn_k.weight", "attn_output.weight"))
            else Q.Q8_0
        ),
    )
    options = dict(device="cpu", kv_cache_memory=1 << 20)
    llm = LLM(path, dtype="bfloat16", **options)
    model = llm.engine.runner.model
    assert llm.engine.runner.quantization == "gguf"
    layer = model.model.layers[0]
    assert isinstance(layer.self_attn.o_proj, Int4Linear)
    for name in ("self_attn.qkv_proj", "mlp.gate_up_proj", "mlp.down_proj"):
        twin = layer.get_submodule(name)
        assert isinstance(twin, Int8Linear) and twin.dense is not None, name
    assert layer.self_attn.qkv_proj.output_sizes == [64, 32, 32]
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    prompt = {"prompt_token_ids": [5, 70, 200, 9]}
    dense = LLM(path, dtype="bfloat16", quantization="none", **options).generate(prompt, params)
    got = llm.generate(prompt, params)
    assert got[0].outputs[0].token_ids[0] == dense[0].outputs[0].token_ids[0]
