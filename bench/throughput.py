"""Offline throughput: purellm vs Hugging Face transformers `generate` (same model, same dtype)
and, given its binary, llama.cpp's llama-bench on the same GGUF, in one run. Prints a table
with the ratios. Not a test.

    python bench/throughput.py                       # the default model, dtype auto
    python bench/throughput.py --model DIR --num-requests 128 --dtype float32
    python bench/throughput.py --llama-bench /path/to/llama-bench   # README of BENCHMARKS.md
    python bench/throughput.py --skip-hf --depth 8000 --llama-bench ...   # long-context decode
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import time
from pathlib import Path

import torch

from purellm import LLM, SamplingParams
from purellm.loaders.resolve import default_model_path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument(
        "--quantization",
        default=None,
        choices=[None, "none", "gguf", "awq", "gptq", "compressed-tensors", "int8"],
    )
    p.add_argument("--num-requests", type=int, default=64)
    p.add_argument("--prompt-len", type=int, nargs=2, default=(32, 256), metavar=("MIN", "MAX"))
    p.add_argument("--output-len", type=int, nargs=2, default=(32, 128), metavar=("MIN", "MAX"))
    p.add_argument("--batch1-tokens", type=int, default=128)
    p.add_argument("--hf-batch-sizes", type=int, nargs="+", default=(16, 64))
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt-tokens", type=int, default=512, help="the single-prompt test")
    p.add_argument(
        "--depth", type=int, default=0, help="also decode after a context of this many tokens"
    )
    p.add_argument("--llama-bench", metavar="BIN", help="llama.cpp's llama-bench binary")
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


def bench_prompt(llm: LLM, tokens: int, vocab: int, runs: int = 3) -> float:
    """Prompt tokens/s for one prompt of `tokens` tokens and one output token (each run a fresh
    random prompt, so the prefix cache never helps), the best of `runs` after a warm-up."""
    rng = random.Random(1)
    one = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    speeds = []
    for _ in range(runs + 1):
        ids = [rng.randrange(100, vocab - 100) for _ in range(tokens)]
        start = time.perf_counter()
        llm.generate({"prompt_token_ids": ids}, one)
        speeds.append(tokens / (time.perf_counter() - start))
    return max(speeds[1:])


def bench_depth(llm: LLM, depth: int, vocab: int, gen: int = 64) -> float:
    """Decode tokens/s after a `depth`-token context already in the prefix cache (an editor
    agent's long conversation): a request for gen + 1 tokens minus one for a single token."""
    rng = random.Random(2)
    prompt = {"prompt_token_ids": [rng.randrange(100, vocab - 100) for _ in range(depth)]}

    def timed(tokens: int) -> float:
        start = time.perf_counter()
        llm.generate(prompt, SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True))
        return time.perf_counter() - start

    timed(1)  # fills the prefix cache
    return gen / (timed(gen + 1) - timed(1))


def bench_llama_cpp(binary: str, gguf: Path, args) -> dict[str, float]:
    """llama-bench's averages for the same prompt, batch-1 and (with --depth) deep decode."""
    rows = llama_bench(binary, gguf, "-p", args.prompt_tokens, "-n", args.batch1_tokens, "-r", 3)
    speeds = {"prompt" if row["n_prompt"] else "batch1": row["avg_ts"] for row in rows}
    if args.depth:
        rows = llama_bench(binary, gguf, "-p", 0, "-n", 64, "-d", args.depth, "-r", 1)
        speeds["depth"] = rows[0]["avg_ts"]
    return speeds


