"""Tiny AWQ, GPTQ and compressed-tensors checkpoints made from a tiny dense one, for tests.

Every decoder linear (q/k/v/o/gate/up/down) is quantized round-to-nearest and packed the way
its publisher packs it; everything else is copied unchanged. Each writer returns what the packed
weights mean: the float32 state dict with those linears dequantized exactly, which
`write_dequantized_folder` turns back into a plain dense folder for transformers.

The packers are written here from the publishers' own code, independently of purellm:
- AWQ: autoawq `WQLinear_GEMM.from_linear` (order_map [0, 2, 4, 6, 1, 3, 5, 7] along outputs).
- GPTQ: AutoGPTQ / gptqmodel `pack` (fields low bits first, qweight along inputs, qzeros along
  outputs), v1 storing zero - 1 (`convert_gptq_v1_to_v2_format_module` adds it back).
- compressed-tensors: `pack_to_int32` (fields low bits first along inputs, signed values plus
  2 ** (bits - 1)); an asymmetric zero point packed with packed_dim=0.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def pack_int32(values: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 [rows, ceil(cols * bits / 32)]: values [rows, cols] (0 .. 2 ** bits - 1) packed
    along the columns, value j of a word in bits j * bits upward (zero-padded at the end)."""
    per_word = 32 // bits
    rows, cols = values.shape
    pad = -cols % per_word
    v = torch.nn.functional.pad(values.to(torch.int64), (0, pad))  # [rows, cols + pad]
    v = v.view(rows, -1, per_word)  # [rows, words, per_word]
    shifts = torch.arange(0, 32, bits, dtype=torch.int64)
    words = (v << shifts).sum(dim=-1)  # [rows, words], 0 .. 2 ** 32 - 1
    return torch.where(words >= 1 << 31, words - (1 << 32), words).to(torch.int32)


def pack_awq(values: torch.Tensor) -> torch.Tensor:
    """int32 [rows, cols / 8]: 4-bit values [rows, cols] packed along the columns in AWQ's
    order: field i of word c holds column 8c + AWQ_ORDER[i]."""
    rows = values.shape[0]
    ordered = values.view(rows, -1, 8)[:, :, AWQ_ORDER]  # [rows, cols / 8, 8]
    return pack_int32(ordered.reshape(rows, -1), 4)  # [rows, cols / 8]


