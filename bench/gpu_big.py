"""A big 4-bit model on one (capped) GPU: writes a random Q4_K_M-style GGUF of a real model's
shape, loads it with torch's per-process memory fraction capped (32 GB: an MI50), and prints
load time, KV capacity, peak GPU memory, an 8k-token prefill, batch-1 and 16-stream decode.
Random blocks (finite scales), no download and no llama-quantize. Not a test.

    python bench/gpu_big.py --shape qwen2.5-32b --out /tmp/q32.gguf   # issue 12's GPU measure
    python bench/gpu_big.py --shape qwen3-30b-a3b --out /tmp/moe.gguf # issue 13's
    python bench/gpu_big.py --shape tiny --device cpu --out /tmp/t.gguf  # the script itself
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from q4km_model import tensor_shapes, tokenizer_fields, tokenizer_gguf  # noqa: E402

SHAPES = {
    # hidden, layers, heads, KV heads, head dim, intermediate, vocab, experts, top-k, and the
    # experts' intermediate size
    "qwen2.5-32b": (5120, 64, 40, 8, 128, 27648, 152064, 0, 0, 0),
    "qwen3-30b-a3b": (2048, 48, 32, 4, 128, 6144, 151936, 128, 8, 768),
    "tiny": (512, 2, 8, 2, 64, 1024, 49152, 0, 0, 0),
    "tiny-moe": (512, 2, 4, 2, 128, 1024, 49152, 8, 2, 256),
}
Q = gguf.GGMLQuantizationType


def kind_of(name: str, layer_count: int) -> Q:
    """Q4_K_M's mix, roughly: Q6_K for the output and for attn_v / ffn_down(_exps) in every
    other layer, Q4_K for other matrices, F32 for norms and the router."""
    if name.endswith(("norm.weight", "gate_inp.weight")):
        return Q.F32
    if name == "output.weight":
        return Q.Q6_K
    layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
    if ("attn_v" in name or "ffn_down" in name) and layer % 2 == 0:
        return Q.Q6_K
    return Q.Q4_K


def random_blocks(rng: np.random.Generator, shape: tuple[int, ...], kind: Q) -> np.ndarray:
    """Random K-quant blocks with small finite fp16 scales, shape [..., rows, row_bytes]."""
    block, size = gguf.GGML_QUANT_SIZES[kind]
    *lead, columns = shape
    blocks = rng.integers(0, 256, (*lead, columns // block, size), dtype=np.uint8)
    scales = rng.uniform(1e-4, 2e-3, (*lead, columns // block, 2)).astype(np.float16)
    if kind == Q.Q4_K:  # d, dmin lead the block
        blocks[..., :4] = scales.view(np.uint8)
    else:  # Q6_K: d ends it
        blocks[..., -2:] = scales[..., :1].view(np.uint8)
    return blocks.reshape(*lead, -1)


def write(path: Path, shape: str, seed: int = 0) -> int:
    hidden, layers, heads, kv_heads, head_dim, inter, vocab, experts, top_k, moe = SHAPES[shape]
    arch = "qwen3moe" if experts else "qwen2"
    args = SimpleNamespace(
        hidden=hidden, intermediate=inter, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        layers=layers, experts=experts, expert_intermediate=moe,
    )  # fmt: skip
    shapes = tensor_shapes(args, vocab)
    writer = gguf.GGUFWriter(path, arch)
    writer.add_context_length(32768)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(inter)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1000000.0)
    if experts:
        writer.add_expert_count(experts)
        writer.add_expert_used_count(top_k)
        writer.add_expert_feed_forward_length(moe)
    for key, value, vtype, sub_type in tokenizer_fields(tokenizer_gguf()):
        writer.add_key_value(key, value, vtype, sub_type)
    if arch == "qwen2":  # q/k/v biases
        kv = kv_heads * head_dim
        for i in range(layers):
            bias = {"attn_q": hidden, "attn_k": kv, "attn_v": kv}
            shapes += [(f"blk.{i}.{n}.bias", (size,)) for n, size in bias.items()]
    total = 0
    for name, tensor_shape in shapes:
        kind = Q.F32 if len(tensor_shape) == 1 else kind_of(name, layers)
        dtype = np.dtype(np.float32 if kind == Q.F32 else np.uint8)
        block, size = gguf.GGML_QUANT_SIZES[kind]
        nbytes = int(np.prod(tensor_shape)) // block * size
        byte_shape = (*tensor_shape[:-1], tensor_shape[-1] // block * size)
        writer.add_tensor_info(
            name, byte_shape if kind != Q.F32 else tensor_shape, dtype, nbytes, kind
        )
        total += nbytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for name, tensor_shape in shapes:
        kind = Q.F32 if len(tensor_shape) == 1 else kind_of(name, layers)
        if kind == Q.F32:
            writer.write_tensor_data(_float(rng, name, tensor_shape))
        else:
            writer.write_tensor_data(random_blocks(rng, tensor_shape, kind))
    writer.close()
    return total


def _float(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if "norm" in name:
        return np.ones(shape, dtype=np.float32)
    return (rng.standard_normal(shape) * 0.02).astype(np.float32)  # biases, the router


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-32b")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--memory-gb", type=float, default=32.0, help="GPU memory cap")
    p.add_argument("--prompt-tokens", type=int, default=8192)
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64)
    args = p.parse_args()

    started = time.perf_counter()
    if not args.out.exists():
        size = write(args.out, args.shape)
        seconds = time.perf_counter() - started
        print(f"wrote {args.out}: {size / 1e9:.2f} GB of tensors in {seconds:.0f} s")
    import torch

    from purellm import LLM, SamplingParams

    if args.device.startswith("cuda"):
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_gb * 1e9 / total))
    dtype = "float16" if args.device.startswith("cuda") else "auto"
    started = time.perf_counter()
    llm = LLM(
        str(args.out), device=args.device, dtype=dtype, max_model_len=args.prompt_tokens + 512
    )
    capacity = llm.engine.kv_capacity_tokens
    print(f"load {time.perf_counter() - started:.1f} s; KV capacity {capacity:,} tokens")
    rng = random.Random(0)
    ids = lambda n: [rng.randrange(1000, 40000) for _ in range(n)]  # noqa: E731
    one = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    started = time.perf_counter()
    llm.generate([{"prompt_token_ids": ids(args.prompt_tokens)}], one)
    prefill = args.prompt_tokens / (time.perf_counter() - started)
    decode = SamplingParams(temperature=0, max_tokens=args.new_tokens, ignore_eos=True)
    rates = []
    for streams in (1, args.streams):
        llm.generate([{"prompt_token_ids": ids(16)} for _ in range(streams)], one)  # warm
        started = time.perf_counter()
        llm.generate([{"prompt_token_ids": ids(32)} for _ in range(streams)], decode)
        rates.append(streams * args.new_tokens / (time.perf_counter() - started))
    peak = torch.cuda.max_memory_allocated() / 1e9 if args.device.startswith("cuda") else 0.0
    header = f"prefill {args.prompt_tokens} tok/s | batch-1 tok/s | {args.streams} streams tok/s"
    print(f"| shape | {header} | peak GPU GB |")
    print(f"| {args.shape} | {prefill:,.0f} | {rates[0]:.1f} | {rates[1]:.1f} | {peak:.2f} |")


if __name__ == "__main__":
    main()
