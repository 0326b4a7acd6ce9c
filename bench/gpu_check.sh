#!/usr/bin/env bash
# GPU check, a few minutes: GPU-marked tests with Triton blocked, greedy agreement with
# transformers on the GPU, the throughput benchmark; prints a table. Run from anywhere:
#   bash bench/gpu_check.sh            (record the table in BENCHMARKS.md with card and date)
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$PWD/tests/shims/no_triton${PYTHONPATH:+:$PYTHONPATH}"  # triton unimportable
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

step "doctor" 120 "$PY" -m purellm doctor -
step "triton blocked" 60 "$PY" -c 'import sys
try:
    import triton  # noqa: F401
except ImportError:
    sys.exit(0)
sys.exit("triton imported")'
step "gpu tests" 300 "$PY" -m pytest -q -m gpu tests
step "greedy vs transformers" 300 "$PY" - <<'PY'
import sys, torch
from transformers import AutoModelForCausalLM
from purellm import LLM, SamplingParams
assert torch.cuda.is_available(), "no GPU"
llm = LLM(None, device="cuda", dtype="float32", kv_cache_memory=256 << 20)
files = llm.engine.files
model = AutoModelForCausalLM.from_config(files.config, dtype=torch.float32)
model.load_state_dict(dict(files.weights()), strict=False)
model.tie_weights()
model = model.to("cuda").eval()
prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time", "1, 2, 3, 5, 8,"]
params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
agree = 0
for prompt in prompts:
    ids = files.tokenizer.encode(prompt)
    ours = llm.generate({"prompt_token_ids": ids}, params)[0].outputs[0].token_ids
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids], device="cuda"), max_new_tokens=32,
                             min_new_tokens=32, do_sample=False, pad_token_id=0)
    theirs = out[0, len(ids):].tolist()
    same = list(ours) == theirs
    agree += same
    print(f"{'same' if same else 'DIFFERENT'}: {prompt!r}")
print(f"greedy agreement on {torch.cuda.get_device_name()}: {agree}/{len(prompts)}")
sys.exit(0 if agree == len(prompts) else 1)
PY
step "throughput" 300 "$PY" bench/throughput.py --num-requests 64 --skip-hf

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
