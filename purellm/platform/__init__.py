"""The only package that touches device APIs (torch.cuda, HIP properties, CPU flags).

It decides once: the device to run on, the dtype "auto" means there, and memory facts.
Importing this package does not import torch: the names below load on first use, so the
doctor and the probes work where torch is missing or broken."""

from __future__ import annotations

import importlib

from purellm.platform.errors import PlatformError
from purellm.platform.preflight import preflight  # torch-free; the function shadows the module

_LAZY = {
    "KV_CACHE_CPU_DEFAULT_BYTES": "purellm.platform.memory",
    "DeviceChoice": "purellm.platform.device",
    "attention_group_bytes": "purellm.platform.device",
    "batched_tokens_default": "purellm.platform.device",
    "choose_device": "purellm.platform.device",
    "configure_threads": "purellm.platform.device",
    "kv_cache_budget": "purellm.platform.device",
    "release_freed_memory": "purellm.platform.device",
    "resolve_dtype": "purellm.platform.device",
}

__all__ = [
    "KV_CACHE_CPU_DEFAULT_BYTES",
    "DeviceChoice",
    "PlatformError",
    "attention_group_bytes",
    "batched_tokens_default",
    "choose_device",
    "configure_threads",
    "kv_cache_budget",
    "preflight",
    "release_freed_memory",
    "resolve_dtype",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'purellm.platform' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
