from dataclasses import replace

import pytest

from purellm.platform.decide import decide_device, decide_dtype
from purellm.platform.gpu import base_arch, hsa_version, judge_gpu
from tests.platform.recorded import (
    CPU_BUILD,
    CUDA_BUILD,
    CUDA_OLD_BUILD,
    H100,
    MI50,
    ROCM_BUILD_GFX906_ONLY,
    ROCM_BUILD_NO_GFX906,
    ROCM_BUILD_WITH_GFX906,
    RTX5090,
    W7500,
)


def test_arch_names():
    assert base_arch("gfx906:sramecc+:xnack-") == "gfx906"
    assert hsa_version("gfx1100") == "11.0.0"
    assert hsa_version("gfx1030") == "10.3.0"
    assert hsa_version("gfx906") == "9.0.6"
    assert hsa_version("gfx90a") == "9.0.10"
    assert hsa_version("sm_90") is None


def test_gfx906_usable_when_the_build_has_it():
    verdict = judge_gpu(MI50, ROCM_BUILD_WITH_GFX906)
    assert verdict.usable and verdict.why == "gfx906"


def test_gfx906_missing_is_a_clear_error():
    verdict = judge_gpu(MI50, ROCM_BUILD_NO_GFX906)
    assert not verdict.usable
    message = verdict.remedy
    assert "gfx906" in message and "gfx90a, gfx942" in message  # the arch and the build's list
    assert "invalid device function" in message
    assert "PYTORCH_ROCM_ARCH=gfx906" in message  # a torch built for it
    assert "HSA_OVERRIDE_GFX_VERSION does not help" in message  # no compatible arch here
    assert "--device cpu" in message


def test_gfx1102_runs_through_the_gfx1100_override():
    verdict = judge_gpu(W7500, ROCM_BUILD_NO_GFX906)
    assert not verdict.usable
    assert "HSA_OVERRIDE_GFX_VERSION=11.0.0" in verdict.remedy
    assert "ROCR_VISIBLE_DEVICES" in verdict.remedy


def test_gfx1102_without_a_compatible_arch():
    verdict = judge_gpu(W7500, ROCM_BUILD_GFX906_ONLY)
    assert not verdict.usable and "does not help" in verdict.remedy


def test_nvidia_compatibility_rules():
    assert judge_gpu(H100, CUDA_BUILD).usable
    assert judge_gpu(replace(H100, arch="sm_89"), CUDA_OLD_BUILD).usable  # sm_86 cubin, same major
    assert not judge_gpu(H100, CUDA_OLD_BUILD).usable  # sm_90 > every sm_8x, no PTX
    assert judge_gpu(replace(RTX5090, arch="sm_121"), CUDA_BUILD).usable  # compute_120 PTX
    verdict = judge_gpu(RTX5090, CUDA_OLD_BUILD)
    assert not verdict.usable and "sm_120" in verdict.remedy and "no kernel image" in verdict.remedy


def test_auto_on_the_users_machine_skips_gfx906_without_kernels():
    decision = decide_device("auto", ROCM_BUILD_NO_GFX906, [MI50, W7500])
    assert decision.device == "cpu" and not decision.error
    assert "no GPU this torch build can use" in decision.reason
    assert "gfx906" in decision.reason and "gfx1102" in decision.reason
    assert len(decision.skipped) == 2


def test_auto_takes_the_largest_usable_gpu():
    w7500 = replace(W7500, arch="gfx1100")
    decision = decide_device("auto", ROCM_BUILD_WITH_GFX906, [w7500, replace(MI50, index=1)])
    assert decision.device == "cuda:1" and decision.arch == "gfx906"
    assert "largest of 2" in decision.reason


def test_auto_skips_one_and_takes_the_other():
    decision = decide_device("auto", ROCM_BUILD_WITH_GFX906, [MI50, W7500])
    assert decision.device == "cuda:0"
    assert len(decision.skipped) == 1 and "gfx1102" in decision.skipped[0]
    decision = decide_device("auto", ROCM_BUILD_NO_GFX906, [MI50, replace(W7500, arch="gfx1100")])
    assert decision.device == "cuda:1" and len(decision.skipped) == 1


def test_requested_gpu_without_kernels_is_an_error():
    decision = decide_device("cuda:0", ROCM_BUILD_NO_GFX906, [MI50, W7500])
    assert "PYTORCH_ROCM_ARCH=gfx906" in decision.error
    assert decide_device("cuda", ROCM_BUILD_WITH_GFX906, [MI50]).device == "cuda:0"


def test_requested_gpu_that_does_not_exist():
    decision = decide_device("cuda:2", ROCM_BUILD_WITH_GFX906, [MI50, W7500])
    assert "torch sees 2 GPU(s)" in decision.error
    hidden = decide_device("cuda", CUDA_BUILD, [], {"CUDA_VISIBLE_DEVICES": ""})
    assert "hides every GPU" in hidden.error


def test_cpu_build_and_bad_names():
    assert decide_device("auto", CPU_BUILD, []).reason.endswith("CPU-only build")
    assert "CPU-only build" in decide_device("cuda", CPU_BUILD, []).error
    assert decide_device("cpu", CUDA_BUILD, [H100]).device == "cpu"
    assert "unknown device" in decide_device("gpu0", CPU_BUILD, []).error


@pytest.mark.parametrize(
    ("build", "gpu", "checkpoint", "expected"),
    [
        (ROCM_BUILD_WITH_GFX906, MI50, "bfloat16", "float16"),  # no fast bf16 on gfx906
        (ROCM_BUILD_WITH_GFX906, MI50, None, "float16"),
        (ROCM_BUILD_WITH_GFX906, replace(W7500, arch="gfx1100"), "bfloat16", "bfloat16"),
        (CUDA_BUILD, H100, None, "bfloat16"),
        (CUDA_BUILD, H100, "float16", "float16"),
        (CUDA_BUILD, replace(H100, arch="sm_75"), "bfloat16", "float16"),
    ],
)
def test_gpu_dtype(build, gpu, checkpoint, expected):
    decision = decide_device(f"cuda:{gpu.index}", build, [gpu] * (gpu.index + 1))
    assert decide_dtype("auto", decision, build, gpu, frozenset(), checkpoint) == expected


def test_cpu_dtype_and_explicit_names():
    decision = decide_device("cpu", CPU_BUILD, [])
    assert decide_dtype("auto", decision, CPU_BUILD, None, frozenset({"avx2"})) == "float32"
    isa = frozenset({"avx2", "avx512f", "avx512_bf16"})
    assert decide_dtype("auto", decision, CPU_BUILD, None, isa) == "bfloat16"
    assert decide_dtype("fp16", decision, CPU_BUILD, None, isa) == "float16"
    with pytest.raises(ValueError, match="unknown dtype"):
        decide_dtype("int8", decision, CPU_BUILD, None, isa)
