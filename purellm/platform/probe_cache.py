"""The torch probe of a CPU-only torch build, remembered on disk so that `purellm serve` starts
~2 s sooner the next time. Keyed by everything the result can depend on: the interpreter, the
torch files (path, size, mtime), the CPU's flags, the usable cores and the environment. GPU
builds are always probed afresh (drivers and devices change under the same torch)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

from purellm import __version__, env
from purellm.platform.probes import ProbeOutcome, run_probe

TORCH_FILES = ("__init__.py", "version.py", "lib/libtorch_cpu.so")


def cached_torch_probe() -> ProbeOutcome:
    path = env.cache_dir() / "probe" / f"torch-{probe_key()}.json"
    try:
        return ProbeOutcome(True, json.loads(path.read_text()))
    except (OSError, ValueError):
        pass
    outcome = run_probe(["torch"])
    build = outcome.data.get("build") or {}
    if outcome.ok and not build.get("cuda") and not build.get("hip"):
        _write(path, json.dumps(outcome.data))
    return outcome


def probe_key() -> str:
    parts = {
        "purellm": __version__,
        "python": [os.path.realpath(sys.executable), sys.version],
        "torch": _torch_files(),
        "cpu_flags": _cpu_flags(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "env": env.probe_key_environment(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _torch_files() -> list:
    spec = importlib.util.find_spec("torch")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(list(spec.submodule_search_locations)[0])
    stats = []
    for name in TORCH_FILES:
        try:
            stat = (root / name).stat()
            stats.append([str(root / name), stat.st_size, stat.st_mtime_ns])
        except OSError:
            stats.append([str(root / name), None, None])
    return stats


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            return next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def _write(path: Path, text: str) -> None:
    """Atomically, and never fatally: a read-only home only costs the next start 2 s."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        partial.replace(path)
    except OSError:
        pass
