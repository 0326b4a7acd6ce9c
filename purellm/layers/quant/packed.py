"""AWQ, GPTQ and compressed-tensors ("pack-quantized") weights in one in-memory form.

Each publisher packs integer weights into int32 words its own way:

- AWQ GEMM (autoawq `WQLinear_GEMM`, vLLM `awq`): qweight int32 [in, out / 8] packed along the
  *outputs* in the interleaved order AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7] (value `8c + AWQ_ORDER[i]`
  in bits 4i..4i+3 of word c), qzeros int32 [groups, out / 8] packed the same way, scales
  [groups, out]; weight = (q - zero) * scale, 4 bits only.
- GPTQ (AutoGPTQ, gptqmodel, vLLM `gptq`): qweight int32 [in * bits / 32, out] packed along the
  *inputs*, low bits first; qzeros int32 [groups, out * bits / 32] packed along the outputs;
  scales [groups, out]; g_idx int32 [in]. The usual "gptq" (v1) checkpoints store zero - 1 and
  the readers add one to each field, without wrapping (AutoGPTQ's `QuantLinear`, vLLM's exllama
  kernels: a stored 15 reads as 16; gptqmodel's word-wide `+ 0x11111111` would carry instead),
  so a symmetric 4-bit checkpoint stores 7 for zero 8; an 8-bit stored 255 (zero 256) is refused.
  "gptq_v2" stores the zero itself.
- compressed-tensors pack-quantized (`pack_to_int32`): weight_packed int32 [out, in * bits / 32]
  packed along the inputs, low bits first, each signed value stored plus 2 ** (bits - 1);
  weight_scale [out, groups]; weight_zero_point, when asymmetric, signed and packed the same way
  along the *outputs* (int32 [out * bits / 32, groups]); weight_shape = (out, in).

`GroupQuantWeight` holds any of them as unsigned values in bytes along the inputs, a scale and an
integer zero per (output, group), and, for GPTQ's act-order, the group of every input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SUPPORTED_BITS = (4, 8)
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
"""AWQ's packing order: field i of a word holds output AWQ_ORDER[i] of its eight."""
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)
"""Output j of a word sits in field AWQ_REVERSE_ORDER[j] (autoawq's own name for it)."""
DEQUANT_CHUNK = 1 << 20
"""Weights dequantized at a time: the float temporaries stay a few MB."""


