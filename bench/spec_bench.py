"""Speculative decoding on editor-shaped work: one stream at a time, greedy, over HTTP. purellm
without speculation, purellm with n-gram drafts, and llama.cpp's llama-server (same GGUF, no
draft) in one run; then 64 concurrent streams with speculation off and on. Not a test.

Workloads: "editor" holds a ~200-line source file and asks for it back with one rename (the
reply copies its context, as an agent's edits do); "free" asks for free writing (the control).

    python bench/spec_bench.py --llama-server-bin BIN      # default model, both workloads
    python bench/spec_bench.py --rounds 3 --max-tokens 256
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from serve_bench import Server, default_gguf, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def workloads() -> dict[str, str]:
    source = (ROOT / "purellm" / "engine" / "scheduler.py").read_text()
    return {
        "editor": "Here is a Python file:\n\n```python\n" + source + "```\n\nReturn the whole "
        "file with the method `_preempt` renamed to `_evict`. Reply with the code only.",
        "free": "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    }


def launch(kind: str, args, log_dir: Path) -> Server:
    port = free_port()
    if kind == "llama-server":
        cmd = [args.llama_server_bin, "-m", default_gguf(), "-t", "2", "-tb", "2", "-c", "8192",
               "-np", "1", "--port", str(port)]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "purellm", "serve", "--port", str(port),
               "--max-model-len", "8192", "--kv-cache-memory", "1GiB",
               "--served-model-name", "m"]  # fmt: skip
        if kind == "purellm + ngram":
            ngram = {"method": "ngram", "num_speculative_tokens": args.k}
            cmd += ["--speculative-config", json.dumps(ngram)]
    server = Server(kind, cmd, port, str(log_dir))
    server.wait_healthy(300)
    return server


async def one_stream(client: httpx.AsyncClient, base: str, text: str, max_tokens: int):
    """(decode tok/s after the first token, the reply text)."""
    body = {"model": "m", "messages": [{"role": "user", "content": text}], "stream": True,
            "temperature": 0, "max_tokens": max_tokens,
            "stream_options": {"include_usage": True}}  # fmt: skip
    first, tokens, parts = None, 0, []
    async with client.stream("POST", base + "/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                content = choice.get("delta", {}).get("content")
                if content:
                    first = first or time.perf_counter()
                    parts.append(content)
    seconds = time.perf_counter() - first
    return (tokens - 1) / seconds, "".join(parts)


async def many_streams(base: str, text: str, n: int, max_tokens: int) -> float:
    """Output tok/s of `n` concurrent streams."""
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        body = {"model": "m", "messages": [{"role": "user", "content": text}],
                "temperature": 0, "max_tokens": max_tokens}  # fmt: skip
        replies = await asyncio.gather(
            *[client.post(base + "/chat/completions", json={**body, "seed": i}) for i in range(n)]
        )
        tokens = sum(r.json()["usage"]["completion_tokens"] for r in replies)
        return tokens / (time.perf_counter() - start)


def spec_counters(base: str) -> tuple[float, float]:
    text = httpx.get(base.removesuffix("/v1") + "/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith("purellm:spec_decode_num_") and "{" in line:
            values[line.split("{")[0]] = float(line.rsplit(" ", 1)[1])
    return (values.get("purellm:spec_decode_num_draft_tokens_total", 0.0),
            values.get("purellm:spec_decode_num_accepted_tokens_total", 0.0))  # fmt: skip


def first_difference(a: str, b: str) -> str:
    """Where two replies part, in the default model's tokens."""
    from purellm.loaders.resolve import resolve_model

    if a == b:
        return "identical"
    tokenizer = resolve_model(None).tokenizer
    x, y = (tokenizer.encode(t, add_special_tokens=False) for t in (a, b))
    i = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
    return f"first differs at token {i} of {len(x)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-server-bin", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--k", type=int, default=3, help="num_speculative_tokens")
    parser.add_argument("--skip-plain", action="store_true", help="only purellm + ngram")
    args = parser.parse_args()
    kinds = ["purellm", "purellm + ngram"] + (["llama-server"] if args.llama_server_bin else [])
    kinds = kinds[1:2] if args.skip_plain else kinds
    log_dir = Path("/tmp/spec_bench_logs")
    log_dir.mkdir(exist_ok=True)
    rates: dict[tuple[str, str], list[float]] = {}
    texts: dict[tuple[str, str], str] = {}
    accepted: dict[str, str] = {}
    for kind in kinds:
        server = launch(kind, args, log_dir)
        base = f"http://127.0.0.1:{server.port}/v1"
        try:
            for name, text in workloads().items():
                before = spec_counters(base) if kind == "purellm + ngram" else None
                for _ in range(args.rounds):
                    rate, reply = asyncio.run(_single(base, text, args.max_tokens))
                    rates.setdefault((kind, name), []).append(rate)
                    texts[(kind, name)] = reply
                if before is not None:
                    after = spec_counters(base)
                    drafted, kept = after[0] - before[0], after[1] - before[1]
                    accepted[name] = f"{kept:.0f} of {drafted:.0f} drafts kept"
            if kind.startswith("purellm"):
                rate = asyncio.run(many_streams(base, workloads()["free"], args.streams, 64))
                rates[(kind, f"{args.streams} streams")] = [rate]
        finally:
            server.stop()
    print(f"{_cpu()}; default model; greedy; {args.max_tokens} new tokens; up to {args.k} "
          "drafts; tok/s per stream\n")  # fmt: skip
    print("| workload | " + " | ".join(kinds) + " | ngram / plain |")
    print("|---|" + "---|" * (len(kinds) + 1))
    for name in [*workloads(), f"{args.streams} streams"]:
        cells = [" / ".join(f"{r:.1f}" for r in rates.get((k, name), [])) or "-" for k in kinds]
        plain, spec = (max(rates.get((k, name), [0.0])) for k in ("purellm", "purellm + ngram"))
        ratio = f"{spec / plain:.2f}x" if plain else "-"
        print(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")
    for name in workloads():
        replies = [texts.get((k, name)) for k in ("purellm", "purellm + ngram")]
        agree = first_difference(*replies) if None not in replies else "-"
        print(f"{name}: {accepted.get(name, '')}; reply with drafts vs without: {agree}")


async def _single(base: str, text: str, max_tokens: int):
    async with httpx.AsyncClient(timeout=600) as client:
        return await one_stream(client, base, text, max_tokens)


def _cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines()
                 if line.startswith("Model name")), "unknown CPU")  # fmt: skip


if __name__ == "__main__":
    main()
