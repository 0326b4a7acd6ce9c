"""The batch-1 floor: how long torch's own weight-only kernels take for one decode token of a
Llama-shaped GGUF (every layer's int4 GEMVs and the int8 LM head, nothing else), against
llama.cpp's whole token (llama-bench) in the same run. Whatever purellm's other ~1,500 ops per
token cost comes on top, so this bounds its batch-1 ratio to llama.cpp from above. Not a test.

    python bench/batch1_floor.py --llama-bench /path/to/llama-bench     # the default model
    python bench/batch1_floor.py --model model.gguf --llama-bench ...
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from throughput import llama_bench

from purellm.layers.quant.config import GROUP
from purellm.loaders.gguf_header import GGUFHeader
from purellm.loaders.resolve import default_model_path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="a GGUF file (default model if unset)")
    p.add_argument("--llama-bench", metavar="BIN", help="llama.cpp's llama-bench binary")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument(
        "--other-ops",
        type=int,
        default=1500,
        help="torch ops per purellm token besides these kernels (profiled: ~1,500 for SmolLM2)",
    )
    return p.parse_args()


def shapes(gguf: Path) -> tuple[int, list[tuple[int, int]], tuple[int, int]]:
    """(layers, each layer's fused linears as (out, in), the LM head's (vocab, hidden))."""
    header = GGUFHeader(gguf)
    meta = header.fields
    arch = meta["general.architecture"]
    hidden = int(meta[f"{arch}.embedding_length"])
    heads = int(meta[f"{arch}.attention.head_count"])
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads))
    head_dim = int(meta.get(f"{arch}.attention.key_length", hidden // heads))
    ffn = int(meta[f"{arch}.feed_forward_length"])
    sizes = {t.name: int(t.n_elements) for t in header.tensors}
    vocab = sizes["token_embd.weight"] // hidden
    linears = [
        ((heads + 2 * kv_heads) * head_dim, hidden),  # qkv
        (hidden, heads * head_dim),  # o
        (2 * ffn, hidden),  # gate_up
        (hidden, ffn),  # down
    ]
    return int(meta[f"{arch}.block_count"]), linears, (vocab, hidden)


def kernel_token_ms(num_layers: int, linears, head_shape, repeats: int) -> tuple[float, float]:
    """(median ms of one token's kernels, of the LM head alone); distinct random weights per
    layer, so that they stream from memory as in a real token."""
    layers = []
    for _ in range(num_layers):
        for out, inp in linears:
            q = torch.randint(0, 16, (out, inp), dtype=torch.int32)
            packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
            scales = torch.randn(inp // GROUP, out, 2).to(torch.bfloat16)  # [in / G, out, 2]
            layers.append((torch.randn(1, inp, dtype=torch.bfloat16), packed, scales))
    head = torch.randint(-127, 127, head_shape, dtype=torch.int8)
    head_scales = torch.rand(head_shape[0], dtype=torch.bfloat16)
    x = torch.randn(1, head_shape[1], dtype=torch.bfloat16)

    def run_head():
        torch._weight_int8pack_mm(x, head, head_scales)

    def run_token():
        for inp, packed, scales in layers:
            torch._weight_int4pack_mm_for_cpu(inp, packed, GROUP, scales)
        run_head()

    return _median_ms(run_token, repeats), _median_ms(run_head, repeats)


def cheapest_op_us() -> float:
    """One of the cheapest torch ops there is (an in-place add on a hidden-size vector)."""
    x = torch.zeros(576)
    count = 2000

    def run():
        for _ in range(count):
            x.add_(1.0)

    return _median_ms(run, 5) * 1e3 / count


def _median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def main() -> None:
    args = parse_args()
    gguf = args.model or default_model_path()
    num_layers, linears, head_shape = shapes(gguf)
    token_ms, head_ms = kernel_token_ms(num_layers, linears, head_shape, repeats=20)
    print(f"model {gguf.name}, {num_layers} layers, threads {torch.get_num_threads()}")
    print(f"{'work':58s} {'ms/token':>9s} {'tok/s':>8s}")
    kernels = "torch int4 GEMVs + int8 LM head, nothing else"
    print(f"{kernels:58s} {token_ms:9.2f} {1e3 / token_ms:8.1f}")
    print(f"{'  of which the int8 LM head':58s} {head_ms:9.2f}")
    op_us = cheapest_op_us()
    others = args.other_ops * op_us / 1e3
    print(f"{f'{args.other_ops} of the cheapest torch op ({op_us:.1f} us each)':58s} {others:9.2f}")
    floor = token_ms + others
    print(f"{'floor of an eager purellm token':58s} {floor:9.2f} {1e3 / floor:8.1f}")
    if args.llama_bench:
        flags = ("-p", 0, "-n", args.tokens, "-r", 3)
        speed = llama_bench(args.llama_bench, gguf, *flags)[0]["avg_ts"]
        print(f"{'llama.cpp, the whole token (llama-bench)':58s} {1e3 / speed:9.2f} {speed:8.1f}")
        share = token_ms * speed / 1e3
        ratio = 1e3 / floor / speed
        print(f"kernels alone: {share:.0%} of llama.cpp's token; eager floor: {ratio:.2f}x it")


if __name__ == "__main__":
    main()
