"""Every endpoint through the official `openai` client and raw httpx, against a real server."""

from __future__ import annotations

import asyncio

import httpx

from tests.server.conftest import CONTEXT, MODEL
from tests.server.remote import sse_events

HELLO = [{"role": "user", "content": "What is the capital of France?"}]


def test_models(server):
    client = server.client()
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL, "tiny-alias"]
    assert client.models.retrieve("tiny-alias").id == "tiny-alias"
    card = server.get(f"/v1/models/{MODEL}").json()
    assert card["max_model_len"] == CONTEXT and card["object"] == "model"


def test_version_and_health_are_open(server):
    assert httpx.get(server.url("/health")).status_code == 200
    version = httpx.get(server.url("/version")).json()["version"]
    assert version


def test_chat_non_streaming(server):
    out = server.client().chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=5, temperature=0
    )
    choice = out.choices[0]
    assert out.object == "chat.completion" and out.model == MODEL
    assert choice.message.role == "assistant" and choice.finish_reason == "length"
    assert out.usage.completion_tokens == 5
    assert out.usage.total_tokens == out.usage.prompt_tokens + 5


def test_chat_greedy_is_deterministic_and_seeded_sampling_too(server):
    client = server.client()

    def run(**kwargs):
        out = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, **kwargs)
        return out.choices[0].message.content

    assert run(temperature=0) == run(temperature=0)
    assert run(temperature=1.0, seed=7) == run(temperature=1.0, seed=7)


def test_chat_streaming_matches_non_streaming(server):
    client = server.client()
    full = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == "length" and all(f is None for f in finals[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens


def test_raw_sse_shape(server):
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 3, "stream": True,
            "ignore_eos": True}  # a sampled end of text would make it "stop"  # fmt: skip
    with httpx.stream(
        "POST", server.url("/v1/chat/completions"), json=body, headers=server.headers
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert "usage" not in events[-2] or events[-2]["usage"] is None


def test_cached_tokens_reported(server):
    long = [{"role": "user", "content": "Paged attention stores keys and values in blocks. " * 3}]
    client = server.client()
    client.chat.completions.create(model=MODEL, messages=long, max_tokens=2)
    again = client.chat.completions.create(model=MODEL, messages=long, max_tokens=2)
    assert again.usage.prompt_tokens_details.cached_tokens >= 16


def test_n_stop_and_logprobs(server):
    client = server.client()
    out = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=4, n=3, seed=1, logprobs=True, top_logprobs=2
    )
    assert sorted(c.index for c in out.choices) == [0, 1, 2]
    for choice in out.choices:
        entries = choice.logprobs.content
        assert len(entries) == 4
        assert all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in entries)
        assert all(bytes(e.bytes).decode("utf-8", "replace") == e.token for e in entries)
    text = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=16, temperature=0)
    content = text.choices[0].message.content
    word = next(c for c in content[1:] if c.isascii() and c.isalnum())
    stopped = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=16, temperature=0, stop=[word]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert word not in stopped.choices[0].message.content
    assert content.startswith(stopped.choices[0].message.content)


def test_vllm_sampling_extras_and_content_parts(server):
    out = server.post(
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "max_completion_tokens": 6,
            "top_k": 5,
            "min_p": 0.05,
            "repetition_penalty": 1.1,
            "ignore_eos": True,
            "min_tokens": 6,
            "stop_token_ids": [3],
            "skip_special_tokens": False,
            "include_stop_str_in_output": True,
            "some_unknown_field": {"ignored": True},
        },
    )
    assert out.status_code == 200, out.text
    assert out.json()["usage"]["completion_tokens"] == 6


