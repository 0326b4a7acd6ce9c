"""Run a probe in a subprocess and classify what happened (the caller never imports torch).

A probe can succeed, find torch missing, see torch raise, die with a signal, hang or print
nothing useful; each outcome becomes a ProbeOutcome with a one-line problem and a hint."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from purellm import env
from purellm.platform.probe import MARKER

SIGNAL_HINTS = {
    "SIGILL": (
        "torch (or a library it loads) executed a CPU instruction this CPU lacks, typically "
        "AVX-512 code on an AVX2-only CPU: install a torch build for generic x86-64 (the "
        "official PyPI/download.pytorch.org wheels dispatch per CPU), not one compiled with "
        "-march=native on another machine"
    ),
    "SIGSEGV": (
        "torch crashed while loading: usually a GPU runtime/driver that does not match the "
        "torch build (ROCm or CUDA version), or a broken install; try "
        "`python -c 'import torch'` and reinstall the torch build that matches your driver"
    ),
    "SIGBUS": "torch crashed while loading (bus error): check the install and free disk/memory",
    "SIGKILL": "the probe was killed, usually by the out-of-memory killer",
}
MISSING_HINT = (
    "install torch first: `pip install torch` (CPU), or the ROCm/CUDA build for your GPU from "
    "https://pytorch.org/get-started/locally/"
)
RAISED_HINT = "torch is installed but broken: reinstall it (pip install --force-reinstall torch)"


@dataclass(frozen=True)
class ProbeOutcome:
    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    problem: str = ""
    """One line: what went wrong."""
    hint: str = ""
    signal: str = ""


def run_probe(args: list[str], timeout: float | None = None) -> ProbeOutcome:
    command = [*env.probe_wrapper(), sys.executable, "-m", "purellm.platform.probe", *args]
    timeout = timeout or env.probe_timeout()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ProbeOutcome(
            False,
            problem=f"the {args[0]} probe gave no answer within {timeout:.0f} s",
            hint="a hung GPU driver or runtime: check dmesg, and try --device cpu",
        )
    except OSError as error:
        return ProbeOutcome(False, problem=f"cannot start the probe: {error}")
    return classify(done.returncode, done.stdout, done.stderr, torch=args[0] == "torch")


def classify(returncode: int, stdout: str, stderr: str, torch: bool = True) -> ProbeOutcome:
    """The outcome from a finished probe's exit status and output."""
    if returncode < 0:
        name = _signal_name(-returncode)
        doing = "importing torch" if torch else "reading the model"
        hint = SIGNAL_HINTS.get(name, "the process died; run `python -c 'import torch'`")
        return ProbeOutcome(
            False,
            problem=f"{doing} killed the process with {name}",
            hint=hint if torch else "",
            signal=name,
        )
    data = _parse(stdout)
    if data is None:
        tail = stderr.strip().splitlines()[-1:] or ["no output"]
        return ProbeOutcome(False, problem=f"the probe exited with status {returncode}: {tail[0]}")
    status = data.get("status")
    if status == "ok":
        return ProbeOutcome(True, data)
    if status == "missing":
        return ProbeOutcome(False, data, "torch is not installed", MISSING_HINT)
    hint = RAISED_HINT if torch else ""
    return ProbeOutcome(False, data, data.get("error", "the probe failed"), hint)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _parse(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            try:
                return json.loads(line[len(MARKER) :])
            except json.JSONDecodeError:
                return None
    return None
