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
    """A transformers PretrainedConfig (LlamaConfig, Qwen2Config, ...)."""
    tokenizer: Any
    """A transformers tokenizer with `chat_template` set when the source has one."""
    weights: Callable[[], WeightStream]
    generation_config: dict[str, Any] = field(default_factory=dict)
    """generation_config.json contents (eos_token_id, temperature, top_p, ...), or {}."""
    q4_weights: Callable[[], Iterator[tuple[str, Any]]] | None = None
    """For a GGUF with Q4_0/Q4_1 matrices: `(hf_parameter_name, Q4Weight)` for each of them,
    their exact 4-bit values (`weights()` yields the same tensors dequantized)."""
