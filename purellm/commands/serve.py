"""`purellm serve [MODEL]`: the OpenAI-compatible HTTP server, with vLLM's flag names. HTTP
comes up first (/health answers 503) while the model loads on a background thread."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from pathlib import Path

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
          "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}  # fmt: skip


def parse_size(text: str) -> int:
    """Bytes from '4GiB', '512MiB', '4G' (binary), '4GB' (decimal) or a plain number."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match and _UNITS.get(match.group(2).lower())
    if not match or unit is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4GiB, 512MiB, 1000000)")
    return int(float(match.group(1)) * unit)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API",
        description="Serve MODEL (default: SmolLM2-135M-Instruct) at /v1/chat/completions, "
        "/v1/completions, /v1/models, plus /health, /metrics, /tokenize, /detokenize, /version.",
    )
    p.add_argument("model", nargs="?", metavar="MODEL", help="folder, .gguf, HF id, Ollama name")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require this bearer token (default: $PURELLM_API_KEY)")
    p.add_argument("--api-key-file", type=Path, help="read the key(s) from a file, one a line "
                   "(systemd: LoadCredential= and $CREDENTIALS_DIRECTORY)")  # fmt: skip
    p.add_argument("--served-model-name", nargs="+", metavar="NAME",
                   help="model id(s) to answer to; the first is reported")  # fmt: skip
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16")
    p.add_argument(
        "-q",
        "--quantization",
        choices=["none", "gguf", "awq", "gptq", "compressed-tensors", "int8"],
        default=None,
        help="default: the checkpoint's own (GGUF block types, AWQ, GPTQ, compressed-tensors), "
        "kept quantized; none: dequantize at load; int8: weight-only int8 linears",
    )
    p.add_argument("--dense-copies", action=argparse.BooleanOptionalAction, default=None,
                   help="with a quantized GGUF on the CPU: also keep dense copies of its "
                   "linears for large steps (default: only under 256 MiB of them)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-num-batched-tokens", type=int,
                   help="tokens a step may compute (default: 256 on CPU, 2048 on GPU)")  # fmt: skip
    p.add_argument("--max-n", type=int, default=16, help="the most choices a request may ask")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--kv-cache-memory", type=parse_size, metavar="BYTES",
                   help="KV-cache size, e.g. 4GiB, 512MiB (default: 2GiB on CPU)")  # fmt: skip
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--chat-template", help="Jinja text or a file; overrides the model's")
    p.add_argument("--generation-config", default="auto", help="auto, vllm, or a folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tool-call-parser", help="hermes, llama3_json, qwen3_coder (default: from the model)"
    )
    p.add_argument("--enable-auto-tool-choice", action="store_true",
                   help="accepted for vLLM compatibility: tool calls are always parsed when a "
                   "parser is known")  # fmt: skip
    p.add_argument("--reasoning-parser", help="parse <think>...</think> into reasoning_content "
                   "(any name, e.g. qwen3, deepseek_r1; on by default for Qwen3)")  # fmt: skip
    p.add_argument("--allowed-origins", nargs="+", metavar="ORIGIN",
                   help="CORS origins, or a JSON list as vLLM takes it: '[\"*\"]'")  # fmt: skip
    p.add_argument("--speculative-config", metavar="JSON",
                   help='speculative decoding, e.g. \'{"method": "ngram", '
                   '"num_speculative_tokens": 3}\' or {"method": "draft_model", "model": '
                   'PATH, ...} (keys: prompt_lookup_min/max, disable_by_batch_size)')  # fmt: skip
    p.add_argument("--max-queue-len", type=int, help="503 when this many requests wait")
    p.add_argument("--shutdown-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="on SIGTERM, how long running requests may take to finish")  # fmt: skip
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug", "trace"])  # fmt: skip


def api_keys(args: argparse.Namespace) -> tuple[str, ...]:
    from purellm import env

    if args.api_key:
        return (args.api_key,)
    if args.api_key_file:
        keys = [line.strip() for line in args.api_key_file.read_text().splitlines()]
        keys = [k for k in keys if k]
        if not keys:
            raise ValueError(f"{args.api_key_file} holds no API key")
        return tuple(keys)
    key = env.api_key()
    return (key,) if key else ()


def allowed_origins(values: list[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for value in values or []:
        out += json.loads(value) if value.strip().startswith("[") else [value]
    return tuple(out)


def configs(args: argparse.Namespace):
    from purellm.config import EngineConfig
    from purellm.server.state import ServerConfig

    engine = EngineConfig(
        model=args.model,
        dtype=args.dtype,
        quantization=args.quantization,
        dense_copies=args.dense_copies,
        device=args.device,
        max_model_len=args.max_model_len,
        block_size=args.block_size,
        max_num_seqs=args.max_num_seqs,
        max_n=args.max_n,
        max_num_batched_tokens=args.max_num_batched_tokens,
        kv_cache_memory=args.kv_cache_memory,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enable_prefix_caching=args.enable_prefix_caching,
        seed=args.seed,
        generation_config=args.generation_config,
        chat_template=args.chat_template,
        speculative_config=args.speculative_config,
    )
    if args.tool_call_parser:
        from purellm.server.tool_parsers import get_tool_parser

        get_tool_parser(args.tool_call_parser)  # ValueError naming the known parsers
    server = ServerConfig(
        host=args.host,
        port=args.port,
        api_keys=api_keys(args),
        served_model_names=tuple(args.served_model_name or ()),
        model=args.model,
        allowed_origins=allowed_origins(args.allowed_origins),
        max_queue_len=args.max_queue_len,
        tool_call_parser=args.tool_call_parser,
        enable_auto_tool_choice=args.enable_auto_tool_choice,
        reasoning_parser=args.reasoning_parser,
        shutdown_timeout=args.shutdown_timeout,
    )
    return engine, server


def base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/v1"


def banner(state) -> str:
    from purellm import __version__

    engine = state.engine.engine
    runner, config = engine.runner, state.config
    capacity, limit = engine.kv_capacity_tokens, engine.max_model_len
    dtype = str(runner.dtype).removeprefix("torch.")
    lines = [
        f"purellm {__version__}: serving {engine.files.name} ({engine.files.source})",
        f"  device {runner.device}, dtype {dtype}, quantization {runner.quantization}, "
        f"context {limit:,} tokens",
        f"  KV cache: {capacity:,} tokens = {capacity / limit:.1f} full-length sequences",
        *_experts_line(engine.files.config),
        *([f"  {engine.config.speculative_config.describe()}"] if engine.speculator else []),
        f"  OpenAI base URL: {base_url(config.host, config.port)}   model: {state.model_name}",
        f"  API key: {'required' if config.api_keys else 'none (any key is accepted)'}",
    ]
    if state.tools_problem:
        lines.append(f"  tools: requests with tools get 400: {state.tools_problem}")
    return "\n".join(lines)


def _experts_line(config) -> list[str]:
    """A mixture of experts: how many experts, how many a token uses (all stay resident)."""
    experts = getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None)
    if not experts:
        return []
    used = getattr(config, "num_experts_per_tok", "?")
    return [f"  mixture of experts: {experts} experts, {used} active per token, all resident"]


def run(args: argparse.Namespace) -> int:
    try:
        engine_config, server_config = configs(args)
    except (ValueError, OSError) as exc:
        print(f"purellm serve: {exc}", file=sys.stderr)
        return 2
    from purellm.platform import PlatformError, preflight

    try:
        preflight(engine_config.device)
    except PlatformError as exc:
        print(f"purellm serve: {exc}", file=sys.stderr)
        return 1
    import uvicorn

    from purellm.server.app import create_app
    from purellm.server.http_server import FLUSH_SECONDS, JSONErrorsH11Protocol, Server
    from purellm.server.state import ServerState

    def load_engine():
        from purellm.engine.async_llm import AsyncLLM

        return AsyncLLM(engine_config)

    state = ServerState(server_config, load_engine)
    uv_config = uvicorn.Config(
        create_app(state),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        http=JSONErrorsH11Protocol,
        timeout_graceful_shutdown=FLUSH_SECONDS + 1,
    )
    server = Server(uv_config, state)
    state.on_loaded = lambda s: print(banner(s), flush=True)
    state.on_load_failed = lambda exc: setattr(server, "should_exit", True)
    _quiet_signals(server)
    print(f"purellm: loading {args.model or 'the default model'}; /health answers 503 until "
          f"ready at {base_url(args.host, args.port).removesuffix('/v1')}", flush=True)  # fmt: skip
    try:
        server.run()
    finally:
        state.shutdown()
    if state.load_error is not None:
        print(f"purellm serve: the model failed to load: {state.load_error}", file=sys.stderr)
        return 1
    return 0


def _quiet_signals(server) -> None:
    """uvicorn handles SIGINT/SIGTERM while serving and re-raises them after its graceful
    shutdown; these handlers receive that re-raise, so a stopped server exits 0."""

    def handle(signum, frame) -> None:
        server.should_exit = True

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
