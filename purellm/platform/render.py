"""The doctor report as text a user can paste into a bug report."""

from __future__ import annotations

from typing import Any

GIB = 1 << 30


def render(report: dict[str, Any]) -> str:
    lines = [f"purellm {report['purellm']} doctor"]
    python = report["python"]
    lines.append(_row("python", f"{python['version']} ({python['executable']})"))
    lines += _torch(report["torch"])
    lines.append(_row("triton", _triton(report["triton"])))
    lines += _gpus(report["gpus"])
    lines += _cpu(report["cpu"])
    lines += _environment(report["environment"])
    lines += _serve(report["serve"])
    if "model" in report:
        lines += _model(report["model"])
    verdict = "ready" if report["exit_code"] == 0 else f"NOT ready (exit {report['exit_code']})"
    lines.append(_row("verdict", verdict))
    return "\n".join(lines)


def _row(key: str, value: str) -> str:
    return f"{key + ':':<14}{value}"


def _indent(text: str, prefix: str = "    ") -> list[str]:
    return [prefix + line for line in text.splitlines()]


def _torch(torch: dict[str, Any]) -> list[str]:
    if not torch["ok"]:
        return [_row("torch", f"UNUSABLE: {torch['problem']}"), *_indent(f"hint: {torch['hint']}")]
    archs = ", ".join(torch["arch_list"]) or "none"
    return [
        _row("torch", f"{torch['version']} ({torch['flavour']} build)"),
        _row("gpu archs", archs),
    ]


def _triton(triton: dict[str, Any]) -> str:
    state = f"installed ({triton['version']})" if triton["installed"] else "not installed"
    if triton["installed"] and not triton["importable"]:
        state += ", not importable"
    return state + " - informational: purellm does not use Triton"


def _gpus(gpus: list[dict[str, Any]] | None) -> list[str]:
    if gpus is None:
        return [_row("gpus", "unknown (torch could not be asked)")]
    if not gpus:
        return [_row("gpus", "none visible to torch")]
    lines = [_row("gpus", f"{len(gpus)} visible to torch")]
    for gpu in gpus:
        free = f", {gpu['free_memory'] / GIB:.1f} GiB free" if gpu.get("free_memory") else ""
        lines.append(
            f"  cuda:{gpu['index']}  {gpu['name']}  {gpu['arch']}  "
            f"{gpu['total_memory'] / GIB:.1f} GiB{free}  {gpu['uuid'] or 'no UUID'}"
        )
        usable = "yes" if gpu["usable"] else "NO"
        lines.append(f"    usable: {usable} ({gpu['why']})")
        if gpu["remedy"] and not gpu["usable"]:
            lines += _indent(gpu["remedy"], "      ")
    return lines


def _cpu(cpu: dict[str, Any]) -> list[str]:
    isa = ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in cpu["isa"].items())
    lines = [
        _row(
            "cpu",
            f"{cpu['model']}; {cpu['physical_cores']} physical cores, "
            f"{cpu['logical_cpus']} logical CPUs available",
        ),
        _row("cpu isa", f"{isa} (from {cpu['isa_source']})"),
        _row("cpu kernels", cpu["kernel_level"] or "unknown (torch could not be asked)"),
        _row(
            "memory",
            f"{cpu['memory_total'] / GIB:.1f} GiB, "
            f"{cpu['memory_available'] / GIB:.1f} GiB available",
        ),
    ]
    if cpu["cpuinfo_only"]:
        lines.append(
            f"    note: /proc/cpuinfo lists {', '.join(cpu['cpuinfo_only'])} but the CPU running "
            "this process lacks it (emulator or VM masking); purellm goes by the running CPU"
        )
    return lines


def _environment(environment: dict[str, Any]) -> list[str]:
    selection = environment["gpu_selection"]
    if not selection:
        lines = [_row("gpu env", "ROCR_/HIP_/CUDA_VISIBLE_DEVICES not set")]
    else:
        lines = [_row("gpu env", "")]
        for var, note in selection.items():
            lines.append(f"  {var}={note['value']!r}: {note['effect']}")
            if note["problem"]:
                lines.append(f"    PROBLEM: {note['problem']}")
    for var, value in environment["overrides"].items():
        lines.append(f"  {var}={value!r}")
    return lines


def _serve(serve: dict[str, Any]) -> list[str]:
    if not serve["ok"]:
        return [_row("serve", "CANNOT START"), *_indent(serve["problem"])]
    lines = [
        _row("serve device", f"{serve['device']} ({serve['reason']})"),
        _row("serve dtype", serve["dtype"]),
        _row("cpu threads", str(serve["threads"])),
    ]
    lines += [f"    {line}" for line in serve["skipped"]]
    return lines


def _active(facts: dict[str, Any]) -> str:
    active = facts.get("active_params")
    return f" ({active / 1e9:.3f}B active per token, all experts resident)" if active else ""


def _model(model: dict[str, Any]) -> list[str]:
    if "facts" not in model:
        return [_row("model", "PROBLEM"), *_indent(model["problem"])]
    facts = model["facts"]
    lines = [
        _row("model", f"{facts['name']} ({facts['architecture']})"),
        _row("source", facts["source"]),
        _row(
            "parameters",
            f"{facts['params'] / 1e9:.3f}B{_active(facts)}, stored as {facts['stored_as']}, "
            f"{facts['file_bytes'] / 1e9:.2f} GB on disk",
        ),
        _row("context", f"{facts['context_length']} tokens"),
    ]
    if model.get("fits") is None:
        return lines
    lines += [
        _row("weights", f"{model['weight_bytes'] / 1e9:.2f} GB in {model['dtype']}"),
        _row("kv per token", f"{model['kv_bytes_per_token']} bytes"),
        _row("fits", "yes" if model["fits"] else "NO"),
        *_indent(model["message"]),
    ]
    return lines
