"""GPU-selection variables (ROCR_/HIP_/CUDA_VISIBLE_DEVICES) and GPU UUIDs, as pure functions.

The GPU runtimes apply these variables before torch sees any GPU, so torch's `cuda:N` counts
only the GPUs they leave. purellm never enumerates GPUs behind their back; it explains what
each variable does with this torch build and maps UUID entries to the GPUs torch reports."""

from __future__ import annotations

import re
from dataclasses import dataclass

from purellm.platform.gpu import GpuFacts

_UUID = re.compile(r"(GPU|MIG)-[0-9A-Fa-f][0-9A-Fa-f-]*")
_HEX = set("0123456789abcdefABCDEF")


@dataclass(frozen=True)
class SelectionNote:
    var: str
    value: str
    effect: str
    """What the variable does here, in words (with the GPUs its UUID entries matched)."""
    problem: str = ""
    """Set when the value cannot do what the user meant."""


def format_uuid(raw: str, hip: bool) -> str:
    """A GPU UUID as rocm-smi / nvidia-smi print it (`GPU-...`).

    torch on ROCm returns the 16 ASCII characters of the unique id as UUID bytes, so
    `30653534-3739-3231-3732-646135656562` is `GPU-0e54792172da5eeb`."""
    raw = raw.strip()
    if not raw or raw.startswith(("GPU-", "MIG-")):
        return raw
    compact = raw.replace("-", "")
    if hip and len(compact) == 32 and set(compact) <= _HEX:
        text = bytes.fromhex(compact).decode("latin-1")
        if set(text) <= _HEX:
            return f"GPU-{text.lower()}"
    return f"GPU-{raw.lower()}"


def applies(var: str, hip: bool | None) -> bool:
    """Whether the runtime of this torch flavour reads `var` (None: flavour unknown)."""
    if hip is None or hip:
        return True
    return var == "CUDA_VISIBLE_DEVICES"


def describe_selection(
    env: dict[str, str], hip: bool | None, gpus: list[GpuFacts] | None
) -> list[SelectionNote]:
    """One note per GPU-selection variable that is set (gpus None: torch could not say)."""
    return [_note(var, value, hip, gpus, env) for var, value in env.items()]


def _note(
    var: str, value: str, hip: bool | None, gpus: list[GpuFacts] | None, env: dict[str, str]
) -> SelectionNote:
    if not applies(var, hip):
        return SelectionNote(var, value, "ignored by a CUDA build of torch")
    entries = [e.strip() for e in value.split(",")] if value.strip() else []
    if not entries:
        return SelectionNote(var, value, "hides every GPU", f"{var} is empty: no GPU is visible")
    bad = [e for e in entries if not (e.isdigit() or _UUID.fullmatch(e))]
    if bad:
        problem = (
            f"{var} entry {bad[0]!r} is neither an index nor a GPU-/MIG- UUID; the runtime "
            "stops reading the list there"
        )
        return SelectionNote(var, value, _effect(var, env), problem)
    uuids = [e for e in entries if not e.isdigit()]
    known = gpus is not None
    gpus = gpus or []
    matched = [f"{u} -> cuda:{g.index}" for u in uuids for g in gpus if _same_uuid(u, g.uuid)]
    unmatched = [u for u in uuids if not any(_same_uuid(u, g.uuid) for g in gpus)]
    effect = "; ".join([_effect(var, env), *matched])
    if unmatched and known:
        return SelectionNote(var, value, effect, _uuid_problem(var, unmatched, hip))
    return SelectionNote(var, value, effect)


def _effect(var: str, env: dict[str, str]) -> str:
    if var == "ROCR_VISIBLE_DEVICES":
        return "ROCm runtime: exposes only these GPUs (indices or UUIDs), applied first"
    if var == "HIP_VISIBLE_DEVICES":
        after = " among those ROCR_VISIBLE_DEVICES leaves" if "ROCR_VISIBLE_DEVICES" in env else ""
        return f"HIP runtime: exposes only these GPUs{after}"
    if "HIP_VISIBLE_DEVICES" in env:
        return "CUDA/HIP runtime: exposes only these GPUs (HIP_VISIBLE_DEVICES takes precedence)"
    return "CUDA/HIP runtime: exposes only these GPUs"


def _uuid_problem(var: str, unmatched: list[str], hip: bool | None) -> str:
    problem = f"{var}: {', '.join(unmatched)} matches no GPU torch sees"
    if hip and var != "ROCR_VISIBLE_DEVICES":
        problem += (
            "; ROCm documents UUIDs for ROCR_VISIBLE_DEVICES (HIP_VISIBLE_DEVICES and "
            "CUDA_VISIBLE_DEVICES take indices): use ROCR_VISIBLE_DEVICES=" + ",".join(unmatched)
        )
    return problem


def _same_uuid(entry: str, uuid: str) -> bool:
    """Runtimes accept a unique prefix of a UUID; compare without case."""
    return bool(uuid) and len(entry) > 4 and uuid.lower().startswith(entry.lower())


def hidden_reason(env: dict[str, str], hip: bool | None) -> str:
    """Why no GPU may be visible, from the selection variables alone ('' when nothing says)."""
    for var, value in env.items():
        if applies(var, hip) and not value.strip():
            return f"{var} is set to an empty value, which hides every GPU"
    active = [f"{var}={value}" for var, value in env.items() if applies(var, hip)]
    return f"GPU selection: {', '.join(active)}" if active else ""
