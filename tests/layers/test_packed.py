"""AWQ, GPTQ and compressed-tensors weights normalised by purellm.layers.quant.packed: bit-exact
against packers written in tests/quant_checkpoints.py, against the publishers' own functions
where their packages are installed (compressed-tensors; autoawq's pure-torch packing_utils),
and on tiny written checkpoints."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from purellm.layers.quant.packed import (
    GroupQuantWeight,
    cat_rows,
    from_awq,
    from_compressed,
    from_gptq,
)
from tests import quant_checkpoints as qc

OUT, IN = 48, 256


def _random(bits, groups, seed=0, rows=OUT, cols=IN, dtype=torch.float16):
    """Random q [rows, cols], zeros [rows, groups] (0 .. 2 ** bits - 1) and scales."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 1 << bits, (rows, cols), generator=gen, dtype=torch.uint8)
    zeros = torch.randint(0, 1 << bits, (rows, groups), generator=gen, dtype=torch.uint8)
    scales = (torch.rand(rows, groups, generator=gen) * 0.1 + 1e-3).to(dtype)
    return q, zeros, scales


def _reference(q, zeros, scales, g_idx):
    """The documented math, float32: (q - zero[g_idx]) * scale[g_idx]."""
    g = g_idx.long()
    return (q.float() - zeros.float()[:, g]) * scales.float()[:, g]


def _plain(group_size, cols=IN):
    return torch.arange(cols, dtype=torch.int32) // group_size


def _check(weight: GroupQuantWeight, q, zeros, scales, g_idx):
    assert (weight.out_features, weight.in_features) == tuple(q.shape)
    assert weight.packed.dtype == torch.uint8 and weight.zeros.dtype == torch.uint8
    assert torch.equal(weight.unpack(), q)
    assert torch.equal(weight.zeros, zeros)
    assert weight.scales.dtype == scales.dtype and torch.equal(weight.scales, scales)
    assert torch.equal(weight.dequantize(), _reference(q, zeros, scales, g_idx))


