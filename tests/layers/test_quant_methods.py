"""Quantization methods chosen when a linear is built: a GGUF's blocks dequantized before the
matmul (exact), torch's CPU int4/int8 kernels (close), int8 re-quantization, the rules that pick
them, and the engine holding no dense copy it should not."""

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize

from purellm.layers.linear import Linear, VocabEmbedding
from purellm.layers.quant.base import Scratch
from purellm.layers.quant.builder import Int8Embedding
from purellm.layers.quant.config import CheckpointQuant, checkpoint_quant, resolve
from purellm.layers.quant.gguf_method import GGUFEmbeddingMethod, GGUFLinearMethod, GGUFRaw
from purellm.layers.quant.kernels import (
    QUANTIZE_ROWS,
    SMALL_BATCH,
    Int4Kernel,
    Int8Kernel,
    to_q8_0,
)
from tests.loaders.test_gguf import raw_tensor


def _gguf_linear(types, sizes, cols=256, bias=False, kernels=False, dense_copy=False, dtype=None):
    """A fused Linear whose shards are stored as `types`, loaded; with the float32 weight."""
    dtype = dtype or torch.float32
    method = GGUFLinearMethod([t.name for t in types], Scratch(), dtype, kernels, dense_copy)
    layer = Linear(cols, sizes, bias, method)
    parts = []
    for shard, (qtype, rows) in enumerate(zip(types, sizes, strict=True)):
        raw = raw_tensor(rows, cols, qtype, seed=shard)
        layer.weight.weight_loader(
            layer.weight, GGUFRaw(torch.from_numpy(raw), qtype.name, cols), shard
        )
        parts.append(torch.from_numpy(dequantize(raw, qtype).reshape(rows, cols)))
    if bias:
        layer.bias.weight_loader(layer.bias, torch.randn(sum(sizes)))
    layer.method.process_after_loading(layer)
    return layer, torch.cat(parts)  # [out, in]


def test_a_fused_linear_of_mixed_types_is_exact_in_float32():
    layer, weight = _gguf_linear([Q.Q4_K, Q.Q6_K, Q.Q8_0], [64, 32, 32], bias=True)
    x = torch.randn(5, 256)
    expected = torch.nn.functional.linear(x, weight, layer.bias)
    assert torch.equal(layer(x), expected)
    assert layer.weight.numel() == (64 * 144 + 32 * 210 + 32 * 8 * 34)  # the file's bytes


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q4_K])
@pytest.mark.parametrize("rows", [1, SMALL_BATCH, SMALL_BATCH + 3])
@pytest.mark.parametrize("dense_copy", [False, True])
def test_q4_types_run_the_int4_kernel(qtype, rows, dense_copy):
    layer, weight = _gguf_linear([qtype, qtype], [64, 32], bias=True, kernels=True,
                                 dense_copy=dense_copy)  # fmt: skip
    assert isinstance(layer.method, Int4Kernel) and not hasattr(layer, "weight")
    assert (layer.dense is not None) == dense_copy
    x = torch.randn(rows, 256)
    expected = x @ weight.T + layer.bias
    got = layer(x)
    assert got.dtype == torch.float32
    assert (got - expected).norm() / expected.norm() < 0.01


def test_other_types_run_the_int8_kernel():
    layer, weight = _gguf_linear([Q.Q4_K, Q.Q6_K], [64, 32], kernels=True)
    assert isinstance(layer.method, Int8Kernel) and layer.dense is None
    for rows in (1, SMALL_BATCH + 3):  # the int8 GEMV, then the chunked dequantized matmul
        x = torch.randn(rows, 256)
        expected = x @ weight.T
        assert (layer(x) - expected).norm() / expected.norm() < 0.01


@pytest.mark.parametrize("outputs", [160, QUANTIZE_ROWS + 3])
def test_int8_quantization_of_a_dense_linear(outputs):
    torch.manual_seed(0)
    layer = Linear(96, [outputs], True, Int8Kernel(torch.bfloat16))
    weight = torch.randn(outputs, 96)
    layer.weight.weight_loader(layer.weight, weight)
    layer.bias.weight_loader(layer.bias, torch.randn(outputs))
    layer.method.process_after_loading(layer)
    assert layer.qweight.dtype == torch.int8 and not hasattr(layer, "weight")
    for rows in (1, SMALL_BATCH + 1, 33):
        x = torch.randn(rows, 96, dtype=torch.bfloat16)
        expected = x.float() @ weight.T + layer.bias.float()
        assert (layer(x).float() - expected).norm() / expected.norm() < 0.02


