"""What every model source resolves to: config, tokenizer and a stream of weights."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from purellm.layers.quant.config import CheckpointQuant

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
    quantization: CheckpointQuant | None = None
    """How the checkpoint stores its weights quantized (a GGUF's tensor types, config.json's
    quantization_config), or None."""
