"""Soak benchmark: mixed streaming traffic with random disconnects against one server.

Chat and completions requests, mostly streaming, n=1 or 2, greedy or seeded sampling, short and
few-thousand-token prompts; ~15% of streams are closed early on purpose, some non-streaming
requests get a short client timeout, a few bad requests must get a 4xx with an OpenAI error body.
Prints the server's RSS and /metrics gauges every --report-every seconds, then checks that it goes
idle. Exit code 1 on any unprovoked error or if the server does not go idle. Not a test, not in CI.

    python bench/soak.py                                        # launch purellm, 20 minutes
    python bench/soak.py --minutes 2 --report-every 15          # a short check
    python bench/soak.py --model HF_ID --serve-args "--max-num-seqs 8 --kv-cache-memory 256MiB"
    python bench/soak.py --url http://127.0.0.1:8000/v1 --pid 1234   # a running server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

try:
    import psutil
except ImportError:  # then /proc/PID/status: the process alone, without children
    psutil = None

SENTENCES = """The old lighthouse keeper climbed the spiral stairs every evening to light the lamp.
In the spring the river flooded the lower fields, so the farmers moved their sheep.
A small robot wandered through the empty museum at night, reading every label.
Explain in simple words why the sky looks blue during the day and red at sunset.
Write a short story about a cat who becomes the mayor of a small fishing town.
Describe the steps needed to plant a vegetable garden on a small city balcony.""".splitlines()
BAD = [  # (what, body changes); "empty messages" is sent to chat only
    ("max_tokens 0", {"max_tokens": 0}), ("unknown model", {"model": "no-such-model"}),
    ("negative temperature", {"temperature": -1}), ("n 0", {"n": 0}),
    ("max_tokens past the context", {"max_tokens": 10**7}), ("empty messages", {"messages": []}),
]  # fmt: skip
OUTCOMES = ("ok", "provoked", "4xx", "unexpected")
GAUGES = ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc")
COLUMNS = "elapsed RSS_MiB done ok provoked 4xx unexpected running waiting kv%"


@dataclass
class Req:
    i: int
    kind: str
    path: str
    body: dict
    disconnect_after: int | None = None  # streams: close after this many events
    timeout: float | None = None  # non-streaming: a provoked client timeout
    bad: str = ""  # what is wrong with a deliberately bad request


@dataclass
class Stats:
    counts: Counter = field(default_factory=Counter)  # (kind, outcome)
    tokens: int = 0
    cut: int = 0  # still running after the drain time, cancelled
    errors: list[str] = field(default_factory=list)  # the first few unexpected ones

    def record(self, req: Req, outcome: str, detail: str, tokens: int) -> None:
        self.counts[req.kind, outcome] += 1
        self.tokens += tokens
        if outcome == "unexpected" and len(self.errors) < 10:
            body = {k: v if len(json.dumps(v)) < 120 else "<long>" for k, v in req.body.items()}
            how = f" disconnect_after={cut}" if (cut := req.disconnect_after) is not None else ""
            how += f" timeout={req.timeout:.2f}" if req.timeout else ""
            self.errors.append(f"#{req.i} POST {req.path}{how} {json.dumps(body)}\n    -> {detail}")

    def total(self, outcome: str | None = None) -> int:
        return sum(v for (_, o), v in self.counts.items() if outcome in (None, o))


def make_prompt(rng: random.Random, i: int) -> str:
    start = rng.randrange(len(SENTENCES))
    if rng.random() < 0.08:  # long: a few thousand tokens of repeated text
        count = rng.randint(1500, 4000) // 17  # ~17 tokens each
        text = " ".join(SENTENCES[(start + k) % len(SENTENCES)] for k in range(count))
        # Half share their prefix with other long prompts (exercises the prefix cache).
        return f"{text} ({i})" if rng.random() < 0.5 else f"({i}) {text}"
    return f"({i}) " + " ".join(SENTENCES[start : start + rng.randint(1, 3)])


def make_request(seed: int, i: int, model: str) -> Req:
    """Request `i`, the same for the same seed whatever the timing."""
    rng = random.Random(f"{seed}:{i}")
    bad = rng.choice(BAD) if rng.random() < 0.04 else None
    chat = rng.random() < 0.5 or (bad is not None and "messages" in bad[1])
    stream = rng.random() < 0.8
    body: dict = {"model": model, "max_tokens": rng.randint(8, 256), "stream": stream}
    text = make_prompt(rng, i)
    body |= {"messages": [{"role": "user", "content": text}]} if chat else {"prompt": text}
    body |= {"n": 2} if rng.random() < 0.2 else {}
    body["temperature"] = 0 if rng.random() < 0.4 else round(rng.uniform(0.5, 1.2), 2)
    if body["temperature"]:  # sampled: seeded
        body["seed"] = rng.randrange(2**31)
    body |= {"ignore_eos": True} if rng.random() < 0.1 else {}
    kind = f"{'chat' if chat else 'completions'}/{'stream' if stream else 'plain'}"
    req = Req(i, kind, "/chat/completions" if chat else "/completions", body)
    if bad is not None:
        req.kind, req.bad = "bad", bad[0]
        body |= bad[1]
    elif stream:
        body |= {"stream_options": {"include_usage": True}} if rng.random() < 0.5 else {}
        if rng.random() < 0.15:
            req.disconnect_after = rng.randint(0, 40)
    elif rng.random() < 0.1:
        req.timeout = rng.uniform(0.05, 1.5)
    return req


def done(n: int, finished: dict, tokens: int) -> tuple[str, str, int]:
    if sorted(finished) != list(range(n)) or not all(finished.values()):
        return "unexpected", f"finish_reason by choice {finished}, expected 0..{n - 1}", 0
    return "ok", "", tokens


async def run_stream(client: httpx.AsyncClient, req: Req) -> tuple[str, str, int]:
    events, text_events, usage, finished = 0, 0, None, {}
    async with client.stream("POST", req.path, json=req.body) as resp:
        if resp.status_code != 200:
            return "unexpected", f"HTTP {resp.status_code}: {(await resp.aread())[:300]!r}", 0
        if req.disconnect_after == 0:
            return "provoked", "", 0
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return done(req.body.get("n", 1), finished, usage or text_events)
            events += 1
            if "error" in (chunk := json.loads(data)):
                return "unexpected", f"error event after {events - 1} events: {data[:300]}", 0
            for choice in chunk.get("choices") or []:
                text_events += bool(choice.get("text") or choice.get("delta", {}).get("content"))
                if choice.get("finish_reason"):
                    finished[choice["index"]] = choice["finish_reason"]
            usage = (chunk.get("usage") or {}).get("completion_tokens", usage)
            if req.disconnect_after is not None and events >= req.disconnect_after:
                return "provoked", "", 0
    return "unexpected", f"stream ended without data: [DONE] after {events} events", 0


async def run_plain(client: httpx.AsyncClient, req: Req) -> tuple[str, str, int]:
    """Non-streaming requests, and bad ones (streaming or not: the whole body is read)."""
    timeout = req.timeout or httpx.USE_CLIENT_DEFAULT
    resp = await client.post(req.path, json=req.body, timeout=timeout)
    if req.bad:
        return check_bad(req, resp.status_code, resp.content)
    if resp.status_code != 200:
        return "unexpected", f"HTTP {resp.status_code}: {resp.text[:300]}", 0
    data = resp.json()
    finished = {c["index"]: c.get("finish_reason") for c in data["choices"]}
    return done(req.body.get("n", 1), finished, data["usage"]["completion_tokens"])


def check_bad(req: Req, status: int, raw: bytes) -> tuple[str, str, int]:
    if not 400 <= status < 500:
        return "unexpected", f"{req.bad}: expected a 4xx, got {status}: {raw[:300]!r}", 0
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        err = json.loads(raw)["error"]
        keys = {"message", "type", "param", "code"} <= err.keys()
        if keys and isinstance(err["message"], str) and isinstance(err["type"], str):
            return "4xx", "", 0
    return "unexpected", f"{req.bad}: not an OpenAI error body: {raw[:300]!r}", 0


async def run_one(client: httpx.AsyncClient, req: Req, stats: Stats) -> None:
    fn = run_stream if req.body["stream"] and not req.bad else run_plain
    try:
        outcome, detail, tokens = await fn(client, req)
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
        outcome, detail, tokens = "unexpected", f"{type(e).__name__}: {e}", 0
        if req.timeout and isinstance(e, httpx.TimeoutException):  # the provoked client timeout
            outcome, detail = "provoked", ""
    except asyncio.CancelledError:  # still running after the drain time: the script cut it
        stats.cut += 1
        stats.record(req, "provoked", "", 0)
        raise
    stats.record(req, outcome, detail, tokens)


def rss_mib(pid: int | None) -> float:
    """The resident set of `pid` and (with psutil) its children, MiB; NaN when unknown or gone."""
    with contextlib.suppress(OSError, StopIteration, *([psutil.Error] if psutil else [])):
        if pid is not None and psutil is not None:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
            return sum(p.memory_info().rss for p in procs) / 2**20
        if pid is not None:
            with open(f"/proc/{pid}/status") as f:
                return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024
    return math.nan


async def metrics(client: httpx.AsyncClient, root: str) -> Counter:
    """`purellm:NAME` -> value (summed over label sets); empty when /metrics fails."""
    out: Counter = Counter()
    with contextlib.suppress(httpx.HTTPError):
        resp = await client.get(f"{root}/metrics", timeout=10)
        for line in resp.raise_for_status().text.splitlines():
            if line.startswith("purellm:"):
                name = line.partition("{")[0].removeprefix("purellm:")
                out[name] += float(line.rsplit(" ", 1)[1])
    return out


def report_line(elapsed: float, rss: float, stats: Stats, m: dict) -> str:
    counts = [stats.total(), *(stats.total(o) for o in OUTCOMES)]
    run, wait, kv = (m.get(k, math.nan) for k in GAUGES)
    values = [f"{elapsed:.0f}s", f"{rss:.1f}", *counts, f"{run:.0f}", f"{wait:.0f}", f"{kv:.1%}"]
    return " ".join(f"{v:>{len(c)}}" for v, c in zip(values, COLUMNS.split(), strict=True))


async def soak(args, url: str, pid: int | None, proc: subprocess.Popen | None) -> int:
    root = url.removesuffix("/").removesuffix("/v1")
    limits = httpx.Limits(max_connections=args.concurrency + 4)
    timeout = httpx.Timeout(args.request_timeout, connect=30.0)
    client = httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout)
    async with client, httpx.AsyncClient() as mclient:
        model = args.model or (await client.get("/models")).json()["data"][0]["id"]
        print(f"model: {model}, server pid: {pid}\n\n{COLUMNS}", flush=True)
        stats, ids, samples, t0 = Stats(), itertools.count(), [], time.monotonic()

        async def worker() -> None:
            while time.monotonic() - t0 < args.minutes * 60 and (not proc or proc.poll() is None):
                await run_one(client, make_request(args.seed, next(ids), model), stats)

        async def sample() -> None:
            m, rss = await metrics(mclient, root), rss_mib(pid)
            written = sum(m.get(f"{k}_total", 0) for k in ("prompt_tokens", "generation_tokens"))
            written -= m.get("prefix_cache_hits_total", 0)  # KV tokens written, about
            samples.append((time.monotonic() - t0, rss, written))
            print(report_line(samples[-1][0], rss, stats, m), flush=True)

        async def reporter() -> None:
            while True:
                await asyncio.sleep(args.report_every)
                await sample()

        rep = asyncio.create_task(reporter())
        workers = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
        await asyncio.wait(workers, timeout=args.minutes * 60 + args.drain_timeout)
        for task in [*workers, rep]:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        duration = time.monotonic() - t0
        await sample()
        idle, m = await wait_idle(mclient, root, args.idle_timeout)
        return summary(args, stats, samples, duration, idle, m, rss_mib(pid))


async def wait_idle(client: httpx.AsyncClient, root: str, timeout: float) -> tuple[bool, dict]:
    deadline = time.monotonic() + timeout
    while not ((m := await metrics(client, root)) and all(m.get(k) == 0 for k in GAUGES)):
        if time.monotonic() > deadline:
            return False, m
        await asyncio.sleep(0.5)
    return True, m


def warm_sample(args, samples: list[tuple]) -> tuple:
    """The first report after --warmup seconds and after the server has written about as many
    KV tokens as its cache holds. The CPU cache is an anonymous map whose pages become resident
    when first written, and freed full blocks are reused last, so RSS grows until then."""
    warmup = min(120.0, 0.2 * args.minutes * 60) if args.warmup is None else args.warmup
    warm = [s for s in samples if s[0] >= warmup and s[2] >= (args.kv_tokens or -math.inf)]
    if args.kv_tokens and not warm:
        print(f"KV cache not warm: {samples[-1][2]:,.0f} of {args.kv_tokens:,} tokens written;"
              " the RSS growth below includes the cache filling in")  # fmt: skip
    return (warm or [s for s in samples if s[0] >= warmup] or samples[-1:])[0]


def summary(args, stats: Stats, samples, duration, idle, m, rss_idle) -> int:
    print(f"\n--- summary: {duration:.0f} s, concurrency {args.concurrency}, seed {args.seed}")
    warm = warm_sample(args, samples)
    last, growth = samples[-1], samples[-1][1] - warm[1]
    print(f"{'kind':<20}" + "".join(f"{o:>11}" for o in OUTCOMES))
    for kind in sorted({k for k, _ in stats.counts}):
        print(f"{kind:<20}" + "".join(f"{stats.counts[kind, o]:>11}" for o in OUTCOMES))
    print(f"requests: {stats.total()} ({stats.total() / duration:.2f}/s)")
    print(f"output tokens of completed requests: {stats.tokens} ({stats.tokens / duration:.1f}/s)")
    print(f"RSS: {warm[1]:.1f} MiB at {warm[0]:.0f} s (after warm-up) -> {last[1]:.1f} MiB at "
          f"{last[0]:.0f} s: {growth:+.1f} MiB ({growth / warm[1] * 100:+.1f}%); "
          f"peak {max(s[1] for s in samples):.1f} MiB; idle {rss_idle:.1f} MiB")  # fmt: skip
    gauges = ", ".join(f"{k} {m.get(k, math.nan):g}" for k in GAUGES)
    print(f"idle check: {'passed' if idle else 'FAILED'} ({gauges})")
    hits, queries = m.get("prefix_cache_hits_total", 0), m.get("prefix_cache_queries_total", 0)
    print(f"preemptions {m.get('num_preemptions_total', 0):g}, prefix cache {hits:g}/{queries:g}")
    if stats.cut:
        print(f"{stats.cut} requests still running after --drain-timeout were cancelled")
    unexpected = stats.total("unexpected")
    print(f"unexpected errors: {unexpected}", *(f"  {line}" for line in stats.errors), sep="\n")
    return 1 if unexpected or not idle else 0


def launch(args) -> tuple[subprocess.Popen, str]:
    """`purellm serve` on a free port, once healthy; its KV cache size goes to args.kv_tokens."""
    log_path = os.path.join(tempfile.mkdtemp(prefix="purellm_soak_"), "server.log")
    with socket.create_server(("127.0.0.1", 0)) as sock:  # a free port
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "purellm", "serve", *([args.model] if args.model else [])]
    cmd += ["--port", str(port), *shlex.split(args.serve_args)]
    print(f"server: {shlex.join(cmd)}\nserver log: {log_path}", flush=True)
    with open(log_path, "wb") as log:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the KV cache size line, read below
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                with open(log_path, errors="replace") as f:
                    found = re.search(r"KV cache: ([\d,]+) tokens", f.read())
                args.kv_tokens = args.kv_tokens or (found and int(found[1].replace(",", "")))
                return proc, f"http://127.0.0.1:{port}/v1"
        time.sleep(0.5)
    stop(proc)
    sys.exit(f"server not healthy (exit code {proc.returncode}); see {log_path}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print("server still running 30 s after SIGTERM: SIGKILL")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    print(f"server exit code: {proc.returncode}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=20.0, help="of traffic")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--url", help="a running server's base URL (ends in /v1); default: launch")
    p.add_argument("--pid", type=int, help="with --url: the server's pid, for RSS")
    p.add_argument("--model", help="model id; launched: the MODEL (default: purellm's)")
    p.add_argument("--serve-args", default="", help="extra `purellm serve` flags, one string")
    p.add_argument("--report-every", type=float, default=30.0, help="seconds")
    p.add_argument("--warmup", type=float, help="seconds before the RSS baseline (default: "
                   "20%% of the run, at most 120)")  # fmt: skip
    p.add_argument("--kv-tokens", type=int, help="the server's KV cache size in tokens, for the"
                   " RSS baseline (default: from the launched server's log)")  # fmt: skip
    p.add_argument("--drain-timeout", type=float, default=60.0, help="seconds for requests "
                   "still running at the end, then they are cancelled")  # fmt: skip
    p.add_argument("--idle-timeout", type=float, default=30.0, help="seconds, after the drain")
    p.add_argument("--request-timeout", type=float, default=300.0, help="seconds (unprovoked)")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    return p.parse_args()


def main() -> int:
    args, cpu = parse_args(), "unknown"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    print(f"purellm soak: {args.minutes:g} min, concurrency {args.concurrency}, seed {args.seed}")
    print(f"CPU: {cpu} ({os.cpu_count()} cores); Python {sys.version.split()[0]}")
    proc, url = (None, args.url) if args.url else launch(args)
    try:
        return asyncio.run(soak(args, url, proc.pid if proc else args.pid, proc))
    finally:
        if proc is not None:
            stop(proc)


if __name__ == "__main__":
    sys.exit(main())
