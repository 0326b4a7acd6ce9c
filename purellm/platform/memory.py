"""Whether a model fits a device, and the KV cache left beside it (pure arithmetic).

The same budget rule as the model runner: on a GPU the KV cache gets
`total * gpu_memory_utilization - memory in use - weights`; on the CPU it gets
KV_CACHE_CPU_DEFAULT_BYTES (or --kv-cache-memory), and weights plus cache must fit in RAM."""

from __future__ import annotations

from dataclasses import dataclass

from purellm.platform.modelinfo import GGUF_FLOAT_TYPES, ModelFacts

KV_CACHE_CPU_DEFAULT_BYTES = 2 << 30
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
GGUF_DEQUANTIZED_AT_LOAD = True
"""purellm's GGUF loader turns every weight into the chosen dtype when it loads."""
FOUR_BIT_BYTES_PER_PARAM = 4.5 / 8  # Q4_K_M averages about 4.5 bits per weight
GB = 1e9


@dataclass(frozen=True)
class DeviceMemory:
    device: str
    """`cpu` or `cuda:N`, with a description for messages."""
    label: str
    total: int
    available: int
    """Bytes purellm may use: RAM available, or total*utilization minus what others use."""


@dataclass(frozen=True)
class Fit:
    fits: bool
    weight_bytes: int
    kv_bytes_per_token: int
    kv_bytes: int
    kv_tokens: int
    full_sequences: int
    message: str


def weight_bytes(model: ModelFacts, dtype: str, device: str = "cuda") -> int:
    """The dense weights in `dtype`; on the CPU a quantized GGUF also keeps its quantized twins
    for small steps (`quantization="gguf"`), about the size of the file, and its LM head only
    in int8."""
    if device == "cpu" and is_quantized_gguf(model):
        return (model.params - model.head_params) * DTYPE_BYTES[dtype] + model.file_bytes
    return model.params * DTYPE_BYTES[dtype]


def is_quantized_gguf(model: ModelFacts) -> bool:
    kind = model.stored_as.removeprefix("GGUF ")
    return model.stored_as.startswith("GGUF") and kind not in (*GGUF_FLOAT_TYPES, "GGUF")


def kv_bytes_per_token(model: ModelFacts, dtype: str) -> int:
    return 2 * model.num_layers * model.num_kv_heads * model.head_dim * DTYPE_BYTES[dtype]


def gpu_memory(
    index: int, label: str, total: int, free: int | None, utilization: float
) -> DeviceMemory:
    used = total - free if free is not None else 0
    return DeviceMemory(f"cuda:{index}", label, total, max(0, int(total * utilization) - used))


def fit_model(
    model: ModelFacts, dtype: str, memory: DeviceMemory, kv_cache_memory: int | None = None
) -> Fit:
    weights = weight_bytes(model, dtype, memory.device)
    per_token = max(1, kv_bytes_per_token(model, dtype))
    room = memory.available - weights
    default = KV_CACHE_CPU_DEFAULT_BYTES if memory.device == "cpu" else room
    kv = max(0, min(kv_cache_memory or default, room))
    tokens = kv // per_token
    full = tokens // model.context_length if model.context_length else 0
    fits = room >= (kv_cache_memory or default) and tokens >= 2
    if fits:
        message = _fit_message(model, dtype, memory, weights, tokens, full)
    else:
        message = not_fitting_message(model, dtype, memory, weights)
    return Fit(fits, weights, per_token, kv, tokens, full, message)


def _fit_message(
    model: ModelFacts, dtype: str, memory: DeviceMemory, weights: int, tokens: int, full: int
) -> str:
    twins = (
        " with its quantized twins" if memory.device == "cpu" and is_quantized_gguf(model) else ""
    )
    return (
        f"{model.name} fits {memory.device} ({memory.label}): weights {weights / GB:.2f} GB in "
        f"{dtype}{twins}, KV cache {tokens} tokens = {full} full-length sequence(s) of "
        f"{model.context_length} tokens"
    )


def not_fitting_message(model: ModelFacts, dtype: str, memory: DeviceMemory, weights: int) -> str:
    lines = [
        f"{model.name} does not fit {memory.device} ({memory.label}): its "
        f"{model.params / 1e9:.1f}B parameters take {weights / GB:.1f} GB in {dtype}, and "
        f"{memory.available / GB:.1f} GB is available for weights and KV cache.",
        "What to do:",
    ]
    if weights < memory.available:
        room = (memory.available - weights) / GB
        lines.append(f"  - the weights fit but leave {room:.2f} GB: lower --kv-cache-memory")
    max_params = memory.available * 0.8 / DTYPE_BYTES[dtype]
    lines.append(
        f"  - use a smaller model: about {max_params / 1e9:.1f}B parameters at most in {dtype}, "
        "leaving a fifth for the KV cache"
    )
    four_bit = model.params * FOUR_BIT_BYTES_PER_PARAM
    if four_bit < memory.available:
        lines.append(f"  - {_four_bit_advice(four_bit, dtype)}")
    if dtype == "float32":
        lines.append("  - or use --dtype bfloat16 / float16 to halve the weights")
    return "\n".join(lines)


def _four_bit_advice(four_bit: float, dtype: str) -> str:
    advice = f"a 4-bit GGUF (Q4_K_M) of this model is about {four_bit / GB:.0f} GB"
    if GGUF_DEQUANTIZED_AT_LOAD:
        advice += (
            f", which fits in 4-bit form, but purellm dequantizes GGUF weights to {dtype} at "
            "load, so here it needs the same memory; run that file with a runtime that keeps "
            "weights quantized (e.g. llama.cpp)"
        )
    return advice
