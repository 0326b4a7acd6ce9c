"""purellm: an OpenAI-compatible LLM inference server in plain PyTorch.

Importing this package is light: torch loads only when `LLM` is first used.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("purellm")
except _metadata.PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["LLM", "SamplingParams", "StructuredOutputsParams", "__version__"]


def __getattr__(name: str):
    if name == "LLM":
        from purellm.llm import LLM

        return LLM
    if name in ("SamplingParams", "StructuredOutputsParams"):
        from purellm import sampling_params

        return getattr(sampling_params, name)
    raise AttributeError(f"module 'purellm' has no attribute {name!r}")
