"""The `purellm doctor` report as a plain dict (its --json form); render.py prints it.

Every section is built by its own guarded function: a failing probe or section becomes a
finding in the report, never an exception out of the doctor."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
from dataclasses import dataclass
from typing import Any

from purellm import env
from purellm.platform.cpu import REPORTED_ISA, isa_from_flags, isa_mismatch, read_meminfo
from purellm.platform.facts import to_json
from purellm.platform.gpu import describe_gpu, judge_gpu
from purellm.platform.memory import (
    DTYPE_BYTES,
    DeviceMemory,
    fit_model,
    gpu_memory,
    kv_bytes_per_token,
    uses_kernels,
)
from purellm.platform.probes import run_probe
from purellm.platform.state import PlatformState, ServeVerdict, gather_state, serve_verdict
from purellm.platform.visible import describe_selection

EXIT_OK, EXIT_PLATFORM, EXIT_MODEL = 0, 1, 3


@dataclass(frozen=True)
class DoctorRequest:
    model: str | None = None
    with_model: bool = False
    device: str = "auto"
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    kv_cache_memory: int | None = None


def build_report(request: DoctorRequest) -> dict[str, Any]:
    state = gather_state()
    report: dict[str, Any] = {
        "purellm": _version(),
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "torch": torch_section(state),
        "triton": triton_section(),
        "gpus": gpu_section(state),
        "cpu": cpu_section(state),
        "environment": env_section(state),
    }
    facts = read_model(request.model) if request.with_model else None
    checkpoint = (facts or {}).get("facts", {}).get("checkpoint_dtype")
    verdict = serve_verdict(state, request.device, request.dtype, checkpoint)
    report["serve"] = serve_section(verdict)
    if facts is not None:
        report["model"] = model_section(request, state, verdict, facts)
    report["exit_code"] = exit_code(report)
    return report


def exit_code(report: dict[str, Any]) -> int:
    if not report["serve"]["ok"]:
        return EXIT_PLATFORM
    model = report.get("model")
    if model is not None and not model.get("fits"):
        return EXIT_MODEL
    return EXIT_OK


def _version() -> str:
    from purellm import __version__

    return __version__


def torch_section(state: PlatformState) -> dict[str, Any]:
    if state.build is None:
        status = "signal" if state.probe.signal else state.probe.data.get("status", "failed")
        return {
            "ok": False,
            "status": status,
            "problem": state.probe.problem,
            "hint": state.probe.hint,
            "signal": state.probe.signal or None,
        }
    build = state.build
    return {
        "ok": True,
        "status": "ok",
        "version": build.version,
        "flavour": build.flavour,
        "arch_list": list(build.arch_list),
        "gpu_available": build.gpu_available,
        "cpu_capability": build.cpu_capability,
        "num_threads": build.num_threads,
    }


def triton_section() -> dict[str, Any]:
    version = None
    for dist in ("triton", "pytorch-triton-rocm", "pytorch-triton"):
        try:
            version = importlib.metadata.version(dist)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        importable = importlib.util.find_spec("triton") is not None
    except (ValueError, ImportError):  # blocked with sys.modules["triton"] = None
        importable = False
    return {"installed": version is not None, "version": version, "importable": importable}


def gpu_section(state: PlatformState) -> list[dict[str, Any]] | None:
    if state.build is None or state.gpus is None:
        return None
    rows = []
    for gpu in state.gpus:
        verdict = judge_gpu(gpu, state.build)
        row = to_json(gpu)
        row.update(usable=verdict.usable, why=verdict.why, remedy=verdict.remedy)
        rows.append(row)
    return rows


def cpu_section(state: PlatformState) -> dict[str, Any]:
    torch_isa = frozenset(state.build.cpu_isa) if state.build and state.build.cpu_isa else None
    isa = state.cpu_isa
    total, available = read_meminfo()
    return {
        "model": state.cpu.model,
        "logical_cpus": state.cpu.logical,
        "physical_cores": state.cpu.physical,
        "isa": {name: name in isa for name in REPORTED_ISA},
        "isa_source": "torch CPUID" if torch_isa is not None else "/proc/cpuinfo",
        "cpuinfo_isa": sorted(isa_from_flags(state.cpu.flags)),
        "cpuinfo_only": isa_mismatch(state.cpu.flags, torch_isa),
        "kernel_level": state.build.cpu_capability if state.build else None,
        "memory_total": total,
        "memory_available": available,
    }


def env_section(state: PlatformState) -> dict[str, Any]:
    hip = bool(state.build.hip) if state.build else None
    notes = describe_selection(state.selection, hip, state.gpus)
    return {
        "gpu_selection": {
            n.var: {"value": n.value, "effect": n.effect, "problem": n.problem} for n in notes
        },
        "overrides": env.platform_overrides(),
    }


def serve_section(verdict: ServeVerdict) -> dict[str, Any]:
    decision = verdict.decision
    return {
        "ok": not verdict.problem,
        "device": decision.device if decision and not decision.error else None,
        "reason": decision.reason if decision else None,
        "skipped": list(decision.skipped) if decision else [],
        "dtype": verdict.dtype or None,
        "threads": verdict.threads,
        "problem": verdict.problem or None,
    }


def read_model(model: str | None) -> dict[str, Any]:
    """{"facts": ModelFacts as JSON} or {"fits": False, "problem": ...}, from a model probe."""
    outcome = run_probe(["model"] + ([model] if model else []))
    if not outcome.ok:
        return {"fits": False, "problem": f"cannot read the model: {outcome.problem}"}
    return {"facts": outcome.data["model"]}


def model_section(
    request: DoctorRequest, state: PlatformState, verdict: ServeVerdict, facts: dict[str, Any]
) -> dict[str, Any]:
    if "facts" not in facts or verdict.problem:
        return {**facts, "fits": False} if "problem" in facts else {**facts, "fits": None}
    return _fit_section(request, state, verdict, facts["facts"])


def _fit_section(
    request: DoctorRequest, state: PlatformState, verdict: ServeVerdict, data: dict[str, Any]
) -> dict[str, Any]:
    from purellm.platform.modelinfo import ModelFacts

    model = ModelFacts(**data)
    memory = _device_memory(request, state, verdict)
    kernels = uses_kernels(memory.device, verdict.dtype, request.dtype)
    fit = fit_model(model, verdict.dtype, memory, request.kv_cache_memory, kernels)
    return {
        "facts": {k: v for k, v in data.items() if k not in ("tensors", "config")},
        "dtype": verdict.dtype,
        "dtype_bytes": DTYPE_BYTES[verdict.dtype],
        "weight_bytes": fit.weight_bytes,
        "kv_bytes_per_token": kv_bytes_per_token(model, verdict.dtype),
        "device": memory.device,
        "memory_available": memory.available,
        "fits": fit.fits,
        "kv_bytes": fit.kv_bytes,
        "kv_tokens": fit.kv_tokens,
        "full_sequences": fit.full_sequences,
        "message": fit.message,
    }


def _device_memory(
    request: DoctorRequest, state: PlatformState, verdict: ServeVerdict
) -> DeviceMemory:
    device = verdict.decision.device if verdict.decision else "cpu"
    gpu = next((g for g in state.gpus or [] if f"cuda:{g.index}" == device), None)
    if gpu is None:
        total, available = read_meminfo()
        return DeviceMemory("cpu", f"{state.cpu.model}, RAM", total, available)
    util = request.gpu_memory_utilization
    return gpu_memory(gpu.index, describe_gpu(gpu), gpu.total_memory, gpu.free_memory, util)