def quantize_rtn(
    weight: torch.Tensor,
    bits: int,
    group_size: int,
    sym: bool,
    scale_dtype: torch.dtype,
    perm: torch.Tensor | None = None,
    min_zero: int = 0,
):
    """Round-to-nearest groups of `group_size` inputs (taken in `perm` order: GPTQ act-order).
    Returns q uint8 [out, in], scales [out, groups] in scale_dtype, zeros int64 [out, groups],
    g_idx int32 [in] and the float32 weight they mean."""
    out_features, in_features = weight.shape
    maxq = (1 << bits) - 1
    order = torch.arange(in_features) if perm is None else perm
    g_idx = torch.empty(in_features, dtype=torch.int32)
    g_idx[order] = torch.arange(in_features, dtype=torch.int32) // group_size
    w = weight.float()[:, order].view(out_features, -1, group_size)  # [out, groups, group_size]
    if sym:
        scale = 2 * w.abs().amax(dim=-1) / maxq  # [out, groups]
        zeros = torch.full_like(scale, (maxq + 1) // 2, dtype=torch.int64)
    else:
        low = w.amin(dim=-1).clamp(max=0)  # [out, groups]
        scale = (w.amax(dim=-1).clamp(min=0) - low) / maxq
        zeros = torch.round(-low / scale.clamp(min=1e-6)).long().clamp(min_zero, maxq)
    scales = scale.clamp(min=1e-6).to(scale_dtype)
    s, z = scales.float()[:, g_idx], zeros[:, g_idx]  # [out, in]
    q = (torch.round(weight.float() / s) + z).clamp(0, maxq)
    meaning = (q - z) * s
    return q.to(torch.uint8), scales, zeros, g_idx, meaning


def quantize_awq(weight: torch.Tensor, group_size: int):
    q, scales, zeros, _, meaning = quantize_rtn(weight, 4, group_size, False, torch.float16)
    tensors = {
        "qweight": pack_awq(q.t()),  # [in, out / 8]
        "qzeros": pack_awq(zeros.t()),  # [groups, out / 8]
        "scales": scales.t().contiguous(),  # [groups, out]
    }
    return tensors, meaning


def quantize_gptq(weight, bits, group_size, sym, desc_act, v2, seed=0):
    perm = None
    if desc_act:
        perm = torch.randperm(weight.shape[1], generator=torch.Generator().manual_seed(seed))
    min_zero = 0 if v2 or sym else 1  # v1 cannot store zero 0 (stored -1 wraps)
    q, scales, zeros, g_idx, meaning = quantize_rtn(
        weight, bits, group_size, sym, torch.float16, perm, min_zero
    )
    stored = zeros if v2 else zeros - 1
    tensors = {
        "qweight": pack_int32(q, bits).t().contiguous(),  # [in * bits / 32, out]
        "qzeros": pack_int32(stored.t(), bits),  # [groups, out * bits / 32]
        "scales": scales.t().contiguous(),  # [groups, out]
        "g_idx": g_idx,
    }
    return tensors, meaning


def quantize_compressed(weight, bits, group_size, symmetric=True):
    size = weight.shape[1] if group_size is None else group_size
    q, scales, zeros, _, meaning = quantize_rtn(weight, bits, size, symmetric, weight.dtype)
    tensors = {
        "weight_packed": pack_int32(q, bits),  # [out, in * bits / 32]
        "weight_scale": scales,  # [out, groups]
        "weight_shape": torch.tensor(weight.shape),
    }
    if not symmetric:
        tensors["weight_zero_point"] = pack_int32(zeros.t(), bits).t().contiguous()
    return tensors, meaning


def write_awq_folder(dense_folder, out_folder, group_size=32) -> dict[str, torch.Tensor]:
    config = {
        "quant_method": "awq",
        "bits": 4,
        "group_size": group_size,
        "zero_point": True,
        "version": "gemm",
    }
    return _convert(dense_folder, out_folder, lambda w: quantize_awq(w, group_size), config)


def write_gptq_folder(
    dense_folder, out_folder, bits=4, group_size=32, sym=True, desc_act=False, v2=False
) -> dict[str, torch.Tensor]:
    config = {
        "quant_method": "gptq",
        "bits": bits,
        "group_size": group_size,
        "desc_act": desc_act,
        "sym": sym,
        "checkpoint_format": "gptq_v2" if v2 else "gptq",
    }
    seeds = iter(range(1 << 20))

    def quantize(weight):
        return quantize_gptq(weight, bits, group_size, sym, desc_act, v2, next(seeds))

    return _convert(dense_folder, out_folder, quantize, config)


def write_compressed_folder(
    dense_folder, out_folder, bits=4, group_size=32, symmetric=True
) -> dict[str, torch.Tensor]:
    """`group_size` None: one scale per output channel (the "channel" strategy)."""
    weights = {
        "num_bits": bits,
        "type": "int",
        "symmetric": symmetric,
        "group_size": group_size,
        "strategy": "channel" if group_size is None else "group",
        "dynamic": False,
        "actorder": None,
        "observer": "minmax",
    }
    config = {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": weights,
                "input_activations": None,
                "output_activations": None,
                "format": "pack-quantized",
            }
        },
        "ignore": ["lm_head"],
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
    }

    def quantize(weight):
        return quantize_compressed(weight, bits, group_size, symmetric)

    return _convert(dense_folder, out_folder, quantize, config)


def write_dequantized_folder(dense_folder, out_folder, state_dict) -> Path:
    """A plain dense folder (the dense one's config and tokenizer) holding `state_dict`."""
    from safetensors.torch import save_file

    out = _copy_others(Path(dense_folder), Path(out_folder))
    shutil.copy(Path(dense_folder) / "config.json", out / "config.json")
    tensors = {k: v.contiguous() for k, v in state_dict.items()}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


def is_quantized_linear(name: str) -> bool:
    parts = name.split(".")
    return len(parts) > 2 and parts[-1] == "weight" and parts[-2] in LINEARS


def _convert(
    dense_folder, out_folder, quantize: Callable, quantization_config: dict
) -> dict[str, torch.Tensor]:
    """Quantize the dense folder's linears with `quantize` (weight -> (tensors, meaning)) into
    out_folder; returns the float32 state dict the new folder means."""
    from safetensors.torch import load_file, save_file

    dense, out = Path(dense_folder), Path(out_folder)
    tensors, meaning = {}, {}
    for name, value in load_file(dense / "model.safetensors").items():
        if is_quantized_linear(name):
            packed, meaning[name] = quantize(value)
            prefix = name[: -len(".weight")]
            tensors.update({f"{prefix}.{key}": t for key, t in packed.items()})
        else:
            tensors[name] = value
            meaning[name] = value.float() if value.is_floating_point() else value
    _copy_others(dense, out)
    config = json.loads((dense / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (out / "config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return meaning


def _copy_others(dense: Path, out: Path) -> Path:
    """Copy the tokenizer and generation files: all but the weights and config.json."""
    out.mkdir(parents=True, exist_ok=True)
    for path in dense.iterdir():
        if path.is_file() and not path.name.startswith(("model", "config.json")):
            shutil.copy(path, out / path.name)
    return out
