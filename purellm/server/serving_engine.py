"""What the completion endpoints share: sampling parameters from a request, context and queue
checks, the engine stream with metrics, Server-Sent Events, and cancellation on disconnect."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import StreamingResponse

from purellm.engine.structured import GrammarError
from purellm.sampling_params import SamplingParams, StructuredOutputsParams
from purellm.server.errors import APIError, bad_request
from purellm.server.protocol import PromptTokensDetails, SamplingFields, Usage
from purellm.server.state import ServerState

SSE_DONE = "data: [DONE]\n\n"
MAX_LOGPROBS = 20
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def random_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def resolve_max_tokens(value: int | None, param: str) -> int | None:
    """None or -1 mean "up to the context limit" (Roo Code sends -1); other values must be >= 1."""
    if value is None or value == -1:
        return None
    if value < 1:
        raise bad_request(f"{param} must be at least 1, or -1 for no limit; got {value}", param)
    return value


def check_prompt(state: ServerState, prompt_token_ids: list[int], max_tokens: int | None) -> None:
    """400 for a prompt the engine would refuse, or one that leaves no room for max_tokens."""
    num_prompt, limit = len(prompt_token_ids), state.max_model_len
    if num_prompt == 0:
        raise bad_request("the prompt is empty", "prompt")
    vocab = state.vocab_size
    if any(not 0 <= t < vocab for t in prompt_token_ids):
        raise bad_request(f"prompt token ids must be in [0, {vocab})", "prompt")
    if num_prompt >= limit:
        raise bad_request(
            f"This model's maximum context length is {limit} tokens. However, your prompt has "
            f"{num_prompt} tokens, which leaves no room to generate.",
            "messages",
        )
    if max_tokens is not None and num_prompt + max_tokens > limit:
        raise bad_request(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{num_prompt + max_tokens} tokens ({num_prompt} in the prompt, {max_tokens} for "
            "the completion). Please reduce the prompt or max_tokens (-1: up to the limit).",
            "max_tokens",
        )


def sampling_params(
    state: ServerState,
    req: SamplingFields,
    max_tokens: int | None,
    logprobs: int | None,
    structured: StructuredOutputsParams | None = None,
) -> SamplingParams:
    """Request value, else the model's generation_config.json default, else OpenAI's."""
    if logprobs is not None and not 0 <= logprobs <= MAX_LOGPROBS:
        raise bad_request(f"logprobs must be in [0, {MAX_LOGPROBS}]; got {logprobs}", "logprobs")
    defaults = state.generation_defaults()

    def pick(name: str, fallback: Any) -> Any:
        value = getattr(req, name)
        return value if value is not None else defaults.get(name, fallback)

    try:
        return SamplingParams(
            n=req.n,
            temperature=pick("temperature", 1.0),
            top_p=pick("top_p", 1.0),
            top_k=pick("top_k", 0),
            min_p=pick("min_p", 0.0),
            repetition_penalty=pick("repetition_penalty", 1.0),
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            seed=req.seed,
            max_tokens=max_tokens,
            min_tokens=req.min_tokens,
            stop=req.stop or [],
            stop_token_ids=req.stop_token_ids or [],
            include_stop_str_in_output=req.include_stop_str_in_output,
            ignore_eos=req.ignore_eos,
            logprobs=logprobs,
            skip_special_tokens=req.skip_special_tokens,
            logit_bias=_logit_bias(req.logit_bias),
            structured_outputs=structured,
        )
    except ValueError as exc:
        param = "logit_bias" if "logit_bias" in str(exc) else None
        raise bad_request(str(exc), param) from exc


def _logit_bias(bias: dict[str, float] | None) -> dict[int, float] | None:
    """OpenAI's JSON object (token ids as strings) with int keys."""
    if not bias:
        return None
    if not all(isinstance(t, str) and t.strip().lstrip("-").isdigit() for t in bias):
        raise ValueError("logit_bias maps token ids (integers) to numbers")  # int() takes "1_0"
    try:
        return {int(token): float(value) for token, value in bias.items()}
    except (TypeError, ValueError):
        raise ValueError("logit_bias maps token ids (integers) to numbers") from None


def check_request(
    state: ServerState, prompt_ids: list[int], params: SamplingParams, grammar_field: str | None
) -> None:
    """The engine's own limits (n, logit_bias ids, the grammar compiled) as 400s, before
    anything is built per choice. Runs on the tokenizing thread."""
    try:
        state.llm_engine.check_request(prompt_ids, params)
    except GrammarError as exc:
        raise bad_request(str(exc), grammar_field) from None


