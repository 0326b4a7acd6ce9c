from purellm.platform.cpu import (
    count_physical_cores,
    cpu_auto_dtype,
    has_native_bf16,
    isa_from_flags,
    isa_mismatch,
    parse_cache_size,
    parse_cpuinfo,
    parse_meminfo,
    thread_count,
)
from tests.platform.recorded import RKL_FLAGS, SPR_CPUINFO, ZEN2_CPUINFO


def test_zen2_has_avx2_but_no_avx512():
    model, flags = parse_cpuinfo(ZEN2_CPUINFO)
    assert model == "AMD Ryzen 9 3900X 12-Core Processor"
    assert isa_from_flags(flags) == {"avx2"}
    assert cpu_auto_dtype(isa_from_flags(flags)) == "float32"
    assert not has_native_bf16(flags)


def test_sapphire_rapids_has_bf16_and_amx():
    model, flags = parse_cpuinfo(SPR_CPUINFO)
    assert "Xeon" in model
    assert isa_from_flags(flags) == {"avx2", "avx512f", "avx512_bf16", "amx"}
    assert cpu_auto_dtype(isa_from_flags(flags)) == "bfloat16"


def test_avx512_without_bf16_stays_float32():
    isa = isa_from_flags(set(RKL_FLAGS.split()))
    assert isa == {"avx2", "avx512f"}
    assert cpu_auto_dtype(isa) == "float32"


def test_amx_alone_counts_as_native_bf16():
    assert cpu_auto_dtype(frozenset({"avx2", "amx"})) == "bfloat16"


def test_physical_cores_count_hyperthreads_once():
    assert count_physical_cores(ZEN2_CPUINFO, available=4) == 2
    assert count_physical_cores(ZEN2_CPUINFO, available=1) == 1
    assert count_physical_cores("processor : 0\n", available=3) == 3  # no core ids (some VMs)


def test_thread_count_prefers_explicit_settings():
    assert thread_count(None, None, 12) == 12
    assert thread_count(None, 4, 12) == 4
    assert thread_count(6, 4, 12) == 6


def test_emulated_cpu_mismatch_is_reported():
    _, flags = parse_cpuinfo(SPR_CPUINFO)
    lacking = isa_mismatch(frozenset(flags), frozenset({"avx2"}))
    assert lacking == ["amx", "avx512_bf16", "avx512f"]
    assert isa_mismatch(frozenset(flags), None) == []


def test_meminfo():
    text = "MemTotal:       32768000 kB\nMemFree:  1000 kB\nMemAvailable:   16384000 kB\n"
    assert parse_meminfo(text) == (32768000 * 1024, 16384000 * 1024)
    assert parse_meminfo("") == (0, 0)


def test_sysfs_cache_sizes_are_read_in_bytes():
    assert parse_cache_size("32768K\n") == 32 << 20
    assert parse_cache_size("2M") == 2 << 20
    assert parse_cache_size("512") == 512
    assert parse_cache_size("") == parse_cache_size("big") == 0
