"""Engine configuration: frozen dataclasses validated on creation."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

from purellm.layers.quant.config import METHODS

QUANTIZATIONS = (None, *METHODS)
MAX_SPECULATIVE_TOKENS = 16


@dataclass(frozen=True)
class SpeculativeConfig:
    """vLLM's `--speculative-config`: draft tokens proposed by n-gram lookup in the sequence's
    own prompt and output ("ngram"), or by a small model with the same vocabulary
    ("draft_model"), verified in the step's one forward pass."""

    method: str = "ngram"
    num_speculative_tokens: int = 3
    """The most draft tokens a sequence proposes in a step. 3 by default: on a CPU with a
    quantized model a step of up to 4 tokens per sequence keeps the int4 kernels, a longer one
    takes the dense copies (bench/spec_bench.py: 2.5x at 3, ~1.8x at 4)."""
    prompt_lookup_max: int = 4
    """The longest n-gram (the sequence's last tokens) looked up."""
    prompt_lookup_min: int = 2
    """The shortest; no earlier match of even this many tokens: no draft."""
    model: str | None = None
    """The draft model of method "draft_model": anything purellm loads (a folder, a GGUF, an
    Ollama name) whose vocabulary is the target's."""
    disable_by_batch_size: int = 8
    """No drafts in a step with more running sequences than this: a big batch keeps the
    hardware busy already, and verifying drafts would cost compute (vLLM's name)."""

    def __post_init__(self) -> None:
        if self.method not in ("ngram", "draft_model"):
            raise ValueError(
                f'unknown speculative method {self.method!r}; use "ngram" or "draft_model"'
            )
        if (self.method == "draft_model") != (self.model is not None):
            raise ValueError('speculative "model" is needed with, and only with, "draft_model"')
        if not 1 <= self.num_speculative_tokens <= MAX_SPECULATIVE_TOKENS:
            raise ValueError(
                f"num_speculative_tokens must be in [1, {MAX_SPECULATIVE_TOKENS}]; "
                f"got {self.num_speculative_tokens}"
            )
        if not 1 <= self.prompt_lookup_min <= self.prompt_lookup_max:
            raise ValueError("speculative config needs 1 <= prompt_lookup_min <= prompt_lookup_max")
        if self.disable_by_batch_size < 1:
            raise ValueError("speculative disable_by_batch_size must be positive")

    @classmethod
    def parse(cls, value: SpeculativeConfig | dict | str | None) -> SpeculativeConfig | None:
        """From the flag's JSON text, a dict, or as is; ValueError naming what is wrong."""
        if value is None or isinstance(value, SpeculativeConfig):
            return value
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"speculative config is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("speculative config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"speculative config: unknown keys {', '.join(unknown)}")
        return cls(**value)

    def describe(self) -> str:
        source = f"n-grams of {self.prompt_lookup_min}-{self.prompt_lookup_max}"
        if self.method == "draft_model":
            source = f"draft model {self.model}"
        return (
            f"{self.method} speculation, up to {self.num_speculative_tokens} draft tokens "
            f"({source}; off above {self.disable_by_batch_size} running sequences)"
        )


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
    speculative_config: SpeculativeConfig | None = None
    """Speculative decoding; None: off. A dict or JSON text is accepted and converted."""

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "speculative_config", SpeculativeConfig.parse(self.speculative_config)
        )
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
