"""POST /v1/chat/completions: the chat template, the engine, and OpenAI's response or stream
(reasoning in `reasoning_content`, tool calls parsed into `tool_calls`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse
from starlette.requests import Request

from purellm.sampling_params import SamplingParams
from purellm.server import chat_utils
from purellm.server.chat_choice import ChoiceParser, chat_logprobs
from purellm.server.constraints import structured_outputs
from purellm.server.errors import bad_request, sse_error
from purellm.server.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    DeltaMessage,
    NamedToolChoice,
)
from purellm.server.serving_engine import (
    SSE_DONE,
    ClosingStreamingResponse,
    check_prompt,
    check_prompt_bytes,
    check_request,
    open_streams,
    random_id,
    resolve_max_tokens,
    sampling_params,
    sse,
    until_disconnected,
    usage,
)
from purellm.server.state import ServerState
from purellm.server.tool_grammars import tool_call_constraint


@dataclass
class ChatJob:
    """A validated chat request, ready for the engine."""

    request: ChatCompletionRequest
    request_id: str
    model: str
    prompt: str
    prompt_token_ids: list[int]
    params: SamplingParams
    tool_parser: str | None
    tools: list[dict] | None
    """The tools the template was given (a parser may type arguments by their schemas)."""
    starts_in_reasoning: bool
    parse_reasoning: bool
    created: int

    def choice_parser(self) -> ChoiceParser:
        from purellm.server.reasoning import ReasoningParser
        from purellm.server.tool_parsers import get_tool_parser

        reasoning = None
        if self.parse_reasoning:
            reasoning = ReasoningParser(starts_in_reasoning=self.starts_in_reasoning)
        tools = get_tool_parser(self.tool_parser)(self.tools) if self.tool_parser else None
        return ChoiceParser(reasoning, tools, self.request.parallel_tool_calls)


async def create_chat_completion(request: ChatCompletionRequest, raw_request: Request):
    state: ServerState = raw_request.app.state.server
    state.require_engine()
    job = await state.off_loop(prepare, state, request)
    streams = open_streams(state, [(job.request_id, job.prompt_token_ids)], job.params)
    if request.stream:
        return ClosingStreamingResponse(stream_chat(state, job, streams[0]), streams)
    return await until_disconnected(raw_request, full_chat(state, job, streams[0]), streams)


def prepare(state: ServerState, request: ChatCompletionRequest) -> ChatJob:
    """The request rendered, tokenized and checked (on the tokenizing thread)."""
    model = state.check_model(request.model)
    tools = chat_utils.template_tools(request.tools, request.tool_choice)
    if tools and request.tool_choice != "none" and state.tools_problem:
        raise bad_request(state.tools_problem, "tools")
    prompt = chat_utils.render(
        state.tokenizer,
        chat_utils.conversation(request.messages),
        tools,
        request.add_generation_prompt,
        request.continue_final_message,
        request.chat_template_kwargs,
    )
    check_prompt_bytes(state, prompt, "messages")
    prompt_token_ids = state.tokenizer.encode(prompt, add_special_tokens=False)
    limit = request.max_completion_tokens
    param = "max_completion_tokens"
    if limit is None:
        limit, param = request.max_tokens, "max_tokens"
    max_tokens = resolve_max_tokens(limit, param)
    check_prompt(state, prompt_token_ids, max_tokens)
    tool_parser = _tool_parser(state, request, tools)
    structured, field = _constraint(request, tools, tool_parser, state.tool_tags_are_tokens)
    params = sampling_params(state, request, max_tokens, _num_logprobs(request), structured)
    check_request(state, prompt_token_ids, params, field)
    return ChatJob(
        request=request,
        request_id=random_id("chatcmpl"),
        model=model,
        prompt=prompt,
        prompt_token_ids=prompt_token_ids,
        params=params,
        tool_parser=tool_parser,
        tools=tools,
        starts_in_reasoning=chat_utils.starts_in_reasoning(prompt),
        parse_reasoning=bool(state.config.reasoning_parser)
        or state.model_type in ("qwen3", "qwen3_moe"),
        created=int(time.time()),
    )


def _num_logprobs(request: ChatCompletionRequest) -> int | None:
    if request.top_logprobs is not None and not request.logprobs:
        raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
    if not request.logprobs:
        return None
    return request.top_logprobs or 0


def _tool_parser(state: ServerState, request: ChatCompletionRequest, tools) -> str | None:
    """The parser for this request's output: none without tools or with tool_choice "none"."""
    if not tools or request.tool_choice == "none":
        return None
    return state.tool_parser


