"""A checkpoint's quantization, decided before any module exists (no torch here: doctor and the
runner share it).

`CheckpointQuant` is what the files say: a GGUF's per-tensor types, or `quantization_config`
in config.json (awq, gptq, compressed-tensors pack-quantized). `QuantConfig` is what purellm
does with it: the method that builds every linear, whether torch's CPU int4/int8 kernels run
the small steps, and whether dense copies are kept for large steps."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GROUP_METHODS = ("awq", "gptq", "compressed-tensors")
METHODS = ("none", "gguf", "int8", *GROUP_METHODS)
GGUF_FLOAT_TYPES = ("F32", "F16", "BF16")
DENSE_COPY_LIMIT = 256 << 20
"""Dense copies of quantized linears are kept (for steps of more than a few rows, where a dense
matmul beats the CPU kernels) while they take under this many bytes at 2 bytes a weight: the
default model's 106M linear weights qualify, a 1B model's do not."""


@dataclass(frozen=True)
class CheckpointQuant:
    method: str
    """'gguf', 'awq', 'gptq' or 'compressed-tensors'."""
    bits: int = 4
    group_size: int = -1
    """Inputs per scale; -1: one scale per output channel."""
    symmetric: bool = False
    desc_act: bool = False
    gptq_v2: bool = False
    """GPTQ zero points stored as they are (gptq_v2), not minus one (v1, the usual)."""
    tensor_types: Mapping[str, str] = field(default_factory=dict)
    """GGUF: Hugging Face parameter name -> GGUF type name, for every matrix."""
    linear_weights: int = 0
    """GGUF: the weights of the quantized linears, the vocabulary matrices not counted."""

    def __post_init__(self) -> None:
        if self.method not in ("gguf", *GROUP_METHODS):
            raise ValueError(f"unknown checkpoint quantization {self.method!r}")
        wanted = (4,) if self.method == "awq" else (4, 8)
        if self.method != "gguf" and self.bits not in wanted:
            raise ValueError(
                f"{self.method} checkpoints with {self.bits}-bit weights are not supported "
                f"(supported: {', '.join(map(str, wanted))} bits)"
            )
        if self.method != "gguf" and self.group_size == 0:
            raise ValueError(f"{self.method}: group_size 0 is not valid")


EMBEDDING, LM_HEAD = "model.embed_tokens.weight", "lm_head.weight"
VOCABULARY = (EMBEDDING, LM_HEAD)


def gguf_checkpoint(matrices: Iterable[tuple[str, str, int, int]]) -> CheckpointQuant:
    """A GGUF's quantization from its (HF name, GGUF type, dimensions, weights) of every matrix
    and expert stack: each one's type, and the weights of the quantized decoder linears (the
    vocabulary and the experts never get dense copies), as the loader and doctor both need."""
    types, linear_weights = {}, 0
    for name, kind, dims, weights in matrices:
        types[name] = kind
        if kind not in GGUF_FLOAT_TYPES and dims == 2 and name not in VOCABULARY:
            linear_weights += weights
    return CheckpointQuant("gguf", tensor_types=types, linear_weights=linear_weights)


def checkpoint_quant(config: Mapping[str, Any] | None) -> CheckpointQuant | None:
    """`quantization_config` of a config.json as a CheckpointQuant (None: not quantized)."""
    if not config:
        return None
    method = str(config.get("quant_method", "")).lower()
    if method == "awq":
        if str(config.get("version", "gemm")).lower() != "gemm":
            raise ValueError(f"AWQ version {config.get('version')!r}: only the GEMM layout")
        if not config.get("zero_point", True):
            raise ValueError("AWQ without zero points is not supported")
        return CheckpointQuant("awq", config.get("bits", config.get("w_bit", 4)), _group(config))
    if method == "gptq":
        v2 = str(config.get("checkpoint_format", "gptq")).lower() == "gptq_v2"
        return CheckpointQuant(
            "gptq",
            int(config.get("bits", 4)),
            _group(config),
            symmetric=bool(config.get("sym", True)),
            desc_act=bool(config.get("desc_act", False)),
            gptq_v2=v2,
        )
    if method == "compressed-tensors":
        return _compressed_tensors(config)
    raise ValueError(
        f"quantization_config quant_method {method!r} is not supported "
        f"(supported: {', '.join(GROUP_METHODS)})"
    )


def _group(config: Mapping[str, Any]) -> int:
    value = config.get("group_size", config.get("q_group_size", -1))
    return -1 if value is None else int(value)


def _compressed_tensors(config: Mapping[str, Any]) -> CheckpointQuant:
    fmt = config.get("format")
    if fmt != "pack-quantized":
        raise ValueError(f"compressed-tensors format {fmt!r}: only pack-quantized is supported")
    groups = list((config.get("config_groups") or {}).values())
    if len(groups) != 1:
        raise ValueError("compressed-tensors: exactly one config group is supported")
    group = groups[0]
    weights = group.get("weights") or {}
    if group.get("input_activations") or weights.get("type", "int") != "int":
        raise ValueError("compressed-tensors: only weight-only integer schemes (W4A16, W8A16)")
    strategy = weights.get("strategy", "group")
    if strategy not in ("group", "channel"):
        raise ValueError(f"compressed-tensors strategy {strategy!r} is not supported")
    size = int(weights.get("group_size") or -1) if strategy == "group" else -1
    return CheckpointQuant(
        "compressed-tensors",
        int(weights.get("num_bits", 4)),
        size,
        symmetric=bool(weights.get("symmetric", True)),
    )


Q4_TYPES = ("Q4_0", "Q4_1", "Q4_K")
"""GGUF types whose values torch's CPU int4 kernel takes exactly."""
GROUP = 32
"""Inputs per (scale, zero) pair of a GGUF's 4-bit blocks in that kernel."""


