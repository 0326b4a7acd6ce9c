"""Device and dtype choice, thread count and KV-cache memory budget."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from purellm import env
from purellm.platform.cpu import has_native_bf16, physical_cores

log = logging.getLogger("purellm")

KV_CACHE_CPU_DEFAULT_BYTES = 2 << 30
_DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "half": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    reason: str
    arch: str | None = None
    """GPU architecture (gcnArchName on ROCm, sm_XY on CUDA), None on CPU."""


def _gpu_arch(index: int) -> str:
    props = torch.cuda.get_device_properties(index)
    if torch.version.hip:
        return props.gcnArchName.split(":")[0]
    return f"sm_{props.major}{props.minor}"


def _gpu_usable(index: int) -> tuple[bool, str]:
    arch = _gpu_arch(index)
    arch_list = torch.cuda.get_arch_list()
    if torch.version.hip and arch_list and arch not in arch_list:
        return False, f"this torch build has no kernels for {arch} (it has {arch_list})"
    return True, arch


def choose_device(name: str = "auto") -> DeviceChoice:
    """`auto` takes the first GPU whose architecture this torch build supports, else the CPU."""
    if name == "cpu":
        return DeviceChoice(torch.device("cpu"), "requested")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: torch sees no GPU")
        device = torch.device(name)
        index = device.index or 0
        usable, why = _gpu_usable(index)
        if not usable:
            raise ValueError(f"--device {name}: {why}")
        return DeviceChoice(device, "requested", why)
    if name != "auto":
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            usable, why = _gpu_usable(index)
            if usable:
                return DeviceChoice(torch.device("cuda", index), f"GPU {index} ({why})", why)
            log.warning("GPU %d not used: %s", index, why)
        return DeviceChoice(torch.device("cpu"), "no GPU this torch build can use")
    return DeviceChoice(torch.device("cpu"), "no GPU visible to torch")


def resolve_dtype(name: str, choice: DeviceChoice, checkpoint_dtype=None) -> torch.dtype:
    """float32 on CPUs without native bf16, bfloat16 where the CPU has it, the checkpoint's
    half type on CUDA, float16 on GPUs without fast bf16 (gfx906). An explicit name wins."""
    if name != "auto":
        if name not in _DTYPES:
            raise ValueError(f"unknown dtype {name!r}; use auto, float32, float16 or bfloat16")
        return _DTYPES[name]
    if choice.device.type == "cpu":
        return torch.bfloat16 if has_native_bf16() else torch.float32
    if torch.version.hip and choice.arch in ("gfx906", "gfx908", "gfx900"):
        return torch.float16
    if checkpoint_dtype in (torch.float16, torch.bfloat16):
        return checkpoint_dtype
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def configure_threads() -> int:
    """Use PURELLM_NUM_THREADS, else one thread per physical core."""
    threads = env.num_threads() or physical_cores()
    torch.set_num_threads(threads)
    return threads


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
