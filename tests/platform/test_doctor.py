"""`purellm doctor` in a subprocess, with a real torch and broken ones (shims on PYTHONPATH)."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from purellm.platform import PlatformError, preflight
from purellm.platform.cpu import read_cpu_facts
from purellm.platform.probes import ProbeOutcome, classify
from purellm.platform.render import _model as render_model
from purellm.platform.report import DoctorRequest, model_section, read_model
from purellm.platform.state import PlatformState, serve_verdict
from tests.platform.recorded import GIB, MI50, ROCM_BUILD_WITH_GFX906
from tests.platform.test_memory import (
    Q4_K_M_32B_GPU_FP16,
    QWEN25_CODER_32B,
    write_q4_k_m_gguf,
    write_sparse_safetensors,
)

SHIMS = Path(__file__).parent / "shims"


def _env(shim: str | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    if shim is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(SHIMS / shim), env.get("PYTHONPATH")) if p
        )
    return env


def doctor(*args: str, shim: str | None = None, **extra: str) -> tuple[int, dict]:
    done = subprocess.run(
        [sys.executable, "-m", "purellm", "doctor", "--json", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(shim, **extra),
    )
    assert done.stdout, done.stderr[-2000:]
    return done.returncode, json.loads(done.stdout)


def test_doctor_on_this_machine_with_the_default_model():
    code, report = doctor("-")
    assert code == 0, report
    assert report["torch"]["ok"] and report["torch"]["flavour"] == "CPU"
    assert report["triton"]["importable"] is False  # the suite blocks it
    assert report["serve"]["device"] == "cpu" and report["serve"]["ok"]
    assert report["cpu"]["isa"]["avx2"] is True
    model = report["model"]
    assert model["fits"] and model["facts"]["architecture"] == "llama"
    assert model["kv_tokens"] > 0 and model["full_sequences"] >= 1


def test_doctor_text_report_and_cpu_only_cuda_request():
    done = subprocess.run(
        [sys.executable, "-m", "purellm", "doctor", "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert "serve:        CANNOT START" in done.stdout
    assert "CPU-only build" in done.stdout


@pytest.mark.parametrize(
    ("shim", "status", "words"),
    [
        ("torch_missing", "missing", "torch is not installed"),
        ("torch_raises", "raised", "libtorch_cpu.so"),
        ("torch_sigill", "signal", "SIGILL"),
    ],
)
def test_doctor_with_a_broken_torch_still_reports(shim, status, words):
    code, report = doctor(shim=shim)
    assert code == 1
    assert report["torch"]["status"] == status
    assert words in report["torch"]["problem"]
    assert report["torch"]["hint"]
    assert words in report["serve"]["problem"]
    assert report["cpu"]["model"] and report["gpus"] is None


def test_sigill_hint_names_the_cause():
    code, report = doctor(shim="torch_sigill")
    assert report["torch"]["signal"] == "SIGILL"
    assert "AVX-512" in report["torch"]["hint"]


def test_doctor_reports_an_unreadable_model(tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF" + b"\0" * 16)
    code, report = doctor(str(bogus))
    assert code == 3
    assert "cannot read the model" in report["model"]["problem"]


def doctor_on_a_32gb_mi50(model: Path) -> dict:
    """The doctor's model section on a recorded ROCm machine with an idle 32 GB MI50 (gfx906):
    the model is read by the real probe subprocess, the GPU facts are recorded ones."""
    gpu = replace(MI50, free_memory=32 * GIB)
    state = PlatformState(ProbeOutcome(True), ROCM_BUILD_WITH_GFX906, [gpu], read_cpu_facts(), {})
    facts = read_model(str(model))
    checkpoint = facts.get("facts", {}).get("checkpoint_dtype")
    verdict = serve_verdict(state, "auto", "auto", checkpoint)
    assert verdict.decision.device == "cuda:0" and verdict.dtype == "float16"
    return model_section(DoctorRequest(str(model), True), state, verdict, facts)


def test_doctor_fits_a_q4_k_m_32b_gguf_on_a_32gb_mi50(tmp_path):
    path = write_q4_k_m_gguf(tmp_path / "Qwen2.5-Coder-32B-Q4_K_M.gguf", QWEN25_CODER_32B)
    model = doctor_on_a_32gb_mi50(path)
    assert model["fits"] is True, model
    assert model["weight_bytes"] == Q4_K_M_32B_GPU_FP16  # 21.6 GB: blocks, vectors, scratch
    available = int(32 * GIB * 0.9)
    assert model["memory_available"] == available
    assert model["kv_bytes_per_token"] == 2 * 64 * 8 * 128 * 2
    tokens = (available - model["weight_bytes"]) // model["kv_bytes_per_token"]
    assert model["kv_tokens"] == tokens == 35489
    assert "weights 21.62 GB in the GGUF's own blocks" in model["message"]
    assert f"KV cache {tokens} tokens" in model["message"]
    assert "tensors" not in model["facts"] and model["facts"]["stored_as"] == "GGUF Q4_K"
    assert any("fits" in line and "yes" in line for line in render_model(model))


def test_doctor_says_an_fp16_32b_does_not_fit_a_32gb_mi50(tmp_path):
    config = {**QWEN25_CODER_32B, "torch_dtype": "float16"}
    folder = tmp_path / "Qwen2.5-Coder-32B-Instruct"
    folder.mkdir()
    write_sparse_safetensors(folder, config)
    assert (folder / "model.safetensors").stat().st_blocks * 512 < 1e6  # 65 GB of hole
    model = doctor_on_a_32gb_mi50(folder)
    assert model["fits"] is False
    assert model["facts"]["params"] == 32_763_876_352  # from the safetensors header
    assert model["weight_bytes"] == 32_763_876_352 * 2
    assert "does not fit cuda:0" in model["message"]
    assert "a 4-bit file of this model (a Q4_K_M GGUF, AWQ or GPTQ)" in model["message"]
    assert "runs as it is" in model["message"] and "that would fit" in model["message"]


def test_preflight_raises_the_doctor_message(monkeypatch):
    preflight("cpu")
    preflight("auto")
    with pytest.raises(PlatformError, match="CPU-only build") as error:
        preflight("cuda:0")
    assert isinstance(error.value, ValueError)
    monkeypatch.setenv("PYTHONPATH", _env("torch_sigill")["PYTHONPATH"])
    with pytest.raises(PlatformError, match="SIGILL"):
        preflight("auto")


def test_classify_probe_outcomes():
    assert classify(-11, "", "").signal == "SIGSEGV"
    assert "status 2" in classify(2, "", "Traceback\nBoom").problem
    ok = classify(0, 'noise\nPURELLM_PROBE {"status": "ok", "build": {}}\n', "")
    assert ok.ok and ok.data["status"] == "ok"