def int4_form(types: list[str], rows: int, columns: int) -> bool:
    """Whether a GGUF matrix (its shards' types) runs on the CPU int4 kernel rather than
    per-row int8: every shard a Q4 type, rows in torch's blocks of 16, whole groups."""
    return all(kind in Q4_TYPES for kind in types) and rows % 16 == 0 and columns % GROUP == 0


@dataclass(frozen=True)
class QuantConfig:
    method: str = "none"
    checkpoint: CheckpointQuant | None = None
    kernels: bool = False
    """torch's CPU int4/int8 kernels (bf16 activations) run the quantized linears they fit."""
    dense_copies: bool = False
    """GGUF with kernels: each quantized linear also keeps a dense copy for larger steps."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"quantization must be one of {', '.join(METHODS)}")
        if self.method in ("gguf", *GROUP_METHODS) and (
            self.checkpoint is None or self.checkpoint.method != self.method
        ):
            raise ValueError(f"quantization {self.method!r} needs a {self.method} checkpoint")

    def gguf_type(self, name: str) -> str | None:
        """The GGUF type a quantized matrix keeps (None: a float one, or not a GGUF)."""
        if self.method != "gguf":
            return None
        kind = self.checkpoint.tensor_types.get(name)
        return None if kind is None or kind in GGUF_FLOAT_TYPES else kind


def resolve(
    requested: str | None,
    checkpoint: CheckpointQuant | None,
    kernels_usable: bool,
    quantized_weights: int,
    dense_copies: bool | None = None,
) -> QuantConfig:
    """`requested`: None takes the checkpoint's own method; 'none' dequantizes at load; 'int8'
    quantizes a dense (or GGUF) checkpoint per channel; any other must name the checkpoint's
    own. `quantized_weights`: how many weights the quantized linears hold."""
    own = checkpoint.method if checkpoint is not None else None
    method = requested or own or "none"
    if method not in METHODS:
        raise ValueError(f"quantization must be one of {', '.join(METHODS)}")
    if method in ("gguf", *GROUP_METHODS) and method != own:
        found = f"a {own} checkpoint" if own else "an unquantized checkpoint"
        raise ValueError(
            f"quantization {method!r} does not match the model ({found}); "
            f"use {own or 'none'} or none"
        )
    if method == "int8" and own in GROUP_METHODS:
        raise ValueError(f"quantization 'int8' re-quantizes dense weights, not {own} ones")
    kernels = method in ("gguf", *GROUP_METHODS) and kernels_usable
    if dense_copies is None:
        dense_copies = quantized_weights * 2 < DENSE_COPY_LIMIT
    return QuantConfig(method, checkpoint, kernels, kernels and method == "gguf" and dense_copies)
