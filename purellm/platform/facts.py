"""Thin functions that read the facts from torch, and their JSON form for probes.

Everything here that touches torch imports it inside the function: importing this module is
free, so the doctor can use the JSON half without torch."""

from __future__ import annotations

import dataclasses
from typing import Any

from purellm.platform.cpu import TORCH_ISA_PROBES
from purellm.platform.gpu import GpuFacts, TorchBuild
from purellm.platform.visible import format_uuid


def gather_build() -> TorchBuild:
    import torch

    hip, cuda = torch.version.hip, torch.version.cuda
    gpu_build = bool(hip or cuda)
    available = gpu_build and torch.cuda.is_available()
    return TorchBuild(
        version=torch.__version__,
        cuda=cuda,
        hip=hip,
        arch_list=_arch_list(torch) if gpu_build else (),
        gpu_available=available,
        device_count=torch.cuda.device_count() if available else 0,
        cpu_capability=_cpu_capability(torch),
        cpu_isa=torch_cpu_isa(),
        num_threads=torch.get_num_threads(),
    )


def torch_cpu_isa() -> tuple[str, ...]:
    """The ISA names of REPORTED_ISA that torch's CPUID check finds on the running CPU."""
    import torch

    found = []
    for name, function in TORCH_ISA_PROBES.items():
        check = getattr(torch.cpu, function, None)
        try:
            if check is not None and check():
                found.append(name)
        except Exception:  # a private torch helper: a failure only means "unknown"
            continue
    return tuple(found)


def _arch_list(torch) -> tuple[str, ...]:
    """The GPU archs the build has kernels for (get_arch_list is empty without a GPU)."""
    archs = torch.cuda.get_arch_list()
    if not archs:
        flags = getattr(torch._C, "_cuda_getArchFlags", lambda: None)()
        archs = flags.split() if flags else []
    return tuple(archs)


def _cpu_capability(torch) -> str:
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch or an exotic platform
        return ""


def gather_gpus(build: TorchBuild, free_memory: bool = False) -> list[GpuFacts]:
    """Every GPU torch sees. free_memory=True opens a context on each GPU (probes only: the
    serving process must not hold memory on GPUs it does not use)."""
    return [gather_gpu(index, build, free_memory) for index in range(build.device_count)]


def gather_gpu(index: int, build: TorchBuild, free_memory: bool = False) -> GpuFacts:
    import torch

    try:
        props = torch.cuda.get_device_properties(index)
    except Exception as error:  # a GPU the runtime lists but cannot describe
        return GpuFacts(index, "unknown", "", 0, error=f"{type(error).__name__}: {error}")
    if build.hip:
        arch = getattr(props, "gcnArchName", "") or "unknown"
    else:
        arch = f"sm_{props.major}{props.minor}"
    raw_uuid = str(getattr(props, "uuid", "") or "")
    return GpuFacts(
        index=index,
        name=props.name,
        arch=arch,
        total_memory=int(props.total_memory),
        uuid=format_uuid(raw_uuid, bool(build.hip)),
        free_memory=_free_memory(index) if free_memory else None,
    )


def _free_memory(index: int) -> int | None:
    import torch

    try:
        return int(torch.cuda.mem_get_info(index)[0])
    except Exception:  # memory info is informational
        return None


def to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {k: to_json(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def build_from_json(data: dict[str, Any]) -> TorchBuild:
    fields = {f.name for f in dataclasses.fields(TorchBuild)}
    values = {k: v for k, v in data.items() if k in fields}
    values["arch_list"] = tuple(values.get("arch_list") or ())
    values["cpu_isa"] = tuple(values.get("cpu_isa") or ())
    return TorchBuild(**values)


def gpus_from_json(data: list[dict[str, Any]]) -> list[GpuFacts]:
    fields = {f.name for f in dataclasses.fields(GpuFacts)}
    return [GpuFacts(**{k: v for k, v in item.items() if k in fields}) for item in data]