@dataclass
class GroupQuantWeight:
    packed: torch.Tensor
    """uint8 [out, in * bits / 8]: 4 bits: input 2j in the low nibble of byte j, 2j + 1 in the
    high one; 8 bits: one input a byte. Unsigned values 0 .. 2 ** bits - 1."""
    scales: torch.Tensor
    """[out, groups] in the checkpoint's float dtype."""
    zeros: torch.Tensor
    """uint8 [out, groups]: weight = (q - zero) * scale. 0 .. 2 ** bits - 1, except that a GPTQ
    v1 4-bit zero may read as 16."""
    bits: int
    group_size: int
    """Inputs per group (in_features for one scale per output channel)."""
    g_idx: torch.Tensor | None = None
    """int32 [in]: the group of every input (GPTQ act-order); None: input i is in group
    i // group_size."""

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        if self.packed.dtype != torch.uint8 or self.packed.dim() != 2:
            raise ValueError(f"packed must be a 2-D uint8 tensor, not {self.packed.dtype}")
        rows, groups = self.out_features, self.scales.shape[-1]
        if tuple(self.scales.shape) != (rows, groups) or self.zeros.shape != self.scales.shape:
            raise ValueError(
                f"scales {tuple(self.scales.shape)} and zeros {tuple(self.zeros.shape)} "
                f"must both be [{rows}, groups]"
            )
        if self.g_idx is None and groups * self.group_size < self.in_features:
            raise ValueError(
                f"{groups} groups of {self.group_size} do not cover {self.in_features} inputs"
            )
        if self.g_idx is not None and tuple(self.g_idx.shape) != (self.in_features,):
            raise ValueError(f"g_idx {tuple(self.g_idx.shape)} must be [{self.in_features}]")

    @property
    def out_features(self) -> int:
        return self.packed.shape[0]

    @property
    def in_features(self) -> int:
        return self.packed.shape[1] * 8 // self.bits

    def group_index(self) -> torch.Tensor:
        """int64 [in]: the group of every input."""
        if self.g_idx is not None:
            return self.g_idx.long()
        return torch.arange(self.in_features, device=self.packed.device) // self.group_size

    def unpack(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """uint8 [stop - start, in]: the values of rows start..stop."""
        rows = self.packed[start:stop]
        if self.bits == 8:
            return rows
        pairs = torch.stack((rows & 0xF, rows >> 4), dim=-1)  # [rows, in / 2, 2]
        return pairs.view(rows.shape[0], -1)  # [rows, in]

    def dequantize(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """[out_features, in_features]: (q - zero) * scale in float32 (exact), into `out`."""
        shape = (self.out_features, self.in_features)
        if out is None:
            out = torch.empty(shape, dtype=torch.float32, device=self.packed.device)
        elif tuple(out.shape) != shape:
            raise ValueError(f"out {tuple(out.shape)} must be {list(shape)}")
        groups = self.group_index()
        step = max(1, DEQUANT_CHUNK // max(1, self.in_features))
        for start in range(0, self.out_features, step):
            stop = min(start + step, self.out_features)
            q = self.unpack(start, stop).float()  # [rows, in]
            zero = self.zeros[start:stop].float()[:, groups]  # [rows, in]
            scale = self.scales[start:stop].float()[:, groups]  # [rows, in]
            out[start:stop] = (q - zero) * scale
        return out


def cat_rows(parts: list[GroupQuantWeight]) -> GroupQuantWeight:
    """The weights one above the other (fused q/k/v or gate/up): they must share bits, group
    size, inputs and g_idx."""
    if not parts:
        raise ValueError("cat_rows needs at least one weight")
    first = parts[0]
    for part in parts[1:]:
        if (part.bits, part.group_size) != (first.bits, first.group_size):
            raise ValueError(
                f"cannot fuse {part.bits}-bit group {part.group_size} with "
                f"{first.bits}-bit group {first.group_size} weights"
            )
        if part.in_features != first.in_features:
            raise ValueError(f"cannot fuse {part.in_features} and {first.in_features} inputs")
        if not _same_g_idx(part.g_idx, first.g_idx):
            raise ValueError("cannot fuse weights whose g_idx differ")
    return GroupQuantWeight(
        packed=torch.cat([p.packed for p in parts]),
        scales=torch.cat([p.scales for p in parts]),
        zeros=torch.cat([p.zeros for p in parts]),
        bits=first.bits,
        group_size=first.group_size,
        g_idx=first.g_idx,
    )


def from_awq(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int
) -> GroupQuantWeight:
    """AWQ GEMM: qweight int32 [in, out / 8], qzeros int32 [groups, out / 8], scales
    [groups, out], 4 bits, outputs interleaved in AWQ_ORDER."""
    groups, out_features = scales.shape
    in_features = qweight.shape[0]
    _expect(qweight, (in_features, out_features // 8), "AWQ qweight", out_features % 8 == 0)
    _expect(qzeros, (groups, out_features // 8), "AWQ qzeros")
    group_size = _group_size(group_size, in_features, groups, "AWQ")
    q = _awq_unpack(qweight)  # [in, out]
    zeros = _awq_unpack(qzeros)  # [groups, out]
    return GroupQuantWeight(
        packed=pack_values(q.t(), 4),
        scales=scales.t().contiguous(),
        zeros=zeros.t().contiguous(),
        bits=4,
        group_size=group_size,
    )


def from_gptq(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor | None,
    bits: int,
    group_size: int,
    sym: bool,
    v2: bool,
) -> GroupQuantWeight:
    """GPTQ: qweight int32 [in * bits / 32, out], qzeros int32 [groups, out * bits / 32],
    scales [groups, out], g_idx int32 [in] (or None). v1 (`v2=False`) stores zero - 1. `sym`
    changes nothing here: symmetric checkpoints store their zero like any other."""
    del sym  # the stored zeros say it all
    _check_bits(bits)
    groups, out_features = scales.shape
    per_word = 32 // bits
    in_features = qweight.shape[0] * per_word
    _expect(qweight, (qweight.shape[0], out_features), "GPTQ qweight")
    _expect(qzeros, (groups, -(-out_features // per_word)), "GPTQ qzeros")
    if g_idx is not None:
        _expect(g_idx, (in_features,), "GPTQ g_idx")
    group_size = _group_size(group_size, in_features, groups, "GPTQ")
    q = unpack_int32(qweight.t(), bits)  # [out, in]
    zeros = unpack_int32(qzeros, bits)[:, :out_features]  # [groups, out]
    if not v2:
        zeros = _gptq_v1_zeros(zeros, bits)
    return GroupQuantWeight(
        packed=pack_values(q, bits),
        scales=scales.t().contiguous(),
        zeros=zeros.t().contiguous(),
        bits=bits,
        group_size=group_size,
        g_idx=_act_order(g_idx, group_size, groups),
    )


def from_compressed(
    weight_packed: torch.Tensor,
    weight_scale: torch.Tensor,
    weight_zero_point: torch.Tensor | None,
    weight_shape: torch.Tensor,
    bits: int,
    group_size: int | None,
    symmetric: bool,
) -> GroupQuantWeight:
    """compressed-tensors pack-quantized: weight_packed int32 [out, in * bits / 32] (signed
    values plus 2 ** (bits - 1)), weight_scale [out, groups] (groups = 1 for the channel
    strategy, `group_size` None or -1), weight_zero_point (asymmetric only), weight_shape
    (out, in)."""
    _check_bits(bits)
    out_features, in_features = (int(v) for v in weight_shape.flatten().tolist())
    words = -(-in_features * bits // 32)
    _expect(weight_packed, (out_features, words), "compressed-tensors weight_packed")
    groups = weight_scale.shape[-1]
    _expect(weight_scale, (out_features, groups), "compressed-tensors weight_scale")
    group_size = _group_size(group_size, in_features, groups, "compressed-tensors")
    q = unpack_int32(weight_packed, bits)[:, :in_features]  # [out, in]
    if symmetric:
        zeros = torch.full_like(weight_scale, 1 << (bits - 1), dtype=torch.uint8)
    elif weight_zero_point is None:
        raise ValueError("compressed-tensors: an asymmetric weight needs weight_zero_point")
    else:
        zeros = _compressed_zeros(weight_zero_point, bits, out_features, groups)
    return GroupQuantWeight(
        packed=pack_values(q, bits),
        scales=weight_scale.contiguous(),
        zeros=zeros,
        bits=bits,
        group_size=group_size,
    )


def unpack_int32(words: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 [rows, cols * 32 / bits]: the fields of int32 words [rows, cols], low bits first."""
    mask = (1 << bits) - 1
    fields = [((words >> shift) & mask).to(torch.uint8) for shift in range(0, 32, bits)]
    return torch.stack(fields, dim=-1).view(words.shape[0], -1)  # [rows, cols * 32 / bits]


def pack_values(q: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 [out, in * bits / 8] from values [out, in] 0 .. 2 ** bits - 1 (GroupQuantWeight's
    layout)."""
    q = q.to(torch.uint8)
    if bits == 8:
        return q.contiguous()
    if q.shape[1] % 2:
        raise ValueError(f"4-bit weights need an even number of inputs, not {q.shape[1]}")
    return (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()


def _awq_unpack(words: torch.Tensor) -> torch.Tensor:
    """uint8 [rows, cols * 8]: AWQ's interleaved 4-bit fields in natural order."""
    fields = unpack_int32(words, 4).view(words.shape[0], -1, 8)  # [rows, cols, 8]
    order = torch.tensor(AWQ_REVERSE_ORDER, device=words.device)
    return fields[:, :, order].reshape(words.shape[0], -1)  # [rows, cols * 8]


def _compressed_zeros(zero_point: torch.Tensor, bits: int, rows: int, groups: int) -> torch.Tensor:
    """uint8 [rows, groups] from compressed-tensors zero points: signed [rows, groups] as
    quantized, or int32 [rows * bits / 32, groups] as pack_to_int32(packed_dim=0) stores them."""
    offset = 1 << (bits - 1)
    if tuple(zero_point.shape) == (rows, groups) and zero_point.dtype != torch.int32:
        return (zero_point.to(torch.int16) + offset).to(torch.uint8)
    _expect(zero_point, (-(-rows * bits // 32), groups), "compressed-tensors weight_zero_point")
    return unpack_int32(zero_point.t(), bits)[:, :rows].t().contiguous()  # [rows, groups]


def _gptq_v1_zeros(stored: torch.Tensor, bits: int) -> torch.Tensor:
    """The zeros of a v1 checkpoint: each stored field plus one, unwrapped as its readers do."""
    if bits == 8 and bool((stored == 255).any()):
        raise ValueError("GPTQ v1: an 8-bit zero point stored as 255 (zero 256) is not supported")
    return stored + 1


def _act_order(g_idx: torch.Tensor | None, group_size: int, groups: int) -> torch.Tensor | None:
    """g_idx as int32, or None when it is the plain i // group_size."""
    if g_idx is None:
        return None
    g_idx = g_idx.to(torch.int32)
    if g_idx.numel() and (int(g_idx.min()) < 0 or int(g_idx.max()) >= groups):
        raise ValueError(f"g_idx values must lie in 0..{groups - 1}")
    plain = torch.arange(g_idx.numel(), device=g_idx.device, dtype=torch.int32) // group_size
    return None if torch.equal(g_idx, plain) else g_idx.contiguous()


def _group_size(size: int | None, inputs: int, groups: int, what: str) -> int:
    """`size` checked against the scales' groups; None or -1: one group of all inputs."""
    if size is None or size == -1:
        size = inputs
    if size <= 0:
        raise ValueError(f"{what}: group_size {size} is not valid")
    if groups != -(-inputs // size):
        raise ValueError(
            f"{what}: {groups} groups of scales do not match {inputs} inputs in groups of {size}"
        )
    return size


def _expect(tensor: torch.Tensor, shape: tuple[int, ...], what: str, ok: bool = True) -> None:
    if not ok or tuple(tensor.shape) != shape:
        raise ValueError(f"{what} is {list(tensor.shape)}, expected {list(shape)}")


def _check_bits(bits: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise ValueError(
            f"{bits}-bit weights are not supported "
            f"(supported: {', '.join(map(str, SUPPORTED_BITS))})"
        )


def _same_g_idx(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
