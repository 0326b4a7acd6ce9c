"""Device and dtype choice, thread count and KV-cache memory budget, in the serving process.

Thin: the facts come from torch (facts.py), the decisions from decide.py, the same functions
the doctor applies to a probe's report."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import torch

from purellm import env
from purellm.platform.cpu import (
    isa_from_flags,
    last_level_cache_bytes,
    physical_cores,
    read_cpu_facts,
    thread_count,
)
from purellm.platform.decide import Decision, decide_device, decide_dtype
from purellm.platform.errors import PlatformError
from purellm.platform.facts import gather_build, gather_gpus
from purellm.platform.gpu import GpuFacts, TorchBuild
from purellm.platform.memory import KV_CACHE_CPU_DEFAULT_BYTES

log = logging.getLogger("purellm")

__all__ = [
    "KV_CACHE_CPU_DEFAULT_BYTES",
    "DeviceChoice",
    "choose_device",
    "configure_threads",
    "kv_cache_budget",
    "resolve_dtype",
]


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    reason: str
    arch: str | None = None
    """GPU architecture (gcnArchName base on ROCm, sm_XY on CUDA), None on CPU."""


@lru_cache(maxsize=1)
def _facts() -> tuple[TorchBuild, tuple[GpuFacts, ...]]:
    build = gather_build()
    return build, tuple(gather_gpus(build))


def choose_device(name: str = "auto") -> DeviceChoice:
    """`auto` takes the usable GPU with the most memory, else the CPU (the reason is logged);
    `cpu`, `cuda`, `cuda:N` as asked. Raises PlatformError (a ValueError) with remedies."""
    build, gpus = _facts()
    decision = decide_device(name, build, list(gpus), env.gpu_selection())
    if decision.error:
        raise PlatformError(decision.error)
    for line in decision.skipped:
        log.warning("%s", line)
    log.info("device %s: %s", decision.device, decision.reason)
    return DeviceChoice(torch.device(decision.device), decision.reason, decision.arch)


def resolve_dtype(name: str, choice: DeviceChoice, checkpoint_dtype=None) -> torch.dtype:
    """float32 on CPUs without native bf16, bfloat16 where the CPU has it, float16 on GPUs
    without fast bf16 (gfx906), else the checkpoint's half type. An explicit name wins."""
    build, gpus = _facts()
    device = choice.device
    gpu = gpus[device.index or 0] if device.type == "cuda" and gpus else None
    decision = Decision(str(device), choice.reason, choice.arch)
    checkpoint = str(checkpoint_dtype).removeprefix("torch.") if checkpoint_dtype else None
    isa = frozenset(build.cpu_isa) or isa_from_flags(read_cpu_facts().flags)
    return getattr(torch, decide_dtype(name, decision, build, gpu, isa, checkpoint))


def configure_threads() -> int:
    """PURELLM_NUM_THREADS, else OMP_NUM_THREADS, else one thread per physical core."""
    threads = thread_count(env.num_threads(), env.omp_num_threads(), physical_cores())
    torch.set_num_threads(threads)
    return threads


BATCHED_TOKENS_CPU = 256
BATCHED_TOKENS_GPU = 2048


def batched_tokens_default(device: torch.device, max_num_seqs: int) -> int:
    """Tokens per step when --max-num-batched-tokens is not given, at least one per running
    sequence. A step is the unit in which the engine handles aborts and new requests, and in
    which running streams wait for a long prompt's chunk: on a 2-core CPU the default model
    takes 0.4-0.6 s for a 256-token chunk at 4k tokens of context and 3-4 s for 2048, at the
    same prompt and batch throughput (bench/prefill_chunks.py, BENCHMARKS.md)."""
    default = BATCHED_TOKENS_CPU if device.type == "cpu" else BATCHED_TOKENS_GPU
    return max(default, max_num_seqs)


ATTENTION_GROUP_CACHE_SHARE = 1 / 4
"""Of the CPU's last-level cache, what one attention group's gathered keys and values may
take. On a 32 MiB L3 (BENCHMARKS.md, 2026-12-07): groups of 6-12 MiB made 64 x 512 decode
steps 1.15-1.25x and 16 x 4000 1.3-1.44x faster than one group, 3 MiB less so (more ops), 18
MiB barely."""
ATTENTION_GROUP_BYTES_FALLBACK = 8 << 20


def attention_group_bytes(device: torch.device) -> int | None:
    """The most bytes of keys and values (per layer) one attention group should gather: on a
    CPU a share of the last-level cache, so that the attention matmuls read the gathered copy
    from the cache rather than from memory; None (no limit) on GPUs, where it is unmeasured."""
    if device.type != "cpu":
        return None
    cache = last_level_cache_bytes()
    return int(cache * ATTENTION_GROUP_CACHE_SHARE) if cache else ATTENTION_GROUP_BYTES_FALLBACK


def kv_cache_budget(
    device: torch.device, kv_cache_memory: int | None, gpu_memory_utilization: float
) -> int:
    """Bytes the KV cache may take once the weights are loaded."""
    if kv_cache_memory is not None:
        return kv_cache_memory
    if device.type == "cpu":
        return KV_CACHE_CPU_DEFAULT_BYTES
    free, total = torch.cuda.mem_get_info(device)
    used = total - free
    return max(0, int(total * gpu_memory_utilization) - used)


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS: glibc keeps them otherwise (after loading: the
    float32 copies of each weight on its way to the model, ~140 MB for the default model;
    while serving: the step tensors of every size a changing batch makes, ~400 MiB after 20
    minutes of mixed traffic). A no-op where the C library has no malloc_trim."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@lru_cache(maxsize=1)
def _malloc_trim():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
