"""Where a batched decode step's time goes: N sequences (default 64) with prompts of a given
length decode together; once every prompt is in, the torch profiler records some decode steps,
and the table groups the CPU self time by op (matmuls, the K/V gather, attention, elementwise,
...). Not a test.

    python bench/step_profile.py                         # default model, 64 x 32-token prompts
    python bench/step_profile.py --seqs 16 --prompt-len 4000 --steps 5
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from purellm import LLM, SamplingParams

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


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, keys in KINDS:
        if any(k in lowered for k in keys):
            return kind
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--seqs", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    llm = LLM(args.model, max_model_len=args.prompt_len + 256)
    engine = llm.engine
    params = SamplingParams(temperature=0, ignore_eos=True, max_tokens=10_000)
    for i in range(args.seqs):
        engine.add_request(f"r{i}", [100 + (i + j) % 1000 for j in range(args.prompt_len)], params)
    while any(s.num_output_tokens == 0 for seqs in engine.requests.values() for s in seqs):
        engine.step()  # every prompt in: from here on each step is a pure decode step
    for _ in range(3):
        engine.step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            engine.step()
        seconds = (time.perf_counter() - start) / args.steps
    totals: dict[str, float] = defaultdict(float)
    ops: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        totals[kind_of(event.key)] += event.self_cpu_time_total
        ops[event.key] += event.self_cpu_time_total
    whole = sum(totals.values())
    rate = args.seqs / seconds
    print(f"# {args.seqs} sequences x {args.prompt_len}-token prompts: a decode step takes "
          f"{1e3 * seconds:.1f} ms ({rate:.0f} tok/s), mean of {args.steps}")  # fmt: skip
    print("| kind | share of CPU self time |\n|---|---|")
    for kind, total in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {100 * total / whole:.1f}% |")
    print("\n| top ops | share |\n|---|---|")
    for name, total in sorted(ops.items(), key=lambda kv: -kv[1])[:12]:
        print(f"| {name} | {100 * total / whole:.1f}% |")
    for request_id in list(engine.requests):
        engine.abort_request(request_id)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
