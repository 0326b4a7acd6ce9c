"""`purellm doctor` in a subprocess, with a real torch and broken ones (shims on PYTHONPATH)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from purellm.platform import PlatformError, preflight
from purellm.platform.probes import classify

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