def test_max_tokens_minus_one_runs_to_the_context_limit(server):
    out = server.post(
        "/v1/chat/completions",
        {"model": MODEL, "messages": HELLO, "max_completion_tokens": -1, "ignore_eos": True},
    ).json()
    usage = out["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] == CONTEXT
    assert out["choices"][0]["finish_reason"] == "length"


def test_completions_prompt_forms(server):
    client = server.client()
    ids = server.post("/tokenize", {"model": MODEL, "prompt": "def fib(n):"}).json()["tokens"]
    text = client.completions.create(model=MODEL, prompt="def fib(n):", max_tokens=5, temperature=0)
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=5, temperature=0)
    assert text.choices[0].text == by_ids.choices[0].text
    many = client.completions.create(
        model=MODEL, prompt=["def fib(n):", "The quick"], max_tokens=3, n=2, temperature=0
    )
    assert sorted(c.index for c in many.choices) == [0, 1, 2, 3]
    assert many.choices[0].text == many.choices[1].text
    lists = client.completions.create(model=MODEL, prompt=[ids, ids], max_tokens=5, temperature=0)
    assert [c.text for c in lists.choices] == [text.choices[0].text] * 2


def test_completions_echo_logprobs_and_stream(server):
    client = server.client()
    out = client.completions.create(
        model=MODEL, prompt="The quick", max_tokens=4, echo=True, logprobs=2, temperature=0
    )
    choice = out.choices[0]
    assert choice.text.startswith("The quick")
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset)
    assert "".join(lp.tokens) == choice.text
    assert lp.token_logprobs[-1] <= 0 and len(lp.top_logprobs[-1]) >= 1
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt="The quick",
            max_tokens=4,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    assert "The quick" + streamed == choice.text
    assert chunks[-1].usage.completion_tokens == 4


def test_completions_suffix_without_fim_tokens_is_400(server):
    r = server.post("/v1/completions", {"model": MODEL, "prompt": "def f(", "suffix": "return 1"})
    assert r.status_code == 400 and "fim" in r.json()["error"]["message"].lower()


def test_tokenize_detokenize(server):
    r = server.post(
        "/tokenize", {"model": MODEL, "prompt": "Hello world", "return_token_strs": True}
    )
    body = r.json()
    assert body["count"] == len(body["tokens"]) and body["max_model_len"] == CONTEXT
    assert "".join(body["token_strs"]) == "Hello world"
    back = server.post("/detokenize", {"model": MODEL, "tokens": body["tokens"]}).json()
    assert back["prompt"] == "Hello world"
    chat = server.post("/tokenize", {"model": MODEL, "messages": HELLO}).json()
    rendered = server.post("/detokenize", {"tokens": chat["tokens"]}).json()["prompt"]
    assert rendered.endswith("<|im_start|>assistant\n")


def test_metrics_names(server):
    server.client().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=3)
    metrics = server.metrics()
    for name in (
        "purellm:num_requests_running",
        "purellm:num_requests_waiting",
        "purellm:kv_cache_usage_perc",
        "purellm:prefix_cache_queries_total",
        "purellm:prefix_cache_hits_total",
        "purellm:num_preemptions_total",
        "purellm:prompt_tokens_total",
        "purellm:generation_tokens_total",
        'purellm:request_success_total{finished_reason="length"}',
        "purellm:time_to_first_token_seconds_count",
        "purellm:time_per_output_token_seconds_count",
        "purellm:e2e_request_latency_seconds_count",
    ):
        assert name in metrics, name
    assert metrics["purellm:generation_tokens_total"] >= 3
    assert metrics["purellm:e2e_request_latency_seconds_count"] >= 1


def test_32_concurrent_streams(server):
    client = server.async_client()

    async def one(i: int) -> tuple[str, str | None]:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Request number {i}"}],
            max_tokens=16,
            temperature=0,
            stream=True,
        )
        text, reason = "", None
        async for chunk in stream:
            text += chunk.choices[0].delta.content or ""
            reason = chunk.choices[0].finish_reason or reason
        return text, reason

    async def main():
        return await asyncio.gather(*(one(i) for i in range(32)))

    results = asyncio.run(main())
    assert all(reason in ("length", "stop") for _, reason in results)
    alone = server.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Request number 5"}],
        max_tokens=16,
        temperature=0,
    )
    assert results[5][0] == alone.choices[0].message.content
    metrics = server.metrics()
    assert metrics["purellm:num_requests_running"] == 0
