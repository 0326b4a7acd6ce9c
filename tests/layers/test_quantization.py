"""Weight-only int8 linears: close to the float layer on both kernels; a tied embedding in int8
(exact for Q8_0); the engine runs with it."""

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize
from torch import nn

from purellm import LLM, SamplingParams
from purellm.layers.linear import MergedLinear
from purellm.layers.quantization import (
    QUANTIZE_ROWS,
    SMALL_BATCH,
    Int8Embedding,
    Int8Linear,
    quantize_linears,
)
from tests.checkpoints import tokenizer, write_checkpoint


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, SMALL_BATCH, SMALL_BATCH + 1, 33])
@pytest.mark.parametrize("outputs", [160, QUANTIZE_ROWS + 3])  # one chunk, a partial second
def test_int8_linear_is_close_to_the_float_layer(dtype, rows, outputs):
    torch.manual_seed(0)
    linear = nn.Linear(96, outputs, bias=True).to(dtype)
    x = torch.randn(rows, 96, dtype=dtype)
    expected = linear(x).float()
    got = Int8Linear.from_linear(linear)(x).float()
    assert (got - expected).norm() / expected.norm() < 0.02


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_keep_dense_leaves_the_float_weight_alone(dtype):
    linear = nn.Linear(64, 48, bias=False).to(dtype)
    before = linear.weight.detach().clone()
    layer = Int8Linear.from_linear(linear, keep_dense=True)
    assert layer.dense is linear.weight
    torch.testing.assert_close(layer.dense.detach(), before, rtol=0, atol=0)


def test_both_kernels_agree():
    torch.manual_seed(0)
    layer = Int8Linear.from_linear(nn.Linear(64, 48, bias=False))
    x = torch.randn(SMALL_BATCH + 3, 64)
    small = torch.cat([layer(x[i : i + 1]) for i in range(len(x))])  # the bf16 kernel
    assert small.dtype == torch.float32
    assert (layer(x) - small).norm() / small.norm() < 0.01


def test_quantize_linears_keeps_fused_shard_sizes():
    model = nn.Sequential(MergedLinear(8, [4, 2, 2]), nn.Linear(8, 8))
    assert quantize_linears(model) == 2
    assert isinstance(model[0], Int8Linear) and model[0].output_sizes == [4, 2, 2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_tied_embedding_keeps_only_int8(dtype):
    torch.manual_seed(0)
    model = nn.Module()
    model.model = nn.Module()
    model.model.embed_tokens = nn.Embedding(300, 64).to(dtype)
    model.lm_head = nn.Linear(64, 300, bias=False).to(dtype)
    model.lm_head.weight = model.model.embed_tokens.weight
    model.tie_word_embeddings = True
    dense = model.lm_head.weight.detach().clone()
    assert quantize_linears(model) == 1
    embedding = model.model.embed_tokens
    assert isinstance(embedding, Int8Embedding)
    assert not [p for p in model.parameters() if p.shape == dense.shape]  # no dense copy left
    ids = torch.tensor([0, 7, 299, 7])
    rows = embedding(ids)
    assert rows.dtype == dtype
    assert (rows.float() - dense[ids].float()).norm() / dense[ids].float().norm() < 0.01


def test_an_embedding_stored_in_q8_0_is_read_back_exactly():
    """Bit-exact in float32; in bf16, whose rounding hides the file's scales, within a step."""
    values = np.random.default_rng(0).standard_normal((300, 64)).astype(np.float32)
    raw = quantize(values, GGMLQuantizationType.Q8_0)
    weight = torch.from_numpy(dequantize(raw, GGMLQuantizationType.Q8_0))
    ids = torch.arange(300)
    assert torch.equal(Int8Embedding(weight)(ids), weight)
    half = weight.to(torch.bfloat16)
    back = Int8Embedding(half)(ids).float()
    assert ((back - half.float()).abs() <= half.float().abs() / 128).all()  # one bf16 step


def test_engine_with_int8_weights_mostly_agrees_with_float(tmp_path):
    folder = write_checkpoint(tmp_path, "qwen3")
    prompts = [{"prompt_token_ids": tokenizer().encode(t)} for t in ("The quick", "def fib(n):")]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    runs = [
        LLM(
            str(folder), dtype="float32", device="cpu", kv_cache_memory=1 << 20, quantization=q
        ).generate(prompts, params)
        for q in (None, "int8")
    ]
    first = [
        (a.outputs[0].token_ids[0], b.outputs[0].token_ids[0]) for a, b in zip(*runs, strict=True)
    ]
    assert all(len(o.outputs[0].token_ids) == 8 for o in runs[1])
    assert sum(x == y for x, y in first) >= 1