def check_prompt_bytes(state: ServerState, text: str, param: str) -> None:
    """400 for a prompt too many bytes long to fit the context, before it is tokenized."""
    size, limit = len(text.encode("utf-8", "surrogatepass")), state.max_prompt_bytes
    if size > limit:
        raise bad_request(
            f"This model's maximum context length is {state.max_model_len} tokens. However, "
            f"your prompt is {size} bytes long, more than that many tokens can hold.",
            param,
        )


class EngineStream:
    """One admitted engine request: its deltas, counted for /metrics and the waiting queue.
    It holds a place in the queue from the moment it is made (see `open_streams`) until its
    first token or `aclose()`, which also aborts it in the engine. `aclose` may be called any
    number of times, also when iteration never started."""

    def __init__(self, state: ServerState, request_id: str, prompt_token_ids: list[int], params):
        self.state, self.request_id, self.params = state, request_id, params
        self.started = self.closed = False
        self._error: BaseException | None = None
        self._start, self._first, self._num_tokens = time.monotonic(), None, 0
        self._deltas = state.require_engine().generate(request_id, prompt_token_ids, params)
        state.num_waiting += 1
        state.streams[request_id] = self

    def __aiter__(self) -> EngineStream:
        return self

    async def __anext__(self) -> Any:
        if self._error is not None:
            raise self._error
        delta = await self._deltas.__anext__()
        if not self.started:
            self.started, self._first = True, time.monotonic()
            self.state.num_waiting -= 1
        self._num_tokens += len(delta.token_ids)
        return delta

    def end(self, error: BaseException) -> None:
        """End the request with `error` (raised to whoever iterates) and abort it."""
        self._error = error
        self.state.engine.abort(self.request_id, error)

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self._deltas.aclose()
        state = self.state
        state.num_waiting -= not self.started
        state.streams.pop(self.request_id, None)
        ttft = None if self._first is None else self._first - self._start
        elapsed = time.monotonic() - self._start
        state.metrics.observe_request(ttft, elapsed, self._num_tokens // self.params.n)


def open_streams(
    state: ServerState, requests: list[tuple[str, list[int]]], params: SamplingParams
) -> list[EngineStream]:
    """Admit a request's engine requests (id, prompt token ids) or raise 503. Whoever gets the
    streams must `aclose()` them on every path (ClosingStreamingResponse, until_disconnected)."""
    state.admit()
    return [EngineStream(state, request_id, ids, params) for request_id, ids in requests]


async def close_all(streams: list[EngineStream]) -> None:
    for stream in streams:
        await stream.aclose()


async def merge(streams: list[AsyncIterator[Any]]) -> AsyncIterator[tuple[int, Any]]:
    """(stream index, item) from several async iterators as items arrive."""
    if len(streams) == 1:
        async for item in streams[0]:
            yield 0, item
        return
    pending = {asyncio.ensure_future(anext(s)): i for i, s in enumerate(streams)}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                index = pending.pop(task)
                try:
                    item = task.result()
                except StopAsyncIteration:
                    continue
                pending[asyncio.ensure_future(anext(streams[index]))] = index
                yield index, item
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for stream in streams:
            await stream.aclose()


def usage(num_prompt: int, num_completion: int, num_cached: int) -> Usage:
    return Usage(
        prompt_tokens=num_prompt,
        completion_tokens=num_completion,
        total_tokens=num_prompt + num_completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=num_cached),
    )


def sse(chunk: BaseModel) -> str:
    """One event; fields left unset (not those set to None) are omitted, as OpenAI does."""
    chunk.model_fields_set.add("object")
    return f"data: {chunk.model_dump_json(exclude_unset=True)}\n\n"


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that always closes its body generator and its engine streams, also
    when the client went away mid-stream or before the body started, so the requests are
    aborted in the engine and their KV blocks and queue places are freed."""

    def __init__(self, content: AsyncIterator[str], streams: list[EngineStream]):
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS)
        self.streams = streams

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
            await close_all(self.streams)


async def until_disconnected(
    raw_request: Request, work: Awaitable[Any], streams: list[EngineStream]
) -> Any:
    """Await `work`, cancelling it if the client leaves; the streams are closed either way
    (which aborts their engine requests if they are not finished)."""
    try:
        return await _until_disconnected(raw_request, work)
    finally:
        await close_all(streams)


async def _until_disconnected(raw_request: Request, work: Awaitable[Any]) -> Any:
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(raw_request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise APIError(499, "the client closed the request")
    return task.result()


async def _wait_for_disconnect(raw_request: Request) -> None:
    while True:
        message = await raw_request.receive()
        if message["type"] == "http.disconnect":
            return
