"""The server's configuration and its shared handle on the engine. The engine (an AsyncLLM,
made by a factory the `serve` command passes in) loads on a background thread while HTTP is
already up, so /health can answer 503 until it is ready. Nothing here imports torch."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from purellm.server.errors import APIError, busy
from purellm.server.metrics import Metrics

log = logging.getLogger("purellm.server")

GENERATION_DEFAULTS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    """Accepted bearer tokens; empty: no authentication."""
    served_model_names: tuple[str, ...] = ()
    """Model ids to answer to; the first is the one reported. Empty: the model's own name."""
    model: str | None = None
    """The MODEL argument as given; requests naming it are accepted too."""
    allowed_origins: tuple[str, ...] = ()
    """CORS origins ("*" for any); empty: no CORS headers."""
    max_queue_len: int | None = None
    """Requests allowed to wait for their first token before new ones get 503; None: no cap."""
    tool_call_parser: str | None = None
    """A name from server/tool_parsers.py; None: picked from the model, if it has one."""
    enable_auto_tool_choice: bool = False
    reasoning_parser: str | None = None
    """Any name turns on <think>...</think> parsing; Qwen3 models have it on by default."""
    shutdown_timeout: float = 5.0
    """Seconds running streams may take to finish after SIGTERM before they are cut."""

    def __post_init__(self) -> None:
        if self.max_queue_len is not None and self.max_queue_len < 0:
            raise ValueError("max_queue_len must be non-negative")
        if not self.shutdown_timeout >= 0:
            raise ValueError("shutdown_timeout must be non-negative")


