"""CPU facts read from /proc/cpuinfo (no torch)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")


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


@lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset[str]]:
    try:
        model, flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return "unknown", frozenset()
    return model, frozenset(flags)


def has_native_bf16(flags: set[str] | frozenset[str] | None = None) -> bool:
    """bf16 matmuls are fast only with avx512_bf16 or AMX."""
    flags = cpu_info()[1] if flags is None else flags
    return "avx512_bf16" in flags or "amx_bf16" in flags


def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads counted once)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return available or 1
    cores = {
        (block.get("physical id"), block.get("core id"))
        for block in _processor_blocks(text)
        if "core id" in block
    }
    return max(1, min(available or 1, len(cores) or available or 1))


def _processor_blocks(text: str) -> list[dict[str, str]]:
    blocks = []
    for chunk in text.split("\n\n"):
        fields = {
            k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in chunk.splitlines())
        }
        blocks.append(fields)
    return blocks
