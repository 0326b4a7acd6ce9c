"""GGUF (ggml) quantized rows dequantized with plain torch ops, on any device, bit-exact in
float32 against gguf-py's numpy `gguf.quants.dequantize`.

Block layouts (ggml-common.h; fp16 fields little-endian; "4-bit pairs" means byte j holds
value j in its low nibble and value j + n in its high nibble, n = the bytes in the group):

- F32 / F16 / BF16: one value per 4 / 2 / 2 bytes (BF16 = the top half of a float32).
- Q4_0 (32 in 18 B): fp16 d, 16 B 4-bit pairs; w = d * (q - 8).
- Q4_1 (32 in 20 B): fp16 d, fp16 m, 16 B 4-bit pairs; w = d * q + m.
- Q5_0 (32 in 22 B): fp16 d, 4 B high bits (bit j of the little-endian uint32 is bit 4 of
  value j), 16 B 4-bit pairs; w = d * (q - 16).
- Q5_1 (32 in 24 B): fp16 d, fp16 m, 4 B high bits, 16 B 4-bit pairs; w = d * q + m.
- Q8_0 (32 in 34 B): fp16 d, 32 int8; w = q * d.
- Q2_K (256 in 84 B): 16 B scales (low nibble: scale, high: min, one per 16 values), 64 B of
  2-bit values (each 32 B holds 128 values: bits 2s..2s+1 of byte j is value 32s + j), fp16 d,
  fp16 dmin; w = (d * sc) * q - (dmin * m).
- Q3_K (256 in 110 B): 32 B high-bit mask (bit b of byte j is value 32b + j; set means no -4),
  64 B 2-bit values as Q2_K, 12 B of sixteen 6-bit scales (low nibbles in bytes 0-7, then top
  2 bits in bytes 8-11), fp16 d; w = (d * (sc - 32)) * (q - 4 * !hbit).
- Q4_K (256 in 144 B): fp16 d, fp16 dmin, 12 B of eight 6-bit scales and mins (bytes 0-3:
  scales' low 6 bits, 4-7: mins', 8-11: both their low 4 bits for groups 4-7, the top 2 bits
  of 0-7 holding those groups' top bits), 128 B: four 32 B 4-bit pairs = 8 groups of 32;
  w = (d * sc) * q - (dmin * m).
- Q5_K (256 in 176 B): as Q4_K with 32 B high bits after the scales (bit g of byte j is bit 4
  of value 32g + j).
- Q6_K (256 in 210 B): 128 B low nibbles (per 128 values: 64 B 4-bit pairs), 64 B top 2 bits
  (per 128 values: bits 2s..2s+1 of byte j belong to value 32s + j), 16 int8 scales (per 16
  values), fp16 d; w = (d * sc) * (q - 32).

Every decoder does ggml's float32 operations in ggml's order (no fused multiply-add), so the
float32 result equals gguf-py's bit for bit; `out` of another dtype gets that result rounded.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

GGUF_TYPES: dict[str, tuple[int, int]] = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q4_0": (32, 18),
    "Q4_1": (32, 20),
    "Q5_0": (32, 22),
    "Q5_1": (32, 24),
    "Q8_0": (32, 34),
    "Q2_K": (256, 84),
    "Q3_K": (256, 110),
    "Q4_K": (256, 144),
    "Q5_K": (256, 176),
    "Q6_K": (256, 210),
}
"""Type name -> (weights per block, bytes per block)."""

CHUNK_VALUES = {"cpu": 1 << 20}
"""Weights dequantized per step, by device type: on the CPU 4 MB of float32 temporaries stay
in cache (faster than 16 MB chunks); elsewhere DEVICE_CHUNK_VALUES, fewer kernel launches."""
DEVICE_CHUNK_VALUES = 1 << 24


def row_bytes(type_name: str, columns: int) -> int:
    """Bytes of one row of `columns` weights stored as `type_name`."""
    if type_name not in GGUF_TYPES:
        raise ValueError(f"unsupported GGUF type {type_name!r}")
    block, size = GGUF_TYPES[type_name]
    if columns < 1 or columns % block:
        raise ValueError(f"{type_name}: {columns} columns is not a multiple of {block}")
    return columns // block * size


def _half(b: torch.Tensor, start: int) -> torch.Tensor:
    """The fp16 field at byte `start` of every block as float32 [rows, blocks, 1]."""
    return b[..., start : start + 2].contiguous().view(torch.float16).float()


def _fields(x: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """uint8 [..., n] -> [..., count, n]: field i is (x >> bits * i) & (2 ** bits - 1)."""
    shifts = torch.arange(0, bits * count, bits, dtype=torch.uint8, device=x.device)  # [count]
    return (x.unsqueeze(-2) >> shifts[:, None]) & ((1 << bits) - 1)


def _nibbles(qs: torch.Tensor, width: int) -> torch.Tensor:
    """4-bit pairs [rows, blocks, k * width] -> values uint8 [rows, blocks, k * 2 * width]."""
    rows, blocks = qs.shape[:2]
    groups = qs.reshape(rows, blocks, qs.shape[-1] // width, width)  # [rows, blocks, k, width]
    return _fields(groups, 4, 2).reshape(rows, blocks, 2 * qs.shape[-1])  # [.., k * 2 * width]


def _crumbs(qs: torch.Tensor) -> torch.Tensor:
    """2-bit fields [rows, blocks, k * 32] -> uint8 [rows, blocks, k * 128] (value 32s + j of
    each 128 is bits 2s..2s+1 of byte j of its 32)."""
    rows, blocks = qs.shape[:2]
    groups = qs.reshape(rows, blocks, qs.shape[-1] // 32, 32)  # [rows, blocks, k, 32]
    return _fields(groups, 2, 4).reshape(rows, blocks, 4 * qs.shape[-1])  # [.., k * 128]


def _float(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return b.view(dtype).float()  # [rows, columns, 1]


def _f32(b: torch.Tensor) -> torch.Tensor:
    return b.view(torch.float32).clone()  # [rows, columns, 1], not aliasing `raw`


def _bf16(b: torch.Tensor) -> torch.Tensor:
    top = b.view(torch.int16).to(torch.int32) << 16  # [rows, columns, 1]
    return top.view(torch.float32)


def _q4_0(b: torch.Tensor) -> torch.Tensor:
    q = _nibbles(b[..., 2:], 16)  # [rows, blocks, 32]
    return q.float().sub_(8).mul_(_half(b, 0))


def _q4_1(b: torch.Tensor) -> torch.Tensor:
    q = _nibbles(b[..., 4:], 16)  # [rows, blocks, 32]
    return q.float().mul_(_half(b, 0)).add_(_half(b, 2))


def _high_bits32(qh: torch.Tensor) -> torch.Tensor:
    """4 bytes [rows, blocks, 4] (a little-endian uint32) -> its 32 bits [rows, blocks, 32]."""
    rows, blocks = qh.shape[:2]
    return _fields(qh, 1, 8).transpose(-1, -2).reshape(rows, blocks, 32)  # byte-major


def _q5_0(b: torch.Tensor) -> torch.Tensor:
    q = _nibbles(b[..., 6:], 16) | (_high_bits32(b[..., 2:6]) << 4)  # [rows, blocks, 32]
    return q.float().sub_(16).mul_(_half(b, 0))


def _q5_1(b: torch.Tensor) -> torch.Tensor:
    q = _nibbles(b[..., 8:], 16) | (_high_bits32(b[..., 4:8]) << 4)  # [rows, blocks, 32]
    return q.float().mul_(_half(b, 0)).add_(_half(b, 2))


def _q8_0(b: torch.Tensor) -> torch.Tensor:
    return b[..., 2:].view(torch.int8).float().mul_(_half(b, 0))  # [rows, blocks, 32]


def _q2_k(b: torch.Tensor) -> torch.Tensor:
    rows, blocks = b.shape[:2]
    scales = b[..., :16]  # [rows, blocks, 16]
    dl = (_half(b, 80) * (scales & 15).float()).unsqueeze(-1)  # [rows, blocks, 16, 1]
    ml = (_half(b, 82) * (scales >> 4).float()).unsqueeze(-1)  # [rows, blocks, 16, 1]
    q = _crumbs(b[..., 16:80]).view(rows, blocks, 16, 16)  # [rows, blocks, 16, 16]
    return q.float().mul_(dl).sub_(ml).view(rows, blocks, 256)


def _q3_k(b: torch.Tensor) -> torch.Tensor:
    rows, blocks = b.shape[:2]
    low = _fields(b[..., 96:104], 4, 2).reshape(rows, blocks, 16)  # [rows, blocks, 16]
    high = _fields(b[..., 104:108], 2, 4).reshape(rows, blocks, 16)  # [rows, blocks, 16]
    scales = (low | (high << 4)).float().sub_(32)  # [rows, blocks, 16]
    dl = (_half(b, 108) * scales).unsqueeze(-1)  # [rows, blocks, 16, 1]
    hbit = _fields(b[..., :32], 1, 8).reshape(rows, blocks, 16, 16)  # [rows, blocks, 16, 16]
    q = _crumbs(b[..., 32:96]).view(rows, blocks, 16, 16) | (hbit << 2)  # q - 4 * !hbit + 4
    return q.float().sub_(4).mul_(dl).view(rows, blocks, 256)


def _k_scales(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K's packed 6-bit scales and mins at bytes 4-15, each uint8 [rows, blocks, 8]."""
    sc, mn, both = b[..., 4:8], b[..., 8:12], b[..., 12:16]  # [rows, blocks, 4] each
    scales = torch.cat((sc & 63, (both & 15) | ((sc >> 2) & 48)), dim=-1)
    mins = torch.cat((mn & 63, (both >> 4) | ((mn >> 2) & 48)), dim=-1)
    return scales, mins


