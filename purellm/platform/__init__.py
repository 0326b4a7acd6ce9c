"""The only package that touches device APIs (torch.cuda, HIP properties, CPU flags).

It decides once: the device to run on, the dtype "auto" means there, and memory facts.
"""

from __future__ import annotations

from purellm.platform.device import (
    KV_CACHE_CPU_DEFAULT_BYTES,
    DeviceChoice,
    choose_device,
    configure_threads,
    kv_cache_budget,
    resolve_dtype,
)

__all__ = [
    "KV_CACHE_CPU_DEFAULT_BYTES",
    "DeviceChoice",
    "choose_device",
    "configure_threads",
    "kv_cache_budget",
    "resolve_dtype",
]
