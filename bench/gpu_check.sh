#!/usr/bin/env bash
# GPU check, a few minutes: GPU-marked tests with Triton blocked, greedy parity with
# transformers on the GPU (every test architecture, each attention backend, float32), the
# Qwen3-0.6B-shaped throughput benchmark against transformers and a profile of its decode step
# at 256 sequences; prints a table. Needs no model download. Run from anywhere:
#   bash bench/gpu_check.sh            (record the table in BENCHMARKS.md with card and date)
#   GPU_BIG=1 bash bench/gpu_check.sh  (also a random Q4_K_M Qwen2.5-32B and Qwen3-30B-A3B
#                                       under a 32 GB cap: ~19 GB of disk each, minutes)
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$PWD:$PWD/tests/shims/no_triton${PYTHONPATH:+:$PYTHONPATH}"  # triton unimportable
PY=${PYTHON:-python}
results=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, record PASS/FAIL and seconds
    local name=$1 limit=$2 start status
    shift 2
    start=$(date +%s)
    echo "=== $name"
    timeout "$limit" "$@"
    status=$?
    results+=("$name|$([ $status -eq 0 ] && echo PASS || echo "FAIL($status)")|$(($(date +%s) - start))s")
}

step "doctor (report only)" 120 bash -c "\"$PY\" -m purellm doctor -; true"
step "triton blocked" 60 "$PY" -c 'import sys
try:
    import triton  # noqa: F401
except ImportError:
    sys.exit(0)
sys.exit("triton imported")'
step "gpu tests" 120 "$PY" -m pytest -q -m gpu tests/platform/test_device.py
step "greedy parity fp32" 240 "$PY" bench/gpu_parity.py --device cuda
step "qwen3-0.6b bench" "${BENCH_LIMIT:-420}" "$PY" bench/gpu_bench.py --device cuda
step "decode step profile" 240 "$PY" bench/step_profile.py --shape qwen3-0.6b --device cuda \
    --seqs 256 --prompt-len 512 --steps 10  # issue 17: device time per op kind, launches a step
if [ "${GPU_BIG:-0}" = 1 ]; then  # issues 12 and 13: 4-bit 32B and Qwen3-30B-A3B, 32 GB cap
    for shape in qwen2.5-32b qwen3-30b-a3b; do
        step "$shape q4_k_m" "${BIG_LIMIT:-480}" "$PY" bench/gpu_big.py --shape "$shape" \
            --out "${BIG_DIR:-/tmp}/$shape.gguf"
        rm -f "${BIG_DIR:-/tmp}/$shape.gguf"
    done
fi

echo
echo "card: $("$PY" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")' 2>/dev/null)"
echo "date: $(date -u +%Y-%m-%d)  torch: $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
printf '%-26s %-10s %s\n' step result time
failed=0
for row in "${results[@]}"; do
    IFS='|' read -r name result seconds <<<"$row"
    printf '%-26s %-10s %s\n' "$name" "$result" "$seconds"
    [ "$result" = PASS ] || failed=1
done
exit $failed
