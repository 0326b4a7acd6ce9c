"""A model config for GGUF files without transformers' config classes: importing those pulls in
torch.distributed and friends (~0.7 s of every start-up) for a handful of numbers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


class LightConfig(SimpleNamespace):
    """The fields of the matching transformers config (LlamaConfig, Qwen2Config, ...) that the
    file defines, as attributes; `model_type` names the config class."""

    def to_transformers(self) -> Any:
        """The real transformers config, for code that needs one (transformers' own model
        classes, its rope-scaling functions)."""
        from transformers import AutoConfig

        fields = dict(vars(self))
        return AutoConfig.for_model(fields.pop("model_type"), **fields)


def transformers_config(config: Any) -> Any:
    """`config` as a transformers config, whichever kind it is."""
    return config.to_transformers() if isinstance(config, LightConfig) else config
