"""The device and dtype decisions, as pure functions over recorded facts (no torch here).

Both `purellm serve` (in-process, through `choose_device`) and `purellm doctor` (over a probe's
JSON) call these, so they decide the same thing and print the same messages."""

from __future__ import annotations

import re
from dataclasses import dataclass

from purellm.platform.cpu import cpu_auto_dtype
from purellm.platform.gpu import (
    GpuFacts,
    TorchBuild,
    base_arch,
    describe_gpu,
    gpu_has_fast_bf16,
    judge_gpu,
)
from purellm.platform.visible import hidden_reason

_DEVICE = re.compile(r"cpu|auto|cuda(:(\d+))?")
DTYPE_NAMES = {
    "float32": "float32",
    "float": "float32",
    "fp32": "float32",
    "float16": "float16",
    "half": "float16",
    "fp16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


@dataclass(frozen=True)
class Decision:
    device: str
    """`cpu` or `cuda:N`."""
    reason: str
    """One line for the log."""
    arch: str | None = None
    error: str = ""
    """Set when the requested device cannot serve: the message to show, with remedies."""
    skipped: tuple[str, ...] = ()
    """One line per GPU that `auto` passed over, and why."""


def decide_device(
    request: str, build: TorchBuild, gpus: list[GpuFacts], selection: dict[str, str] | None = None
) -> Decision:
    """`auto`: the usable GPU with the most memory, else the CPU; `cpu`/`cuda`/`cuda:N` as asked."""
    request = request.strip().lower()
    match = _DEVICE.fullmatch(request)
    if match is None:
        message = f"unknown device {request!r}; use auto, cpu, cuda or cuda:N"
        return Decision("cpu", "invalid request", error=message)
    if request == "cpu":
        return Decision("cpu", "requested with --device cpu")
    if request == "auto":
        return _auto(build, gpus, selection or {})
    return _requested_gpu(request, int(match.group(2) or 0), build, gpus, selection or {})


def _auto(build: TorchBuild, gpus: list[GpuFacts], selection: dict[str, str]) -> Decision:
    if not gpus:
        return Decision("cpu", _no_gpu_reason(build, selection))
    usable, skipped = [], []
    for gpu in gpus:
        verdict = judge_gpu(gpu, build)
        if verdict.usable:
            usable.append(gpu)
        else:
            skipped.append(f"GPU {gpu.index} ({gpu.name}) not used: {verdict.why}")
    if not usable:
        reason = "no GPU this torch build can use (" + "; ".join(skipped) + ")"
        return Decision("cpu", reason, skipped=tuple(skipped))
    best = max(usable, key=lambda g: (g.total_memory, -g.index))
    reason = f"GPU {best.index} ({describe_gpu(best)})"
    if len(usable) > 1:
        reason += f", the largest of {len(usable)} usable GPUs"
    return Decision(f"cuda:{best.index}", reason, base_arch(best.arch), skipped=tuple(skipped))


def _no_gpu_reason(build: TorchBuild, selection: dict[str, str]) -> str:
    if not (build.hip or build.cuda):
        return f"torch {build.version} is a CPU-only build"
    hidden = hidden_reason(selection, bool(build.hip))
    return "no GPU visible to torch" + (f" ({hidden})" if hidden else "")


def _requested_gpu(
    request: str, index: int, build: TorchBuild, gpus: list[GpuFacts], selection: dict[str, str]
) -> Decision:
    if not (build.hip or build.cuda):
        message = (
            f"--device {request}: torch {build.version} is a CPU-only build. Install the ROCm "
            "or CUDA build of torch for your GPU (see https://pytorch.org/get-started/locally/), "
            "or use --device cpu"
        )
        return Decision("cpu", "CPU-only torch", error=message)
    if index >= len(gpus):
        seen = ", ".join(f"cuda:{g.index} {g.name}" for g in gpus) or "none"
        hidden = hidden_reason(selection, bool(build.hip))
        message = f"--device {request}: torch sees {len(gpus)} GPU(s) ({seen})"
        if hidden:
            message += f"; {hidden}"
        return Decision("cpu", "no such GPU", error=message)
    gpu = gpus[index]
    verdict = judge_gpu(gpu, build)
    if not verdict.usable:
        return Decision(f"cuda:{index}", verdict.why, base_arch(gpu.arch), error=verdict.remedy)
    reason = f"requested with --device {request}: GPU {index} ({describe_gpu(gpu)})"
    return Decision(f"cuda:{index}", reason, base_arch(gpu.arch))


def decide_dtype(
    name: str,
    decision: Decision,
    build: TorchBuild | None,
    gpu: GpuFacts | None,
    cpu_isa: frozenset[str],
    checkpoint_dtype: str | None = None,
) -> str:
    """An explicit name wins. `auto`: on the CPU bfloat16 with avx512_bf16/AMX, else float32;
    float16 on AMD GPUs without fast bf16 (gfx906); else the checkpoint's half type if the GPU
    runs it fast, else bfloat16 where the GPU has it, else float16."""
    if name != "auto":
        if name not in DTYPE_NAMES:
            raise ValueError(f"unknown dtype {name!r}; use auto, float32, float16 or bfloat16")
        return DTYPE_NAMES[name]
    if decision.device == "cpu" or gpu is None or build is None:
        return cpu_auto_dtype(cpu_isa)
    bf16 = gpu_has_fast_bf16(gpu, build)
    if checkpoint_dtype == "float16" or (checkpoint_dtype == "bfloat16" and bf16):
        return checkpoint_dtype
    return "bfloat16" if bf16 else "float16"
