"""Engine configuration: a frozen dataclass validated on creation."""

from __future__ import annotations

from dataclasses import dataclass

from purellm.layers.quant.config import METHODS

QUANTIZATIONS = (None, *METHODS)


@dataclass(frozen=True)
class EngineConfig:
    model: str | None = None
    """A folder, a .gguf file, an HF repo id in the local cache, an Ollama name; None: default."""
    dtype: str = "auto"
    device: str = "auto"
    max_model_len: int | None = None
    """Context length; None takes the model's, capped by what the KV cache holds."""
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None
    """Tokens one step may compute (prompt chunks and decodes together); None: the device's
    default (256 on a CPU, 2048 on a GPU, at least max_num_seqs)."""
    max_n: int = 16
    """The most choices (`n`) one request may ask for."""
    kv_cache_memory: int | None = None
    """KV-cache bytes; None: 2 GiB on CPU, `gpu_memory_utilization` on GPUs."""
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    seed: int = 0
    generation_config: str = "auto"
    """'auto' applies the model's generation_config.json; 'vllm' ignores it; or a folder."""
    chat_template: str | None = None
    """A Jinja template (text or a file path) that overrides the model's."""
    quantization: str | None = None
    """None: the checkpoint's own (a GGUF's block types, or config.json's awq, gptq,
    compressed-tensors), kept quantized on every device; 'none': dequantized at load (the exact
    reference); 'int8': weight-only int8 linears quantized at load from a dense or GGUF
    checkpoint; or the checkpoint's own method named explicitly."""
    dense_copies: bool | None = None
    """With the CPU kernels (a quantized GGUF on the CPU in bf16, or float32 chosen by `auto`):
    keep a dense copy of each quantized linear for steps of more than 4 rows. None: only while
    they take under 256 MiB at 2 bytes a weight (the default model: 212 MB)."""
    attention_backend: str = "auto"
    """'sdpa' (scaled_dot_product_attention with explicit masks), 'matmul' (matmul + softmax,
    the reference), 'hybrid' (sdpa for prompt chunks, matmul for decodes), or 'auto': matmul on
    gfx9 GPUs, hybrid on CPUs in bf16/fp16, else sdpa."""

    def __post_init__(self) -> None:
        checks = [
            (self.block_size >= 1, "block_size must be positive"),
            (self.max_num_seqs >= 1, "max_num_seqs must be positive"),
            (
                self.max_num_batched_tokens is None or self.max_num_batched_tokens >= 1,
                "max_num_batched_tokens must be positive",
            ),
            (self.max_n >= 1, "max_n must be positive"),
            (self.max_model_len is None or self.max_model_len >= 2, "max_model_len too small"),
            (self.kv_cache_memory is None or self.kv_cache_memory > 0, "kv_cache_memory <= 0"),
            (0 < self.gpu_memory_utilization <= 1, "gpu_memory_utilization must be in (0, 1]"),
            (
                self.quantization in QUANTIZATIONS,
                f"quantization must be one of {', '.join(map(str, QUANTIZATIONS))}",
            ),
            (
                self.attention_backend in ("auto", "sdpa", "matmul", "hybrid"),
                "attention_backend must be auto, sdpa, matmul or hybrid",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
