"""llama.cpp's GGUF tensor names and layouts, translated to Hugging Face's.

Facts from llama.cpp's `convert_hf_to_gguf.py` (and `gguf-py/gguf/tensor_mapping.py`):
- dimensions are stored fastest-moving first, so a GGUF shape is the torch shape reversed;
- for the `llama` architecture (Llama, Mistral, SmolLM, ...) the rows of q_proj and k_proj are
  permuted so that rotary pairs sit next to each other (llama.cpp's "normal" RoPE); `qwen2` and
  `qwen3` use the "neox" RoPE layout, like Hugging Face, and are stored unpermuted;
- llama-3-style RoPE scaling is stored as a `rope_freqs.weight` tensor of per-frequency divisors.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # doctor reads the name tables without torch
    import torch

TOP_LEVEL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_gate_inp": "mlp.gate",  # a mixture of experts' router
    "ffn_gate_exps": "mlp.experts.gate_proj",  # all experts stacked [experts, out, in]
    "ffn_up_exps": "mlp.experts.up_proj",
    "ffn_down_exps": "mlp.experts.down_proj",
}
SKIPPED = {"rope_freqs.weight"}
"""Tensors that are not parameters of the HF model (rope_freqs is folded into the config)."""

_BLOCK_NAME = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def hf_name(gguf_name: str) -> str | None:
    """The Hugging Face parameter name for a GGUF tensor name, or None if there is none."""
    if gguf_name in TOP_LEVEL:
        return TOP_LEVEL[gguf_name]
    match = _BLOCK_NAME.fullmatch(gguf_name)
    if match is None or match[2] not in BLOCK:
        return None
    return f"model.layers.{match[1]}.{BLOCK[match[2]]}.{match[3]}"


def unpermute_qk(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's `LlamaModel.permute` on a q_proj/k_proj weight [out, in] or bias [out].

    llama.cpp maps HF row (head, half, i) to row (head, i, half); this maps it back."""
    rows = weight.shape[0]
    half = rows // n_heads // 2
    grouped = weight.reshape(n_heads, half, 2, *weight.shape[1:])  # [heads, hd/2, 2, (in)]
    return grouped.transpose(1, 2).reshape(weight.shape)  # [heads, 2, hd/2, (in)] -> [out, (in)]


def llama3_rope_freqs(
    theta: float, dim: int, factor: float, low: float, high: float, original: float
) -> np.ndarray:
    """The `rope_freqs` divisors llama.cpp writes for llama3 RoPE scaling, shape [dim // 2]."""
    freqs = theta ** -(np.arange(0, dim, 2, dtype=np.float64) / dim)
    wavelen = 2 * math.pi / freqs
    smooth = (original / wavelen - low) / (high - low)
    with np.errstate(divide="ignore", invalid="ignore"):  # only used inside the middle band
        middle = 1 / ((1 - smooth) / factor + smooth)
    return np.where(
        wavelen < original / high, 1.0, np.where(wavelen > original / low, factor, middle)
    )


def llama3_rope_parameters(rope_freqs: np.ndarray, theta: float, dim: int) -> dict | None:
    """Recover HF `rope_parameters` (rope_type llama3) from a `rope_freqs` tensor, or None if
    it scales nothing. The divisors fix (low, high, original) only up to a common scale, and any
    member of that family gives the same frequencies, so low_freq_factor is taken as 1."""
    ratio = rope_freqs.astype(np.float64)
    factor = float(ratio.max())
    if np.allclose(ratio, 1.0):
        return None
    candidates = [(1.0, 4.0, 8192.0)]  # Meta's published Llama 3.1 / 3.2 values
    freqs = theta ** -(np.arange(0, dim, 2, dtype=np.float64) / dim)
    middle = (ratio > 1 + 1e-6) & (ratio < factor - 1e-6)
    if middle.sum() >= 2:
        # smooth = original/(high-low) * 1/wavelen - low/(high-low): a line in 1/wavelen.
        smooth = (1 / ratio[middle] - 1 / factor) / (1 - 1 / factor)
        slope, intercept = np.polyfit(freqs[middle] / (2 * math.pi), smooth, 1)
        if intercept < 0:
            high, original = 1.0 - 1.0 / intercept, -slope / intercept
            candidates += [(1.0, high, float(round(original))), (1.0, high, original)]
    for low, high, original in candidates:
        expected = llama3_rope_freqs(theta, dim, factor, low, high, original)
        if expected.shape == ratio.shape and np.allclose(expected, ratio, rtol=1e-4):
            return {
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low,
                "high_freq_factor": high,
                "original_max_position_embeddings": int(original)
                if float(original).is_integer()
                else original,
            }
    raise ValueError(
        "GGUF rope_freqs tensor does not match llama3-style RoPE scaling; cannot express it as "
        "a Hugging Face rope_parameters dict"
    )