class ServerState:
    def __init__(self, config: ServerConfig, load_engine: Callable[[], Any] | None = None):
        self.config = config
        self.load_engine = load_engine
        self.engine: Any = None
        """The AsyncLLM once loaded."""
        self.load_error: BaseException | None = None
        self.on_loaded: Callable[[ServerState], None] | None = None
        self.on_load_failed: Callable[[BaseException], None] | None = None
        self.metrics = Metrics()
        self.num_waiting = 0
        """Admitted engine requests without a first token yet (the queue that 503s guard)."""
        self.streams: dict[str, Any] = {}
        """request id -> the EngineStream of every admitted engine request not yet closed."""
        self.draining = False
        """Set on SIGTERM: no new requests are admitted."""
        self._token_strs: dict[int, str] = {}
        self._tokenizing = ThreadPoolExecutor(1, thread_name_prefix="purellm-tokenize")
        """Templates and tokenization run here, off the event loop (one thread: Rust
        tokenizers refuse concurrent use of one instance)."""

    # --- lifecycle ------------------------------------------------------------------------

    def start_loading(self) -> None:
        if self.engine is None and self.load_engine is not None:
            threading.Thread(target=self._load, name="purellm-load", daemon=True).start()

    def _load(self) -> None:
        try:
            engine = self.load_engine()
        except BaseException as exc:  # reported through /health and the serve command
            log.exception("the model failed to load")
            self.load_error = exc
            if self.on_load_failed:
                self.on_load_failed(exc)
            return
        self.engine = engine
        if self.on_loaded:
            self.on_loaded(self)

    def shutdown(self) -> None:
        """Stop the engine thread (before the event loop closes) and the tokenizing thread."""
        if self.engine is not None:
            self.engine.shutdown()
        self._tokenizing.shutdown(wait=False, cancel_futures=True)

    async def off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on the tokenizing thread (templates, tokenization, prompt checks)."""
        return await asyncio.get_running_loop().run_in_executor(self._tokenizing, fn, *args)

    def admit(self) -> None:
        """Check the queue for room: 503 (with Retry-After) when it is full or the server is
        stopping. The caller opens its streams right after, with no await in between, so the
        check and the reservation are one step for the event loop."""
        self.require_engine()
        if self.draining:
            raise busy("the server is shutting down")
        cap = self.config.max_queue_len
        if cap is not None and self.num_waiting >= cap:
            raise busy(f"the server is busy: {self.num_waiting} requests are waiting")

    @property
    def is_ready(self) -> bool:
        return self.engine is not None and not self.engine.is_dead

    def require_engine(self):
        """The AsyncLLM, or 503 while it loads, when loading failed, or when it died."""
        if self.engine is None:
            if self.load_error is not None:
                raise APIError(503, f"the model failed to load: {self.load_error}")
            raise APIError(503, "the model is still loading; retry when /health returns 200")
        if self.engine.is_dead:
            raise APIError(503, f"the engine died: {self.engine.error!r}")
        return self.engine

    # --- facts about the loaded model ----------------------------------------------------

    @property
    def llm_engine(self):
        return self.require_engine().engine

    @property
    def tokenizer(self):
        return self.require_engine().tokenizer

    @property
    def model_names(self) -> tuple[str, ...]:
        if self.config.served_model_names:
            return self.config.served_model_names
        return (self.llm_engine.files.name,)

    @property
    def model_name(self) -> str:
        return self.model_names[0]

    @property
    def max_model_len(self) -> int:
        return self.llm_engine.max_model_len

    @property
    def vocab_size(self) -> int:
        return self.llm_engine.runner.vocab_size

    @property
    def max_prompt_bytes(self) -> int:
        """A prompt of more UTF-8 bytes than this cannot fit the context, so it is refused
        before tokenizing. No token spells more bytes than its vocabulary entry's UTF-8 form
        (byte-level and SentencePiece entries are never shorter than the text they stand
        for); the factor 2 leaves room for normalizers that shorten text (NFKC ligatures)."""
        return 2 * self.max_model_len * self._max_token_bytes

    @functools.cached_property
    def _max_token_bytes(self) -> int:
        return max(len(t.encode("utf-8", "replace")) for t in self.tokenizer.get_vocab())

    @property
    def model_type(self) -> str:
        return getattr(self.llm_engine.files.config, "model_type", "") or ""

    def generation_defaults(self) -> dict[str, Any]:
        config = self.llm_engine.generation_config or {}
        return {k: config[k] for k in GENERATION_DEFAULTS if config.get(k) is not None}

    @property
    def tool_parser(self) -> str | None:
        """--tool-call-parser, else the format the model's type and template suggest."""
        if self.config.tool_call_parser:
            return self.config.tool_call_parser
        from purellm.server.tool_parsers import tool_parser_for_model

        return tool_parser_for_model(self.model_type, self.tokenizer.chat_template)

    @functools.cached_property
    def tool_tags_are_tokens(self) -> bool:
        """Whether `<tool_call>` and `</tool_call>` are tokens of their own (tool grammars
        must then name the tokens: tool_grammars.py)."""
        return {"<tool_call>", "</tool_call>"} <= set(self.tokenizer.get_added_vocab())

    @functools.cached_property
    def tools_problem(self) -> str | None:
        """Why requests with tools cannot work with this model as served, or None: its chat
        template never shows tools to the model, or no tool-call format is known for it."""
        from purellm.server import chat_utils

        probe = [{"role": "user", "content": "hi"}]
        tool = {"type": "function", "function": {"name": "purellm_probe", "parameters": {}}}
        try:
            shown = chat_utils.render(self.tokenizer, probe, [tool]) != chat_utils.render(
                self.tokenizer, probe, None
            )
        except APIError:
            shown = False
        if not shown:
            return ("this model's chat template does not show tools to the model; serve it "
                    "with a --chat-template that does (and --tool-call-parser)")  # fmt: skip
        if self.tool_parser is None:
            return ("no tool-call format is known for this model, so its calls could not be "
                    "parsed; serve it with --tool-call-parser (hermes, llama3_json, "
                    "qwen3_coder)")  # fmt: skip
        return None

    def check_model(self, requested: str | None) -> str:
        """The id to report for a request naming `requested`; 404 for a model not served."""
        names = self.model_names
        accepted = set(names) | {self.llm_engine.files.name}
        if self.config.model:
            accepted.add(self.config.model)
        if requested is None or requested == "" or requested in accepted:
            return names[0]
        raise APIError(404, f"The model `{requested}` does not exist.", "model")

    def token_str(self, token_id: int) -> str:
        """The text of one token, as logprobs report it (cached: the vocabulary is fixed)."""
        text = self._token_strs.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id])
            self._token_strs[token_id] = text
        return text
