"""How the prefill chunk size (--max-num-batched-tokens) trades prompt throughput against the
longest step, which bounds how long an abort (a client that left) waits to be handled.

Prefills one long prompt through the engine at each chunk size and prints, per size, the
prompt tokens/s and the longest and median step. Not a test.

    python bench/prefill_chunks.py                       # default model, 8000-token prompt
    python bench/prefill_chunks.py --tokens 4000 --sizes 256 512 2048 --repeat 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def prefill_steps(engine, ids: list[int], request_id: str) -> list[float]:
    from purellm.sampling_params import SamplingParams

    engine.add_request(request_id, ids, SamplingParams(max_tokens=1))
    steps = []
    while engine.has_unfinished_requests():
        start = time.perf_counter()
        engine.step()
        steps.append(time.perf_counter() - start)
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--tokens", type=int, default=8000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--repeat", type=int, default=1, help="rounds over all sizes (A/B)")
    args = parser.parse_args()
    from purellm.config import EngineConfig
    from purellm.engine.llm_engine import LLMEngine

    print(f"# {cpu_name()}, model {args.model or 'default'}, prompt {args.tokens} tokens")
    engines = {
        size: LLMEngine(
            EngineConfig(
                model=args.model,
                max_model_len=args.tokens + 16,
                max_num_batched_tokens=size,
                enable_prefix_caching=False,
            )
        )  # fmt: skip
        for size in args.sizes
    }
    text = "The quick brown fox jumps over the lazy dog. " * (args.tokens // 4)
    print("| chunk | prompt tok/s | longest step, s | median step, s |\n|---|---|---|---|")
    for round_ in range(args.repeat):
        for size, engine in engines.items():
            ids = engine.tokenizer.encode(text)[: args.tokens]
            steps = prefill_steps(engine, ids, f"r{round_}")
            rate = len(ids) / sum(steps)
            print(f"| {size} | {rate:.0f} | {max(steps):.2f} | {statistics.median(steps):.2f} |")


if __name__ == "__main__":
    main()
