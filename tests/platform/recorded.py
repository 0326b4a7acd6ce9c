"""Recorded inputs: /proc/cpuinfo excerpts and GPU/torch facts from real machines."""

from purellm.platform.gpu import GpuFacts, TorchBuild

GIB = 1 << 30

# AMD Ryzen 9 3900X (Zen 2): AVX2, no AVX-512. Two blocks: one core, two hyper-threads.
ZEN2_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
    "sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl "
    "xtopology nonstop_tsc cpuid extd_apicid aperfmperf rapl pni pclmulqdq monitor ssse3 fma "
    "cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand lahf_lm cmp_legacy svm extapic "
    "cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit wdt tce topoext perfctr_core "
    "perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 hw_pstate ssbd mba ibpb stibp vmmcall "
    "fsgsbase bmi1 avx2 smep bmi2 cqm rdt_a rdseed adx smap clflushopt clwb sha_ni xsaveopt "
    "xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local clzero irperf "
    "xsaveerptr rdpru wbnoinvd arat npt lbrv svm_lock nrip_save tsc_scale vmcb_clean "
    "flushbyasid decodeassists pausefilter pfthreshold avic v_vmsave_vmload vgif v_spec_ctrl "
    "umip rdpid overflow_recov succor smca sme sev sev_es"
)
ZEN2_CPUINFO = "".join(
    f"processor\t: {cpu}\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\nmodel\t\t: 113\n"
    f"model name\t: AMD Ryzen 9 3900X 12-Core Processor\nphysical id\t: 0\n"
    f"core id\t\t: {core}\ncpu cores\t: 12\nflags\t\t: {ZEN2_FLAGS}\n\n"
    for cpu, core in ((0, 0), (1, 1), (2, 0), (3, 1))
)

# Intel Xeon Platinum 8480+ (Sapphire Rapids): AVX-512 with bf16 and AMX.
SPR_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi "
    "mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc pni pclmulqdq "
    "ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand lahf_lm abm "
    "3dnowprefetch fsgsbase bmi1 hle avx2 smep bmi2 erms invpcid rtm avx512f avx512dq rdseed "
    "adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec "
    "avx_vnni avx512_bf16 avx512vbmi umip pku ospke waitpkg avx512_vbmi2 gfni vaes vpclmulqdq "
    "avx512_vnni avx512_bitalg tme avx512_vpopcntdq rdpid movdiri movdir64b enqcmd fsrm "
    "md_clear serialize tsxldtrk pconfig arch_lbr amx_bf16 avx512_fp16 amx_tile amx_int8 "
    "flush_l1d arch_capabilities"
)
SPR_CPUINFO = (
    "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nphysical id\t: 0\n"
    f"core id\t\t: 0\nflags\t\t: {SPR_FLAGS}\n\n"
)

# Intel Core i9-11900K (Rocket Lake): AVX-512 without bf16.
RKL_FLAGS = "sse sse2 avx fma avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"

ROCM_BUILD_WITH_GFX906 = TorchBuild(
    version="2.4.1+rocm6.1",
    hip="6.1.40091-a8dbc0c19",
    arch_list=("gfx900", "gfx906", "gfx908", "gfx90a", "gfx1030", "gfx1100", "gfx942"),
    gpu_available=True,
    device_count=2,
)
ROCM_BUILD_NO_GFX906 = TorchBuild(
    version="2.9.0+rocm6.4",
    hip="6.4.43482-0f2d60242",
    arch_list=("gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1101", "gfx1200", "gfx1201"),
    gpu_available=True,
    device_count=2,
)
ROCM_BUILD_GFX906_ONLY = TorchBuild(
    version="2.7.0a0+gfx906", hip="6.3.42131", arch_list=("gfx906",), gpu_available=True
)
CUDA_BUILD = TorchBuild(
    version="2.13.0+cu128",
    cuda="12.8",
    arch_list=("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"),
    gpu_available=True,
    device_count=1,
)
CUDA_OLD_BUILD = TorchBuild(
    version="2.1.0+cu118", cuda="11.8", arch_list=("sm_50", "sm_60", "sm_70", "sm_80", "sm_86")
)
CPU_BUILD = TorchBuild(version="2.13.0+cpu", cpu_capability="AVX2", cpu_isa=("avx2",))

MI50 = GpuFacts(
    0, "AMD Instinct MI50/MI60", "gfx906:sramecc+:xnack-", 32 * GIB, "GPU-0e54792172da5eeb"
)
W7500 = GpuFacts(1, "AMD Radeon Pro W7500", "gfx1102", 8 * GIB, "GPU-8f1a2b3c4d5e6f70")
H100 = GpuFacts(
    0, "NVIDIA H100 80GB HBM3", "sm_90", 80 * GIB, "GPU-5d7d6a7e-2f3b-1c4d-8e9f-0a1b2c3d4e5f"
)
RTX5090 = GpuFacts(0, "NVIDIA GeForce RTX 5090", "sm_120", 32 * GIB, "GPU-1234")
