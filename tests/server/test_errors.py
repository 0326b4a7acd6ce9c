"""Error responses have OpenAI's shape and status; bad input never takes the server down."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.server.conftest import API_KEY, MODEL

HELLO = [{"role": "user", "content": "Hi"}]


def _chat(**fields):
    return {"model": MODEL, "messages": HELLO, "max_tokens": 4, **fields}


def _assert_error(response: httpx.Response, status: int, words: str = "") -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status and error["message"]
    assert words.lower() in error["message"].lower()
    return error


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"temperature": -1}, "temperature"),
        ({"n": 0}, "n must"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": -2}, "max_completion_tokens"),
        ({"top_p": 0}, "top_p"),
        ({"temperature": "hot"}, "temperature"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "image_url"),
        ({"max_tokens": 510}, "context length"),
        ({"messages": [{"role": "user", "content": "word " * 600}]}, "context length"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool"),
        ({"top_logprobs": 2}, "logprobs"),
        ({"logprobs": True, "top_logprobs": 50}, "logprobs"),
        ({"n": 100000}, "n must be at most 16"),
        ({"logit_bias": {"5": 200}}, "logit_bias values"),
        ({"logit_bias": {"word": 1}}, "logit_bias maps"),
        ({"logit_bias": {"999999": 1}}, "logit_bias token ids"),
        ({"logit_bias": {"1_0": 1}}, "logit_bias maps"),  # Python's int() would read 10
        ({"stop_token_ids": [999999]}, "stop_token_ids"),
        ({"n": 2, "temperature": 1, "seed": 18446744073709551615}, "seed must be in"),
        ({"n": 2, "temperature": 1, "seed": 2**63 - 1}, "seed must be in"),  # choice 1 overflows
    ],
)
def test_chat_400(server, fields, words):
    error = _assert_error(server.post("/v1/chat/completions", _chat(**fields)), 400, words)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("field", ["temperature", "repetition_penalty"])
def test_infinity_is_a_400(server, field):
    """Python's JSON reads Infinity, which clients like json.dumps write."""
    body = json.dumps(_chat(**{field: float("inf")}))
    headers = {**server.headers, "content-type": "application/json"}
    response = httpx.post(server.url("/v1/chat/completions"), content=body, headers=headers)
    _assert_error(response, 400, field)


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"prompt": []}, "prompt"),
        ({"prompt": [1, 2, 99999]}, "token ids"),
        ({"prompt": "x", "max_tokens": 1000}, "context length"),
        ({"prompt": "x", "stop": [""]}, "stop"),
        ({"prompt": 12.5}, "prompt"),
    ],
)
def test_completions_400(server, fields, words):
    _assert_error(server.post("/v1/completions", {"model": MODEL, **fields}), 400, words)


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"n": 0}, "n"),
        ({"n": 17}, "n must be at most 16"),  # the engine's own limits, checked up front
        ({"n": 2**64}, "n must be at most 16"),  # and before anything is built per choice
        ({"logit_bias": {"999999": 1}}, "logit_bias token ids"),
        ({"logit_bias": {"1_0": 1}}, "logit_bias maps"),  # Python's int() would read 10
        ({"stop_token_ids": [999999]}, "stop_token_ids"),
    ],
)
def test_streaming_request_errors_before_the_stream(server, fields, words):
    for path, body in [
        ("/v1/chat/completions", _chat(stream=True, **fields)),
        ("/v1/completions", {"model": MODEL, "prompt": "Hi", "stream": True, **fields}),
    ]:
        _assert_error(server.post(path, body), 400, words)


def test_malformed_json_and_non_object(server):
    headers = {**server.headers, "Content-Type": "application/json"}
    bad = httpx.post(server.url("/v1/chat/completions"), content=b"{nope", headers=headers)
    _assert_error(bad, 400, "json")
    _assert_error(server.post("/v1/completions", [1, 2, 3]), 400, "json object")


def test_unknown_model_is_404(server):
    _assert_error(server.post("/v1/chat/completions", _chat(model="gpt-9")), 404, "gpt-9")
    _assert_error(server.get("/v1/models/gpt-9"), 404)
    with pytest.raises(openai.NotFoundError):
        server.client().completions.create(model="gpt-9", prompt="x")


def test_unknown_route_is_404_in_openai_shape(server):
    _assert_error(server.get("/v1/nothing-here"), 404)


def test_auth(server):
    url = server.url("/v1/models")
    _assert_error(httpx.get(url), 401)
    _assert_error(httpx.get(url, headers={"Authorization": "Bearer wrong"}), 401)
    _assert_error(httpx.get(url, headers={"Authorization": API_KEY}), 401)
    assert httpx.get(url, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    _assert_error(httpx.post(server.url("/tokenize"), json={"prompt": "x"}), 401)
    for path in ("/health", "/version", "/metrics"):
        assert httpx.get(server.url(path)).status_code == 200, path
    bad_client = openai.OpenAI(base_url=server.url("/v1"), api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        bad_client.models.list()


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", _chat(messages=[{"role": "user", "content": "hi \ud800 there"}])),
        ("/v1/completions", {"model": MODEL, "prompt": "hi \ud800 there", "max_tokens": 2}),
        ("/v1/completions", {"model": MODEL, "prompt": ["ok", "\udfff"], "max_tokens": 2}),
        ("/tokenize", {"model": MODEL, "prompt": "hi \ud800"}),
        ("/v1/chat/completions", _chat(stop=["\ud800"])),
    ],
)
def test_a_lone_surrogate_is_a_400(server, path, body):
    headers = {**server.headers, "content-type": "application/json"}
    raw = json.dumps(body)  # ASCII, the surrogate as a "\\ud800" escape (httpx refuses it)
    response = httpx.post(server.url(path), content=raw, headers=headers, timeout=60)
    _assert_error(response, 400, "invalid Unicode")


def test_server_survives_all_of_it(server):
    out = server.client().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
    assert out.choices[0].finish_reason == "length"
    metrics = server.metrics()  # no refused request left work behind
    assert metrics["purellm:num_requests_running"] == 0
    assert metrics["purellm:kv_cache_usage_perc"] == 0


def test_cors(server):
    origin = {"Origin": "https://app.example"}
    preflight = httpx.options(
        server.url("/v1/chat/completions"),
        headers={**origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"},
    )  # fmt: skip
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    denied = httpx.get(server.url("/v1/models"), headers=origin)
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == "https://app.example"
    other = httpx.get(server.url("/health"), headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_logit_bias_steers_the_output(server):
    body = _chat(max_tokens=3, temperature=0, logit_bias={"42": 100})
    response = server.post("/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    ids = server.post(
        "/tokenize", {"model": MODEL, "prompt": response.json()["choices"][0]["message"]["content"]}
    ).json()["tokens"]
    assert set(ids) <= {42}


def test_an_unexpected_exception_is_an_openai_500_that_is_not_re_raised():
    """Raised past every handler, it is answered here rather than re-raised to uvicorn (which
    then closed the keep-alive connection); the real server has no route that fails so."""
    import asyncio

    from fastapi import FastAPI

    from purellm.server.errors import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom():
        raise RuntimeError("kaboom")

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/boom")

    error = _assert_error(asyncio.run(call()), 500, "RuntimeError: kaboom")
    assert error["type"] == "internal_server_error"
