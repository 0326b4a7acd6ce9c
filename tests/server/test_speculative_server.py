"""A server with --speculative-config: the banner says so, greedy completions are those of a
server without it, and /metrics counts drafts."""

from __future__ import annotations

import pytest

from tests.server.conftest import MODEL
from tests.server.remote import RemoteServer


@pytest.fixture(scope="module")
def spec_server(tiny_checkpoint):
    remote = RemoteServer(
        [str(tiny_checkpoint), "--served-model-name", MODEL, "--dtype", "float32",
         "--kv-cache-memory", "8MiB", "--max-model-len", "512",
         "--speculative-config", '{"method": "ngram", "num_speculative_tokens": 3, '
         '"prompt_lookup_min": 1}']
    )  # fmt: skip
    remote.health_codes()
    yield remote
    assert remote.stop() == 0, remote.output


def test_greedy_completions_match_a_server_without_drafts(spec_server, server):
    body = {"model": MODEL, "prompt": "one two three one two three one two", "max_tokens": 24,
            "temperature": 0}  # fmt: skip
    plain = server.post("/v1/completions", body)
    spec = spec_server.post("/v1/completions", body)
    assert spec.status_code == plain.status_code == 200, spec.text
    assert spec.json()["choices"][0]["text"] == plain.json()["choices"][0]["text"]
    assert "ngram speculation, up to 3 draft tokens" in spec_server.output
    metrics = spec_server.metrics()
    assert metrics["purellm:spec_decode_num_draft_tokens_total"] > 0
    assert "purellm:spec_decode_num_accepted_tokens_total" in metrics
