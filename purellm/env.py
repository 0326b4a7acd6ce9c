"""The only place that reads purellm's environment variables."""

from __future__ import annotations

import os
from pathlib import Path


def ollama_model_roots() -> list[Path]:
    """Where an Ollama model store may live, in the order Ollama itself looks."""
    explicit = os.environ.get("OLLAMA_MODELS")
    if explicit:
        return [Path(explicit).expanduser()]
    return [
        Path("~/.ollama/models").expanduser(),
        Path("/var/lib/ollama/models"),
        Path("/usr/share/ollama/.ollama/models"),
    ]


def num_threads() -> int | None:
    """PURELLM_NUM_THREADS, else None (the platform layer picks physical cores)."""
    value = os.environ.get("PURELLM_NUM_THREADS")
    return int(value) if value else None
