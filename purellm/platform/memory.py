"""Whether a model fits a device, and the KV cache left beside it (pure arithmetic).

The same budget rule as the model runner: on a GPU the KV cache gets
`total * gpu_memory_utilization - memory in use - weights`; on the CPU it gets
KV_CACHE_CPU_DEFAULT_BYTES (or --kv-cache-memory), and weights plus cache must fit in RAM.
Weights are counted as the runner keeps them (layers/quant/footprint.py): a quantized GGUF or
AWQ/GPTQ/compressed-tensors checkpoint stays quantized. No torch here (doctor)."""

from __future__ import annotations

from dataclasses import dataclass

from purellm.layers.quant import footprint
from purellm.layers.quant.config import QuantConfig, gguf_checkpoint, resolve
from purellm.platform.modelinfo import ModelFacts

KV_CACHE_CPU_DEFAULT_BYTES = 2 << 30
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
FOUR_BIT_BITS = 4.5
"""Bits a weight of a 4-bit file (Q4_K_M GGUF, AWQ/GPTQ with group scales) on average."""
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


def weight_bytes(
    model: ModelFacts, dtype: str, device: str = "cuda", kernels: bool | None = None
) -> int:
    """The weights as the runner holds them: a GGUF's quantized matrices stay quantized
    (footprint.gguf_weight_bytes), an AWQ/GPTQ/compressed-tensors model stays in its groups,
    a dense model is dense in `dtype`. `kernels`: the CPU int4/int8 kernels run a GGUF's
    linears (default: on the CPU, except in float16)."""
    size = DTYPE_BYTES[dtype]
    if model.quantization_config:
        return footprint.hf_quantized_weight_bytes(model.config, size)
    if not model.tensors:
        return model.params * size
    quant = gguf_quant(model, uses_kernels(device, dtype) if kernels is None else kernels)
    return footprint.gguf_weight_bytes(list(model.tensors), quant, size, model.tied)


def uses_kernels(device: str, dtype: str, requested_dtype: str = "auto") -> bool:
    """The runner's rule: the CPU in bfloat16, or in float32 where `auto` chose it."""
    half = dtype == "bfloat16" or (dtype == "float32" and requested_dtype == "auto")
    return device == "cpu" and half


def gguf_quant(model: ModelFacts, kernels: bool) -> QuantConfig:
    """The QuantConfig the runner picks for a GGUF (its own method, dense copies while small)."""
    checkpoint = gguf_checkpoint(
        (t.name, t.kind, len(t.shape), t.numel) for t in model.tensors if len(t.shape) >= 2
    )
    return resolve(None, checkpoint, kernels, checkpoint.linear_weights)


def is_quantized(model: ModelFacts) -> bool:
    return bool(model.quantization_config) or any(t.quantized for t in model.tensors)


def kv_bytes_per_token(model: ModelFacts, dtype: str) -> int:
    return footprint.kv_bytes_per_token(
        model.num_layers, model.num_kv_heads, model.head_dim, DTYPE_BYTES[dtype]
    )


def gpu_memory(
    index: int, label: str, total: int, free: int | None, utilization: float
) -> DeviceMemory:
    used = total - free if free is not None else 0
    return DeviceMemory(f"cuda:{index}", label, total, max(0, int(total * utilization) - used))


def fit_model(
    model: ModelFacts,
    dtype: str,
    memory: DeviceMemory,
    kv_cache_memory: int | None = None,
    kernels: bool | None = None,
) -> Fit:
    weights = weight_bytes(model, dtype, memory.device, kernels)
    per_token = max(1, kv_bytes_per_token(model, dtype))
    room = memory.available - weights
    default = KV_CACHE_CPU_DEFAULT_BYTES if memory.device == "cpu" else room
    kv = max(0, min(kv_cache_memory or default, room))
    tokens = kv // per_token
    full = tokens // model.context_length if model.context_length else 0
    fits = room >= (kv_cache_memory or default) and tokens >= 2
    if kernels is None:
        kernels = uses_kernels(memory.device, dtype)
    form = weight_form(model, dtype, kernels)
    if fits:
        message = _fit_message(model, memory, weights, form, tokens, full)
    else:
        message = not_fitting_message(model, dtype, memory, weights, form)
    return Fit(fits, weights, per_token, kv, tokens, full, message)


def weight_form(model: ModelFacts, dtype: str, kernels: bool) -> str:
    """How the runner holds the weights, for messages."""
    quant = model.quantization_config
    if quant:
        return f"in {quant.get('quant_method')} groups as stored, the rest in {dtype}"
    if not is_quantized(model):
        return f"in {dtype}"
    if kernels:
        return f"in the CPU int4/int8 kernels' form, the rest in {dtype}"
    return f"in the GGUF's own blocks, the rest in {dtype}"


def _fit_message(
    model: ModelFacts, memory: DeviceMemory, weights: int, form: str, tokens: int, full: int
) -> str:
    return (
        f"{model.name} fits {memory.device} ({memory.label}): weights {weights / GB:.2f} GB "
        f"{form}, KV cache {tokens} tokens = {full} full-length sequence(s) of "
        f"{model.context_length} tokens"
    )


def not_fitting_message(
    model: ModelFacts, dtype: str, memory: DeviceMemory, weights: int, form: str = ""
) -> str:
    lines = [
        f"{model.name} does not fit {memory.device} ({memory.label}): its "
        f"{model.params / 1e9:.1f}B parameters take {weights / GB:.1f} GB "
        f"{form or f'in {dtype}'}, and {memory.available / GB:.1f} GB is available for weights "
        "and KV cache.",
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
    if not is_quantized(model):
        lines.append(f"  - {four_bit_advice(model, dtype, memory)}")
    if dtype == "float32":
        lines.append("  - or use --dtype bfloat16 / float16 to halve the weights")
    return "\n".join(lines)


def four_bit_bytes(model: ModelFacts, dtype: str) -> int:
    """A 4-bit file of this model as purellm holds it: ~4.5 bits a decoder weight, the
    vocabulary matrices (kept dense by AWQ/GPTQ) in `dtype`."""
    vocab = min(model.vocab_params, model.params)
    return int((model.params - vocab) * FOUR_BIT_BITS / 8) + vocab * DTYPE_BYTES[dtype]


def four_bit_advice(model: ModelFacts, dtype: str, memory: DeviceMemory) -> str:
    size = four_bit_bytes(model, dtype)
    advice = (
        "a 4-bit file of this model (a Q4_K_M GGUF, AWQ or GPTQ), which purellm runs as it is, "
        f"needs about {size / GB:.1f} GB (~{FOUR_BIT_BITS} bits a weight, the vocabulary in "
        f"{dtype})"
    )
    room = memory.available - size
    cache = KV_CACHE_CPU_DEFAULT_BYTES if memory.device == "cpu" else room
    tokens = min(cache, room) // max(1, kv_bytes_per_token(model, dtype))
    if room < cache or tokens < 2:
        return advice + ": that would not fit here either"
    return advice + f": that would fit, with a KV cache of about {tokens} tokens"
