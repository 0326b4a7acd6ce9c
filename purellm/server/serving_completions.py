"""POST /v1/completions: prompts as text or token ids (one or many), echo, logprobs in the
completions shape, and `suffix` for fill-in-the-middle on tokenizers with FIM tokens."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from starlette.requests import Request

from purellm.sampling_params import SamplingParams
from purellm.server.chat_choice import MIN_LOGPROB
from purellm.server.constraints import structured_outputs
from purellm.server.errors import bad_request, sse_error
from purellm.server.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
)
from purellm.server.serving_engine import (
    SSE_DONE,
    ClosingStreamingResponse,
    check_prompt,
    check_prompt_bytes,
    check_request,
    merge,
    open_streams,
    random_id,
    resolve_max_tokens,
    sampling_params,
    sse,
    until_disconnected,
    usage,
)
from purellm.server.state import ServerState

FIM_TOKENS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")


@dataclass
class Prompt:
    text: str
    token_ids: list[int]


@dataclass
class Choice:
    """One output choice being assembled (full responses) or tracked (streams)."""

    text: str = ""
    offset: int = 0
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    started: bool = False


async def create_completion(request: CompletionRequest, raw_request: Request):
    state: ServerState = raw_request.app.state.server
    state.require_engine()
    job = await state.off_loop(_prepare, state, request)
    requests = [(f"{job.request_id}-{i}", p.token_ids) for i, p in enumerate(job.prompts)]
    streams = open_streams(state, requests, job.params)
    if request.stream:
        return ClosingStreamingResponse(job.stream(merge(streams)), streams)
    return await until_disconnected(raw_request, job.full(merge(streams)), streams)


def _prepare(state: ServerState, request: CompletionRequest) -> _Job:
    """The request tokenized and checked (on the tokenizing thread)."""
    model = state.check_model(request.model)
    prompts = [_with_suffix(state, p, request.suffix) for p in _prompts(state, request)]
    max_tokens = resolve_max_tokens(request.max_tokens, "max_tokens")
    for prompt in prompts:
        check_prompt(state, prompt.token_ids, max_tokens)
    structured, field = structured_outputs(request)
    params = sampling_params(state, request, max_tokens, request.logprobs, structured)
    for prompt in prompts:
        check_request(state, prompt.token_ids, params, field)
    return _Job(state, request, random_id("cmpl"), model, prompts, params)


def _prompts(state: ServerState, request: CompletionRequest) -> list[Prompt]:
    prompt = request.prompt
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise bad_request("prompt must not be empty", "prompt")
    if isinstance(prompt[0], int):
        prompt = [prompt]
    out = []
    for item in prompt:
        if isinstance(item, str):
            check_prompt_bytes(state, item, "prompt")
            out.append(Prompt(item, state.tokenizer.encode(item)))
        else:
            ids = list(item)
            check_prompt(state, ids, None)
            out.append(Prompt(state.tokenizer.decode(ids), ids))
    return out


def _with_suffix(state: ServerState, prompt: Prompt, suffix: str | None) -> Prompt:
    """Fill-in-the-middle, prefix-suffix-middle order (Qwen2.5-Coder, StarCoder-style)."""
    if not suffix:
        return prompt
    tokenizer = state.tokenizer
    ids = [tokenizer.convert_tokens_to_ids(t) for t in FIM_TOKENS]
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise bad_request(
            "suffix (fill-in-the-middle) needs a tokenizer with the tokens "
            + ", ".join(FIM_TOKENS)
            + "; this model has none",
            "suffix",
        )
    check_prompt_bytes(state, suffix, "suffix")
    prefix_ids = tokenizer.encode(prompt.text, add_special_tokens=False)
    suffix_ids = tokenizer.encode(suffix, add_special_tokens=False)
    token_ids = [ids[0], *prefix_ids, ids[1], *suffix_ids, ids[2]]
    return Prompt(prompt.text, token_ids)


class _Job:
    def __init__(self, state, request, request_id, model, prompts, params: SamplingParams):
        self.state, self.request, self.request_id = state, request, request_id
        self.model, self.prompts, self.params = model, prompts, params
        self.created = int(time.time())
        self.choices = [Choice() for _ in range(len(prompts) * params.n)]
        self.num_generated = 0
        self.num_cached = 0

    def _update(self, prompt_index: int, delta) -> tuple[int, Choice, str, CompletionLogprobs]:
        """Record a delta; returns its choice index, the choice, new text and new logprobs."""
        index = prompt_index * self.params.n + delta.index
        choice = self.choices[index]
        self.num_generated += len(delta.token_ids)
        self.num_cached = max(self.num_cached, delta.num_cached_tokens)
        text, logprobs = delta.text, CompletionLogprobs()
        if not choice.started:
            choice.started = True
            if self.request.echo:
                prompt = self.prompts[prompt_index]
                text = prompt.text + text
                self._echo_logprobs(choice, prompt, logprobs)
        self._add_logprobs(choice, delta, logprobs)
        choice.text += text
        choice.finish_reason, choice.stop_reason = delta.finish_reason, delta.stop_reason
        if delta.finish_reason == "error":
            raise RuntimeError("the model failed while generating this request")
        return index, choice, text, logprobs

    def _echo_logprobs(self, choice: Choice, prompt: Prompt, out: CompletionLogprobs) -> None:
        if self.params.logprobs is None:
            return
        for token_id in prompt.token_ids:  # prompt logprobs are not computed: reported null
            self._append(choice, out, self.state.token_str(token_id), None, None)

    def _add_logprobs(self, choice: Choice, delta, out: CompletionLogprobs) -> None:
        if self.params.logprobs is None:
            return
        for item in delta.logprobs or []:
            top = {self.state.token_str(t): max(lp, MIN_LOGPROB) for t, lp in item.top}
            token = self.state.token_str(item.token_id)
            self._append(choice, out, token, max(item.logprob, MIN_LOGPROB), top)

    def _append(self, choice, out: CompletionLogprobs, token, logprob, top) -> None:
        out.tokens.append(token)
        out.token_logprobs.append(logprob)
        out.top_logprobs.append(top)
        out.text_offset.append(choice.offset)
        choice.offset += len(token)
        if choice.logprobs is None:
            choice.logprobs = CompletionLogprobs()
        for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            getattr(choice.logprobs, name).append(getattr(out, name)[-1])

    def _usage(self):
        num_prompt = sum(len(p.token_ids) for p in self.prompts) * self.params.n
        return usage(num_prompt, self.num_generated, self.num_cached)

    def _response(self, choices: list[CompletionChoice], **fields) -> CompletionResponse:
        return CompletionResponse(id=self.request_id, created=self.created, model=self.model,
                                  choices=choices, **fields)  # fmt: skip

    async def full(self, deltas) -> JSONResponse:
        try:
            async for prompt_index, delta in deltas:
                self._update(prompt_index, delta)
        finally:
            await deltas.aclose()
        choices = [
            CompletionChoice(index=i, text=c.text, logprobs=c.logprobs,
                             finish_reason=c.finish_reason, stop_reason=c.stop_reason)
            for i, c in enumerate(self.choices)
        ]  # fmt: skip
        return JSONResponse(self._response(choices, usage=self._usage()).model_dump())

    async def stream(self, deltas):
        try:
            async for prompt_index, delta in deltas:
                index, choice, text, logprobs = self._update(prompt_index, delta)
                if not text and not delta.finished and not logprobs.tokens:
                    continue
                out = CompletionChoice(
                    index=index,
                    text=text,
                    logprobs=logprobs if self.params.logprobs is not None else None,
                    finish_reason=delta.finish_reason,
                    stop_reason=delta.stop_reason,
                )
                yield sse(self._response([out]))
            options = self.request.stream_options
            if options is not None and options.include_usage:
                yield sse(self._response([], usage=self._usage()))
            yield SSE_DONE
        except Exception as exc:
            yield sse_error(exc)
            yield SSE_DONE
        finally:
            await deltas.aclose()
