"""llama.cpp peer figures: llama-server continuous-batching throughput, batch-1 decode, peak RSS.

Starts ``llama-server -m GGUF -t 2 -tb 2 -c 16384 -np 64 --port P``, waits for ``/health``, and
then for each concurrency level N (default 1 and 64) sends N simultaneous non-streaming
``/v1/completions`` requests. Every prompt is a fixed list of random token ids (default 64 tokens,
``numpy.random.default_rng(seed)``, ids above the special tokens, a different prompt per request so
that no two share a cached prefix), ``max_tokens`` 64, ``temperature`` 0, ``ignore_eos``.
Reported per level: aggregate output tok/s (all completion tokens / wall time from the first send
to the last reply) and, from the server's own ``timings``, the per-request decode speed
(``predicted_per_second``, prompt processing excluded). At concurrency 1 that decode speed is the
batch-1 decode tok/s. Peak RSS is the server's ``VmHWM`` from ``/proc/PID/status`` after the runs;
tensor bytes are the GGUF's tensor data (``gguf.GGUFReader``). Not a test.

    python bench/llama_server_peer.py --server-bin BIN/llama-server --gguf FILE
    python bench/llama_server_peer.py --server-bin BIN/llama-server --gguf FILE \\
        --concurrency 1 16 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def tensor_bytes(path: str) -> tuple[int, dict[str, tuple[int, int]]]:
    """Total tensor data bytes and {ggml type: (tensor count, bytes)} of a GGUF file."""
    import gguf

    mix: dict[str, tuple[int, int]] = {}
    for t in gguf.GGUFReader(path).tensors:
        n, b = mix.get(t.tensor_type.name, (0, 0))
        mix[t.tensor_type.name] = (n + 1, b + int(t.n_bytes))
    return sum(b for _, b in mix.values()), mix


def make_prompts(n: int, length: int, vocab: int, seed: int, first_id: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(first_id, vocab, size=length).tolist() for _ in range(n)]


async def complete(client: httpx.AsyncClient, model: str, prompt: list[int], max_tokens: int):
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "cache_prompt": False,
    }
    resp = await client.post("/v1/completions", json=body)
    resp.raise_for_status()
    return resp.json()


async def run_level(args, url: str, model: str, vocab: int, n: int, offset: int) -> dict:
    prompts = make_prompts(n, args.prompt_tokens, vocab, args.seed + offset, args.first_token_id)
    limits = httpx.Limits(max_connections=n + 4)
    timeout = httpx.Timeout(args.request_timeout, connect=30.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        t0 = time.perf_counter()
        replies = await asyncio.gather(
            *(complete(client, model, p, args.max_tokens) for p in prompts)
        )
        wall = time.perf_counter() - t0
    out_tokens = sum(r["usage"]["completion_tokens"] for r in replies)
    prompt_tokens = [r["usage"]["prompt_tokens"] for r in replies]
    decode = [r["timings"]["predicted_per_second"] for r in replies if "timings" in r]
    prefill = [r["timings"]["prompt_per_second"] for r in replies if "timings" in r]
    return {
        "concurrency": n,
        "wall_s": wall,
        "output_tokens": out_tokens,
        "tok_s": out_tokens / wall,
        "prompt_tokens": (min(prompt_tokens), max(prompt_tokens)),
        "decode_tok_s_per_req": statistics.median(decode) if decode else float("nan"),
        "prefill_tok_s_per_req": statistics.median(prefill) if prefill else float("nan"),
    }


async def model_info(url: str) -> tuple[str, int]:
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        data = (await client.get("/v1/models")).json()["data"][0]
    return data["id"], int(data.get("meta", {}).get("n_vocab", 32000))


def wait_healthy(proc: subprocess.Popen, port: int, timeout: float, log: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"llama-server not healthy after {timeout} s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server-bin", required=True, help="llama.cpp's llama-server binary")
    p.add_argument("--gguf", required=True)
    p.add_argument("--threads", type=int, default=2, help="-t and -tb")
    p.add_argument("--ctx", type=int, default=16384, help="-c (shared by the -np slots)")
    p.add_argument("--parallel", type=int, default=64, help="-np")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--first-token-id", type=int, default=256, help="prompts avoid ids below")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--request-timeout", type=float, default=1800.0)
    p.add_argument("--log", default=None, help="server log file (default: a temp file)")
    p.add_argument("--server-args", nargs=argparse.REMAINDER, default=[], help="extra flags")
    args = p.parse_args()

    total, mix = tensor_bytes(args.gguf)
    print(f"GGUF {args.gguf}: file {os.path.getsize(args.gguf)} bytes, tensors {total} bytes")
    print("  " + ", ".join(f"{k}: {n} tensors {b} bytes" for k, (n, b) in sorted(mix.items())))

    port = args.port or free_port()
    cmd = [args.server_bin, "-m", args.gguf, "-t", str(args.threads), "-tb", str(args.threads)]
    cmd += ["-c", str(args.ctx), "-np", str(args.parallel), "--port", str(port)]
    cmd += args.server_args
    log = args.log or tempfile.mkstemp(prefix="llama_server_", suffix=".log")[1]
    print("starting: " + " ".join(cmd) + f"  (log: {log})", file=sys.stderr)
    with open(log, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        up = wait_healthy(proc, port, args.startup_timeout, log)
        rss_idle = proc_status_kb(proc.pid, "VmRSS")
        print(f"healthy after {up:.1f} s, RSS {rss_idle} kB", file=sys.stderr)
        url = f"http://127.0.0.1:{port}"
        model, vocab = asyncio.run(model_info(url))
        # Warm-up: one short request (first-call allocations, page-in of the weights).
        asyncio.run(
            run_level(
                argparse.Namespace(**{**vars(args), "max_tokens": 8}), url, model, vocab, 1, 999
            )
        )
        results = []
        for i, n in enumerate(args.concurrency):
            r = asyncio.run(run_level(args, url, model, vocab, n, i))
            results.append(r)
            print(
                f"concurrency {n}: {r['output_tokens']} tokens in {r['wall_s']:.1f} s = "
                f"{r['tok_s']:.2f} tok/s; per request decode {r['decode_tok_s_per_req']:.2f} "
                f"tok/s, prefill {r['prefill_tok_s_per_req']:.1f} tok/s; prompt tokens "
                f"{r['prompt_tokens'][0]}-{r['prompt_tokens'][1]}",
                file=sys.stderr,
            )
        hwm = proc_status_kb(proc.pid, "VmHWM")
    finally:
        stop(proc)

    print(
        f"\nllama-server -t {args.threads} -np {args.parallel} -c {args.ctx}; {args.prompt_tokens}"
        f"-token random prompts, max_tokens {args.max_tokens}, greedy, ignore_eos\n"
    )
    print("| concurrency | output tok/s (aggregate) | decode tok/s per request | wall s |")
    print("|---|---|---|---|")
    for r in results:
        print(
            f"| {r['concurrency']} | {r['tok_s']:.2f} | {r['decode_tok_s_per_req']:.2f} "
            f"| {r['wall_s']:.1f} |"
        )
    print(f"\nllama-server RSS after load {rss_idle} kB, peak RSS (VmHWM) {hwm} kB")


if __name__ == "__main__":
    main()
