"""Decode steps at long contexts: B sequences each decoding after C tokens of context, purellm's
step against transformers' static batch of B at the same shape, in one run. Only the decode
steps are timed (issue 17's long-context measure), not the prompts. Not a test.

    python bench/long_decode.py                      # default model, 16 x 4000
    python bench/long_decode.py --seqs 4 --context 8000 --steps 10

purellm computes its prompts (minutes at 16 x 4000 on 2 cores); transformers' cache is filled
with random keys and values of the same shape (a decode step's cost does not depend on them).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from purellm import LLM, SamplingParams


def purellm_steps(llm: LLM, seqs: int, context: int, steps: int) -> list[float]:
    """Seconds of each decode step, all sequences decoding together: the prompts are computed
    first (one token each), so that the timed requests find them in the prefix cache."""
    engine = llm.engine
    prompts = [[100 + (i * 7 + j) % 1000 for j in range(context)] for i in range(seqs)]
    llm.generate([{"prompt_token_ids": p} for p in prompts], SamplingParams(max_tokens=1))
    params = SamplingParams(temperature=0, ignore_eos=True, max_tokens=steps + 4)
    for i, prompt in enumerate(prompts):
        engine.add_request(f"r{i}", prompt, params)
    while any(s.num_output_tokens == 0 for ss in engine.requests.values() for s in ss):
        engine.step()
    engine.step()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - start)
    for request_id in list(engine.requests):
        engine.abort_request(request_id)
    return times


@torch.inference_mode()
def transformers_steps(llm: LLM, seqs: int, context: int, steps: int) -> list[float]:
    """Seconds of each decode step of transformers' model on the same weights, its cache
    (DynamicCache, grown by concatenation as `generate` does) filled to `context` tokens."""
    from throughput import hf_model
    from transformers import DynamicCache

    model = hf_model(llm)
    config = model.config
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dtype = llm.engine.runner.dtype
    cache = DynamicCache(config=config)
    for layer in range(config.num_hidden_layers):
        shape = (seqs, kv_heads, context, head_dim)
        cache.update(torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype), layer)
    ids = torch.full((seqs, 1), 100)
    times = []
    for step in range(steps + 1):
        length = context + step + 1
        start = time.perf_counter()
        out = model(
            input_ids=ids,
            past_key_values=cache,
            attention_mask=torch.ones(seqs, length, dtype=torch.long),
            position_ids=torch.full((seqs, 1), length - 1),
            use_cache=True,
        )
        ids = out.logits[:, -1].argmax(-1, keepdim=True)
        times.append(time.perf_counter() - start)
    return times[1:]  # the first is a warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--seqs", type=int, default=16)
    parser.add_argument("--context", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--uncut", action="store_true", help="also purellm with groups not cut to the cache"
    )
    args = parser.parse_args()
    llm = LLM(args.model, max_model_len=args.context + args.steps + 8)
    shape = (args.seqs, args.context, args.steps)
    rows = {"purellm": statistics.median(purellm_steps(llm, *shape))}
    if args.uncut:  # the prompts again, from the prefix cache
        cut, llm.engine.runner.max_group_keys = llm.engine.runner.max_group_keys, None
        rows["purellm, groups not cut to the cache"] = statistics.median(purellm_steps(llm, *shape))
        llm.engine.runner.max_group_keys = cut
        rows["purellm (again)"] = statistics.median(purellm_steps(llm, *shape))
    rows["transformers (static batch)"] = statistics.median(transformers_steps(llm, *shape))
    print(f"\n{args.seqs} sequences decoding at {args.context} tokens of context, median step:")
    print("| engine | ms a step | tok/s |\n|---|---|---|")
    for name, seconds in rows.items():
        print(f"| {name} | {1e3 * seconds:.1f} | {args.seqs / seconds:.1f} |")
    theirs = rows["transformers (static batch)"]
    print(f"purellm / transformers: {theirs / rows['purellm']:.2f}x")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
