"""CPU facts: /proc/cpuinfo text parsed by pure functions, plus torch's own CPUID view.

/proc/cpuinfo describes the host's CPU. Under an emulator (qemu-user) or a VM that masks
features, the CPU actually running the code can lack flags listed there, so decisions prefer
the ISA that torch's CPUID check reports when a torch probe supplied it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REPORTED_ISA = ("avx2", "avx512f", "avx512_bf16", "amx")
TORCH_ISA_PROBES = {
    "avx2": "_is_avx2_supported",
    "avx512f": "_is_avx512_supported",
    "avx512_bf16": "_is_avx512_bf16_supported",
    "amx": "_is_amx_tile_supported",
}
"""ISA name -> the `torch.cpu` function that checks it with CPUID."""


@dataclass(frozen=True)
class CpuFacts:
    model: str
    flags: frozenset[str]
    """Every flag /proc/cpuinfo lists for the first processor."""
    logical: int
    """CPUs this process may run on (its affinity mask)."""
    physical: int
    """Physical cores among them (hyper-threads counted once)."""


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """(model name, ISA flags) from the text of /proc/cpuinfo; the first processor counts."""
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def isa_from_flags(flags: set[str] | frozenset[str]) -> frozenset[str]:
    """The REPORTED_ISA names present in a /proc/cpuinfo flag set."""
    names = {name for name in ("avx2", "avx512f", "avx512_bf16") if name in flags}
    if "amx_tile" in flags or "amx_bf16" in flags:
        names.add("amx")
    return frozenset(names)


def has_native_bf16(flags: set[str] | frozenset[str] | None = None) -> bool:
    """bf16 matmuls are fast only with avx512_bf16 or AMX (flags: cpuinfo flags or ISA names)."""
    flags = cpu_info()[1] if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16", "amx_tile", "amx"} & set(flags))


def cpu_auto_dtype(isa: set[str] | frozenset[str]) -> str:
    return "bfloat16" if has_native_bf16(isa) else "float32"


def count_physical_cores(text: str, available: int) -> int:
    """Physical cores in /proc/cpuinfo text, capped by the CPUs available to the process."""
    cores = {
        (block.get("physical id"), block.get("core id"))
        for block in _processor_blocks(text)
        if "core id" in block
    }
    return max(1, min(available or 1, len(cores) or available or 1))


def thread_count(explicit: int | None, omp: int | None, physical: int) -> int:
    """PURELLM_NUM_THREADS, else OMP_NUM_THREADS, else one thread per physical core."""
    return explicit or omp or physical


def isa_mismatch(flags: frozenset[str], torch_isa: frozenset[str] | None) -> list[str]:
    """ISA names /proc/cpuinfo lists but the running CPU lacks (emulator or masking VM)."""
    if torch_isa is None:
        return []
    return sorted(isa_from_flags(flags) - torch_isa)


@lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset[str]]:
    try:
        model, flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return "unknown", frozenset()
    return model, frozenset(flags)


def available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads counted once)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return available_cpus()
    return count_physical_cores(text, available_cpus())


def read_cpu_facts() -> CpuFacts:
    model, flags = cpu_info()
    return CpuFacts(model, flags, available_cpus(), physical_cores())


def _processor_blocks(text: str) -> list[dict[str, str]]:
    blocks = []
    for chunk in text.split("\n\n"):
        fields = {
            k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in chunk.splitlines())
        }
        blocks.append(fields)
    return blocks


def parse_cache_size(text: str) -> int:
    """Bytes from a sysfs cache `size` text such as "32768K" (0 when unreadable)."""
    text = text.strip()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1)
    return int(number) * unit if number.isdigit() else 0


def last_level_cache_bytes() -> int:
    """The size of the largest cache level the first CPU sees (its L3 on desktop and server
    CPUs), from sysfs; 0 where sysfs does not say."""
    sizes = [0]
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            sizes.append(parse_cache_size((index / "size").read_text()))
        except OSError:
            continue
    return max(sizes)


def parse_meminfo(text: str) -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes from the text of /proc/meminfo (0 when absent)."""
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0]) * 1024
    return values.get("MemTotal", 0), values.get("MemAvailable", values.get("MemFree", 0))


def read_meminfo() -> tuple[int, int]:
    try:
        return parse_meminfo(Path("/proc/meminfo").read_text())
    except OSError:
        return 0, 0
