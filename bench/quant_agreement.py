"""How close weight-only quantized decoding stays to the dequantized model: greedy top-1
agreement on a fixed set of chat prompts (first token, and every position until the first
divergence). Each prompt runs alone, so that decode steps have one row and take the quantized
kernels (`gguf` uses them up to 4 rows).

    python bench/quant_agreement.py [--model M] [--quantization gguf|int8] [--max-tokens 32]
"""

from __future__ import annotations

import argparse

from purellm import LLM, SamplingParams

PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Explain what a paged KV cache is in one paragraph.",
    "List three prime numbers greater than 100.",
    "Translate 'good morning' into Spanish and German.",
    "What does HTTP status code 404 mean?",
    "Give me a haiku about autumn.",
    "How do I read a file line by line in Rust?",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--quantization", default="gguf", choices=["gguf", "int8"])
    args = p.parse_args()
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    conversations = [[{"role": "user", "content": text}] for text in PROMPTS]
    runs = []
    for quantization in ("none", args.quantization):
        llm = LLM(args.model, dtype=args.dtype, quantization=quantization)
        runs.append([llm.chat([c], params)[0].outputs[0].token_ids for c in conversations])
        del llm
    first = sum(a[0] == b[0] for a, b in zip(*runs, strict=True))
    prefix = [_common_prefix(a, b) for a, b in zip(*runs, strict=True)]
    total = [len(a) for a in runs[0]]
    print(
        f"{args.quantization} vs none: {len(PROMPTS)} prompts, greedy, "
        f"up to {args.max_tokens} tokens"
    )
    print(f"first-token agreement: {first}/{len(PROMPTS)}")
    print(f"identical tokens before the first divergence: {sum(prefix)}/{sum(total)}")
    print(f"fully identical answers: {sum(p == t for p, t in zip(prefix, total, strict=True))}")


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


if __name__ == "__main__":
    main()