def _constraint(request: ChatCompletionRequest, tools, parser: str | None, tag_tokens: bool):
    """The output's grammar and the field that asked for it: response_format & co.; else a
    tool call when tool_choice is "required" or names a tool; else, with tool_choice "auto"
    and a `strict` tool, text in which any call the model opens is a valid one."""
    structured, field = structured_outputs(request)
    choice = request.tool_choice
    if not (tools and parser) or choice == "none":
        return structured, field
    forced = choice == "required" or isinstance(choice, NamedToolChoice)
    if forced and structured is not None:
        raise bad_request(f"tool_choice {choice!r} cannot be combined with {field}", field)
    if structured is not None or not (forced or _any_strict(tools)):
        return structured, field
    parallel = request.parallel_tool_calls
    spec = tool_call_constraint(parser, tools, parallel, lazy=not forced, marker_tokens=tag_tokens)
    return spec, "tool_choice" if forced else "tools"


def _any_strict(tools: list[dict]) -> bool:
    return any(tool["function"].get("strict") for tool in tools)


def _chunk(job: ChatJob, choices: list[ChatChunkChoice], **fields: Any) -> str:
    return sse(ChatCompletionChunk(id=job.request_id, created=job.created, model=job.model,
                                   choices=choices, **fields))  # fmt: skip


def _choice(index: int, delta: DeltaMessage | None, **fields: Any) -> ChatChunkChoice:
    return ChatChunkChoice(index=index, delta=delta or DeltaMessage(), **fields)


async def stream_chat(state: ServerState, job: ChatJob, deltas):
    n = job.params.n
    parsers = [job.choice_parser() for _ in range(n)]
    num_generated, num_cached = 0, 0
    try:
        for index in range(n):
            role = DeltaMessage(role="assistant", content="")
            yield _chunk(job, [_choice(index, role, logprobs=None, finish_reason=None)])
        async for delta in deltas:
            num_generated += len(delta.token_ids)
            num_cached = max(num_cached, delta.num_cached_tokens)
            for chunk in _delta_chunks(state, job, parsers[delta.index], delta):
                yield chunk
        options = job.request.stream_options
        if options is not None and options.include_usage:
            totals = usage(len(job.prompt_token_ids), num_generated, num_cached)
            yield _chunk(job, [], usage=totals)
        yield SSE_DONE
    except Exception as exc:  # the stream has started: report the error inside it
        yield sse_error(exc)
        yield SSE_DONE
    finally:
        await deltas.aclose()


def _delta_chunks(state: ServerState, job: ChatJob, parser: ChoiceParser, delta) -> list[str]:
    chunks = []
    message = parser.feed(delta.text)
    logprobs = None
    if job.params.logprobs is not None and delta.logprobs:
        logprobs = chat_logprobs(delta.logprobs, state.token_str)
    if message is not None or logprobs is not None:
        chunks.append(_chunk(job, [_choice(delta.index, message, logprobs=logprobs,
                                           finish_reason=None)]))  # fmt: skip
    if delta.finished:
        if delta.finish_reason == "error":
            raise RuntimeError("the model failed while generating this request")
        tail = parser.finish()
        reason = parser.finish_reason(delta.finish_reason)
        final = _choice(delta.index, tail, logprobs=None, finish_reason=reason,
                        stop_reason=delta.stop_reason)  # fmt: skip
        chunks.append(_chunk(job, [final]))
    return chunks


async def full_chat(state: ServerState, job: ChatJob, deltas) -> JSONResponse:
    n = job.params.n
    parsers = [job.choice_parser() for _ in range(n)]
    logprobs: list[list] = [[] for _ in range(n)]
    ends: list[Any] = [None] * n
    num_generated, num_cached = 0, 0
    try:
        async for delta in deltas:
            num_generated += len(delta.token_ids)
            num_cached = max(num_cached, delta.num_cached_tokens)
            parsers[delta.index].feed(delta.text)
            logprobs[delta.index] += delta.logprobs or []
            if delta.finished:
                ends[delta.index] = delta
    finally:
        await deltas.aclose()
    choices = [_full_choice(state, job, i, p, logprobs[i], ends[i]) for i, p in enumerate(parsers)]
    response = ChatCompletionResponse(
        id=job.request_id,
        created=job.created,
        model=job.model,
        choices=choices,
        usage=usage(len(job.prompt_token_ids), num_generated, num_cached),
    )
    return JSONResponse(response.model_dump())


def _full_choice(state, job: ChatJob, index: int, parser: ChoiceParser, logprobs, end):
    if end is None or end.finish_reason == "error":
        raise RuntimeError("the model failed while generating this request")
    parser.finish()
    wanted = job.params.logprobs is not None
    return ChatChoice(
        index=index,
        message=parser.message(),
        logprobs=chat_logprobs(logprobs, state.token_str) if wanted else None,
        finish_reason=parser.finish_reason(end.finish_reason),
        stop_reason=end.stop_reason,
    )