@pytest.mark.parametrize("group_size", [32, 128])
def test_awq_round_trip(group_size):
    q, zeros, scales = _random(4, IN // group_size)
    weight = from_awq(qc.pack_awq(q.t()), qc.pack_awq(zeros.t()), scales.t(), group_size)
    assert weight.bits == 4 and weight.group_size == group_size and weight.g_idx is None
    _check(weight, q, zeros, scales, _plain(group_size))


@pytest.mark.parametrize(
    "bits,sym,v2", [(4, True, False), (4, False, False), (4, False, True), (8, True, False)]
)
def test_gptq_round_trip(bits, sym, v2):
    q, zeros, scales = _random(bits, IN // 32, seed=bits)
    if sym:
        zeros.fill_(1 << (bits - 1))  # GPTQ's symmetric zero: (maxq + 1) / 2
    elif not v2:
        zeros += 1  # v1 zeros 1 .. 16: AutoGPTQ / vLLM read a stored 15 as 16
    stored = zeros if v2 else zeros - 1  # v1 stores zero - 1
    qweight = qc.pack_int32(q, bits).t()  # [in * bits / 32, out]
    qzeros = qc.pack_int32(stored.t(), bits)  # [groups, out * bits / 32]
    weight = from_gptq(qweight, qzeros, scales.t(), _plain(32), bits, 32, sym, v2)
    assert weight.g_idx is None  # a plain g_idx is dropped
    _check(weight, q, zeros, scales, _plain(32))


def test_gptq_v1_symmetric_stores_seven():
    q, zeros, scales = _random(4, IN // 32)
    qzeros = torch.full((IN // 32, OUT // 8), 0x77777777, dtype=torch.int32)
    weight = from_gptq(qc.pack_int32(q, 4).t(), qzeros, scales.t(), None, 4, 32, True, False)
    assert torch.equal(weight.zeros, torch.full_like(weight.zeros, 8))


def test_gptq_desc_act():
    q, zeros, scales = _random(4, IN // 32, seed=3)
    perm = torch.randperm(IN, generator=torch.Generator().manual_seed(1))
    g_idx = torch.empty(IN, dtype=torch.int32)
    g_idx[perm] = torch.arange(IN, dtype=torch.int32) // 32  # GPTQ: group of the i-th chosen
    zeros += 1  # v1 zeros 1 .. 16
    qzeros = qc.pack_int32((zeros - 1).t(), 4)
    weight = from_gptq(qc.pack_int32(q, 4).t(), qzeros, scales.t(), g_idx, 4, 32, False, False)
    assert torch.equal(weight.g_idx, g_idx)
    _check(weight, q, zeros, scales, g_idx)


@pytest.mark.parametrize("bits,group_size", [(4, 32), (8, None), (4, None), (8, 64)])
def test_compressed_round_trip(bits, group_size):
    groups = 1 if group_size is None else IN // group_size
    q, _, scales = _random(bits, groups, dtype=torch.bfloat16)
    zeros = torch.full_like(q[:, :groups], 1 << (bits - 1))
    shape = torch.tensor([OUT, IN])
    weight = from_compressed(qc.pack_int32(q, bits), scales, None, shape, bits, group_size, True)
    assert weight.group_size == (IN if group_size is None else group_size)
    _check(weight, q, zeros, scales, _plain(weight.group_size))


def test_compressed_asymmetric_zero_points():
    q, zeros, scales = _random(4, IN // 32, dtype=torch.float32)
    packed_zp = qc.pack_int32(zeros.t(), 4).t()  # pack_to_int32(packed_dim=0): [out / 8, groups]
    shape = torch.tensor([OUT, IN])
    weight = from_compressed(qc.pack_int32(q, 4), scales, packed_zp, shape, 4, 32, False)
    _check(weight, q, zeros, scales, _plain(32))
    signed_zp = (zeros.to(torch.int16) - 8).to(torch.int8)  # as quantized, before packing
    again = from_compressed(qc.pack_int32(q, 4), scales, signed_zp, shape, 4, 32, False)
    assert torch.equal(again.zeros, zeros)


def test_cat_rows_and_out():
    q, zeros, scales = _random(4, IN // 32)
    parts = [
        from_awq(qc.pack_awq(q[a:b].t()), qc.pack_awq(zeros[a:b].t()), scales[a:b].t(), 32)
        for a, b in ((0, 16), (16, 24), (24, OUT))
    ]
    fused = cat_rows(parts)
    _check(fused, q, zeros, scales, _plain(32))
    out = torch.empty(OUT, IN, dtype=torch.bfloat16)
    assert fused.dequantize(out) is out
    assert torch.equal(out, _reference(q, zeros, scales, _plain(32)).bfloat16())
    other = from_gptq(
        qc.pack_int32(q, 8).t(), qc.pack_int32(zeros.t(), 8), scales.t(), None, 8, 32, True, True
    )
    with pytest.raises(ValueError, match="fuse"):
        cat_rows([parts[0], other])
    shuffled = GroupQuantWeight(fused.packed, fused.scales, fused.zeros, 4, 32, _plain(32).flip(0))
    with pytest.raises(ValueError, match="g_idx"):
        cat_rows([fused, shuffled])


def test_bad_bits_and_shapes():
    q, zeros, scales = _random(4, IN // 32)
    qweight, qzeros = qc.pack_int32(q, 4).t(), qc.pack_int32(zeros.t(), 4)
    for bits in (2, 3):
        with pytest.raises(ValueError, match="not supported"):
            from_gptq(qweight, qzeros, scales.t(), None, bits, 32, False, True)
        with pytest.raises(ValueError, match="not supported"):
            from_compressed(qweight.t(), scales, None, torch.tensor([OUT, IN]), bits, 32, True)
    with pytest.raises(ValueError, match="qweight"):
        from_gptq(qweight, qzeros, scales.t()[:, :40], None, 4, 32, False, True)
    with pytest.raises(ValueError, match="groups"):
        from_gptq(qweight, qzeros, scales.t(), None, 4, 64, False, True)
    with pytest.raises(ValueError, match="qweight"):
        from_awq(qc.pack_awq(q.t())[:, :5], qc.pack_awq(zeros.t()), scales.t(), 32)
    with pytest.raises(ValueError, match="255"):
        qzeros8 = torch.full((IN // 32, OUT // 4), -1, dtype=torch.int32)  # every field 255
        from_gptq(qc.pack_int32(q, 8).t(), qzeros8, scales.t(), None, 8, 32, False, False)
    with pytest.raises(ValueError, match="weight_packed"):
        from_compressed(qweight.t(), scales, None, torch.tensor([OUT, IN + 8]), 4, 32, True)


def test_compressed_tensors_package():
    """compressed-tensors' own compressor packs RTN weights; its own decompress is the truth."""
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    gen = torch.Generator().manual_seed(5)
    cases = [(4, 32, "group", True), (8, None, "channel", True), (4, 64, "group", False)]
    for bits, group_size, strategy, symmetric in cases:
        dense = torch.randn(OUT, IN, generator=gen) * 0.05
        size = IN if group_size is None else group_size
        tensors, _ = qc.quantize_compressed(dense, bits, group_size, symmetric)
        _, scales, zeros, _, _ = qc.quantize_rtn(dense, bits, size, symmetric, torch.float32)
        args = QuantizationArgs(
            num_bits=bits, symmetric=symmetric, strategy=strategy, group_size=group_size
        )
        scheme = QuantizationScheme(targets=["Linear"], weights=args)
        state = {"weight": dense, "weight_scale": scales}
        if not symmetric:
            state["weight_zero_point"] = (zeros - (1 << (bits - 1))).to(torch.int8)
        theirs = PackedQuantizationCompressor.compress(state, scheme)
        assert torch.equal(theirs["weight_packed"], tensors["weight_packed"])
        offset = 1 << (bits - 1)
        unsigned = torch.randint(0, 1 << bits, (OUT, IN), generator=gen)
        signed = (unsigned - offset).to(torch.int8)
        assert torch.equal(pack_to_int32(signed, bits), qc.pack_int32(unsigned, bits))
        zp = theirs.get("weight_zero_point")
        ours = from_compressed(
            theirs["weight_packed"], scales, zp, theirs["weight_shape"], bits, group_size, symmetric
        )
        truth = PackedQuantizationCompressor.decompress(theirs, scheme)["weight"]
        assert truth.dtype == torch.float32 and torch.equal(ours.dequantize(), truth)


def _autoawq_packing_utils():
    """autoawq's awq/utils/packing_utils.py (pure torch), loaded by path: importing the `awq`
    package itself needs accelerate and CUDA-era transformers."""
    spec = importlib.util.find_spec("awq")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("autoawq is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "utils" / "packing_utils.py"
    module_spec = importlib.util.spec_from_file_location("_autoawq_packing_utils", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("group_size", [32, 128])
def test_autoawq_package(group_size):
    """autoawq's own dequantize_gemm (unpack_awq + reverse_awq_order) on our AWQ packing."""
    utils = _autoawq_packing_utils()
    q, zeros, scales = _random(4, IN // group_size, seed=7)
    qweight, qzeros = qc.pack_awq(q.t()), qc.pack_awq(zeros.t())
    # float32 scales: autoawq multiplies in the scales' dtype; float32 keeps it exact
    truth = utils.dequantize_gemm(qweight, qzeros, scales.t().float(), 4, group_size)  # [in, out]
    ours = from_awq(qweight, qzeros, scales.t(), group_size).dequantize()
    assert torch.equal(ours, truth.t())


@pytest.fixture(scope="module")
def dense_folder(tmp_path_factory):
    from tests.checkpoints import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("dense"), "llama-untied-gqa")


WRITERS = {
    "awq": lambda d, o: qc.write_awq_folder(d, o, group_size=32),
    "gptq-v1-sym": lambda d, o: qc.write_gptq_folder(d, o),
    "gptq-v1-asym-desc": lambda d, o: qc.write_gptq_folder(d, o, sym=False, desc_act=True),
    "gptq-v2-8bit": lambda d, o: qc.write_gptq_folder(d, o, bits=8, sym=False, v2=True),
    "ct-w4a16": lambda d, o: qc.write_compressed_folder(d, o, bits=4, group_size=32),
    "ct-w8a16-channel": lambda d, o: qc.write_compressed_folder(d, o, bits=8, group_size=None),
}


@pytest.mark.parametrize("kind", WRITERS)
def test_written_checkpoints(kind, dense_folder, tmp_path):
    import json

    from safetensors.torch import load_file

    meaning = WRITERS[kind](dense_folder, tmp_path)
    quant = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    tensors = load_file(tmp_path / "model.safetensors")
    assert (tmp_path / "tokenizer.json").exists()
    linears = [name for name in meaning if qc.is_quantized_linear(name)]
    assert len(linears) == 14 and not any("embed" in n or "lm_head" in n for n in linears)
    for name, value in meaning.items():
        prefix = name[: -len(".weight")]
        if name in linears:
            weight = _load(quant, prefix, tensors)
            assert torch.equal(weight.dequantize(), value), name
        else:
            assert torch.equal(tensors[name].float(), value), name
    dense = qc.write_dequantized_folder(dense_folder, tmp_path / "dense", meaning)
    assert load_file(dense / "model.safetensors").keys() == meaning.keys()


def _load(quant: dict, prefix: str, tensors: dict) -> GroupQuantWeight:
    def get(key):
        return tensors.get(f"{prefix}.{key}")

    method = quant["quant_method"]
    if method == "awq":
        return from_awq(get("qweight"), get("qzeros"), get("scales"), quant["group_size"])
    if method == "gptq":
        v2 = quant["checkpoint_format"] == "gptq_v2"
        args = (quant["bits"], quant["group_size"], quant["sym"], v2)
        return from_gptq(get("qweight"), get("qzeros"), get("scales"), get("g_idx"), *args)
    weights = quant["config_groups"]["group_0"]["weights"]
    return from_compressed(
        get("weight_packed"),
        get("weight_scale"),
        get("weight_zero_point"),
        get("weight_shape"),
        weights["num_bits"],
        weights["group_size"],
        weights["symmetric"],
    )
