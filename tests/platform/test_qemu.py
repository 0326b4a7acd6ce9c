"""The AVX2-only machine, emulated: qemu-user runs the interpreter on a Haswell CPU (AVX2, no
AVX-512), so torch selects its AVX2 kernels. Needs Debian's `qemu-user` (qemu-x86_64)."""

import json
import os
import platform
import shutil
import subprocess
import sys

import pytest

QEMU = shutil.which("qemu-x86_64")
EMULATED = [QEMU or "qemu-x86_64", "-cpu", "Haswell"]
pytestmark = [
    pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 is missing: apt-get install -y qemu-user"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates an x86-64 CPU"),
]
GENERATE = """
import json, sys
from purellm import LLM, SamplingParams
llm = LLM(None, dtype="float32", device="cpu", kv_cache_memory=8 << 20)
out = llm.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=8))
print("TOKENS " + json.dumps(out[0].outputs[0].token_ids))
"""


def run(args: list[str], emulated: bool, timeout: int, **env: str) -> subprocess.CompletedProcess:
    command = [*(EMULATED if emulated else []), sys.executable, *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **env)
    )


def test_version_on_an_avx2_cpu():
    from purellm import __version__

    done = run(["-m", "purellm", "--version"], emulated=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"purellm {__version__}"


def test_doctor_on_an_avx2_cpu():
    wrapper = " ".join(EMULATED)
    done = run(
        ["-m", "purellm", "doctor", "--json"],
        emulated=True,
        timeout=300,
        PURELLM_PROBE_WRAPPER=wrapper,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    cpu = report["cpu"]
    assert cpu["kernel_level"] == "AVX2"
    assert cpu["isa"]["avx2"] and not cpu["isa"]["avx512f"] and not cpu["isa"]["avx512_bf16"]
    assert cpu["isa_source"] == "torch CPUID"
    assert report["serve"] == {**report["serve"], "ok": True, "device": "cpu", "dtype": "float32"}


def _tokens(done: subprocess.CompletedProcess) -> list[int]:
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("TOKENS "))
    return json.loads(line.removeprefix("TOKENS "))


@pytest.mark.slow
def test_greedy_generation_on_an_avx2_cpu_matches_native():
    """About 1.5 minutes emulated (8 tokens, float32, the default model)."""
    native = _tokens(run(["-c", GENERATE], emulated=False, timeout=300))
    emulated = _tokens(run(["-c", GENERATE], emulated=True, timeout=900))
    assert len(native) == 8
    assert emulated == native
