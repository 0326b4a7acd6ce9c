"""The small endpoints: models, tokenize/detokenize (vLLM's shapes), version, health, metrics."""

from __future__ import annotations

from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.requests import Request

from purellm.server import chat_utils
from purellm.server.errors import APIError, bad_request
from purellm.server.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
)
from purellm.server.state import ServerState


def _state(raw_request: Request) -> ServerState:
    return raw_request.app.state.server


def _card(state: ServerState, name: str) -> ModelCard:
    return ModelCard(id=name, root=state.llm_engine.files.name, max_model_len=state.max_model_len)


async def list_models(raw_request: Request) -> JSONResponse:
    state = _state(raw_request)
    cards = [_card(state, name) for name in state.model_names]
    return JSONResponse(ModelList(data=cards).model_dump())


async def get_model(model_id: str, raw_request: Request) -> JSONResponse:
    state = _state(raw_request)
    if model_id not in state.model_names:
        raise APIError(404, f"The model `{model_id}` does not exist.", "model")
    return JSONResponse(_card(state, model_id).model_dump())


async def tokenize(request: TokenizeRequest, raw_request: Request) -> JSONResponse:
    state = _state(raw_request)
    state.require_engine()
    return await state.off_loop(_tokenize, state, request)


def _tokenize(state: ServerState, request: TokenizeRequest) -> JSONResponse:
    state.check_model(request.model)
    tokenizer = state.tokenizer
    if (request.prompt is None) == (request.messages is None):
        raise bad_request("give exactly one of prompt and messages")
    if request.messages is not None:
        tools = chat_utils.template_tools(request.tools, None)
        messages = chat_utils.conversation(request.messages)
        text = chat_utils.render(
            tokenizer,
            messages,
            tools,
            request.add_generation_prompt,
            request.continue_final_message,
            request.chat_template_kwargs,
        )
        tokens = tokenizer.encode(text, add_special_tokens=bool(request.add_special_tokens))
    else:
        add_special = True if request.add_special_tokens is None else request.add_special_tokens
        tokens = tokenizer.encode(request.prompt, add_special_tokens=add_special)
    strs = [state.token_str(t) for t in tokens] if request.return_token_strs else None
    response = TokenizeResponse(
        count=len(tokens), max_model_len=state.max_model_len, tokens=tokens, token_strs=strs
    )
    return JSONResponse(response.model_dump(exclude_none=True))


async def detokenize(request: DetokenizeRequest, raw_request: Request) -> JSONResponse:
    state = _state(raw_request)
    state.check_model(request.model)
    vocab = state.vocab_size
    if any(not 0 <= t < vocab for t in request.tokens):
        raise bad_request(f"token ids must be in [0, {vocab})", "tokens")
    text = await state.off_loop(state.tokenizer.decode, request.tokens)
    return JSONResponse(DetokenizeResponse(prompt=text).model_dump())


async def version(raw_request: Request) -> JSONResponse:
    from purellm import __version__

    return JSONResponse({"version": __version__})


async def health(raw_request: Request) -> Response:
    """200 once the model is loaded and the engine alive; 503 while loading, after a death and
    while shutting down."""
    state = _state(raw_request)
    state.require_engine()
    if state.draining:
        raise APIError(503, "the server is shutting down")
    return Response(status_code=200)


async def metrics(raw_request: Request) -> PlainTextResponse:
    state = _state(raw_request)
    engine = state.engine.engine if state.engine is not None else None
    name = state.config.served_model_names[0] if state.config.served_model_names else ""
    if engine is not None:
        name = state.model_name
    text = state.metrics.render(name, engine)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
