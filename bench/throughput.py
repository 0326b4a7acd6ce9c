"""Offline throughput: purellm vs Hugging Face transformers `generate`, same model, same dtype,
same run. Prints a table with the ratio. Not a test.

    python bench/throughput.py                       # the default model, dtype auto
    python bench/throughput.py --model DIR --num-requests 128 --dtype float32
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from purellm import LLM, SamplingParams


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--quantization", default=None, choices=[None, "int8"])
    p.add_argument("--num-requests", type=int, default=64)
    p.add_argument("--prompt-len", type=int, nargs=2, default=(32, 256), metavar=("MIN", "MAX"))
    p.add_argument("--output-len", type=int, nargs=2, default=(32, 128), metavar=("MIN", "MAX"))
    p.add_argument("--batch1-tokens", type=int, default=128)
    p.add_argument("--hf-batch-sizes", type=int, nargs="+", default=(16, 64))
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def workload(args, vocab: int) -> list[tuple[list[int], int]]:
    rng = random.Random(args.seed)
    return [
        (
            [rng.randrange(100, vocab - 100) for _ in range(rng.randint(*args.prompt_len))],
            rng.randint(*args.output_len),
        )
        for _ in range(args.num_requests)
    ]


def bench_purellm(llm: LLM, work, batch1_tokens: int) -> dict[str, float]:
    prompts = [{"prompt_token_ids": ids} for ids, _ in work]
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for _, n in work]
    llm.generate(prompts[:2], params[:2])  # warm-up
    start = time.perf_counter()
    outs = llm.generate(prompts, params)
    elapsed = time.perf_counter() - start
    total = sum(len(o.outputs[0].token_ids) for o in outs)
    one = SamplingParams(temperature=0, max_tokens=batch1_tokens, ignore_eos=True)
    start = time.perf_counter()
    llm.generate({"prompt_token_ids": work[0][0][:32]}, one)
    batch1 = batch1_tokens / (time.perf_counter() - start)
    return {"throughput": total / elapsed, "batch1": batch1}


def hf_model(llm: LLM):
    """transformers' own model class, loaded with the very weights purellm serves."""
    from transformers import AutoModelForCausalLM

    from purellm.loaders.light_config import transformers_config

    files = llm.engine.files
    config = transformers_config(files.config)
    model = AutoModelForCausalLM.from_config(config, dtype=llm.engine.runner.dtype)
    state = dict(files.weights())
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    return model.eval()


@torch.inference_mode()
def bench_hf(model, work, batch_size: int) -> float:
    """Static left-padded batches; counts only the tokens each request asked for."""
    useful, start = 0, time.perf_counter()
    for i in range(0, len(work), batch_size):
        chunk = work[i : i + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.tensor([[0] * (width - len(p)) + p for p, _ in chunk])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p, _ in chunk])
        new = max(n for _, n in chunk)
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
        useful += sum(n for _, n in chunk)
    return useful / (time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    llm = LLM(args.model, dtype=args.dtype, max_num_seqs=256, quantization=args.quantization)
    work = workload(args, llm.engine.runner.vocab_size)
    dtype = str(llm.engine.runner.dtype).removeprefix("torch.")
    ours = bench_purellm(llm, work, args.batch1_tokens)
    rows = [("purellm", f"{args.num_requests} requests", ours["throughput"])]
    rows.append(("purellm", "batch-1 decode", ours["batch1"]))
    if not args.skip_hf:
        model = hf_model(llm)
        best = max(bench_hf(model, work, b) for b in args.hf_batch_sizes)
        rows.append(("transformers", f"best static batch of {args.hf_batch_sizes}", best))
        batch1 = bench_hf(model, [(work[0][0][:32], args.batch1_tokens)], 1)
        rows.append(("transformers", "batch-1 decode", batch1))
    quant = f", {args.quantization} weights" if args.quantization else ""
    print(
        f"\nmodel {llm.engine.files.name}, dtype {dtype}{quant}, threads {torch.get_num_threads()}"
    )
    print(f"{'engine':<14}{'work':<36}{'tok/s':>10}")
    for engine, what, speed in rows:
        print(f"{engine:<14}{what:<36}{speed:>10.1f}")
    if not args.skip_hf:
        print(f"ratio throughput purellm/transformers: {rows[0][2] / rows[2][2]:.2f}x")
        print(f"ratio batch-1     purellm/transformers: {rows[1][2] / rows[3][2]:.2f}x")


if __name__ == "__main__":
    main()
