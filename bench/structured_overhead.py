"""What grammar-constrained decoding costs: the same greedy requests with a JSON schema and
without (then with `ignore_eos`, so both produce the same number of tokens), alternating, at
batch 1 and 16, with llguidance's mask time per token. Not a test.

    python bench/structured_overhead.py                 # default model
    python bench/structured_overhead.py --model DIR --rounds 3
"""

from __future__ import annotations

import argparse
import time

from purellm import LLM, SamplingParams, StructuredOutputsParams

ITEM = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 30},
                   "qty": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["name", "qty"],
    "additionalProperties": False,
}  # fmt: skip
SCHEMA = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": ITEM, "maxItems": 20}},
    "required": ["items"],
    "additionalProperties": False,
}
MESSAGES = [{"role": "user", "content": "List twenty groceries with quantities as JSON."}]


def cpu_name() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def run(llm: LLM, constrained: bool, batch: int, max_tokens: int) -> tuple[int, float, float]:
    """(tokens, seconds, mask seconds) for `batch` copies of the request."""
    spec = StructuredOutputsParams(json=SCHEMA) if constrained else None
    params = SamplingParams(
        temperature=0, max_tokens=max_tokens, ignore_eos=not constrained, structured_outputs=spec
    )
    stats = llm.engine.stats
    mask_before, start = stats.grammar_mask_seconds, time.perf_counter()
    outs = llm.chat([MESSAGES] * batch, params)
    seconds = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return tokens, seconds, stats.grammar_mask_seconds - mask_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    llm = LLM(args.model)
    run(llm, True, 1, 8), run(llm, False, 1, 8)  # warm-up: the llguidance tokenizer, kernels
    print(f"# {cpu_name()}, model {args.model or 'default'}, greedy, {args.max_tokens} tokens")
    print("| batch | decoding | tokens | tok/s | mask µs/token |\n|---|---|---|---|---|")
    for batch in (1, 16):
        for _ in range(args.rounds):
            for constrained in (True, False):
                tokens, seconds, mask = run(llm, constrained, batch, args.max_tokens)
                name = "JSON schema" if constrained else "free"
                rate, per_token = tokens / seconds, 1e6 * mask / max(tokens, 1)
                print(f"| {batch} | {name} | {tokens} | {rate:.1f} | {per_token:.0f} |")


if __name__ == "__main__":
    main()