def llama_bench(binary: str, gguf: Path, *flags) -> list[dict]:
    command = [binary, "-m", str(gguf), "-t", str(torch.get_num_threads()), "-o", "json"]
    command += [str(flag) for flag in flags]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def hf_model(llm: LLM):
    """transformers' own model class, loaded with the very weights purellm serves."""
    from transformers import AutoModelForCausalLM

    from purellm.loaders.light_config import transformers_config

    files = llm.engine.files
    config = transformers_config(files.config)
    model = AutoModelForCausalLM.from_config(config, dtype=llm.engine.runner.dtype)
    state = hf_state(files.weights())
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ValueError(f"transformers' model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    return model.eval()


def hf_state(weights) -> dict[str, torch.Tensor]:
    """purellm's checkpoint stream as transformers' state dict: GGUF blocks dequantized, a GGUF's
    stacked experts fused as transformers 5 keeps them (`experts.gate_up_proj`)."""
    from purellm.layers.quant.base import as_float

    state = {name: as_float(tensor) for name, tensor in weights}
    for name in [n for n in state if n.endswith(".experts.gate_proj.weight")]:
        prefix = name.removesuffix(".gate_proj.weight")
        up = state.pop(f"{prefix}.up_proj.weight")
        state[f"{prefix}.gate_up_proj"] = torch.cat((state.pop(name), up), dim=1)  # [E, 2I, H]
        state[f"{prefix}.down_proj"] = state.pop(f"{prefix}.down_proj.weight")
    return state


@torch.inference_mode()
def bench_hf(model, work, batch_size: int, device: str = "cpu") -> float:
    """Static left-padded batches; counts only the tokens each request asked for."""
    useful, start = 0, time.perf_counter()
    for i in range(0, len(work), batch_size):
        chunk = work[i : i + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.tensor([[0] * (width - len(p)) + p for p, _ in chunk], device=device)
        mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p, _ in chunk], device=device
        )
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
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return useful / (time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    llm = LLM(args.model, dtype=args.dtype, max_num_seqs=256, quantization=args.quantization)
    work = workload(args, llm.engine.runner.vocab_size)
    dtype = str(llm.engine.runner.dtype).removeprefix("torch.")
    ours = bench_purellm(llm, work, args.batch1_tokens)
    ours["prompt"] = bench_prompt(llm, args.prompt_tokens, llm.engine.runner.vocab_size)
    if args.depth:
        ours["depth"] = bench_depth(llm, args.depth, llm.engine.runner.vocab_size)
    results = {"purellm": ours}
    if not args.skip_hf:
        model = hf_model(llm)
        best = max(bench_hf(model, work, b) for b in args.hf_batch_sizes)
        batch1 = bench_hf(model, [(work[0][0][:32], args.batch1_tokens)], 1)
        results["transformers"] = {"throughput": best, "batch1": batch1}
    if args.llama_bench:
        gguf = Path(args.model) if args.model else default_model_path()
        results["llama.cpp"] = bench_llama_cpp(args.llama_bench, gguf, args)
    print_table(args, llm, dtype, results)


def print_table(args, llm: LLM, dtype: str, results: dict[str, dict[str, float]]) -> None:
    works = {
        "throughput": f"{args.num_requests} requests (transformers: best static batch)",
        "batch1": f"batch-1 decode, {args.batch1_tokens} tokens",
        "prompt": f"one {args.prompt_tokens}-token prompt",
    }
    if args.depth:
        works["depth"] = f"batch-1 decode, 64 tokens after {args.depth} of context"
    quant = llm.engine.runner.quantization
    print(
        f"\nmodel {llm.engine.files.name}, dtype {dtype}, quantization {quant}, "
        f"threads {torch.get_num_threads()}"
    )
    peers = [name for name in results if name != "purellm"]
    print(f"{'work':<52}{'engine':<14}{'tok/s':>10}{'purellm/it':>12}")
    for key, work in works.items():
        ours = results["purellm"][key]
        print(f"{work:<52}{'purellm':<14}{ours:>10.1f}")
        for peer in peers:
            if key in results[peer]:
                theirs = results[peer][key]
                print(f"{'':<52}{peer:<14}{theirs:>10.1f}{ours / theirs:>11.2f}x")


if __name__ == "__main__":
    main()
