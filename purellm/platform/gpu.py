"""GPU facts as recorded data, and the pure rules that judge them (no torch here).

ROCm GPUs appear in torch as `cuda` devices; their architecture is `gcnArchName`
(e.g. `gfx906:sramecc+:xnack-`). A torch build ships kernels for the architectures in
`torch.cuda.get_arch_list()`; on any other GPU its first kernel fails with "HIP error: invalid
device function", so that GPU is refused here, before anything runs on it."""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1 << 30
_NO_FAST_BF16_PREFIXES = ("gfx900", "gfx906", "gfx908", "gfx10")
"""AMD architectures where float16 is the fast half type (no bf16 hardware, or slower bf16)."""
_HSA_COMPATIBLE = {
    "gfx902": "gfx900",
    "gfx909": "gfx900",
    "gfx90c": "gfx900",
    "gfx1031": "gfx1030",
    "gfx1032": "gfx1030",
    "gfx1033": "gfx1030",
    "gfx1034": "gfx1030",
    "gfx1035": "gfx1030",
    "gfx1036": "gfx1030",
    "gfx1101": "gfx1100",
    "gfx1102": "gfx1100",
    "gfx1103": "gfx1100",
}
"""arch -> the arch whose code objects it runs under HSA_OVERRIDE_GFX_VERSION (same ISA family,
as used by the ROCm community; not an AMD guarantee)."""


@dataclass(frozen=True)
class TorchBuild:
    """What the installed torch is and what it sees (recorded by the torch probe)."""

    version: str
    cuda: str | None = None
    hip: str | None = None
    arch_list: tuple[str, ...] = ()
    gpu_available: bool = False
    device_count: int = 0
    cpu_capability: str = ""
    cpu_isa: tuple[str, ...] = ()
    """ISA features torch's CPUID check reports: avx2, avx512f, avx512_bf16, amx."""
    num_threads: int = 0

    @property
    def flavour(self) -> str:
        if self.hip:
            return f"ROCm {'.'.join(self.hip.split('.')[:2])}"
        if self.cuda:
            return f"CUDA {self.cuda}"
        return "CPU"


@dataclass(frozen=True)
class GpuFacts:
    """One GPU as torch sees it (index is torch's, after the *_VISIBLE_DEVICES filters)."""

    index: int
    name: str
    arch: str
    total_memory: int
    uuid: str = ""
    free_memory: int | None = None
    error: str = ""
    """Set when torch could not read this GPU's properties."""


@dataclass(frozen=True)
class GpuVerdict:
    usable: bool
    why: str
    """One line: the arch when usable, else what is missing."""
    remedy: str = ""
    """The full error message with remedies when not usable."""


def base_arch(arch: str) -> str:
    """`gfx906:sramecc+:xnack-` -> `gfx906`; `sm_86` stays."""
    return arch.split(":")[0].strip()


def hsa_version(arch: str) -> str | None:
    """The HSA_OVERRIDE_GFX_VERSION value naming an arch: gfx1100 -> 11.0.0, gfx90a -> 9.0.10."""
    digits = base_arch(arch).removeprefix("gfx")
    if len(digits) < 3 or not digits[:-2].isdigit():
        return None
    try:
        return f"{int(digits[:-2])}.{int(digits[-2], 16)}.{int(digits[-1], 16)}"
    except ValueError:
        return None


def gpu_has_fast_bf16(gpu: GpuFacts, build: TorchBuild) -> bool:
    arch = base_arch(gpu.arch)
    if build.hip:
        return not arch.startswith(_NO_FAST_BF16_PREFIXES)
    cc = _compute_capability(arch)
    return cc is not None and cc[0] >= 8


def judge_gpu(gpu: GpuFacts, build: TorchBuild) -> GpuVerdict:
    """Whether this torch build has kernels that run on this GPU."""
    if gpu.error:
        return GpuVerdict(False, f"torch could not read its properties: {gpu.error}", gpu.error)
    if not build.arch_list:  # a build that does not say: trust it, the first kernel will tell
        return GpuVerdict(True, base_arch(gpu.arch) or "unknown arch")
    if build.hip:
        ok = base_arch(gpu.arch) in {base_arch(a) for a in build.arch_list}
    else:
        ok = _cuda_runs(base_arch(gpu.arch), build.arch_list)
    if ok:
        return GpuVerdict(True, base_arch(gpu.arch))
    why = f"torch {build.version} has no kernels for {base_arch(gpu.arch)}"
    return GpuVerdict(False, why, missing_arch_message(gpu, build))


def missing_arch_message(gpu: GpuFacts, build: TorchBuild) -> str:
    arch = base_arch(gpu.arch)
    archs = ", ".join(build.arch_list)
    failure = '"HIP error: invalid device function"' if build.hip else '"no kernel image"'
    lines = [
        f"GPU {gpu.index} ({gpu.name}, {arch}) cannot run this torch build: torch "
        f"{build.version} ({build.flavour}) has GPU kernels for [{archs}] but not for {arch}; "
        f"its first kernel would fail with {failure}.",
        "What to do:",
    ]
    if build.hip:
        lines.append(
            f"  - install a torch built for {arch}: a ROCm build whose "
            f"torch.cuda.get_arch_list() includes {arch}, or build torch from source with "
            f"PYTORCH_ROCM_ARCH={arch}"
        )
        lines.extend(_override_remedy(arch, build))
    else:
        lines.append(f"  - install a torch CUDA build with kernels for {arch} (a newer CUDA wheel)")
    lines.append("  - or run on the CPU: --device cpu")
    return "\n".join(lines)


def _override_remedy(arch: str, build: TorchBuild) -> list[str]:
    target = _HSA_COMPATIBLE.get(arch)
    built = {base_arch(a) for a in build.arch_list}
    if target is None or target not in built:
        return [
            "  - HSA_OVERRIDE_GFX_VERSION does not help: no arch in this build is "
            f"binary-compatible with {arch}"
        ]
    return [
        f"  - or set HSA_OVERRIDE_GFX_VERSION={hsa_version(target)} so the runtime loads the "
        f"{target} kernels, which {arch} runs (same ISA family); it applies to every GPU in the "
        "process, so with other cards present select this one with ROCR_VISIBLE_DEVICES"
    ]


def _compute_capability(arch: str) -> tuple[int, int] | None:
    digits = arch.split("_", 1)[-1].rstrip("afp")
    if not arch.startswith(("sm_", "compute_")) or len(digits) < 2 or not digits.isdigit():
        return None
    return int(digits[:-1]), int(digits[-1])


def _cuda_runs(arch: str, arch_list: tuple[str, ...]) -> bool:
    """sm_XY cubins run on the same major with a minor >= Y; compute_XY PTX JITs for >= XY."""
    device = _compute_capability(arch)
    if device is None:
        return False
    for entry in arch_list:
        built = _compute_capability(entry)
        if built is None:
            continue
        if entry.startswith("sm_") and built[0] == device[0] and built[1] <= device[1]:
            return True
        if entry.startswith("compute_") and built <= device:
            return True
    return False


def describe_gpu(gpu: GpuFacts) -> str:
    return f"{gpu.name}, {base_arch(gpu.arch)}, {gpu.total_memory / GIB:.1f} GiB"
