"""The platform as seen from outside torch: one torch probe plus CPU facts and env, and the
serve-time verdict over them. Shared by `purellm doctor` and `preflight`, so both print the
same messages."""

from __future__ import annotations

from dataclasses import dataclass

from purellm import env
from purellm.platform.cpu import CpuFacts, isa_from_flags, read_cpu_facts, thread_count
from purellm.platform.decide import Decision, decide_device, decide_dtype
from purellm.platform.facts import build_from_json, gpus_from_json
from purellm.platform.gpu import GpuFacts, TorchBuild
from purellm.platform.probe_cache import cached_torch_probe
from purellm.platform.probes import ProbeOutcome, run_probe


@dataclass(frozen=True)
class PlatformState:
    probe: ProbeOutcome
    build: TorchBuild | None
    gpus: list[GpuFacts] | None
    """None when torch could not be asked."""
    cpu: CpuFacts
    selection: dict[str, str]

    @property
    def cpu_isa(self) -> frozenset[str]:
        """The running CPU's ISA: torch's CPUID view when there is one, else /proc/cpuinfo."""
        if self.build is not None and self.build.cpu_isa:
            return frozenset(self.build.cpu_isa)
        return isa_from_flags(self.cpu.flags)


@dataclass(frozen=True)
class ServeVerdict:
    decision: Decision | None
    dtype: str
    threads: int
    problem: str
    """Empty when `purellm serve` can start; else the message it fails with."""


def gather_state(remembered: bool = False) -> PlatformState:
    """`remembered`: reuse an earlier probe of the same CPU-only torch (serve); doctor always
    probes afresh."""
    probe = cached_torch_probe() if remembered else run_probe(["torch"])
    build = gpus = None
    if probe.ok:
        build = build_from_json(probe.data["build"])
        gpus = gpus_from_json(probe.data.get("gpus") or [])
    return PlatformState(probe, build, gpus, read_cpu_facts(), env.gpu_selection())


def torch_problem(probe: ProbeOutcome) -> str:
    message = f"torch cannot be used: {probe.problem}"
    return message + (f"\nWhat to do: {probe.hint}" if probe.hint else "")


def serve_verdict(
    state: PlatformState, device: str, dtype: str = "auto", checkpoint: str | None = None
) -> ServeVerdict:
    threads = thread_count(env.num_threads(), env.omp_num_threads(), state.cpu.physical)
    if state.build is None:
        return ServeVerdict(None, "", threads, torch_problem(state.probe))
    decision = decide_device(device, state.build, state.gpus or [], state.selection)
    if decision.error:
        return ServeVerdict(decision, "", threads, decision.error)
    gpu = _gpu(decision, state.gpus or [])
    try:
        name = decide_dtype(dtype, decision, state.build, gpu, state.cpu_isa, checkpoint)
    except ValueError as error:
        return ServeVerdict(decision, "", threads, str(error))
    return ServeVerdict(decision, name, threads, "")


def _gpu(decision: Decision, gpus: list[GpuFacts]) -> GpuFacts | None:
    if not decision.device.startswith("cuda"):
        return None
    index = int(decision.device.partition(":")[2] or 0)
    return next((g for g in gpus if g.index == index), None)
