"""Where a batched decode step's time goes: N sequences (default 64) with prompts of a given
length decode together; once every prompt is in, the torch profiler records some decode steps,
and the table groups the CPU self time by op (matmuls, the K/V gather, attention, elementwise,
...). Not a test.

    python bench/step_profile.py                         # default model, 64 x 32-token prompts
    python bench/step_profile.py --seqs 16 --prompt-len 4000 --steps 5
    python bench/step_profile.py --shape qwen3-0.6b --device cuda --seqs 256 --prompt-len 512

On a GPU the table is the device time per op kind (kernels, by the op that launched them) and
the count of kernel launches a step: what decides whether graphs of decode steps would pay.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from purellm import LLM, SamplingParams

sys.path.insert(0, str(Path(__file__).parent))
from gpu_bench import write_checkpoint  # noqa: E402

KINDS = [  # (kind, substrings of op names), first match wins
    ("matmul (linears, LM head)", ("addmm", "aten::mm", "linear", "_weight_int", "onednn")),
    ("attention matmul/softmax/sdpa", ("bmm", "matmul", "softmax", "scaled_dot", "flash")),
    ("K/V gather and cache write", ("index_select", "index_copy", "index_put", "gather")),
    ("copies and layout", ("copy_", "contiguous", "clone", "cat", "to_copy", "_to_copy")),
    ("elementwise and norms", ("add", "mul", "sub", "div", "silu", "rsqrt", "pow", "mean",
                               "neg", "where", "masked_fill", "exp", "sigmoid", "norm")),
    ("sampling", ("argmax", "topk", "sort", "multinomial", "cumsum")),
    ("allocation", ("empty", "zeros", "full", "ones", "arange")),
]  # fmt: skip


RUNTIME = ("cuda", "hip")  # names of the runtime's own calls (launches, syncs, copies)


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, keys in KINDS:
        if any(k in lowered for k in keys):
            return kind
    return "other"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--shape", default=None, help="a random checkpoint (bench/gpu_bench.py)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seqs", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.shape is None:
        return profile_steps(args, args.model)
    with tempfile.TemporaryDirectory() as folder:
        write_checkpoint(Path(folder), args.shape, torch.bfloat16)
        profile_steps(args, folder)


def profile_steps(args, model) -> None:
    llm = LLM(model, device=args.device, max_model_len=args.prompt_len + 256,
              max_num_seqs=max(256, args.seqs))  # fmt: skip
    engine = llm.engine
    params = SamplingParams(temperature=0, ignore_eos=True, max_tokens=10_000)
    for i in range(args.seqs):
        engine.add_request(f"r{i}", [100 + (i + j) % 1000 for j in range(args.prompt_len)], params)
    while any(s.num_output_tokens == 0 for seqs in engine.requests.values() for s in seqs):
        engine.step()  # every prompt in: from here on each step is a pure decode step
    for _ in range(3):
        engine.step()  # warm-up
    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            engine.step()
        seconds = (time.perf_counter() - start) / args.steps
    report(prof, args, seconds, on_gpu)
    for request_id in list(engine.requests):
        engine.abort_request(request_id)


def report(prof, args, seconds: float, on_gpu: bool) -> None:
    totals: dict[str, float] = defaultdict(float)
    ops: dict[str, float] = defaultdict(float)
    launches = 0
    for event in prof.key_averages():
        if "LaunchKernel" in event.key:  # cudaLaunchKernel, hipLaunchKernel
            launches += event.count
        if on_gpu and (event.device_type != DeviceType.CPU or event.key.startswith(RUNTIME)):
            continue  # kernels and runtime calls: their time is counted under the op
        spent = event.self_device_time_total if on_gpu else event.self_cpu_time_total
        totals[kind_of(event.key)] += spent
        ops[event.key] += spent
    whole = sum(totals.values()) or 1.0
    rate = args.seqs / seconds
    where = "device" if on_gpu else "CPU self"
    print(f"# {args.seqs} sequences x {args.prompt_len}-token prompts: a decode step takes "
          f"{1e3 * seconds:.1f} ms ({rate:.0f} tok/s), mean of {args.steps}")  # fmt: skip
    if on_gpu:
        print(f"# kernel launches a step: {launches / args.steps:.0f}")
    print(f"| kind | share of {where} time |\n|---|---|")
    for kind, total in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {100 * total / whole:.1f}% |")
    print("\n| top ops | share |\n|---|---|")
    for name, total in sorted(ops.items(), key=lambda kv: -kv[1])[:12]:
        print(f"| {name} | {100 * total / whole:.1f}% |")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