def _k_affine(b: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(d * sc) * q - (dmin * m) for Q4_K/Q5_K values q uint8 [rows, blocks, 8, 32]."""
    rows, blocks = b.shape[:2]
    scales, mins = _k_scales(b)
    dl = (_half(b, 0) * scales.float()).unsqueeze(-1)  # [rows, blocks, 8, 1]
    ml = (_half(b, 2) * mins.float()).unsqueeze(-1)  # [rows, blocks, 8, 1]
    return q.float().mul_(dl).sub_(ml).view(rows, blocks, 256)


def _q4_k(b: torch.Tensor) -> torch.Tensor:
    rows, blocks = b.shape[:2]
    q = _nibbles(b[..., 16:], 32).view(rows, blocks, 8, 32)  # [rows, blocks, 8, 32]
    return _k_affine(b, q)


def _q5_k(b: torch.Tensor) -> torch.Tensor:
    rows, blocks = b.shape[:2]
    low = _nibbles(b[..., 48:], 32).view(rows, blocks, 8, 32)  # [rows, blocks, 8, 32]
    high = _fields(b[..., 16:48], 1, 8)  # [rows, blocks, 8, 32]
    return _k_affine(b, low | (high << 4))


def _q6_k(b: torch.Tensor) -> torch.Tensor:
    rows, blocks = b.shape[:2]
    low = _nibbles(b[..., :128], 64)  # [rows, blocks, 256]
    high = _crumbs(b[..., 128:192])  # [rows, blocks, 256]
    q = (low | (high << 4)).view(rows, blocks, 16, 16)  # [rows, blocks, 16, 16]
    scales = b[..., 192:208].view(torch.int8).float()  # [rows, blocks, 16]
    dl = (_half(b, 208) * scales).unsqueeze(-1)  # [rows, blocks, 16, 1]
    return q.float().sub_(32).mul_(dl).view(rows, blocks, 256)


_DECODERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "F32": _f32,
    "F16": lambda b: _float(b, torch.float16),
    "BF16": _bf16,
    "Q4_0": _q4_0,
    "Q4_1": _q4_1,
    "Q5_0": _q5_0,
    "Q5_1": _q5_1,
    "Q8_0": _q8_0,
    "Q2_K": _q2_k,
    "Q3_K": _q3_k,
    "Q4_K": _q4_k,
    "Q5_K": _q5_k,
    "Q6_K": _q6_k,
}


def dequantize_rows(
    raw: torch.Tensor, type_name: str, columns: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """raw: uint8 [rows, row_bytes(type_name, columns)] (any device) -> float [rows, columns].

    Computes in float32 exactly as ggml does (bit-identical to gguf-py), `CHUNK_VALUES` weights
    at a time, into `out` (any float dtype, shape [rows, columns], e.g. a bf16 slice of a
    scratch buffer) if given, else into a new float32 tensor."""
    width = row_bytes(type_name, columns)
    if raw.dtype != torch.uint8 or raw.dim() != 2 or raw.shape[1] != width:
        got = f"{raw.dtype} {list(raw.shape)}"
        raise ValueError(f"{type_name} x {columns}: want uint8 [rows, {width}], got {got}")
    rows = raw.shape[0]
    if out is not None and (tuple(out.shape) != (rows, columns) or not out.is_floating_point()):
        raise ValueError(f"out: want float [{rows}, {columns}], got {out.dtype} {list(out.shape)}")
    block, size = GGUF_TYPES[type_name]
    blocks = columns // block
    decode = _DECODERS[type_name]
    step = max(1, CHUNK_VALUES.get(raw.device.type, DEVICE_CHUNK_VALUES) // columns)
    raw = raw.contiguous()
    if out is None and rows <= step:
        return decode(raw.view(rows, blocks, size)).view(rows, columns)  # [rows, blocks, bytes]
    if out is None:
        out = torch.empty(rows, columns, dtype=torch.float32, device=raw.device)
    for start in range(0, rows, step):
        chunk = raw[start : start + step]  # [n, row bytes]
        values = decode(chunk.view(chunk.shape[0], blocks, size))  # [n, blocks, block]
        out[start : start + step].copy_(values.view(chunk.shape[0], columns))
    return out
