"""GPU throughput: purellm vs transformers `generate` on a Qwen3-0.6B-shaped random bf16
checkpoint, same weights, same run. Prints a table with the ratio. Not a test.

    python bench/gpu_bench.py                          # 256 requests, 100-1024 in and out
    python bench/gpu_bench.py --shape tiny --device cpu --num-requests 8   # a smoke run

Random weights make random text, so every request runs to its `max_tokens` (`ignore_eos`).
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {
    "qwen3-0.6b": dict(
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        max_position_embeddings=40960,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=1000,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    ),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="qwen3-0.6b", choices=sorted(SHAPES))
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--num-requests", type=int, default=256)
    p.add_argument("--prompt-len", type=int, nargs=2, default=(100, 1024), metavar=("MIN", "MAX"))
    p.add_argument("--output-len", type=int, nargs=2, default=(100, 1024), metavar=("MIN", "MAX"))
    p.add_argument("--max-num-batched-tokens", type=int, default=8192)
    p.add_argument("--kv-cache-gib", type=float, default=48.0)
    p.add_argument("--hf-batch-sizes", type=int, nargs="+", default=(256,))
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def write_checkpoint(folder: Path, shape: str, dtype: torch.dtype) -> None:
    """A random Qwen3 model saved by transformers, with a word-level tokenizer that covers the
    whole vocabulary (so that every sampled id detokenizes)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    options = SHAPES[shape]
    vocab = {f"w{i}": i for i in range(options["vocab_size"])}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=word_level, eos_token="w1")
    config = AutoConfig.for_model("qwen3", eos_token_id=1, bos_token_id=None, **options)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def workload(args, vocab: int) -> list[tuple[list[int], int]]:
    rng = random.Random(args.seed)
    return [
        (
            [rng.randrange(2, vocab) for _ in range(rng.randint(*args.prompt_len))],
            rng.randint(*args.output_len),
        )
        for _ in range(args.num_requests)
    ]


def bench_purellm(folder: Path, args, work) -> float:
    from purellm import LLM, SamplingParams

    llm = LLM(
        str(folder),
        device=args.device,
        dtype=args.dtype,
        max_num_seqs=256,
        max_num_batched_tokens=args.max_num_batched_tokens,
        kv_cache_memory=int(args.kv_cache_gib * (1 << 30)),
    )
    prompts = [{"prompt_token_ids": ids} for ids, _ in work]
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for _, n in work]
    llm.generate(prompts[:4], params[:4])  # warm-up
    _sync(args.device)
    start = time.perf_counter()
    outs = llm.generate(prompts, params)
    _sync(args.device)
    elapsed = time.perf_counter() - start
    total = sum(len(o.outputs[0].token_ids) for o in outs)
    assert total == sum(n for _, n in work), "a request stopped early"
    print(f"purellm: {total} tokens in {elapsed:.1f} s", flush=True)
    del llm, outs
    gc.collect()
    return total / elapsed


def bench_hf_peer(folder: Path, args, work, batch_size: int) -> float:
    """transformers' `generate` in static batches (bench/throughput.py's loop) on the device."""
    from throughput import bench_hf
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(args.device).eval()
    speed = bench_hf(model, work, batch_size, args.device)
    print(f"transformers batch {batch_size}: {speed:.1f} tok/s", flush=True)
    del model
    return speed


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    args = parse_args()
    work = workload(args, SHAPES[args.shape]["vocab_size"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_checkpoint(folder, args.shape, getattr(torch, args.dtype))
        rows = [("purellm", bench_purellm(folder, args, work))]
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
            print(f"after purellm: {torch.cuda.memory_allocated() >> 20} MiB allocated", flush=True)
        if not args.skip_hf:
            best = max(bench_hf_peer(folder, args, work, b) for b in args.hf_batch_sizes)
            rows.append((f"transformers, best batch of {list(args.hf_batch_sizes)}", best))
    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(
        f"\n{args.shape}, {args.dtype}, {card}, torch {torch.__version__}, "
        f"{args.num_requests} requests, prompts {args.prompt_len}, outputs {args.output_len}"
    )
    print(f"{'engine':<44}{'output tok/s':>14}")
    for engine, speed in rows:
        print(f"{engine:<44}{speed:>14.1f}")
    if len(rows) == 2:
        print(f"ratio purellm/transformers: {rows[0][1] / rows[1][1]:.2f}x")


if __name__ == "__main__":
    main()
