"""Decode-time MoE dispatch, measured: the per-expert loop that purellm runs (tokens sorted by
expert, one matmul pair per expert hit) against gathering the hit experts' weights into one
batched matmul per (token, expert) pair. Random experts of a given shape. Not a test.

    python bench/moe_dispatch.py                       # hidden 1024, 32 experts, top-8
    python bench/moe_dispatch.py --hidden 2048 --experts 128 --inter 768   # Qwen3-30B-A3B layer
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from purellm.layers.moe import FusedMoE, MoEOptions


def gathered(moe: FusedMoE, x: torch.Tensor) -> torch.Tensor:
    """Each (token, expert) pair as one batch entry of a bmm over gathered weights."""
    ids, weights = moe.route(x)
    top_k = ids.shape[1]
    w13 = moe.experts.w13[ids.reshape(-1)]  # [T * k, 2 * inter, hidden]
    w2 = moe.experts.w2[ids.reshape(-1)]  # [T * k, hidden, inter]
    rows = x.repeat_interleave(top_k, dim=0)[:, None]  # [T * k, 1, hidden]
    gate, up = torch.bmm(rows, w13.transpose(1, 2)).chunk(2, dim=-1)  # [T * k, 1, inter]
    out = torch.bmm(torch.nn.functional.silu(gate) * up, w2.transpose(1, 2))  # [T * k, 1, hidden]
    out = out[:, 0] * weights.reshape(-1, 1)  # [T * k, hidden]
    return out.view(x.shape[0], top_k, -1).sum(dim=1)  # [T, hidden]


def timed(fn, x: torch.Tensor, repeats: int) -> float:
    fn(x)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--experts", type=int, default=32)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--inter", type=int, default=512)
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    print(f"hidden {args.hidden}, {args.experts} experts of {args.inter}, top-{args.top_k}, "
          f"{torch.get_num_threads()} threads; ms per call")  # fmt: skip
    print("| dtype | tokens | per-expert loop | gathered bmm |\n|---|---|---|---|")
    for dtype in (torch.bfloat16, torch.float32):
        options = MoEOptions(args.experts, args.top_k, args.inter, True)
        moe = FusedMoE(options, args.hidden, dtype)
        for param in moe.parameters():
            torch.nn.init.normal_(param, std=0.05)
        for tokens in (1, 4, 16, 64):
            x = torch.randn(tokens, args.hidden, dtype=dtype)
            with torch.no_grad():
                loop = timed(moe, x, args.repeats)
                batched = timed(functools.partial(gathered, moe), x, args.repeats)
            name = str(dtype).removeprefix("torch.")
            print(f"| {name} | {tokens} | {loop:.3f} | {batched:.3f} |")


if __name__ == "__main__":
    main()
