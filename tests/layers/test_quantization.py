"""Weight-only int8 linears: close to the float layer on both kernels; the engine runs with it."""

import pytest
import torch
from torch import nn

from purellm import LLM, SamplingParams
from purellm.layers.linear import MergedLinear
from purellm.layers.quantization import SMALL_BATCH, Int8Linear, quantize_linears
from tests.checkpoints import tokenizer, write_checkpoint


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, SMALL_BATCH, SMALL_BATCH + 1, 33])
def test_int8_linear_is_close_to_the_float_layer(dtype, rows):
    torch.manual_seed(0)
    linear = nn.Linear(96, 160, bias=True).to(dtype)
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
