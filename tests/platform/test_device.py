"""The in-process API the model runner uses, on this CPU-only machine."""

import pytest
import torch

from purellm.platform import (
    KV_CACHE_CPU_DEFAULT_BYTES,
    PlatformError,
    choose_device,
    configure_threads,
    kv_cache_budget,
    resolve_dtype,
)


def test_cpu_choice_and_dtypes():
    choice = choose_device("cpu")
    assert choice.device == torch.device("cpu") and choice.arch is None
    assert resolve_dtype("float32", choice) == torch.float32
    assert resolve_dtype("auto", choice) in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int4", choice)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_auto_falls_back_to_cpu_and_cuda_fails_clearly():
    assert choose_device("auto").device.type == "cpu"
    with pytest.raises(PlatformError):
        choose_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        choose_device("tpu")


def test_threads_and_budget(monkeypatch):
    monkeypatch.setenv("PURELLM_NUM_THREADS", "1")
    before = torch.get_num_threads()
    try:
        assert configure_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    cpu = torch.device("cpu")
    assert kv_cache_budget(cpu, None, 0.9) == KV_CACHE_CPU_DEFAULT_BYTES
    assert kv_cache_budget(cpu, 1234, 0.9) == 1234


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_auto_takes_a_usable_gpu():
    choice = choose_device("auto")
    assert choice.device.type == "cuda" and choice.arch
    dtype = resolve_dtype("auto", choice)
    assert dtype in (torch.float16, torch.bfloat16)
    x = torch.randn(64, 64, device=choice.device, dtype=dtype)
    assert torch.isfinite((x @ x).float()).all()  # the first kernel runs
