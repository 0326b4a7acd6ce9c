"""Decode steps with attention groups as the runner makes them, against groups made another
way: the mean decode step time, the two alternating in one run. Not a test.

`--compare length`: split by context length against one group padded to the longest context.
`--compare cache`: groups cut to fit the CPU's cache (runner.max_group_keys) against uncut.

    python bench/decode_groups.py                 # default model, --compare length
    python bench/decode_groups.py --compare cache --rounds 3 --steps 30
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from purellm import LLM, SamplingParams
from purellm.runner import inputs

_RNG = random.Random(0)
WORKLOADS = {  # name -> prompt lengths
    "64 x 32 (uniform)": [32] * 64,
    "63 x 32 + 1 x 2000": [32] * 63 + [2000],
    "64 spread 32-1024": [_RNG.randint(32, 1024) for _ in range(64)],
    "16 x 256 + 16 x 2048": [256] * 16 + [2048] * 16,
    "64 x 512": [512] * 64,
    "16 x 4000": [4000] * 16,
}
ONE_GROUP = {"cpu": 1 << 40, "gpu": 1 << 40}


def step_ms(llm: LLM, prompt_lens: list[int], steps: int) -> float:
    engine = llm.engine
    params = SamplingParams(temperature=0, ignore_eos=True, max_tokens=10_000)
    for i, n in enumerate(prompt_lens):
        engine.add_request(f"r{i}", [100 + (i + j) % 1000 for j in range(n)], params)
    while any(s.num_output_tokens == 0 for seqs in engine.requests.values() for s in seqs):
        engine.step()  # every prompt in: from here on each step is a pure decode step
    for _ in range(3):
        engine.step()
    start = time.perf_counter()
    for _ in range(steps):
        engine.step()
    seconds = (time.perf_counter() - start) / steps
    for request_id in list(engine.requests):
        engine.abort_request(request_id)
    return seconds * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--compare", choices=("length", "cache"), default="length")
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=None)
    args = parser.parse_args()
    llm = LLM(args.model, max_model_len=4096)
    runner, grouped = llm.engine.runner, dict(inputs.GROUP_COST_TOKENS)
    capped = runner.max_group_keys

    def configure(mode: str) -> None:
        inputs.GROUP_COST_TOKENS = ONE_GROUP if mode == "one group" else grouped
        runner.max_group_keys = None if mode == "uncut" else capped

    modes = ("split by length", "one group") if args.compare == "length" else ("cut", "uncut")
    print(f"max_group_keys {capped}")
    print(f"| workload | {modes[0]}, ms a step | {modes[1]}, ms a step | ratio |")
    print("|---|---|---|---|")
    for name in args.workloads or WORKLOADS:
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        step_ms(llm, WORKLOADS[name], 3)  # warm-up: this workload's shapes
        for _ in range(args.rounds):
            for mode in modes:
                configure(mode)
                times[mode].append(step_ms(llm, WORKLOADS[name], args.steps))
        configure(modes[0])
        ours, theirs = (" / ".join(f"{t:.1f}" for t in times[m]) for m in modes)
        ratio = statistics.median(times[modes[1]]) / statistics.median(times[modes[0]])
        print(f"| {name} | {ours} | {theirs} | {ratio:.2f}x |")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
