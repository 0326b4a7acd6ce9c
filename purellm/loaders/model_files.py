"""What every model source resolves to: config, tokenizer and a stream of weights."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

WeightStream = Iterator[tuple[str, "torch.Tensor"]]


@dataclass(frozen=True)
class ModelFiles:
    """A resolved model. `weights()` yields `(hf_parameter_name, tensor)` one tensor at a time,
    so a loader never holds a second copy of the whole model in memory."""

    name: str
    """The name to serve the model under (folder name, file stem, Ollama name, repo id)."""
    source: str
    """Human-readable description of where it came from, e.g. 'GGUF file /x/y.gguf'."""
    config: Any
    """A transformers config (LlamaConfig, Qwen2Config, ...), or for a GGUF a LightConfig with
    the same fields (loaders/light_config.py)."""
    tokenizer: Any
    """A transformers tokenizer with `chat_template` set when the source has one."""
    weights: Callable[..., WeightStream]
    generation_config: dict[str, Any] = field(default_factory=dict)
    """generation_config.json contents (eos_token_id, temperature, top_p, ...), or {}."""
    quantized: frozenset[str] = frozenset()
    """Names of the matrices the checkpoint stores quantized (a GGUF's Q4_0, Q8_0, K-quants...).
    A GGUF's `weights(keep_q4=True)` yields its Q4_0/Q4_1/Q4_K ones as Q4Weight (their exact
    4-bit values, `.dequantize()` for the float tensor)."""