def test_a_gguf_embedding_reads_rows_exactly():
    raw = raw_tensor(300, 256, Q.Q6_K)
    layer = VocabEmbedding(300, 256, GGUFEmbeddingMethod("Q6_K", torch.float32))
    layer.weight.weight_loader(layer.weight, GGUFRaw(torch.from_numpy(raw), "Q6_K", 256))
    ids = torch.tensor([0, 7, 299, 7])
    table = torch.from_numpy(dequantize(raw, Q.Q6_K).reshape(300, 256))
    assert torch.equal(layer(ids), table[ids])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_embedding_becomes_q8_0_blocks(dtype):
    torch.manual_seed(0)
    layer = VocabEmbedding(300, 64, Int8Embedding(dtype))
    dense = torch.randn(300, 64).to(dtype)
    layer.weight.weight_loader(layer.weight, dense)
    layer.method.process_after_loading(layer)
    assert layer.weight.dtype == torch.uint8 and layer.weight.numel() == 300 * 2 * 34
    ids = torch.tensor([0, 7, 299, 7])
    rows = layer(ids)
    assert rows.dtype == dtype
    assert (rows.float() - dense[ids].float()).norm() / dense[ids].float().norm() < 0.01
    exact = dequantize(to_q8_0(dense.float()).numpy(), Q.Q8_0).reshape(300, 64)
    assert torch.equal(rows.float(), torch.from_numpy(exact)[ids].to(dtype).float())


def test_the_checkpoint_picks_the_method():
    gguf = CheckpointQuant("gguf", linear_weights=10**6)
    assert resolve(None, gguf, True, gguf.linear_weights).method == "gguf"
    assert resolve(None, None, True, 0).method == "none"
    assert resolve("none", gguf, True, 0).method == "none"
    assert resolve("int8", gguf, True, 0).method == "int8"
    small = resolve(None, gguf, True, 10**6)
    assert small.kernels and small.dense_copies  # 2 MB of linears: dense copies kept
    assert not resolve(None, gguf, True, 200 * 10**6).dense_copies
    assert not resolve(None, gguf, False, 10**6).dense_copies  # no kernels, no dense copies
    assert resolve(None, gguf, True, 200 * 10**6, dense_copies=True).dense_copies
    awq = checkpoint_quant({"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm"})
    assert resolve(None, awq, True, 0).method == "awq"
    with pytest.raises(ValueError, match="does not match"):
        resolve("gptq", awq, True, 0)
    with pytest.raises(ValueError, match="does not match"):
        resolve("gguf", None, True, 0)
    with pytest.raises(ValueError, match="int8"):
        resolve("int8", awq, True, 0)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"quant_method": "gptq", "bits": 3, "group_size": 128}, "3-bit"),
        ({"quant_method": "awq", "bits": 8, "group_size": 128}, "8-bit"),
        ({"quant_method": "bitsandbytes"}, "not supported"),
        ({"quant_method": "compressed-tensors", "format": "float-quantized"}, "pack-quantized"),
    ],
)
def test_unsupported_quantization_configs_are_refused(config, match):
    with pytest.raises(ValueError, match=match):
        checkpoint_quant(config)


def test_gptq_and_compressed_tensors_configs():
    gptq = checkpoint_quant(
        {
            "quant_method": "gptq",
            "bits": 8,
            "group_size": 32,
            "desc_act": True,
            "sym": False,
            "checkpoint_format": "gptq_v2",
        }  # fmt: skip
    )
    assert (gptq.bits, gptq.group_size, gptq.desc_act, gptq.symmetric, gptq.gptq_v2) == (
        8,
        32,
        True,
        False,
        True,  # fmt: skip
    )
    weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
               "group_size": 128}  # fmt: skip
    ct = checkpoint_quant(
        {
            "quant_method": "compressed-tensors",
            "format": "pack-quantized",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights}},
        }  # fmt: skip
    )
    assert (ct.method, ct.bits, ct.group_size, ct.symmetric) == ("compressed-tensors", 4, 128, True)


def test_raw_rows_dequantize_like_gguf_py():
    raw = raw_tensor(8, 256, Q.Q3_K)
    got = GGUFRaw(torch.from_numpy(raw), "Q3_K", 256).dequantize()
    assert torch.equal(got, torch.from_numpy(dequantize(raw, Q.Q3_K).reshape(8, 256)))
    assert np.isfinite(got.numpy()).all()
