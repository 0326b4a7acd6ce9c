"""Rotary position embeddings (Hugging Face's rotate-half layout) with every rope scaling
type that transformers knows, looked up once at start-up into a cos/sin table."""

from __future__ import annotations

import torch
from torch import nn


def rope_parameters(config) -> dict:
    """The rope settings, whether the config keeps them in transformers 5's `rope_parameters`
    or in the older `rope_theta` / `rope_scaling` pair."""
    params = getattr(config, "rope_parameters", None)
    if params:
        return dict(params)
    scaling = dict(getattr(config, "rope_scaling", None) or {})
    scaling.setdefault("rope_type", scaling.pop("type", "default"))
    return {**scaling, "rope_theta": getattr(config, "rope_theta", 10000.0)}


def inverse_frequencies(config, head_dim: int) -> tuple[torch.Tensor, float]:
    """(inv_freq [head_dim // 2], attention scaling) for the config's rope type."""
    params = rope_parameters(config)
    rope_type = params.get("rope_type", "default")
    if rope_type == "default":
        exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
        return 1.0 / (params["rope_theta"] ** exponents), 1.0
    if rope_type == "dynamic":
        raise ValueError("rope_type 'dynamic' is not supported")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from purellm.loaders.light_config import transformers_config

    if rope_type not in ROPE_INIT_FUNCTIONS:
        raise ValueError(f"unknown rope_type {rope_type!r}")
    hf_config = transformers_config(config)
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](hf_config, torch.device("cpu"))
    return inv_freq.float(), float(scaling)


class RotaryEmbedding(nn.Module):
    """Holds the cos/sin table. It is built by `init_buffers` once the model is on its device
    (computed once the model is built and loaded)."""

    def __init__(self, config, head_dim: int, max_position: int):
        super().__init__()
        self.config, self.head_dim, self.max_position = config, head_dim, max_position
        self.cos = self.sin = torch.empty(0)

    def init_buffers(self, device: torch.device) -> None:
        inv_freq, scaling = inverse_frequencies(self.config, self.head_dim)
        positions = torch.arange(self.max_position, dtype=torch.float32)
        freqs = torch.outer(positions, inv_freq)  # [max_position, head_dim // 2]
        self.cos = (freqs.cos() * scaling).to(device)
        self.sin = (freqs.sin() * scaling).to(device)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin for `positions`, each [T, 1, head_dim] in float32, built once a
        step for every layer: cos twice, and -sin then sin, so that one multiply-add with the
        halves swapped is the rotate-half rotation."""
        cos, sin = self.cos[positions], self.sin[positions]  # [T, head_dim // 2] each
        cos = torch.cat((cos, cos), dim=-1).unsqueeze(1)  # [T, 1, head_dim]
        return cos, torch.cat((-sin, sin), dim=-1).unsqueeze(1)  # [T, 1, head_dim] each


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [T, heads, head_dim] by the positions' angles, in float32: with x = (x1, x2),
    (x1 cos - x2 sin, x2 cos + x1 sin), the same float operations as the rotate-half form."""
    xf = x.float()
    swapped = xf.roll(x.shape[-1] // 2, dims=-1)  # (x2, x1)
    return (xf * cos + swapped * sin).to(x.dtype)
