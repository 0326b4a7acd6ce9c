"""purellm.layers.quant.gguf_blocks: GGUF blocks dequantized with torch, bit for bit against
gguf-py's numpy reference (`gguf.quants.dequantize`), on data gguf-py quantized and on random
blocks (every bit pattern, including the K-quants gguf-py cannot quantize)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize, quantize

from purellm.layers.quant import gguf_blocks
from purellm.layers.quant.gguf_blocks import GGUF_TYPES, dequantize_rows, row_bytes

QUANTIZABLE = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
K_QUANTS = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
# Byte offsets of each block's fp16 fields (d, and dmin or m where there is one).
HALF_FIELDS = {
    "Q4_0": (0,),
    "Q4_1": (0, 2),
    "Q5_0": (0,),
    "Q5_1": (0, 2),
    "Q8_0": (0,),
    "Q2_K": (80, 82),
    "Q3_K": (108,),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
}


def _raw(quantized: np.ndarray, rows: int) -> torch.Tensor:
    """gguf-py's quantized array (uint8, float16 or float32) as uint8 [rows, row bytes]."""
    return torch.from_numpy(np.ascontiguousarray(quantized).view(np.uint8).reshape(rows, -1))


def _reference(raw: torch.Tensor, type_name: str) -> torch.Tensor:
    return torch.from_numpy(dequantize(raw.numpy(), GGMLQuantizationType[type_name]).copy())


def _random_blocks(type_name: str, rows: int, columns: int, seed: int) -> torch.Tensor:
    """Random bytes with finite fp16 scale fields (some zero, subnormal, large or negative)."""
    rng = np.random.default_rng(seed)
    block, size = GGUF_TYPES[type_name]
    blocks = rng.integers(0, 256, (rows, columns // block, size), dtype=np.uint8)
    for start in HALF_FIELDS[type_name]:
        half = rng.uniform(-2, 2, blocks.shape[:2]).astype(np.float16)
        special = np.array([0.0, -0.0, 6e-8, -3e-5, 1000.0, 65504.0], dtype=np.float16)
        pick = rng.random(blocks.shape[:2]) < 0.1
        half[pick] = rng.choice(special, int(pick.sum()))
        blocks[..., start : start + 2] = half.view(np.uint8).reshape(*blocks.shape[:2], 2)
    return torch.from_numpy(blocks.reshape(rows, -1))


def _check(raw: torch.Tensor, type_name: str, columns: int) -> None:
    got = dequantize_rows(raw, type_name, columns)
    want = _reference(raw, type_name)
    assert got.dtype == torch.float32 and got.shape == (raw.shape[0], columns)
    assert torch.equal(got, want)


@pytest.mark.parametrize("type_name", QUANTIZABLE)
@pytest.mark.parametrize("shape", [(3, 64), (17, 256)])
def test_quantized_by_gguf_py(type_name, shape):
    rng = np.random.default_rng(0)
    data = (rng.standard_normal(shape) * 0.5).astype(np.float32)
    quantized = quantize(data, GGMLQuantizationType[type_name])
    raw = _raw(quantized, shape[0])
    assert raw.shape[1] == row_bytes(type_name, shape[1])
    _check(raw, type_name, shape[1])


@pytest.mark.parametrize("type_name", list(HALF_FIELDS))
@pytest.mark.parametrize("shape", [(3, 256), (17, 512)])
def test_random_blocks(type_name, shape):
    raw = _random_blocks(type_name, *shape, seed=shape[0])
    _check(raw, type_name, shape[1])


@pytest.mark.parametrize("type_name", ["F16", "Q4_1", "Q5_0", *K_QUANTS])
def test_chunked(type_name, monkeypatch):
    """Several chunks (3 rows each, the last one short) give the one-chunk result."""
    raw = _random_blocks(type_name, 17, 512, seed=1) if type_name != "F16" else None
    if raw is None:
        raw = _raw(np.random.default_rng(1).standard_normal((17, 512)).astype(np.float16), 17)
    whole = dequantize_rows(raw, type_name, 512)
    monkeypatch.setattr(gguf_blocks, "CHUNK_VALUES", {"cpu": 3 * 512 + 100})
    assert torch.equal(dequantize_rows(raw, type_name, 512), whole)
    out = torch.full((17, 512), float("nan"), dtype=torch.float16)
    dequantize_rows(raw, type_name, 512, out=out)
    assert torch.equal(out, whole.half())
    assert torch.equal(whole, _reference(raw, type_name))


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_K", "Q6_K"])
def test_out_bfloat16_slice(type_name):
    """`out` may be a bf16 slice of a larger buffer: it gets the float32 result rounded."""
    raw = _random_blocks(type_name, 5, 256, seed=2)
    buffer = torch.zeros(9, 256, dtype=torch.bfloat16)
    returned = dequantize_rows(raw, type_name, 256, out=buffer[2:7])
    assert returned.data_ptr() == buffer[2:7].data_ptr()
    assert torch.equal(buffer[2:7], dequantize_rows(raw, type_name, 256).bfloat16())
    assert not buffer[:2].any() and not buffer[7:].any()


def test_f32_does_not_alias_raw():
    raw = _raw(np.ones((2, 32), dtype=np.float32), 2)
    values = dequantize_rows(raw, "F32", 32)
    values.zero_()
    assert torch.equal(dequantize_rows(raw, "F32", 32), torch.ones(2, 32))


def test_zero_rows():
    raw = torch.empty(0, row_bytes("Q4_K", 256), dtype=torch.uint8)
    assert dequantize_rows(raw, "Q4_K", 256).shape == (0, 256)


def test_row_bytes():
    assert row_bytes("Q4_K", 256) == 144
    assert row_bytes("Q8_0", 32) == 34
    assert row_bytes("Q6_K", 256) == 210
    assert row_bytes("F16", 7) == 14
    assert row_bytes("Q4_0", 4096) == 128 * 18
    for name, sizes in GGUF_TYPES.items():
        assert GGML_QUANT_SIZES[GGMLQuantizationType[name]] == sizes


@pytest.mark.parametrize(
    ("type_name", "columns"), [("IQ4_XS", 256), ("q4_k", 256), ("Q4_K", 128), ("Q8_0", 33)]
)
def test_row_bytes_rejects(type_name, columns):
    with pytest.raises(ValueError):
        row_bytes(type_name, columns)
    with pytest.raises(ValueError):
        dequantize_rows(torch.zeros(1, 144, dtype=torch.uint8), type_name, columns)


def test_dequantize_rejects_bad_shapes():
    with pytest.raises(ValueError):
        dequantize_rows(torch.zeros(2, 143, dtype=torch.uint8), "Q4_K", 256)
    with pytest.raises(ValueError):
        dequantize_rows(torch.zeros(2, 144, dtype=torch.int8), "Q4_K", 256)
    with pytest.raises(ValueError):
        raw = torch.zeros(2, 144, dtype=torch.uint8)
        dequantize_rows(raw, "Q4_K", 256, out=torch.empty(3, 256))
