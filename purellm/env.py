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


def api_key() -> str | None:
    """PURELLM_API_KEY (the server's API key when `--api-key` is not given), else None."""
    return os.environ.get("PURELLM_API_KEY") or None


GPU_SELECTION_VARS = ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
"""Read by the GPU runtimes themselves (ROCr first, then HIP or CUDA); purellm only reports them."""
PLATFORM_VARS = ("HSA_OVERRIDE_GFX_VERSION", "PYTORCH_ROCM_ARCH", "ATEN_CPU_CAPABILITY")


def gpu_selection() -> dict[str, str]:
    """The GPU-selection variables that are set (an empty value is kept: it hides every GPU)."""
    return {name: os.environ[name] for name in GPU_SELECTION_VARS if name in os.environ}


def platform_overrides() -> dict[str, str]:
    """Variables that change what the GPU runtime or torch's CPU kernels pick, when set."""
    return {name: os.environ[name] for name in PLATFORM_VARS if name in os.environ}


def omp_num_threads() -> int | None:
    """OMP_NUM_THREADS when it is a positive integer, else None."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def probe_wrapper() -> list[str]:
    """PURELLM_PROBE_WRAPPER: a command prefixed to every platform probe's interpreter, e.g.
    `qemu-x86_64 -cpu Haswell`, so probes run on the same (emulated) CPU as their caller."""
    import shlex

    return shlex.split(os.environ.get("PURELLM_PROBE_WRAPPER", ""))


def probe_timeout() -> float:
    """PURELLM_PROBE_TIMEOUT: seconds a platform probe may take (default 120)."""
    value = os.environ.get("PURELLM_PROBE_TIMEOUT")
    return float(value) if value else 120.0


def cache_dir() -> Path:
    """PURELLM_CACHE_DIR, else $XDG_CACHE_HOME/purellm, else ~/.cache/purellm."""
    explicit = os.environ.get("PURELLM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "purellm"


PROBE_KEY_VARS = ("PYTHONPATH", "PYTHONHOME", "LD_LIBRARY_PATH", "LD_PRELOAD", "OMP_NUM_THREADS")
"""Variables that change which torch a probe loads or what it reports (besides the platform,
GPU-selection and purellm variables)."""


def probe_key_environment() -> dict[str, str]:
    """Every variable a torch probe's result may depend on, for keying a remembered probe."""
    names = PROBE_KEY_VARS + GPU_SELECTION_VARS + PLATFORM_VARS
    values = {name: os.environ[name] for name in names if name in os.environ}
    values |= {k: v for k, v in os.environ.items() if k.startswith("PURELLM_")}
    return values
